//! `dawin eval` and `dawin expertise` as chains of named phases: open the
//! models and data, the expertise pass (cached), λ per sample, the DaWin
//! pass under one interpolation, the baselines' predictions and the
//! reports.

use super::bmm::BetaMixture;
use super::cache::{self, KeyInputs};
use super::data::Dataset;
use super::engine::{Engine, load_pair};
use super::entropy::{entropies, warn_nan};
use super::expertise::{Samples, expertise_pass};
use super::interp::{Groups, Interp, Pass, dawin_logits};
use super::lambda::{self, Entropies, LambdaRule};
use super::methods::{Logits, Method, predictions};
use super::projection::Projection;
use super::report;
use super::shard::{self, ExpertiseResult, read_expertise};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::model::device::Precision;
use crate::model::{Model, Overrides};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

pub struct EvalOptions {
    pub pretrained: PathBuf,
    pub finetuned: PathBuf,
    pub data: PathBuf,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    /// How λ is set per sample (`--expertise`).
    pub rule: LambdaRule,
    pub temperature: (f32, f32),
    /// How DaWin's per-sample models are evaluated (`--interp`).
    pub interp: Interp,
    pub methods: Vec<Method>,
    pub projection: Projection,
    pub overrides: Overrides,
    /// (i, n): evaluate the i-th (0-based) of n contiguous slices.
    pub shard: Option<(usize, usize)>,
    /// Whole-set expertise from `dawin merge` (entropies of every sample).
    pub expertise_from: Option<PathBuf>,
    pub progress: bool,
    /// Seed of the Beta-mixture initialisation.
    pub seed: u64,
    /// Arithmetic of the transformer blocks.
    pub precision: Precision,
}

impl Default for EvalOptions {
    /// The command line's defaults, with empty paths.
    fn default() -> Self {
        EvalOptions {
            pretrained: PathBuf::new(),
            finetuned: PathBuf::new(),
            data: PathBuf::new(),
            out_dir: PathBuf::new(),
            batch_size: 64,
            rule: LambdaRule::Entropy,
            temperature: (1.0, 1.0),
            interp: Interp::Exact,
            methods: Method::parse_list("all").expect("a valid list"),
            projection: Projection::None,
            overrides: Overrides::default(),
            shard: None,
            expertise_from: None,
            progress: true,
            seed: 1,
            precision: Precision::F32,
        }
    }
}

impl EvalOptions {
    /// How the passes over the data run.
    fn pass(&self) -> Pass {
        Pass {
            batch_size: self.batch_size,
            progress: self.progress,
        }
    }
}

/// Everything `eval` computed, also written to the output folder.
pub struct EvalResult {
    pub summary: serde_json::Value,
    /// Dataset indices of the evaluated (readable) samples.
    pub indices: Vec<usize>,
    pub lambdas: Vec<f32>,
    pub entropies: Entropies,
    /// Projected DaWin logits, one row per evaluated sample.
    pub dawin_logits: Option<Vec<f32>>,
    pub predictions: BTreeMap<String, Vec<usize>>,
    pub table: String,
}

/// What a run opened: both models, the data, its shard and label space.
struct Setup {
    pt: Model,
    ft: Model,
    data: Dataset,
    /// Classes of the heads, and after the projection.
    classes_raw: usize,
    classes: usize,
    shard: Range<usize>,
}

impl Setup {
    fn open(o: &EvalOptions) -> Result<Setup> {
        let (pt, ft) = load_pair(&o.pretrained, &o.finetuned, o.overrides)?;
        let classes_raw = pt.spec.classes.unwrap_or(0);
        o.projection.check(classes_raw)?;
        let classes = o.projection.out_classes(classes_raw);
        let data = Dataset::open(&o.data, pt.spec.image_size)?;
        data.check_labels(classes)?;
        let shard = shard::range(o.shard, data.len())?;
        std::fs::create_dir_all(&o.out_dir).map_err(|e| Error::io(&o.out_dir, e))?;
        Ok(Setup {
            pt,
            ft,
            data,
            classes_raw,
            classes,
            shard,
        })
    }

    /// The expertise pass for the WiSE-FT `alphas`, through the cache in
    /// the output folder: whether the cache held it all, and the evaluated
    /// samples with their logits.
    fn expertise(
        &self,
        engine: &mut Engine,
        o: &EvalOptions,
        alphas: &[f32],
    ) -> Result<(bool, Samples)> {
        let key = cache::key(&KeyInputs {
            pretrained: &o.pretrained,
            finetuned: &o.finetuned,
            data: &self.data,
            shard: self.shard.clone(),
            spec: &self.pt.spec,
            overrides: o.overrides,
            precision: o.precision,
        })?;
        let path = o.out_dir.join("cache.safetensors");
        let pass = o.pass();
        let e = expertise_pass(
            engine,
            &self.data,
            self.shard.clone(),
            alphas,
            (key, &path),
            pass,
        )?;
        for (i, err) in &e.failed {
            eprintln!("warning: skipped {}: {err}", self.data.describe(*i));
        }
        let c = self.classes_raw;
        let smp = Samples::select(&e, &self.data, &self.shard, c, &o.projection, alphas)?;
        Ok((e.cache_hit, smp))
    }
}

/// Both models' entropies on the evaluated samples (NaN rows reported).
fn sample_entropies(
    ex: &dyn Executor,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
) -> Result<Entropies> {
    let c = s.classes;
    let (pt, nan_pt) = entropies(ex, &smp.pt, c, o.temperature.0)?;
    let (ft, nan_ft) = entropies(ex, &smp.ft, c, o.temperature.1)?;
    warn_nan(&s.data, &smp.indices, "pretrained", &nan_pt);
    warn_nan(&s.data, &smp.indices, "fine-tuned", &nan_ft);
    Ok(Entropies { pt, ft })
}

/// λ per sample, and the entropy-offset constants (b, w) it used: over
/// the whole set when a merged expertise file is given.
fn lambdas(
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    ent: &Entropies,
    whole: Option<&Entropies>,
) -> (Vec<f32>, (f64, f64)) {
    let offset = lambda::offset_constants(whole.unwrap_or(ent));
    let inputs = lambda::Inputs {
        logits_pt: &smp.pt,
        logits_ft: &smp.ft,
        classes: s.classes,
        labels: &smp.labels,
        entropies: ent,
        offset,
    };
    (lambda::lambdas(o.rule, &inputs), offset)
}

/// The Beta mixture of a `bmm` run: fitted on the whole set when a merged
/// expertise file is given, else on the evaluated samples' λ.
fn fit_mixture(
    o: &EvalOptions,
    k: usize,
    lambda: &[f32],
    whole: Option<&Entropies>,
    offset: (f64, f64),
) -> Result<BetaMixture> {
    let fit_on = match whole {
        Some(full) => lambda::lambdas_of_entropies(o.rule, full, offset)?,
        None => lambda.to_vec(),
    };
    BetaMixture::fit(&fit_on, k, o.seed)
        .ok_or_else(|| crate::invalid!("cannot fit a mixture to no λ values"))
}

/// What the DaWin pass produced.
#[derive(Default)]
struct DawinPass {
    /// Projected logits, one row per evaluated sample.
    logits: Option<Vec<f32>>,
    bmm: Option<BetaMixture>,
    components: Option<Vec<usize>>,
}

fn dawin_pass(
    engine: &mut Engine,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    lambda: &[f32],
    mixture: Option<BetaMixture>,
) -> Result<DawinPass> {
    let components = mixture.as_ref().map(|m| m.predict(lambda));
    let means: Option<Vec<f32>> = mixture
        .as_ref()
        .map(|m| m.means().iter().map(|&v| v as f32).collect());
    let groups = components
        .as_deref()
        .zip(means.as_deref())
        .map(|(component, means)| Groups { component, means });
    let pass = o.pass();
    let raw = dawin_logits(
        engine,
        &s.data,
        &smp.indices,
        lambda,
        o.interp,
        groups,
        pass,
    )?;
    Ok(DawinPass {
        logits: Some(o.projection.apply(&raw, s.classes_raw)),
        bmm: mixture,
        components,
    })
}

/// Wall-clock seconds per phase, for summary.json.
struct Clock(BTreeMap<String, f64>, Instant);

impl Clock {
    /// Records the time since the last lap under `phase`.
    fn lap(&mut self, phase: &str) {
        self.0.insert(phase.into(), self.1.elapsed().as_secs_f64());
        self.1 = Instant::now();
    }
}

/// The settings that produced a run's results, for summary.json.
fn settings(
    o: &EvalOptions,
    s: &Setup,
    cache_hit: bool,
    engine: &Engine,
    offset: (f64, f64),
) -> serde_json::Value {
    serde_json::json!({
        "expertise": format!("{:?}", o.rule).to_lowercase(),
        "interp": o.interp.to_string(),
        "precision": o.precision.to_string(),
        "temperature": [o.temperature.0, o.temperature.1],
        "samples": s.shard.len(),
        "shard": o.shard.map(|(i, n)| format!("{i}/{n}")),
        "cache": if cache_hit { "hit" } else { "computed" },
        "lerps": engine.lerps,
        "lerps_skipped": engine.lerps_skipped,
        "device_param_bytes": engine.resident_bytes(),
        "offset": {"b": offset.0, "w": offset.1},
    })
}

/// λ per sample and what it came from.
struct Lambdas {
    entropies: Entropies,
    lambda: Vec<f32>,
    offset: (f64, f64),
    /// The whole set's entropies, from `--expertise-from`.
    whole: Option<Entropies>,
}

fn lambda_phase(ex: &dyn Executor, o: &EvalOptions, s: &Setup, smp: &Samples) -> Result<Lambdas> {
    let _phase = crate::exec::range(ex, "lambda");
    let whole = o
        .expertise_from
        .as_ref()
        .map(|p| read_expertise(p, s.data.len()))
        .transpose()?;
    let entropies = sample_entropies(ex, o, s, smp)?;
    let (lambda, offset) = lambdas(o, s, smp, &entropies, whole.as_ref());
    Ok(Lambdas {
        entropies,
        lambda,
        offset,
        whole,
    })
}

fn dawin_phase(
    engine: &mut Engine,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    l: &Lambdas,
) -> Result<DawinPass> {
    let _phase = crate::exec::range(engine.ex, "dawin pass");
    if !o.methods.contains(&Method::Dawin) {
        return Ok(DawinPass::default());
    }
    let mixture = match o.interp {
        Interp::Bmm(k) => Some(fit_mixture(o, k, &l.lambda, l.whole.as_ref(), l.offset)?),
        _ => None,
    };
    dawin_pass(engine, o, s, smp, &l.lambda, mixture)
}

pub fn run(o: &EvalOptions, ex: &dyn Executor) -> Result<EvalResult> {
    let mut clock = Clock(BTreeMap::new(), Instant::now());
    let s = Setup::open(o)?;
    clock.lap("load");
    let alphas = Method::wise_alphas(&o.methods);
    let mut engine = Engine::new(ex, &s.pt, &s.ft, o.precision)?;
    let phase = crate::exec::range(ex, "expertise pass");
    let (cache_hit, smp) = s.expertise(&mut engine, o, &alphas)?;
    drop(phase);
    clock.lap("expertise");
    let l = lambda_phase(ex, o, &s, &smp)?;
    clock.lap("lambda");
    let dawin = dawin_phase(&mut engine, o, &s, &smp, &l)?;
    clock.lap("dawin");
    let settings = settings(o, &s, cache_hit, &engine, l.offset);
    drop(engine);
    report_phase(o, ex, &s, smp, l, dawin, (settings, clock))
}

/// Every method's predictions, the reports and the terminal table.
fn report_phase(
    o: &EvalOptions,
    ex: &dyn Executor,
    s: &Setup,
    smp: Samples,
    l: Lambdas,
    dawin: DawinPass,
    (settings, mut clock): (serde_json::Value, Clock),
) -> Result<EvalResult> {
    let logits = Logits {
        pt: &smp.pt,
        ft: &smp.ft,
        wise: &smp.wise,
        dawin: dawin.logits.as_deref(),
        lambda: &l.lambda,
        classes: s.classes,
        temperature: o.temperature,
    };
    let predictions = predictions(&o.methods, &logits);
    let order: Vec<String> = o.methods.iter().map(Method::name).collect();
    let summary = report::write_all(&report::Report {
        out_dir: &o.out_dir,
        order: &order,
        predictions: &predictions,
        labels: &smp.labels,
        indices: &smp.indices,
        entropies: &l.entropies,
        lambda: &l.lambda,
        components: dawin.components.as_deref(),
        bmm: dawin.bmm.as_ref(),
        skipped: smp.skipped,
        device: &ex.name(),
        seconds: &mut clock.0,
        extra: settings,
        t0: Instant::now(),
    })?;
    Ok(EvalResult {
        table: report::table(&order, &summary),
        summary,
        indices: smp.indices,
        lambdas: l.lambda,
        entropies: l.entropies,
        dawin_logits: dawin.logits,
        predictions,
    })
}

/// `dawin expertise`: only the expertise pass (its logits cached in the
/// output folder for a later `eval` of the same shard) and both models'
/// entropies on the shard's readable samples.
pub fn run_expertise(o: &EvalOptions, ex: &dyn Executor) -> Result<ExpertiseResult> {
    let s = Setup::open(o)?;
    let mut engine = Engine::new(ex, &s.pt, &s.ft, o.precision)?;
    let (_, smp) = s.expertise(&mut engine, o, &[])?;
    drop(engine);
    let entropies = sample_entropies(ex, o, &s, &smp)?;
    Ok(ExpertiseResult {
        indices: smp.indices,
        entropies,
        total: s.data.len(),
    })
}

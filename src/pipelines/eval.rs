//! `dawin eval` and `dawin expertise` as chains of named phases: open the
//! models and data, the expertise pass (cached), λ per sample, the DaWin
//! pass under one interpolation, the baselines' predictions and the
//! reports.

use crate::choice::Choice;
use crate::error::Result;
use crate::exec::Executor;
use crate::method::bmm::BetaMixture;
use crate::method::engine::Engine;
use crate::method::entropy::{entropies, warn_nan};
use crate::method::interp::{BMM_AUTO_MAX_K, Groups, Interp, dawin_logits};
use crate::method::lambda::{self, Entropies};
use crate::method::methods::{Logits, Method, argmax_rows, outcomes};
use crate::method::stats;
use crate::pipelines::expertise::Samples;
use crate::pipelines::setup::{Setup, check_expertise_from, skipped_lines};
use crate::pipelines::shard::{ExpertiseResult, read_expertise};
use crate::report::components;
use crate::report::results::Report;
use crate::report::samples_csv;
use crate::report::summary;
use crate::tensorfile::write_atomic;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

pub use crate::pipelines::options::EvalOptions;

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
/// the whole set when a merged expertise file is given. `--wise-alpha`
/// scales every rule's λ but the random baselines', as the official code.
fn lambdas(
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    ent: &Entropies,
    whole: Option<&Entropies>,
) -> (Vec<f32>, (f64, f64)) {
    let offset = lambda::offset_constants(whole.unwrap_or(ent));
    let inputs = rule_inputs(o, s, smp, ent, offset);
    let mut l = lambda::lambdas(o.rule, &inputs);
    if let Some(a) = o.wise_alpha.filter(|_| !o.rule.is_random()) {
        l.iter_mut().for_each(|v| *v *= a);
    }
    (l, offset)
}

/// What the λ rules read, from the expertise pass's samples.
fn rule_inputs<'a>(
    o: &EvalOptions,
    s: &Setup,
    smp: &'a Samples,
    ent: &'a Entropies,
    offset: (f64, f64),
) -> lambda::Inputs<'a> {
    lambda::Inputs {
        logits_pt: &smp.pt,
        logits_ft: &smp.ft,
        classes: s.classes,
        labels: &smp.labels,
        entropies: ent,
        offset,
        temperature: o.temperature,
        raw_max: Some((&smp.raw_max.0, &smp.raw_max.1)),
        merged: smp
            .wise
            .get(&Method::WiseFt(o.pseudo_alpha()).name())
            .map(Vec::as_slice),
        indices: &smp.indices,
        seed: o.seed,
    }
}

/// The λ values a `bmm` run fits: the whole set's when a merged expertise
/// file is given, else the evaluated samples'.
fn fit_values(
    o: &EvalOptions,
    lambda: &[f32],
    whole: Option<&Entropies>,
    offset: (f64, f64),
) -> Result<Vec<f32>> {
    match whole {
        Some(full) => lambda::lambdas_of_entropies(o.rule, full, offset),
        None => Ok(lambda.to_vec()),
    }
}

/// The Beta mixture of a `bmm:K` run.
fn fit_mixture(o: &EvalOptions, k: usize, fit_on: &[f32]) -> Result<BetaMixture> {
    let n = fit_on.len();
    if k > n {
        return Err(crate::invalid!(
            "--interp bmm:{k} asks for {k} components from {n} λ values: use K ≤ {n} (the official runs use 3)"
        ));
    }
    if n < 5 * k {
        crate::reporter::warn(&format!(
            "bmm:{k} on {n} λ values: under 5 samples per component, the fit is loose (the official runs use K = 3)"
        ));
    }
    BetaMixture::fit(fit_on, k, o.seed)
        .ok_or_else(|| crate::invalid!("cannot fit a mixture to no λ values"))
}

/// `bmm:auto`: fits K = 1…8 (at most one per 5 values) and keeps the
/// lowest BIC; each K's log-likelihood and BIC go to summary.json.
fn fit_mixture_auto(o: &EvalOptions, fit_on: &[f32]) -> Result<(BetaMixture, Value)> {
    let top = BMM_AUTO_MAX_K.min(fit_on.len() / 5).max(1);
    let mut best: Option<(f64, BetaMixture)> = None;
    let mut table = Vec::new();
    for k in 1..=top {
        let m = BetaMixture::fit(fit_on, k, o.seed)
            .ok_or_else(|| crate::invalid!("cannot fit a mixture to no λ values"))?;
        let bic = m.bic(fit_on);
        let ll = m.total_log_likelihood(fit_on);
        table.push(serde_json::json!({"k": k, "log_likelihood": ll, "bic": bic}));
        if best.as_ref().is_none_or(|(b, _)| bic < *b) {
            best = Some((bic, m));
        }
    }
    let (_, m) = best.expect("K = 1 was fitted");
    let chosen = m.weights.len();
    Ok((
        m,
        serde_json::json!({"criterion": "bic", "chosen_k": chosen, "fits": table}),
    ))
}

/// What the DaWin pass produced.
#[derive(Default)]
struct DawinPass {
    /// Projected logits, one row per evaluated sample.
    logits: Option<Vec<f32>>,
    bmm: Option<BetaMixture>,
    components: Option<Vec<usize>>,
    /// Every K `bmm:auto` fitted, with its log-likelihood and BIC.
    selection: Option<Value>,
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
        selection: None,
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
    l: &Lambdas,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "expertise": o.rule.name(),
        "wise_alpha": o.wise_alpha,
        "interp": o.interp.to_string(),
        "precision": o.precision.to_string(),
        "temperature": [o.temperature.0, o.temperature.1],
        "samples": s.shard.len(),
        "shard": o.shard.map(|(i, n)| format!("{i}/{n}")),
        "cache": if cache_hit { "hit" } else { "computed" },
        "lerps": engine.lerps,
        "lerps_skipped": engine.lerps_skipped,
        "device_param_bytes": engine.resident_bytes(),
    });
    // The offset constants only where the rule uses them.
    if o.rule == crate::method::lambda::LambdaRule::EntropyOffset {
        v["offset"] = serde_json::json!({"b": l.offset.0, "w": l.offset.1, "over": "entropies"});
    }
    if let Some((b, w)) = l.loss_offset {
        v["offset"] = serde_json::json!({"b": b, "w": w, "over": "losses"});
    }
    if o.rule.uses_labels() {
        v["uses_labels"] = true.into();
    }
    v
}

/// λ per sample and what it came from.
struct Lambdas {
    entropies: Entropies,
    lambda: Vec<f32>,
    offset: (f64, f64),
    /// (b, w) over the losses, for the loss rules with an offset.
    loss_offset: Option<(f64, f64)>,
    /// The oracle's λ (from the labels), which the diagnostics compare with.
    oracle: Vec<f32>,
    /// The whole set's entropies, from `--expertise-from`.
    whole: Option<Entropies>,
}

/// The loss rules with an offset need every sample's logits for their
/// constants, which a merged expertise file (entropies only) lacks; a
/// shard alone would give other constants than the whole set.
fn check_set_level(o: &EvalOptions) -> Result<()> {
    if !o.rule.loss_offset() {
        return Ok(());
    }
    if o.expertise_from.is_some() {
        return Err(crate::invalid!(
            "--expertise {} sets its offset from every sample's losses, which --expertise-from (entropies only) does not hold: run it without --shard",
            o.rule.name()
        ));
    }
    if o.shard.is_some() {
        crate::reporter::warn(&format!(
            "--expertise {} on a shard: its loss offset (b, w) comes from this shard's samples only, so shards differ from one whole run",
            o.rule.name()
        ));
    }
    Ok(())
}

fn lambda_phase(ex: &dyn Executor, o: &EvalOptions, s: &Setup, smp: &Samples) -> Result<Lambdas> {
    let _phase = crate::exec::range(ex, "lambda");
    check_set_level(o)?;
    let whole = match &o.expertise_from {
        Some(p) => {
            let (whole, found) = read_expertise(p, s.data.len())?;
            check_expertise_from(p, &s.expertise_provenance(o), found)?;
            Some(whole)
        }
        None => None,
    };
    let entropies = sample_entropies(ex, o, s, smp)?;
    let (lambda, offset) = lambdas(o, s, smp, &entropies, whole.as_ref());
    let inputs = rule_inputs(o, s, smp, &entropies, offset);
    let loss_offset = lambda::loss_offset_constants(o.rule, &inputs);
    let oracle = lambda::lambdas(lambda::LambdaRule::Oracle, &inputs);
    Ok(Lambdas {
        oracle,
        entropies,
        lambda,
        offset,
        loss_offset,
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
    let (mixture, selection) = match o.interp {
        Interp::Bmm(k) => {
            let fit_on = fit_values(o, &l.lambda, l.whole.as_ref(), l.offset)?;
            (Some(fit_mixture(o, k, &fit_on)?), None)
        }
        Interp::BmmAuto => {
            let fit_on = fit_values(o, &l.lambda, l.whole.as_ref(), l.offset)?;
            let (m, table) = fit_mixture_auto(o, &fit_on)?;
            (Some(m), Some(table))
        }
        _ => (None, None),
    };
    let mut pass = dawin_pass(engine, o, s, smp, &l.lambda, mixture)?;
    pass.selection = selection;
    Ok(pass)
}

pub fn run(o: &EvalOptions, ex: &dyn Executor) -> Result<EvalResult> {
    let mut clock = Clock(BTreeMap::new(), Instant::now());
    check_save_components(o)?;
    let s = Setup::open(o)?;
    clock.lap("load");
    let alphas = o.expertise_alphas();
    let mut engine = Engine::new(ex, &s.pt, &s.ft, o.precision)?;
    let phase = crate::exec::range(ex, "expertise pass");
    let (cache_hit, smp) = s.expertise(&mut engine, o, &alphas)?;
    drop(phase);
    clock.lap("expertise");
    let l = lambda_phase(ex, o, &s, &smp)?;
    clock.lap("lambda");
    let dawin = dawin_phase(&mut engine, o, &s, &smp, &l)?;
    clock.lap("dawin");
    let mut settings = settings(o, &s, cache_hit, &engine, &l);
    if let Some(t) = &dawin.selection {
        settings["bmm_selection"] = t.clone();
    }
    drop(engine);
    if let Some(files) = save_components(o, &s, &dawin)? {
        settings["components"] = files;
        clock.lap("save_components");
    }
    report_phase(o, ex, &s, smp, l, dawin, (settings, clock))
}

/// `--save-components` needs a mixture to save and a folder that holds no
/// other run's components; both are checked before the passes.
fn check_save_components(o: &EvalOptions) -> Result<()> {
    let Some(dir) = &o.save_components else {
        return Ok(());
    };
    if !matches!(o.interp, Interp::Bmm(_) | Interp::BmmAuto) {
        return Err(crate::invalid!(
            "--save-components saves the K merged models of a Beta mixture: use it with --interp bmm[:K] or bmm:auto (this run is {})",
            o.interp
        ));
    }
    if !o.methods.contains(&Method::Dawin) {
        return Err(crate::invalid!(
            "--save-components needs the dawin method in --methods"
        ));
    }
    components::check_dir(dir)
}

/// Writes the mixture's merged models (`--save-components`); the folder and
/// files for summary.json.
fn save_components(o: &EvalOptions, s: &Setup, dawin: &DawinPass) -> Result<Option<Value>> {
    let (Some(dir), Some(m), Some(members)) = (&o.save_components, &dawin.bmm, &dawin.components)
    else {
        return Ok(None);
    };
    let files = components::save(dir, (&s.pt, &s.ft), m, members, &s.provenance(o))?;
    crate::reporter::note(&format!(
        "saved {} merged models to {}",
        files.len(),
        dir.display()
    ));
    Ok(Some(serde_json::json!({
        "dir": dir.display().to_string(),
        "files": files.iter().map(|f| f.file_name().unwrap_or_default().to_string_lossy().to_string()).collect::<Vec<_>>(),
    })))
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
        labels: &smp.labels,
    };
    let outcomes = outcomes(&o.methods, &logits);
    let mut scores = BTreeMap::new();
    let mut predictions = BTreeMap::new();
    for (name, out) in outcomes {
        scores.insert(name.clone(), out.scores);
        predictions.insert(name, out.pred);
    }
    let mut order: Vec<String> = o.methods.iter().map(Method::name).collect();
    let provenance = s.provenance(o);
    let previous = carry_over(s, &provenance, &smp.indices, &mut order, &mut predictions)?;
    let mut settings = settings;
    settings["provenance"] = provenance;
    settings["previous"] = previous.map_or(Value::Null, |p| p.display().to_string().into());
    let paths: Option<Vec<String>> = s.data.is_folder().then(|| {
        let path = |i: usize| s.data.sample_path(i).map(|p| p.display().to_string());
        smp.indices
            .iter()
            .map(|&i| path(i).unwrap_or_default())
            .collect()
    });
    let stage = s.out.stage()?;
    let title = format!(
        "DaWin λ per sample: {} ({}, {})",
        o.data.file_name().unwrap_or_default().to_string_lossy(),
        o.rule.name(),
        o.interp
    );
    let name = |p: &std::path::Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string()
    };
    let subtitle = format!(
        ", pretrained {}, fine-tuned {}{}",
        name(&o.pretrained),
        name(&o.finetuned),
        dawin
            .bmm
            .as_ref()
            .map_or(String::new(), |b| format!(", K = {}", b.weights.len()))
    );
    let summary = summary::write_all(&Report {
        out_dir: &stage.dir,
        order: &order,
        predictions: &predictions,
        labels: &smp.labels,
        indices: &smp.indices,
        entropies: &l.entropies,
        lambda: &l.lambda,
        components: dawin.components.as_deref(),
        bmm: dawin.bmm.as_ref(),
        paths: paths.as_deref(),
        skipped: smp.skipped,
        device: &ex.name(),
        seconds: &mut clock.0,
        extra: settings,
        t0: Instant::now(),
        title: &title,
        subtitle: &subtitle,
        scores: &scores,
        bootstrap: (o.bootstrap, o.seed),
        diagnostics: lambda_diagnostics(s, &smp, &l),
        oracle_lambda: Some(&l.oracle),
    })?;
    if s.data.is_folder() {
        write_atomic(
            &stage.dir.join("classes.txt"),
            (s.data.classes.join("\n") + "\n").as_bytes(),
        )?;
    }
    let skipped = skipped_lines(&s.data, &smp.failed);
    if !skipped.is_empty() {
        write_atomic(&stage.dir.join("skipped.txt"), skipped.as_bytes())?;
    }
    stage.commit(&s.out, "summary.json")?;
    Ok(EvalResult {
        table: summary::table(&order, &summary),
        summary,
        indices: smp.indices,
        lambdas: l.lambda,
        entropies: l.entropies,
        dawin_logits: dawin.logits,
        predictions,
    })
}

/// How well each model's entropy tells its right answers from its wrong
/// ones (AUROC of −H against correctness), and how close λ comes to the
/// oracle λ (Pearson's r).
fn lambda_diagnostics(s: &Setup, smp: &Samples, l: &Lambdas) -> Value {
    let correct = |z: &[f32]| -> Vec<bool> {
        let pred = argmax_rows(z, s.classes);
        pred.iter()
            .zip(&smp.labels)
            .map(|(p, y)| *p as i64 == *y)
            .collect()
    };
    let neg = |h: &[f64]| h.iter().map(|v| -v).collect::<Vec<_>>();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    serde_json::json!({
        "auroc_entropy_pt": stats::auroc(&neg(&l.entropies.pt), &correct(&smp.pt)),
        "auroc_entropy_ft": stats::auroc(&neg(&l.entropies.ft), &correct(&smp.ft)),
        "corr_oracle": stats::pearson(&wide(&l.lambda), &wide(&l.oracle)),
        "oracle_mean": l.oracle.iter().map(|&v| v as f64).sum::<f64>() / l.oracle.len().max(1) as f64,
    })
}

/// The files of one run's result set in the output folder.
pub const OUTPUTS: [&str; 6] = [
    "summary.json",
    "samples.csv",
    "lambdas.svg",
    "lambda_oracle.svg",
    "classes.txt",
    "skipped.txt",
];

/// Keeps what an earlier run left in the output folder: with the same
/// inputs, settings and samples, the methods this run did not rerun join
/// its results; otherwise the earlier set moves to `previous/` (returned).
fn carry_over(
    s: &Setup,
    provenance: &Value,
    indices: &[usize],
    order: &mut Vec<String>,
    predictions: &mut BTreeMap<String, Vec<usize>>,
) -> Result<Option<PathBuf>> {
    let summary = s.out.path.join("summary.json");
    if !summary.exists() {
        return Ok(None);
    }
    let before: Option<Value> = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let prov = before.as_ref().map(|b| &b["provenance"]);
    let same = prov.is_some_and(|p| {
        p["set_key"] == provenance["set_key"] && p["shard"] == provenance["shard"]
    });
    if same
        && let Some(old) = samples_csv::read_predictions(&s.out.path.join("samples.csv"), indices)
    {
        for (m, p) in old {
            if let std::collections::btree_map::Entry::Vacant(e) = predictions.entry(m.clone()) {
                order.push(m);
                e.insert(p);
            }
        }
        return Ok(None);
    }
    let moved = s.out.move_aside(&OUTPUTS)?;
    crate::reporter::note(&format!(
        "{} held the results of {}; moved them to {}",
        s.out.path.display(),
        if same {
            "the same inputs and settings on other samples"
        } else {
            "another run (other inputs or settings)"
        },
        moved.display()
    ));
    Ok(Some(moved))
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
        provenance: s.expertise_provenance(o),
        out: s.out,
    })
}

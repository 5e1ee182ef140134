//! Multi-task DaWin (`dawin eval-mtl`): per-sample coefficients over T task
//! vectors, c = softmax_t(−H_t(x)) where H_t is the entropy of θ0 + τ_t with
//! the evaluated task's head, and the merged model θ = θ0 + Σ_t s·T·c_t·τ_t.
//!
//! Each sample's merged model is evaluated exactly, in one of two ways
//! (`--per-sample`): `exact`, batched, where θ0 and the task models are
//! stacked in one allocation and every parameterised op merges per row
//! (gemm_multi, layernorm_multi, embed_add_multi: the output of an affine
//! op under θ0 + Σ k_t τ_t is θ0's output plus Σ k_t times the difference of
//! task t's), or `materialize`, the official way, each sample's model built
//! in one working buffer (a copy of θ0 plus T scaled task vectors,
//! `add_scaled_diff`) and run at batch 1. The baselines are task arithmetic
//! (θ0 + s·Σ τ_t), the one-model merges and each task model alone.

use crate::data::dataset::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::method::dirichlet::DomainFit;
use crate::method::entropy::entropies;
use crate::method::interp::PerSample;
use crate::method::merging::TiesMerge;
use crate::method::methods::argmax_rows;
use crate::method::multitask::{coefficients, mean_coefficients, merge_into, ties_model};
use crate::model::batch::BatchCap;
use crate::model::placed::{PlacedModel, Precision};
use crate::model::stack::ModelStack;
use crate::model::vit::{forward_images, forward_stacked_images};
use crate::model::{Model, Overrides, head_file};
use crate::report::outdir::{Earlier, OutDir};
use crate::report::summary::{accuracy, methods_table, write_json};
use crate::reporter;
use crate::tensorfile::write_atomic;
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone)]
pub struct MtlOptions {
    pub base: PathBuf,
    pub tasks: Vec<PathBuf>,
    /// Which task's data and head are evaluated (0-based into `tasks`).
    pub task_index: usize,
    pub data: PathBuf,
    pub out_dir: PathBuf,
    /// Task-vector scale s (0.3 in the paper).
    pub scale: f32,
    pub batch_size: usize,
    pub overrides: Overrides,
    pub progress: bool,
    /// TIES: the fraction of each task vector kept, the aggregation and the
    /// scale of the merged task vector.
    pub ties: (f64, TiesMerge, f32),
    /// Each task's head as its own file, in `tasks` order (`--head-files`);
    /// empty: the heads are in the task models.
    pub heads: Vec<PathBuf>,
    /// How each sample's own merged model is evaluated.
    pub per_sample: PerSample,
    /// Dirichlet-mixture groupings for extra domain-wise rows
    /// (`--domain-fit`), each `dawin-domain:FIT`.
    pub domain_fits: Vec<DomainFit>,
    /// Eval's pixel cache folder for image-folder data (`--pixel-cache`);
    /// `None` decodes every pass.
    pub pixel_cache: Option<PathBuf>,
}

pub struct MtlResult {
    pub summary: serde_json::Value,
    /// Per sample, per task: c_t.
    pub coefficients: Vec<Vec<f32>>,
    /// Per sample: logits of its own merged model.
    pub dawin_logits: Vec<f32>,
    /// Each one-model merge's logits (dawin-domain, weight-average, ties),
    /// one row per evaluated sample.
    pub static_logits: Vec<(String, Vec<f32>)>,
    pub table: String,
}

/// The base and task models, each with the evaluated task's head (so all
/// share one layout), and that head's class count.
/// A task model listed twice is merged twice (its task vector counted
/// double): legal, but rarely meant.
fn warn_repeated_tasks(tasks: &[PathBuf]) {
    let mut seen = std::collections::HashMap::new();
    for (i, p) in tasks.iter().enumerate() {
        let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if let Some(j) = seen.insert(key, i) {
            crate::reporter::warn(&format!(
                "--tasks lists {} twice (task {} and task {}): its task vector is merged twice",
                p.display(),
                j + 1,
                i + 1
            ));
        }
    }
}

fn load_models(o: &MtlOptions) -> Result<(Model, Vec<Model>, usize)> {
    let t_count = o.tasks.len();
    if t_count == 0 {
        return Err(crate::invalid!("--tasks needs at least one model"));
    }
    if o.task_index >= t_count {
        return Err(crate::invalid!(
            "--task-index {} but only {t_count} task models",
            o.task_index
        ));
    }
    if !o.scale.is_finite() {
        return Err(crate::invalid!(
            "--scale must be a finite number, got {}",
            o.scale
        ));
    }
    warn_repeated_tasks(&o.tasks);
    let eval_path = &o.tasks[o.task_index];
    let eval_task = with_head_file(Model::load_warn(eval_path, o.overrides)?, o)?;
    let classes = eval_task.spec.classes.ok_or_else(|| {
        Error::file(
            eval_path,
            "has no classification head (give the heads as files with --head-files)",
        )
    })?;
    let base = Model::load_warn(&o.base, o.overrides)?.with_head_of(&eval_task);
    let mut tasks = Vec::with_capacity(t_count);
    for p in &o.tasks {
        // The evaluated task's warnings were printed above.
        let m = if p == eval_path {
            eval_task.clone()
        } else {
            Model::load_warn(p, o.overrides)?.with_head_of(&eval_task)
        };
        let diffs = base.shape_differences(&m);
        if !diffs.is_empty() {
            let shown: Vec<String> = diffs.into_iter().take(10).collect();
            return Err(crate::invalid!(
                "{} and {} have different architectures: {}",
                o.base.display(),
                p.display(),
                shown.join("; ")
            ));
        }
        tasks.push(m);
    }
    Ok((base, tasks, classes))
}

/// The evaluated task's model with its head from `--head-files`, when given.
fn with_head_file(task: Model, o: &MtlOptions) -> Result<Model> {
    if o.heads.is_empty() {
        return Ok(task);
    }
    if o.heads.len() != o.tasks.len() {
        return Err(crate::invalid!(
            "--head-files lists {} files for {} task models (one per task, in --tasks order)",
            o.heads.len(),
            o.tasks.len()
        ));
    }
    let h = head_file::read(&o.heads[o.task_index], task.spec.embed_dim)?;
    Ok(task.with_head(Some((h.w, h.b)), Some(h.classes)))
}

/// The base and task models stacked on the executor, and the working
/// buffer of the one-model merges.
struct Resident<'a> {
    stack: ModelStack<'a>,
    work: PlacedModel<'a>,
}

impl Resident<'_> {
    fn base(&self) -> PlacedModel<'_> {
        self.stack.model(0)
    }

    /// Task model `t` (0-based).
    fn task(&self, t: usize) -> PlacedModel<'_> {
        self.stack.model(t + 1)
    }

    fn tasks(&self) -> usize {
        self.stack.sets() - 1
    }

    /// `work = θ0 + Σ_t k_t·(θ_t − θ0)`.
    fn merge(&self, ex: &dyn Executor, k: impl Fn(usize) -> f32) -> Result<()> {
        merge_into(ex, &self.work, &self.stack, k)
    }
}

/// Writes each row of `logits[batch, c]` into `all` at the sample's index.
fn scatter(all: &mut [f32], b: &Batch, logits: &[f32], c: usize) {
    for (k, &i) in b.indices.iter().enumerate() {
        all[i * c..(i + 1) * c].copy_from_slice(&logits[k * c..(k + 1) * c]);
    }
}

/// Logits of every sample: each task model's, and task arithmetic's.
struct FirstPass {
    tasks: Vec<Vec<f32>>,
    arithmetic: Vec<f32>,
    /// The readable samples.
    readable: Vec<usize>,
}

fn first_pass(
    ex: &dyn Executor,
    r: &Resident,
    data: &Dataset,
    o: &MtlOptions,
    c: usize,
) -> Result<FirstPass> {
    let n = data.len();
    r.merge(ex, |_| o.scale)?;
    let mut p = FirstPass {
        tasks: vec![vec![0.0; n * c]; r.tasks()],
        arithmetic: vec![0.0; n * c],
        readable: Vec::new(),
    };
    let all: Vec<usize> = (0..n).collect();
    let pb = reporter::progress(n, "tasks", o.progress);
    let logits = |m: &PlacedModel, b: &Batch| -> Result<Vec<f32>> {
        let out = forward_images(ex, m, b.pixels.view(), b.indices.len(), None)?;
        Ok(out.logits.unwrap_or_default())
    };
    data.for_each_batch(&all, o.batch_size, |b| {
        for (i, e) in &b.failed {
            reporter::warn(&format!("skipped {}: {e}", data.describe(*i)));
        }
        if !b.indices.is_empty() {
            for t in 0..r.tasks() {
                scatter(&mut p.tasks[t], &b, &logits(&r.task(t), &b)?, c);
            }
            scatter(&mut p.arithmetic, &b, &logits(&r.work, &b)?, c);
            p.readable.extend(&b.indices);
        }
        pb.inc((b.indices.len() + b.failed.len()) as u64);
        Ok(())
    })?;
    pb.finish();
    p.readable.sort_unstable();
    Ok(p)
}

pub fn run(o: &MtlOptions, ex: &dyn Executor) -> Result<MtlResult> {
    let t0 = Instant::now();
    let (base, tasks, c) = load_models(o)?;
    let model_settings = json!({
        "base": base.settings_record(),
        "tasks": tasks.iter().map(Model::settings_record).collect::<Vec<_>>(),
    });
    let out = OutDir::lock(&o.out_dir)?;
    let mut data = Dataset::open(&o.data, base.spec.image_size)?;
    data.check_labels(c)?;
    // Every pass reads every image: a folder is decoded once.
    let folder_cache = o.pixel_cache.as_deref().filter(|_| data.is_folder());
    let pixel_cache = folder_cache.and_then(|dir| {
        let fingerprint = data.fingerprint();
        data.attach_pixel_cache(dir, &fingerprint, true)
    });
    let stacked: Vec<&Model> = std::iter::once(&base).chain(&tasks).collect();
    let resident = Resident {
        stack: ModelStack::upload(ex, &stacked)?,
        work: PlacedModel::alloc_like(ex, &base, Precision::F32)?,
    };
    let n = data.len();
    let first = first_pass(ex, &resident, &data, o, c)?;
    let t_count = tasks.len();
    let entropies: Vec<Vec<f64>> = first
        .tasks
        .iter()
        .map(|l| entropies(ex, l, c, 1.0).map(|e| e.0))
        .collect::<Result<_>>()?;
    let coefficients = coefficients(&entropies, n);

    // Each sample through its own merged model.
    let t_dawin = Instant::now();
    let k = |i: usize, t: usize| o.scale * t_count as f32 * coefficients[i][t];
    let dawin = per_sample_logits(ex, &resident, &data, &first.readable, o, &k)?;
    let dawin_seconds = t_dawin.elapsed().as_secs_f64();
    let mean_coef = mean_coefficients(&coefficients, &first.readable);
    let mut statics = static_merges(
        ex,
        &resident,
        (&base, &tasks),
        &data,
        &first.readable,
        o,
        &mean_coef,
    )?;
    let (fitted, fits) = domain_fits(ex, &resident, &data, &first.readable, o, &coefficients)?;
    statics.extend(fitted);
    drop(resident);

    let idx = &first.readable;
    let pick = |v: &[f32]| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| v[i * c..(i + 1) * c].to_vec())
            .collect()
    };
    let rows = |v: &[f32]| -> Vec<usize> {
        let picked: Vec<f32> = idx
            .iter()
            .flat_map(|&i| v[i * c..(i + 1) * c].to_vec())
            .collect();
        argmax_rows(&picked, c)
    };
    let mut order = vec!["dawin".to_string(), "task-arithmetic".to_string()];
    let mut preds = vec![rows(&dawin), rows(&first.arithmetic)];
    for (name, l) in &statics {
        order.push(name.clone());
        preds.push(rows(l));
    }
    for (t, l) in first.tasks.iter().enumerate() {
        order.push(format!("task:{t}"));
        preds.push(rows(l));
    }
    let labels: Vec<i64> = idx.iter().map(|&i| data.labels[i]).collect();
    let methods: serde_json::Map<String, serde_json::Value> = order
        .iter()
        .zip(&preds)
        .map(|(name, p)| {
            let mut v = accuracy(p, &labels);
            let correct: Vec<bool> = p
                .iter()
                .zip(&labels)
                .map(|(a, y)| *a as i64 == *y)
                .collect();
            v["ci95"] = json!(crate::method::stats::bootstrap_ci95(
                &correct,
                crate::method::stats::BOOTSTRAP_RESAMPLES,
                1
            ));
            (name.clone(), v)
        })
        .collect();
    let mut summary = json!({
        "methods": methods,
        "task_index": o.task_index,
        "tasks": o.tasks.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "scale": o.scale,
        "dawin_domain_coefficients": mean_coef,
        "dawin_domain_fits": fits,
        "ties": {"keep": o.ties.0, "merge": format!("{:?}", o.ties.1).to_lowercase(), "scale": o.ties.2},
        "skipped": n - idx.len(),
        "device": ex.name(),
        "per_sample": format!("{:?}", o.per_sample).to_lowercase(),
        "seconds": {"total": t0.elapsed().as_secs_f64(), "dawin": dawin_seconds},
        "model_settings": model_settings,
    });
    if let Some(c) = &pixel_cache {
        summary["pixel_cache"] = c.record(data.pixel_cache_filled()).into();
    }
    let csv = samples_csv(&order, &preds, idx, &labels, &entropies, &coefficients);
    let stage = out.stage()?;
    write_atomic(&stage.dir.join("samples.csv"), csv.as_bytes())?;
    write_json(&stage.dir.join("summary.json"), &summary)?;
    // An earlier set (of eval-mtl or of another command) leaves whole.
    let outputs = crate::pipelines::eval::OUTPUTS;
    let earlier = if out.holds_any(&outputs) {
        Earlier::MoveTo(out.previous_path())
    } else {
        Earlier::Keep
    };
    stage.commit(&out, &outputs, "summary.json", earlier)?;
    Ok(MtlResult {
        table: methods_table(&order, &summary),
        summary,
        coefficients: idx.iter().map(|&i| coefficients[i].clone()).collect(),
        dawin_logits: pick(&dawin),
        static_logits: statics.iter().map(|(k, l)| (k.clone(), pick(l))).collect(),
    })
}

/// Each readable sample's logits from its own merged model θ0 + Σ_t k(i, t)·τ_t:
/// a whole batch at a time through the stacked ops (`exact`), or each
/// sample's model built in the working buffer and run at batch 1
/// (`materialize`).
fn per_sample_logits(
    ex: &dyn Executor,
    r: &Resident,
    data: &Dataset,
    readable: &[usize],
    o: &MtlOptions,
    k: &dyn Fn(usize, usize) -> f32,
) -> Result<Vec<f32>> {
    let c = r.base().spec.classes.unwrap_or(0);
    if o.per_sample == PerSample::Materialize {
        return second_pass(data, readable, (1, c, "dawin-mtl", o.progress), |b| {
            let i = b.indices[0];
            r.merge(ex, |t| k(i, t))?;
            let out = forward_images(ex, &r.work, b.pixels.view(), 1, None)?;
            Ok(out.logits.unwrap_or_default())
        });
    }
    let cap = BatchCap::new(o.batch_size);
    let pass = (o.batch_size, c, "dawin-mtl", o.progress);
    second_pass(data, readable, pass, |b| {
        let img = b.pixels.len() / b.indices.len().max(1);
        let mut logits = Vec::with_capacity(b.indices.len() * c);
        cap.run(
            b.indices.len(),
            |start, cnt| {
                let rows = &b.indices[start..start + cnt];
                let coef: Vec<f32> = rows
                    .iter()
                    .flat_map(|&i| (0..r.tasks()).map(move |t| k(i, t)))
                    .collect();
                let px = b.pixels.view().slice(start * img..(start + cnt) * img);
                forward_stacked_images(ex, &r.stack, px, cnt, &coef)
            },
            |_, out| logits.extend(out.logits.unwrap_or_default()),
        )?;
        Ok(logits)
    })
}

/// A pass over the samples the first pass read, in batches, `logits`
/// giving each batch's `[batch, c]` rows; the result has them at the
/// samples' dataset indices. A sample that no longer reads is an error
/// (the first pass's coefficients would not match the data). `pass` is
/// (batch size, classes, progress label, whether to show progress).
fn second_pass(
    data: &Dataset,
    readable: &[usize],
    (batch, c, label, progress): (usize, usize, &str, bool),
    mut logits: impl FnMut(&Batch) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let mut all = vec![0.0; data.len() * c];
    let pb = reporter::progress(readable.len(), label, progress);
    data.for_each_batch(readable, batch, |b| {
        if let Some((i, e)) = b.failed.first() {
            return Err(crate::invalid!(
                "{} could not be read on a second pass: {e}",
                data.describe(*i)
            ));
        }
        if !b.indices.is_empty() {
            scatter(&mut all, &b, &logits(&b)?, c);
        }
        pb.inc(b.indices.len() as u64);
        Ok(())
    })?;
    pb.finish();
    Ok(all)
}

/// Logits of every readable sample from each one-model merge: DaWin's
/// domain-wise model θ0 + s·T·Σ c̄_t·τ_t, weight averaging θ0 + Σ τ_t / T,
/// and TIES θ0 + s_ties·τ_ties.
fn static_merges(
    ex: &dyn Executor,
    r: &Resident,
    (base, tasks): (&Model, &[Model]),
    data: &Dataset,
    readable: &[usize],
    o: &MtlOptions,
    mean_coef: &[f32],
) -> Result<Vec<(String, Vec<f32>)>> {
    let t_count = r.tasks() as f32;
    let mut out = Vec::new();
    r.merge(ex, |t| o.scale * t_count * mean_coef[t])?;
    out.push((
        "dawin-domain".into(),
        model_logits(ex, &r.work, data, readable, o, "dawin-domain")?,
    ));
    r.merge(ex, |_| 1.0 / t_count)?;
    out.push((
        "weight-average".into(),
        model_logits(ex, &r.work, data, readable, o, "weight-average")?,
    ));
    let ties = ties_model(base, tasks, o.ties);
    let resident = PlacedModel::upload(ex, &ties)?;
    out.push((
        "ties".into(),
        model_logits(ex, &resident, data, readable, o, "ties")?,
    ));
    Ok(out)
}

/// `--domain-fit`'s rows (`pipelines::mtl_domain`), each component's model
/// merged in the working buffer at its mean coefficients.
fn domain_fits(
    ex: &dyn Executor,
    r: &Resident,
    data: &Dataset,
    readable: &[usize],
    o: &MtlOptions,
    coefficients: &[Vec<f32>],
) -> Result<(crate::pipelines::mtl_domain::NamedLogits, serde_json::Value)> {
    let scale = o.scale * r.tasks() as f32;
    let c = r.base().spec.classes.unwrap_or(0);
    let mut eval_at = |mean: &[f64], members: &[usize], name: &str| {
        r.merge(ex, |t| scale * mean[t] as f32)?;
        model_logits(ex, &r.work, data, members, o, name)
    };
    crate::pipelines::mtl_domain::fitted_merges(
        &o.domain_fits,
        readable,
        coefficients,
        (data.len(), c),
        &mut eval_at,
    )
}

/// One model's logits on every readable sample (rows at dataset indices).
fn model_logits(
    ex: &dyn Executor,
    m: &PlacedModel,
    data: &Dataset,
    readable: &[usize],
    o: &MtlOptions,
    label: &str,
) -> Result<Vec<f32>> {
    let c = m.spec.classes.unwrap_or(0);
    second_pass(data, readable, (o.batch_size, c, label, o.progress), |b| {
        let out = forward_images(ex, m, b.pixels.view(), b.indices.len(), None)?;
        Ok(out.logits.unwrap_or_default())
    })
}

/// `index,label,entropy_t…,coef_t…,pred_method…`, one row per sample.
fn samples_csv(
    order: &[String],
    preds: &[Vec<usize>],
    idx: &[usize],
    labels: &[i64],
    entropies: &[Vec<f64>],
    coefficients: &[Vec<f32>],
) -> String {
    let mut csv = String::from("index,label");
    for t in 0..entropies.len() {
        write!(csv, ",entropy_{t}").unwrap();
    }
    for t in 0..entropies.len() {
        write!(csv, ",coef_{t}").unwrap();
    }
    for name in order {
        write!(csv, ",pred_{name}").unwrap();
    }
    csv.push('\n');
    for (j, &i) in idx.iter().enumerate() {
        write!(csv, "{i},{}", labels[j]).unwrap();
        for e in entropies {
            write!(csv, ",{}", e[i]).unwrap();
        }
        for c in &coefficients[i] {
            write!(csv, ",{c}").unwrap();
        }
        for p in preds {
            write!(csv, ",{}", p[j]).unwrap();
        }
        csv.push('\n');
    }
    csv
}

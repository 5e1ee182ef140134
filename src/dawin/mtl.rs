//! Multi-task DaWin (`dawin eval-mtl`): per-sample coefficients over T task
//! vectors, c = softmax_t(−H_t(x)) where H_t is the entropy of θ0 + τ_t with
//! the evaluated task's head, and the merged model θ = θ0 + Σ_t s·T·c_t·τ_t.
//!
//! Each sample's merged model is built exactly in one working buffer
//! (a copy of θ0 plus T scaled task vectors, `add_scaled_diff`) and run at
//! batch 1; the baselines are task arithmetic (θ0 + s·Σ τ_t) and each task
//! model alone.

use super::data::Dataset;
use super::eval::progress_bar;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::model::{Model, Overrides};
use crate::tensorfile::write_atomic;
use crate::vit::{DeviceModel, forward};
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

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
}

pub struct MtlResult {
    pub summary: serde_json::Value,
    /// Per sample, per task: c_t.
    pub coefficients: Vec<Vec<f32>>,
    /// Per sample: logits of its own merged model.
    pub dawin_logits: Vec<f32>,
    pub table: String,
}

fn argmax(r: &[f32]) -> usize {
    (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b })
}

pub fn run(o: &MtlOptions, ex: &dyn Executor) -> Result<MtlResult> {
    let t0 = Instant::now();
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
    let eval_task = Model::load(&o.tasks[o.task_index], o.overrides)?;
    let classes = eval_task
        .spec
        .classes
        .ok_or_else(|| Error::file(&o.tasks[o.task_index], "has no classification head"))?;
    // Every model gets the evaluated task's head, so all share one layout.
    let base = Model::load(&o.base, o.overrides)?.with_head_of(&eval_task);
    let mut tasks = Vec::with_capacity(t_count);
    for p in &o.tasks {
        let m = Model::load(p, o.overrides)?.with_head_of(&eval_task);
        let diffs = base.shape_differences(&m);
        if !diffs.is_empty() {
            return Err(crate::invalid!(
                "{} and {} have different architectures: {}",
                o.base.display(),
                p.display(),
                diffs
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        tasks.push(m);
    }
    let data = Dataset::open(&o.data, base.spec.image_size)?;
    if data.is_empty() {
        return Err(Error::file(&o.data, "the data set is empty"));
    }
    if let Some(i) = data
        .labels
        .iter()
        .position(|&y| y < 0 || y as usize >= classes)
    {
        return Err(Error::file(
            &o.data,
            format!(
                "label {} of {} is out of range for {classes} classes",
                data.labels[i],
                data.describe(i)
            ),
        ));
    }
    std::fs::create_dir_all(&o.out_dir).map_err(|e| Error::io(&o.out_dir, e))?;
    let d_base = DeviceModel::upload(ex, &base)?;
    let d_tasks: Vec<DeviceModel> = tasks
        .iter()
        .map(|m| DeviceModel::upload(ex, m))
        .collect::<Result<_>>()?;
    let work = DeviceModel::alloc_like(ex, &base)?;
    let all: Vec<usize> = (0..data.len()).collect();
    let n = data.len();
    let k_ta = o.scale;

    // Pass 1: every task model's logits (entropies) and task arithmetic.
    ex.lerp(work.flat, d_base.flat, d_base.flat, 0.0)?;
    for d in &d_tasks {
        ex.add_scaled_diff(work.flat, d_base.flat, d.flat, k_ta)?;
    }
    let mut task_logits: Vec<Vec<f32>> = vec![vec![0.0; n * classes]; t_count];
    let mut ta_logits = vec![0.0; n * classes];
    let mut readable = vec![false; n];
    let pb = progress_bar(n, "tasks", o.progress);
    data.for_each_batch(&all, o.batch_size, |b| {
        for (i, e) in &b.failed {
            eprintln!("warning: skipped {}: {e}", data.describe(*i));
        }
        let m = b.indices.len();
        if m > 0 {
            for (t, d) in d_tasks.iter().enumerate() {
                let l = forward(ex, d, &b.pixels, m, None)?.logits.expect("head");
                for (k, &i) in b.indices.iter().enumerate() {
                    task_logits[t][i * classes..(i + 1) * classes]
                        .copy_from_slice(&l[k * classes..(k + 1) * classes]);
                }
            }
            let l = forward(ex, &work, &b.pixels, m, None)?
                .logits
                .expect("head");
            for (k, &i) in b.indices.iter().enumerate() {
                ta_logits[i * classes..(i + 1) * classes]
                    .copy_from_slice(&l[k * classes..(k + 1) * classes]);
                readable[i] = true;
            }
        }
        pb.inc((m + b.failed.len()) as u64);
        Ok(())
    })?;
    pb.finish_and_clear();
    let idx: Vec<usize> = all.iter().copied().filter(|&i| readable[i]).collect();

    // Coefficients: softmax over tasks of −H_t (NaN entropy → maximal).
    let mut entropies = vec![vec![0f64; n]; t_count];
    for t in 0..t_count {
        let (h, _) = super::eval::entropies(ex, &task_logits[t], classes, 1.0)?;
        entropies[t] = h;
    }
    let coefficients: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let neg: Vec<f64> = (0..t_count).map(|t| -entropies[t][i]).collect();
            let m = neg.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = neg.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| (v / z) as f32).collect()
        })
        .collect();

    // Pass 2: each sample through its own merged model.
    let mut dawin_logits = vec![0.0; n * classes];
    let pb = progress_bar(idx.len(), "dawin-mtl", o.progress);
    data.for_each_batch(&idx, 1, |b| {
        let Some(&i) = b.indices.first() else {
            return Err(crate::invalid!(
                "{} could not be read on a second pass",
                data.describe(b.failed[0].0)
            ));
        };
        ex.lerp(work.flat, d_base.flat, d_base.flat, 0.0)?;
        for (t, d) in d_tasks.iter().enumerate() {
            let k = o.scale * t_count as f32 * coefficients[i][t];
            ex.add_scaled_diff(work.flat, d_base.flat, d.flat, k)?;
        }
        let l = forward(ex, &work, &b.pixels, 1, None)?
            .logits
            .expect("head");
        dawin_logits[i * classes..(i + 1) * classes].copy_from_slice(&l);
        pb.inc(1);
        Ok(())
    })?;
    pb.finish_and_clear();
    d_base.free(ex);
    work.free(ex);
    for d in d_tasks {
        d.free(ex);
    }

    // Accuracy and reports.
    let mut order = vec!["dawin".to_string(), "task-arithmetic".to_string()];
    order.extend((0..t_count).map(|t| format!("task:{t}")));
    let pred_of = |name: &str, i: usize| -> usize {
        let row = |v: &Vec<f32>| argmax(&v[i * classes..(i + 1) * classes]);
        match name {
            "dawin" => row(&dawin_logits),
            "task-arithmetic" => row(&ta_logits),
            t => row(&task_logits[t["task:".len()..].parse::<usize>().unwrap()]),
        }
    };
    let mut methods = serde_json::Map::new();
    for name in &order {
        let correct = idx
            .iter()
            .filter(|&&i| pred_of(name, i) as i64 == data.labels[i])
            .count();
        methods.insert(name.clone(), json!({"accuracy": correct as f64 / idx.len().max(1) as f64, "correct": correct, "count": idx.len()}));
    }
    let summary = json!({
        "methods": methods,
        "task_index": o.task_index,
        "tasks": o.tasks.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "scale": o.scale,
        "skipped": n - idx.len(),
        "device": ex.name(),
        "seconds": {"total": t0.elapsed().as_secs_f64()},
    });
    let mut csv = String::from("index,label");
    for t in 0..t_count {
        write!(csv, ",entropy_{t}").unwrap();
    }
    for t in 0..t_count {
        write!(csv, ",coef_{t}").unwrap();
    }
    for name in &order {
        write!(csv, ",pred_{name}").unwrap();
    }
    csv.push('\n');
    for &i in &idx {
        write!(csv, "{i},{}", data.labels[i]).unwrap();
        for e in &entropies {
            write!(csv, ",{}", e[i]).unwrap();
        }
        for c in &coefficients[i] {
            write!(csv, ",{c}").unwrap();
        }
        for name in &order {
            write!(csv, ",{}", pred_of(name, i)).unwrap();
        }
        csv.push('\n');
    }
    write_atomic(&o.out_dir.join("samples.csv"), csv.as_bytes())?;
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&o.out_dir.join("summary.json"), text.as_bytes())?;
    let mut table = format!(
        "{:<18} {:>9} {:>15}\n",
        "method", "accuracy", "correct/count"
    );
    for name in &order {
        let m = &summary["methods"][name];
        writeln!(
            table,
            "{:<18} {:>8.2}% {:>15}",
            name,
            100.0 * m["accuracy"].as_f64().unwrap_or(0.0),
            format!("{}/{}", m["correct"], m["count"])
        )
        .unwrap();
    }
    Ok(MtlResult {
        summary,
        coefficients: idx.iter().map(|&i| coefficients[i].clone()).collect(),
        dawin_logits: idx
            .iter()
            .flat_map(|&i| dawin_logits[i * classes..(i + 1) * classes].to_vec())
            .collect(),
        table,
    })
}

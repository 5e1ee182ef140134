//! Every task of a multi-task run in one command (`eval-mtl` without
//! `--task-index`, `--data` listing one data set per task): task t is an
//! ordinary `eval-mtl` run on its own data with its own head, into
//! `OUT/task-t/`; this adds the per-task table with the average over tasks,
//! as the multi-task papers report it, and `tasks.json`.

use crate::exec::Executor;
use crate::pipelines::mtl::{self, MtlOptions, MtlResult};
use crate::report::summary::write_json;
use crate::tensorfile::write_atomic;
use crate::{Error, Result};
use serde_json::{Map, Value, json};
use std::fmt::Write;
use std::path::PathBuf;

/// The methods every task's run reports, in table order; `individual` is
/// each task's own fine-tuned model on its own data (`task:t` there).
const ROWS: [&str; 6] = [
    "dawin",
    "dawin-domain",
    "task-arithmetic",
    "weight-average",
    "ties",
    "individual",
];

pub struct MtlTasksResult {
    pub runs: Vec<MtlResult>,
    /// `tasks.json`: per method, the accuracy on each task and their mean.
    pub summary: Value,
    pub table: String,
}

/// Runs `base` once per task, task t on `data[t]`.
pub fn run(base: &MtlOptions, data: &[PathBuf], ex: &dyn Executor) -> Result<MtlTasksResult> {
    if data.len() != base.tasks.len() {
        return Err(crate::invalid!(
            "without --task-index, --data lists one data set per task, in --tasks order: {} task models but {} data sets",
            base.tasks.len(),
            data.len()
        ));
    }
    let mut runs = Vec::new();
    for (t, d) in data.iter().enumerate() {
        if base.progress {
            crate::reporter::status(&format!(
                "[task {}/{}] {} on {}",
                t + 1,
                data.len(),
                base.tasks[t].display(),
                d.display()
            ));
        }
        let o = MtlOptions {
            task_index: t,
            data: d.clone(),
            out_dir: base.out_dir.join(format!("task-{t}")),
            ..base.clone()
        };
        runs.push(mtl::run(&o, ex).map_err(|e| e.within(&format!("task {t}")))?);
    }
    let summary = combine(base, data, &runs);
    let table = table(&summary);
    std::fs::create_dir_all(&base.out_dir).map_err(|e| Error::io(&base.out_dir, e))?;
    write_json(&base.out_dir.join("tasks.json"), &summary)?;
    write_atomic(&base.out_dir.join("table.txt"), table.as_bytes())?;
    Ok(MtlTasksResult {
        runs,
        summary,
        table,
    })
}

/// One task's accuracy for a table row.
fn accuracy(r: &MtlResult, t: usize, row: &str) -> Option<f64> {
    let name = if row == "individual" {
        format!("task:{t}")
    } else {
        row.to_string()
    };
    r.summary["methods"][&name]["accuracy"].as_f64()
}

/// The table's rows: the fixed ones, then each `--domain-fit` row.
fn rows(base: &MtlOptions) -> Vec<String> {
    let fits = base.domain_fits.iter().map(|f| format!("dawin-domain:{f}"));
    ROWS.iter().map(|r| r.to_string()).chain(fits).collect()
}

fn combine(base: &MtlOptions, data: &[PathBuf], runs: &[MtlResult]) -> Value {
    let mut methods = Map::new();
    let rows = rows(base);
    for row in &rows {
        let acc: Vec<Option<f64>> = runs
            .iter()
            .enumerate()
            .map(|(t, r)| accuracy(r, t, row))
            .collect();
        let all: Option<Vec<f64>> = acc.iter().copied().collect();
        let mean = all.map(|v| v.iter().sum::<f64>() / v.len() as f64);
        methods.insert(row.clone(), json!({"accuracy": acc, "mean": mean}));
    }
    json!({
        "rows": rows,
        "tasks": base.tasks.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "data": data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "out_dirs": (0..runs.len()).map(|t| base.out_dir.join(format!("task-{t}")).display().to_string()).collect::<Vec<_>>(),
        "methods": methods,
    })
}

/// Accuracy in % per method and task, and the mean over tasks.
pub fn table(summary: &Value) -> String {
    let tasks = summary["tasks"].as_array().map_or(0, Vec::len);
    let rows: Vec<&str> = summary["rows"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| ROWS.to_vec());
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(16);
    let mut t = format!("{:<width$}", "accuracy %");
    for i in 0..tasks {
        write!(t, " {:>8}", format!("task {i}")).unwrap();
    }
    writeln!(t, " {:>8}", "mean").unwrap();
    let cell = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |a| format!("{:.2}", 100.0 * a))
    };
    for row in rows {
        let m = &summary["methods"][row];
        write!(t, "{row:<width$}").unwrap();
        for i in 0..tasks {
            write!(t, " {:>8}", cell(&m["accuracy"][i])).unwrap();
        }
        writeln!(t, " {:>8}", cell(&m["mean"])).unwrap();
    }
    t.push_str("individual: each task's own model on its own data\n");
    t
}

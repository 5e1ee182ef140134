//! Outputs of `dawin eval`: summary.json, samples.csv, lambdas.svg and the
//! table printed to the terminal.

use super::bmm::BetaMixture;
use super::lambda::{Entropies, mean_std};
use crate::error::{Error, Result};
use crate::tensorfile::write_atomic;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Report<'a> {
    pub out_dir: &'a Path,
    /// Method names in the order asked for.
    pub order: &'a [String],
    pub predictions: &'a BTreeMap<String, Vec<usize>>,
    pub labels: &'a [i64],
    pub indices: &'a [usize],
    pub entropies: &'a Entropies,
    pub lambda: &'a [f32],
    pub components: Option<&'a [usize]>,
    /// Each sample's file, for image folders.
    pub paths: Option<&'a [String]>,
    pub bmm: Option<&'a BetaMixture>,
    pub skipped: usize,
    pub device: &'a str,
    pub seconds: &'a mut BTreeMap<String, f64>,
    pub extra: Value,
    pub t0: Instant,
    /// Title of lambdas.svg.
    pub title: &'a str,
    /// What follows `n = N` under the title (models, K), starting `, `.
    pub subtitle: &'a str,
}

/// `{"accuracy", "correct", "count"}` of one method's predictions.
pub fn accuracy(predictions: &[usize], labels: &[i64]) -> Value {
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(a, b)| **a as i64 == **b)
        .count();
    let count = predictions.len();
    json!({"accuracy": correct as f64 / count.max(1) as f64, "correct": correct, "count": count})
}

/// Writes `value` as pretty JSON to `path` (through a temporary file).
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

pub fn write_all(r: &Report) -> Result<Value> {
    let mut methods = serde_json::Map::new();
    for name in r.order {
        methods.insert(name.clone(), accuracy(&r.predictions[name], r.labels));
    }
    let l: Vec<f64> = r.lambda.iter().map(|&v| v as f64).collect();
    let (mean, std) = mean_std(&l);
    let min = l.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut summary = json!({
        "methods": methods,
        "lambda": {"mean": mean, "std": std, "min": min, "max": max},
        "skipped": r.skipped,
        "device": r.device,
    });
    if let Some(b) = r.bmm {
        summary["bmm"] = json!({"weights": b.weights, "alpha": b.alpha, "beta": b.beta, "means": b.means(), "converged": b.converged});
    }
    if let (Value::Object(s), Value::Object(e)) = (&mut summary, &r.extra) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }

    super::samples_csv::write(&r.out_dir.join("samples.csv"), r)?;
    write_atomic(
        &r.out_dir.join("lambdas.svg"),
        super::plot::histogram_svg(r.lambda, r.bmm, r.title, r.subtitle).as_bytes(),
    )?;

    let mut secs: BTreeMap<String, f64> = r.seconds.clone();
    secs.insert("report".into(), r.t0.elapsed().as_secs_f64());
    summary["seconds"] = json!(secs);
    write_json(&r.out_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The terminal table: one row per method, then the λ statistics.
pub fn table(order: &[String], summary: &Value) -> String {
    let mut s = methods_table(order, summary);
    let l = &summary["lambda"];
    writeln!(
        s,
        "λ: mean {:.3}, std {:.3}, min {:.3}, max {:.3}",
        l["mean"].as_f64().unwrap_or(f64::NAN),
        l["std"].as_f64().unwrap_or(f64::NAN),
        l["min"].as_f64().unwrap_or(f64::NAN),
        l["max"].as_f64().unwrap_or(f64::NAN)
    )
    .unwrap();
    if let Some(b) = summary.get("bmm").filter(|b| b.is_object()) {
        let nums = |k: &str| -> Vec<f64> {
            b[k].as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default()
        };
        let (means, weights) = (nums("means"), nums("weights"));
        let parts: Vec<String> = means
            .iter()
            .zip(&weights)
            .map(|(m, w)| format!("λ {m:.3} (weight {w:.2})"))
            .collect();
        writeln!(s, "Beta mixture, K = {}: {}", means.len(), parts.join(", ")).unwrap();
    }
    s
}

/// One row per method: accuracy and correct/count.
pub fn methods_table(order: &[String], summary: &Value) -> String {
    let mut s = format!(
        "{:<18} {:>9} {:>15}\n",
        "method", "accuracy", "correct/count"
    );
    for name in order {
        let m = &summary["methods"][name];
        writeln!(
            s,
            "{:<18} {:>8.2}% {:>15}",
            name,
            100.0 * m["accuracy"].as_f64().unwrap_or(0.0),
            format!("{}/{}", m["correct"], m["count"])
        )
        .unwrap();
    }
    s
}

/// `dawin plot-wise`: reads the summaries and writes the curve's SVG.
pub fn plot_wise(id: &Path, ood: &[PathBuf], title: &str, out: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<Value> {
        let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        serde_json::from_str(&t).map_err(|e| Error::file(p, format!("not JSON: {e}")))
    };
    let ood: Vec<Value> = ood.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let svg = wise_curve_svg(&read(id)?, &ood, title).map_err(|e| match e {
        Error::Invalid(m) => Error::file(id, m),
        e => e,
    })?;
    write_atomic(out, svg.as_bytes())
}

/// The points of the WiSE-FT plot from parsed summary.json values (one
/// in distribution, the others under shift): the curve over α (zero-shot
/// at 0, fine-tuned at 1, every `wise-ft:α` between) and the other methods
/// all summaries have. An error when there is no curve to draw.
pub fn wise_curve_svg(id: &Value, ood: &[Value], title: &str) -> Result<String> {
    let acc = |s: &Value, m: &str| s["methods"][m]["accuracy"].as_f64();
    let point = |m: &str| -> Option<(f64, f64)> {
        let x = acc(id, m)?;
        let ys: Option<Vec<f64>> = ood.iter().map(|s| acc(s, m)).collect();
        let ys = ys?;
        Some((x, ys.iter().sum::<f64>() / ys.len().max(1) as f64))
    };
    let mut curve: Vec<(f64, (f64, f64))> = id["methods"]
        .as_object()
        .map(|o| {
            o.keys()
                .filter_map(|k| {
                    k.strip_prefix("wise-ft:")
                        .and_then(|a| a.parse::<f64>().ok())
                        .map(|a| (a, k.clone()))
                })
                .filter_map(|(a, k)| point(&k).map(|p| (a, p)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(p) = point("zeroshot") {
        curve.push((0.0, p));
    }
    if let Some(p) = point("finetuned") {
        curve.push((1.0, p));
    }
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    if curve.len() < 2 {
        return Err(crate::invalid!(
            "the summaries hold {} point(s) of the WiSE-FT curve, too few to draw it: run eval with --methods zeroshot,finetuned,wise-ft (or all) on every data set",
            curve.len()
        ));
    }
    let others: Vec<(&str, &str, (f64, f64))> = [
        ("dawin", "#d62728", "DaWin"),
        ("ensemble", "#9467bd", "ensemble"),
        ("ensemble-dynamic", "#8c564b", "ensemble (dynamic)"),
    ]
    .iter()
    .filter_map(|(m, c, l)| point(m).map(|p| (*c, *l, p)))
    .collect();
    let subtitle = format!(
        "{} data set(s) under shift; {} WiSE-FT points",
        ood.len(),
        curve.len()
    );
    Ok(super::plot::wise_curve_svg(
        &curve, &others, title, &subtitle,
    ))
}

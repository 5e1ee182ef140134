//! Outputs of `dawin eval`: summary.json, samples.csv, lambdas.svg and the
//! table printed to the terminal.

use super::results::Report;
use crate::error::{Error, Result};
use crate::method::lambda::mean_std;
use crate::method::stats;
use crate::tensorfile::write_atomic;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Whether each prediction is its label.
fn correctness(predictions: &[usize], labels: &[i64]) -> Vec<bool> {
    predictions
        .iter()
        .zip(labels)
        .map(|(p, y)| *p as i64 == *y)
        .collect()
}

/// One method's entry of summary.json: accuracy, its bootstrap interval
/// and, where this run scored it, NLL, ECE and Brier.
fn method_entry(r: &Report, name: &str) -> Value {
    let pred = &r.predictions[name];
    let correct = correctness(pred, r.labels);
    let mut v = accuracy(pred, r.labels);
    let (resamples, seed) = r.bootstrap;
    v["ci95"] = json!(stats::bootstrap_ci95(&correct, resamples, seed));
    if let Some(sc) = r.scores.get(name)
        && let (Value::Object(o), Value::Object(c)) = (&mut v, stats::calibration(sc, &correct))
    {
        o.extend(c);
    }
    v
}

/// McNemar's exact test of DaWin against every other method.
fn paired(r: &Report) -> Value {
    let Some(dawin) = r.predictions.get("dawin") else {
        return Value::Null;
    };
    let d = correctness(dawin, r.labels);
    let against: serde_json::Map<String, Value> = r
        .order
        .iter()
        .filter(|m| m.as_str() != "dawin")
        .map(|m| {
            let (wins, losses, p) = stats::mcnemar(&d, &correctness(&r.predictions[m], r.labels));
            (
                m.clone(),
                json!({"dawin_wins": wins, "dawin_losses": losses, "p_value": p}),
            )
        })
        .collect();
    json!({"reference": "dawin", "test": "McNemar exact (two-sided)", "against": against})
}

/// How well each model's entropy ranks its own errors (AUROC of −H
/// against being right) and how DaWin's λ follows the oracle λ.
fn lambda_diagnostics(r: &Report) -> Value {
    let neg = |h: &[f64]| h.iter().map(|v| -v).collect::<Vec<_>>();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let mut d = json!({
        "auroc_entropy_pt": stats::auroc(&neg(&r.entropies.pt), r.model_correct.0),
        "auroc_entropy_ft": stats::auroc(&neg(&r.entropies.ft), r.model_correct.1),
    });
    if let Some(oracle) = r.oracle_lambda {
        d["corr_oracle"] = json!(stats::pearson(&wide(r.lambda), &wide(oracle)));
        d["oracle_mean"] = json!(wide(oracle).iter().sum::<f64>() / oracle.len().max(1) as f64);
    }
    d
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
        methods.insert(name.clone(), method_entry(r, name));
    }
    let l: Vec<f64> = r.lambda.iter().map(|&v| v as f64).collect();
    let (mean, std) = mean_std(&l);
    let min = l.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut summary = json!({
        "methods": methods,
        "lambda": {"mean": mean, "std": std, "min": min, "max": max},
        "paired": paired(r),
        "statistics": {
            "ci95": format!("percentile bootstrap, {} resamples, seed {}", r.bootstrap.0, r.bootstrap.1),
            "bootstrap": {"resamples": r.bootstrap.0, "seed": r.bootstrap.1},
            "ece_bins": stats::ECE_BINS,
            "brier": "sum over classes of (p_c - [c = y])^2",
        },
        "skipped": r.skipped,
        "device": r.device,
    });
    if let (Value::Object(l), Value::Object(d)) = (&mut summary["lambda"], lambda_diagnostics(r)) {
        l.extend(d);
    }
    if let Some(b) = r.bmm {
        summary["bmm"] = json!({"weights": b.weights, "alpha": b.alpha, "beta": b.beta, "means": b.means(), "converged": b.converged});
    }
    if let (Value::Object(s), Value::Object(e)) = (&mut summary, &r.extra) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }

    crate::report::samples_csv::write(&r.out_dir.join("samples.csv"), r)?;
    write_atomic(
        &r.out_dir.join("lambdas.svg"),
        crate::report::plot::histogram_svg(
            r.lambda,
            r.bmm,
            &r.titles.histogram,
            &r.titles.subtitle,
        )
        .as_bytes(),
    )?;
    if let Some(oracle) = r.oracle_lambda {
        let svg = crate::report::plot::lambda_scatter_svg(
            r.lambda,
            oracle,
            &r.titles.oracle,
            &r.titles.subtitle,
        );
        write_atomic(&r.out_dir.join("lambda_oracle.svg"), svg.as_bytes())?;
    }

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

/// A 95 % interval around `acc` (fractions) as the table shows it, in
/// percent: `±h` when it is symmetric to the shown precision, else
/// `[lo, hi]`.
fn interval_text(acc: f64, lo: f64, hi: f64) -> String {
    let (below, above) = (100.0 * (acc - lo), 100.0 * (hi - acc));
    match (
        lo.is_finite() && hi.is_finite(),
        (below - above).abs() < 0.005,
    ) {
        (false, _) => String::new(),
        (true, true) => format!("±{:.2}", (below + above) / 2.0),
        (true, false) => format!("[{:.2}, {:.2}]", 100.0 * lo, 100.0 * hi),
    }
}

/// One row per method: accuracy and its 95 % interval, correct/count
/// and, when DaWin ran, the McNemar p-value against it.
pub fn methods_table(order: &[String], summary: &Value) -> String {
    let has_p = summary["paired"].is_object();
    // As wide as the longest name (at least 22), so the columns line up.
    let w = order
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    let mut s = format!(
        "{:<w$} {:>9} {:>16} {:>15}{}\n",
        "method",
        "accuracy",
        "95% interval",
        "correct/count",
        if has_p { "  p vs dawin" } else { "" }
    );
    for name in order {
        let m = &summary["methods"][name];
        let ci = |i: usize| m["ci95"][i].as_f64().unwrap_or(f64::NAN);
        let acc = m["accuracy"].as_f64().unwrap_or(0.0);
        let p = summary["paired"]["against"][name]["p_value"].as_f64();
        writeln!(
            s,
            "{:<w$} {:>8.2}% {:>16} {:>15}{}",
            name,
            100.0 * acc,
            interval_text(acc, ci(0), ci(1)),
            format!("{}/{}", m["correct"], m["count"]),
            match p {
                Some(p) if has_p => format!("  {}", p_text(p)),
                _ => String::new(),
            }
        )
        .unwrap();
    }
    s
}

/// A p-value as a table shows it.
fn p_text(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// `dawin plot-wise`: reads the summaries and writes the curve's SVG.
pub fn plot_wise(id: &Path, ood: &[PathBuf], title: &str, out: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<Value> {
        let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        serde_json::from_str(&t).map_err(|e| Error::file(p, format!("not JSON: {e}")))
    };
    let ood_summaries: Vec<Value> = ood.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let id_summary = read(id)?;
    for (p, s) in ood.iter().zip(&ood_summaries) {
        warn_other_models((id, &id_summary), (p, s));
    }
    let ood = ood_summaries;
    let svg = wise_curve_svg(&id_summary, &ood, title).map_err(|e| match e {
        Error::Invalid(m) => Error::file(id, m),
        e => e,
    })?;
    write_atomic(out, svg.as_bytes())
}

/// Warns when two summaries of one curve come from other model files (by
/// content hash): their points would not be one pair's trade-off.
fn warn_other_models((a_path, a): (&Path, &Value), (b_path, b): (&Path, &Value)) {
    for role in ["pretrained", "finetuned"] {
        let hash = |s: &Value| {
            s["provenance"]["inputs"][role]["hash"]
                .as_str()
                .map(String::from)
        };
        if let (Some(x), Some(y)) = (hash(a), hash(b))
            && x != y
        {
            let path = |s: &Value| {
                s["provenance"]["inputs"][role]["path"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            };
            crate::reporter::warn(&format!(
                "{} and {} come from different {role} models ({} and {}): the curve mixes two pairs",
                a_path.display(),
                b_path.display(),
                path(a),
                path(b)
            ));
        }
    }
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
    Ok(crate::report::plot::wise_curve_svg(
        &curve, &others, title, &subtitle,
    ))
}

#[cfg(test)]
mod tests {
    use super::interval_text;

    #[test]
    fn intervals_are_shown_as_they_are() {
        assert_eq!(interval_text(0.5, 0.4, 0.6), "±10.00");
        // Lopsided (near 100 %): both ends, not a misleading ±.
        assert_eq!(interval_text(0.9375, 0.8125, 1.0), "[81.25, 100.00]");
        assert_eq!(interval_text(0.5, f64::NAN, f64::NAN), "");
    }
}

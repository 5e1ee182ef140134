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
        histogram_svg(r.lambda, r.bmm, r.title).as_bytes(),
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

/// A λ histogram (density scale) with the fitted mixture density over it and
/// the component means marked.
pub fn histogram_svg(lambda: &[f32], bmm: Option<&BetaMixture>, title: &str) -> String {
    const BINS: usize = 40;
    let (w, h, ml, mr, mt, mb) = (720.0, 400.0, 60.0, 20.0, 40.0, 50.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let mut counts = [0usize; BINS];
    for &v in lambda {
        let b = ((v.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        counts[b] += 1;
    }
    let n = lambda.len().max(1) as f64;
    let dens: Vec<f64> = counts.iter().map(|&c| c as f64 / n * BINS as f64).collect();
    let curve: Vec<(f64, f64)> = bmm
        .map(|b| {
            (1..200)
                .map(|i| i as f64 / 200.0)
                .map(|x| (x, b.pdf(x)))
                .collect()
        })
        .unwrap_or_default();
    let ymax = dens
        .iter()
        .cloned()
        .chain(
            curve
                .iter()
                .map(|p| p.1.min(4.0 * dens.iter().cloned().fold(1.0, f64::max))),
        )
        .fold(1e-9, f64::max)
        * 1.1;
    let x = |v: f64| ml + v * pw;
    let y = |v: f64| mt + ph - (v / ymax).min(1.0) * ph;
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#).unwrap();
    writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{title} (n = {})</text>"#,
        w / 2.0,
        lambda.len()
    )
    .unwrap();
    for (i, d) in dens.iter().enumerate() {
        let x0 = x(i as f64 / BINS as f64);
        let bw = pw / BINS as f64;
        writeln!(s, r##"<rect x="{x0:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="#9ecae1" stroke="#4a90c2" stroke-width="0.5"/>"##, y(*d), bw, mt + ph - y(*d)).unwrap();
    }
    if !curve.is_empty() {
        let pts: Vec<String> = curve
            .iter()
            .map(|(a, b)| format!("{:.2},{:.2}", x(*a), y(*b)))
            .collect();
        writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="2"/>"##,
            pts.join(" ")
        )
        .unwrap();
    }
    if let Some(b) = bmm {
        // Means as dashed lines, labelled in a legend so labels never collide.
        for (k, (m, wt)) in b.means().iter().zip(&b.weights).enumerate() {
            writeln!(s, r##"<line x1="{0:.2}" x2="{0:.2}" y1="{1}" y2="{2}" stroke="#2ca02c" stroke-dasharray="5,3" stroke-width="1.5"/>"##, x(*m), mt, mt + ph).unwrap();
            writeln!(s, r##"<text x="{:.2}" y="{}" fill="#2ca02c" text-anchor="middle" font-size="11">{k}</text>"##, x(*m), mt - 3.0).unwrap();
            writeln!(s, r##"<text x="{}" y="{}" fill="#2ca02c">component {k}: mean λ {m:.3}, weight {wt:.2}</text>"##, ml + 10.0, mt + 30.0 + 15.0 * k as f64).unwrap();
        }
        writeln!(s, r##"<line x1="{}" x2="{}" y1="{}" y2="{2}" stroke="#d62728" stroke-width="2"/><text x="{}" y="{}">Beta mixture density</text>"##, ml + 10.0, ml + 30.0, mt + 10.0, ml + 36.0, mt + 14.0).unwrap();
    }
    // axes
    writeln!(
        s,
        r#"<line x1="{ml}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/>"#,
        mt + ph,
        ml + pw
    )
    .unwrap();
    writeln!(
        s,
        r#"<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="black"/>"#,
        mt + ph
    )
    .unwrap();
    for i in 0..=10 {
        let v = i as f64 / 10.0;
        writeln!(
            s,
            r#"<text x="{:.2}" y="{}" text-anchor="middle">{v:.1}</text>"#,
            x(v),
            mt + ph + 16.0
        )
        .unwrap();
    }
    for i in 0..=4 {
        let v = ymax / 1.1 * i as f64 / 4.0;
        writeln!(
            s,
            r#"<text x="{}" y="{:.2}" text-anchor="end">{v:.1}</text>"#,
            ml - 6.0,
            y(v) + 4.0
        )
        .unwrap();
    }
    writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">λ (weight on the fine-tuned model)</text>"#,
        ml + pw / 2.0,
        h - 10.0
    )
    .unwrap();
    writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">density</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0
    )
    .unwrap();
    s.push_str("</svg>\n");
    s
}

/// `dawin plot-wise`: reads the summaries and writes the curve's SVG.
pub fn plot_wise(id: &Path, ood: &[PathBuf], title: &str, out: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<Value> {
        let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        serde_json::from_str(&t).map_err(|e| Error::file(p, format!("not JSON: {e}")))
    };
    let ood: Vec<Value> = ood.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let svg = wise_curve_svg(&read(id)?, &ood, title);
    write_atomic(out, svg.as_bytes())
}

/// The WiSE-FT curve: accuracy in distribution (x) against mean accuracy
/// under shift (y) for every `wise-ft:α` in the summaries, with the end
/// points and the other methods marked. `id` and each of `ood` are parsed
/// summary.json values of one run per data set.
pub fn wise_curve_svg(id: &Value, ood: &[Value], title: &str) -> String {
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
    let others: Vec<(&str, &str, (f64, f64))> = [
        ("dawin", "#d62728", "DaWin"),
        ("ensemble", "#9467bd", "ensemble"),
        ("ensemble-dynamic", "#8c564b", "ensemble (dynamic)"),
    ]
    .iter()
    .filter_map(|(m, c, l)| point(m).map(|p| (*c, *l, p)))
    .collect();
    let all: Vec<(f64, f64)> = curve
        .iter()
        .map(|c| c.1)
        .chain(others.iter().map(|o| o.2))
        .collect();
    let (w, h, ml, mr, mt, mb) = (640.0, 460.0, 70.0, 30.0, 40.0, 55.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let lo = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(f64::INFINITY, f64::min);
    let hi = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    let pad = |a: f64, b: f64| {
        let d = ((b - a) * 0.1).max(0.005);
        (a - d, b + d)
    };
    let (x0, x1) = pad(lo(|p| p.0), hi(|p| p.0));
    let (y0, y1) = pad(lo(|p| p.1), hi(|p| p.1));
    let x = |v: f64| ml + (v - x0) / (x1 - x0) * pw;
    let y = |v: f64| mt + ph - (v - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="15">{title}</text>"#, w / 2.0).unwrap();
    let pts: Vec<String> = curve
        .iter()
        .map(|(_, p)| format!("{:.2},{:.2}", x(p.0), y(p.1)))
        .collect();
    writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        pts.join(" ")
    )
    .unwrap();
    for (a, p) in &curve {
        writeln!(s, r##"<circle cx="{:.2}" cy="{:.2}" r="3.5" fill="#1f77b4"/><text x="{:.2}" y="{:.2}" font-size="10" fill="#1f77b4">α={a}</text>"##, x(p.0), y(p.1), x(p.0) + 5.0, y(p.1) - 5.0).unwrap();
    }
    // The legend goes in the plot corner farthest from every point.
    let plotted: Vec<(f64, f64)> = all.iter().map(|p| (x(p.0), y(p.1))).collect();
    let legend_h = 16.0 * (others.len() + 1) as f64 + 8.0;
    let clear = |c: &(f64, f64)| {
        plotted
            .iter()
            .map(|p| {
                let dx = (p.0 - (c.0 + 120.0)).abs() - 125.0;
                let dy = (p.1 - (c.1 + legend_h / 2.0)).abs() - legend_h / 2.0;
                dx.max(dy)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let (lx, ly) = [
        (ml + 12.0, mt + 8.0),
        (ml + pw - 250.0, mt + 8.0),
        (ml + 12.0, mt + ph - legend_h),
        (ml + pw - 250.0, mt + ph - legend_h),
    ]
    .into_iter()
    .max_by(|a, b| clear(a).total_cmp(&clear(b)))
    .unwrap();
    for (k, (c, l, p)) in others.iter().enumerate() {
        writeln!(
            s,
            r##"<rect x="{:.2}" y="{:.2}" width="9" height="9" fill="{c}"/>"##,
            x(p.0) - 4.5,
            y(p.1) - 4.5
        )
        .unwrap();
        writeln!(s, r##"<rect x="{lx}" y="{}" width="9" height="9" fill="{c}"/><text x="{}" y="{}">{l}</text>"##, ly + 16.0 * k as f64, lx + 14.0, ly + 8.0 + 16.0 * k as f64).unwrap();
    }
    writeln!(s, r##"<circle cx="{}" cy="{}" r="3.5" fill="#1f77b4"/><text x="{}" y="{}">WiSE-FT (α=0 zero-shot … α=1 fine-tuned)</text>"##, lx + 4.5, ly + 4.5 + 16.0 * others.len() as f64, lx + 14.0, ly + 8.0 + 16.0 * others.len() as f64).unwrap();
    writeln!(s, r#"<line x1="{ml}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{0}" stroke="black"/>"#, mt + ph, ml + pw).unwrap();
    for i in 0..=5 {
        let vx = x0 + (x1 - x0) * i as f64 / 5.0;
        let vy = y0 + (y1 - y0) * i as f64 / 5.0;
        writeln!(
            s,
            r#"<text x="{:.2}" y="{}" text-anchor="middle">{:.1}</text>"#,
            x(vx),
            mt + ph + 16.0,
            100.0 * vx
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{}" y="{:.2}" text-anchor="end">{:.1}</text>"#,
            ml - 6.0,
            y(vy) + 4.0,
            100.0 * vy
        )
        .unwrap();
    }
    writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">accuracy in distribution (%)</text>"#,
        ml + pw / 2.0,
        h - 12.0
    )
    .unwrap();
    writeln!(s, r#"<text x="18" y="{0}" transform="rotate(-90 18 {0})" text-anchor="middle">mean accuracy under shift (%)</text>"#, mt + ph / 2.0).unwrap();
    s.push_str("</svg>\n");
    s
}

//! Outputs of `dawin eval`: summary.json, samples.csv, lambdas.svg and the
//! table printed to the terminal.

use super::bmm::BetaMixture;
use super::expertise::{Entropies, mean_std};
use crate::error::{Error, Result};
use crate::tensorfile::write_atomic;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
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
    pub bmm: Option<&'a BetaMixture>,
    pub skipped: usize,
    pub device: &'a str,
    pub seconds: &'a mut BTreeMap<String, f64>,
    pub extra: Value,
    pub t0: Instant,
}

pub fn write_all(r: &Report) -> Result<Value> {
    let mut methods = serde_json::Map::new();
    for name in r.order {
        let p = &r.predictions[name];
        let correct = p
            .iter()
            .zip(r.labels)
            .filter(|(a, b)| **a as i64 == **b)
            .count();
        methods.insert(
            name.clone(),
            json!({"accuracy": correct as f64 / p.len().max(1) as f64, "correct": correct, "count": p.len()}),
        );
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

    // samples.csv
    let mut csv = String::from("index,label,entropy_pt,entropy_ft,lambda,component");
    for name in r.order {
        write!(csv, ",pred_{name}").unwrap();
    }
    csv.push('\n');
    for (j, &i) in r.indices.iter().enumerate() {
        write!(
            csv,
            "{i},{},{},{},{},{}",
            r.labels[j],
            r.entropies.pt[j],
            r.entropies.ft[j],
            r.lambda[j],
            r.components.map(|c| c[j].to_string()).unwrap_or_default()
        )
        .unwrap();
        for name in r.order {
            write!(csv, ",{}", r.predictions[name][j]).unwrap();
        }
        csv.push('\n');
    }
    write_atomic(&r.out_dir.join("samples.csv"), csv.as_bytes())?;
    write_atomic(
        &r.out_dir.join("lambdas.svg"),
        histogram_svg(r.lambda, r.bmm, "DaWin λ per sample").as_bytes(),
    )?;

    let mut secs: BTreeMap<String, f64> = r.seconds.clone();
    secs.insert("report".into(), r.t0.elapsed().as_secs_f64());
    summary["seconds"] = json!(secs);
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&r.out_dir.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}

/// The terminal table: one row per method.
pub fn table(order: &[String], summary: &Value) -> String {
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

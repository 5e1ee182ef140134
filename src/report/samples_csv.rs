//! `samples.csv`: one row per evaluated sample, everything a summary's
//! statistics are computed from, so that a summary merged from shards
//! recomputes them on the shards' rows concatenated:
//! `index,label,entropy_pt,entropy_ft,lambda,component,pred_METHOD…,
//! oracle_lambda,correct_pt,correct_ft,nll_METHOD…,confidence_METHOD…,
//! brier_METHOD…` and, for image folders, a final `path`. Written with real
//! CSV quoting; every number as the shortest decimal that reads back as the
//! same value (f32 for λ, f64 for entropies and scores).

use super::results::Report;
use crate::error::{Error, Result};
use crate::method::lambda::Entropies;
use crate::method::stats::Scores;
use std::collections::BTreeMap;
use std::path::Path;

/// The columns every file starts with.
const FIXED_COLUMNS: [&str; 6] = [
    "index",
    "label",
    "entropy_pt",
    "entropy_ft",
    "lambda",
    "component",
];

/// The per-method score columns, by prefix, in the order written.
const SCORE_COLUMNS: [&str; 3] = ["nll_", "confidence_", "brier_"];

/// Writes the rows of `r` to `path`.
pub fn write(path: &Path, r: &Report) -> Result<()> {
    let io = |e: csv::Error| Error::file(path, format!("cannot write: {e}"));
    let mut w = csv::Writer::from_path(path).map_err(io)?;
    let scored: Vec<&String> = r
        .order
        .iter()
        .filter(|m| r.scores.contains_key(*m))
        .collect();
    w.write_record(header(r, &scored)).map_err(io)?;
    let bit = |b: bool| if b { "1" } else { "0" }.to_string();
    for (j, &i) in r.indices.iter().enumerate() {
        let mut row = vec![
            i.to_string(),
            r.labels[j].to_string(),
            format!("{:e}", r.entropies.pt[j]),
            format!("{:e}", r.entropies.ft[j]),
            r.lambda[j].to_string(),
            r.components.map(|c| c[j].to_string()).unwrap_or_default(),
        ];
        row.extend(r.order.iter().map(|m| r.predictions[m][j].to_string()));
        row.push(
            r.oracle_lambda
                .map(|o| o[j].to_string())
                .unwrap_or_default(),
        );
        row.push(bit(r.model_correct.0[j]));
        row.push(bit(r.model_correct.1[j]));
        for prefix in SCORE_COLUMNS {
            for m in &scored {
                let s = &r.scores[*m];
                let v = match prefix {
                    "nll_" => s.nll[j],
                    "confidence_" => s.confidence[j],
                    _ => s.brier[j],
                };
                row.push(format!("{v:e}"));
            }
        }
        if let Some(p) = r.paths {
            row.push(p[j].clone());
        }
        w.write_record(&row).map_err(io)?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

fn header(r: &Report, scored: &[&String]) -> Vec<String> {
    let mut h: Vec<String> = FIXED_COLUMNS.map(String::from).to_vec();
    h.extend(r.order.iter().map(|m| format!("pred_{m}")));
    h.extend(["oracle_lambda", "correct_pt", "correct_ft"].map(String::from));
    for prefix in SCORE_COLUMNS {
        h.extend(scored.iter().map(|m| format!("{prefix}{m}")));
    }
    if r.paths.is_some() {
        h.push("path".into());
    }
    h
}

/// The rows of a samples.csv read back: what a summary is computed from.
#[derive(Default)]
pub struct SampleTable {
    pub indices: Vec<usize>,
    pub labels: Vec<i64>,
    pub entropies: Entropies,
    pub lambda: Vec<f32>,
    /// Each sample's Beta-mixture component (bmm runs only).
    pub components: Option<Vec<usize>>,
    /// Method names in the file's column order.
    pub order: Vec<String>,
    pub predictions: BTreeMap<String, Vec<usize>>,
    pub oracle_lambda: Vec<f32>,
    /// Whether the pretrained and the fine-tuned model were right.
    pub model_correct: (Vec<bool>, Vec<bool>),
    /// The scores of the methods that have them.
    pub scores: BTreeMap<String, Scores>,
    pub paths: Option<Vec<String>>,
}

/// Column positions of a samples.csv header.
struct Columns {
    preds: Vec<(usize, String)>,
    scores: Vec<(usize, usize, String)>,
    oracle: usize,
    correct: (usize, usize),
    path: Option<usize>,
}

impl Columns {
    fn of(header: &csv::StringRecord) -> std::result::Result<Columns, String> {
        let names: Vec<&str> = header.iter().collect();
        let fixed = FIXED_COLUMNS.len();
        if names.len() < fixed || names[..fixed] != FIXED_COLUMNS {
            return Err(
                "is not a dawin samples.csv (its header does not start index,label,entropy_pt,...)"
                    .into(),
            );
        }
        let find = |n: &str| names.iter().position(|h| *h == n);
        let Some(oracle) = find("oracle_lambda") else {
            return Err(
                "has no oracle_lambda column (written by an older dawin): rerun its eval".into(),
            );
        };
        let correct = match (find("correct_pt"), find("correct_ft")) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err("has no correct_pt/correct_ft columns".into()),
        };
        let mut scores = Vec::new();
        for (k, h) in names.iter().enumerate() {
            for (s, prefix) in SCORE_COLUMNS.iter().enumerate() {
                if let Some(m) = h.strip_prefix(prefix) {
                    scores.push((k, s, m.to_string()));
                }
            }
        }
        let preds = names
            .iter()
            .enumerate()
            .filter_map(|(k, h)| h.strip_prefix("pred_").map(|m| (k, m.to_string())))
            .collect();
        Ok(Columns {
            preds,
            scores,
            oracle,
            correct,
            path: find("path"),
        })
    }
}

/// Reads a samples.csv whole; the error names the line that is wrong.
pub fn read(path: &Path) -> Result<SampleTable> {
    let bad = |why: String| Error::file(path, why);
    let mut rd = csv::Reader::from_path(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let header = rd
        .headers()
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .clone();
    let cols = Columns::of(&header).map_err(bad)?;
    let mut t = SampleTable {
        order: cols.preds.iter().map(|(_, m)| m.clone()).collect(),
        paths: cols.path.map(|_| Vec::new()),
        ..SampleTable::default()
    };
    for (line, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| bad(format!("cannot read: {e}")))?;
        push_row(&mut t, &cols, &rec).map_err(|why| bad(format!("line {}: {why}", line + 2)))?;
    }
    Ok(t)
}

/// Appends one record's values to `t`.
fn push_row(
    t: &mut SampleTable,
    cols: &Columns,
    rec: &csv::StringRecord,
) -> std::result::Result<(), String> {
    fn num<T: std::str::FromStr>(
        rec: &csv::StringRecord,
        k: usize,
    ) -> std::result::Result<T, String> {
        let text = rec.get(k).unwrap_or("");
        text.parse()
            .map_err(|_| format!("column {} holds {text:?}, not a number", k + 1))
    }
    t.indices.push(num(rec, 0)?);
    t.labels.push(num(rec, 1)?);
    t.entropies.pt.push(num(rec, 2)?);
    t.entropies.ft.push(num(rec, 3)?);
    t.lambda.push(num(rec, 4)?);
    if rec.get(5).is_some_and(|c| !c.is_empty()) {
        t.components.get_or_insert_with(Vec::new).push(num(rec, 5)?);
    }
    for (k, m) in &cols.preds {
        t.predictions
            .entry(m.clone())
            .or_default()
            .push(num(rec, *k)?);
    }
    t.oracle_lambda.push(num(rec, cols.oracle)?);
    t.model_correct.0.push(num::<u8>(rec, cols.correct.0)? == 1);
    t.model_correct.1.push(num::<u8>(rec, cols.correct.1)? == 1);
    for (k, s, m) in &cols.scores {
        let v: f64 = num(rec, *k)?;
        let e = t.scores.entry(m.clone()).or_default();
        [&mut e.nll, &mut e.confidence, &mut e.brier][*s].push(v);
    }
    if let (Some(k), Some(p)) = (cols.path, t.paths.as_mut()) {
        p.push(rec.get(k).unwrap_or("").to_string());
    }
    Ok(())
}

impl SampleTable {
    /// The rows of `parts` one after another; every part must have the
    /// same columns.
    pub fn concat(parts: Vec<SampleTable>) -> std::result::Result<SampleTable, String> {
        let mut it = parts.into_iter();
        let Some(mut all) = it.next() else {
            return Ok(SampleTable::default());
        };
        for p in it {
            if p.order != all.order || p.paths.is_some() != all.paths.is_some() {
                return Err("the shards' samples.csv files have other columns".into());
            }
            all.indices.extend(p.indices);
            all.labels.extend(p.labels);
            all.entropies.pt.extend(p.entropies.pt);
            all.entropies.ft.extend(p.entropies.ft);
            all.lambda.extend(p.lambda);
            match (&mut all.components, p.components) {
                (Some(a), Some(b)) => a.extend(b),
                (None, None) => {}
                _ => return Err("some shards have bmm components and others not".into()),
            }
            for (m, v) in p.predictions {
                all.predictions.entry(m).or_default().extend(v);
            }
            all.oracle_lambda.extend(p.oracle_lambda);
            all.model_correct.0.extend(p.model_correct.0);
            all.model_correct.1.extend(p.model_correct.1);
            for (m, s) in p.scores {
                let e = all.scores.entry(m).or_default();
                e.nll.extend(s.nll);
                e.confidence.extend(s.confidence);
                e.brier.extend(s.brier);
            }
            if let (Some(a), Some(b)) = (&mut all.paths, p.paths) {
                a.extend(b);
            }
        }
        Ok(all)
    }
}

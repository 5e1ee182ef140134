//! `samples.csv`: one row per evaluated sample (`index,label,entropy_pt,
//! entropy_ft,lambda,component,pred_METHOD…` and, for image folders, a
//! final `path`), written with real CSV quoting. Numbers are written as the
//! shortest decimal that reads back as the same f32.

use super::results::Report;
use crate::error::{Error, Result};
use std::path::Path;

/// Writes the rows of `r` to `path`.
pub fn write(path: &Path, r: &Report) -> Result<()> {
    let io = |e: csv::Error| Error::file(path, format!("cannot write: {e}"));
    let mut w = csv::Writer::from_path(path).map_err(io)?;
    let mut header: Vec<String> = [
        "index",
        "label",
        "entropy_pt",
        "entropy_ft",
        "lambda",
        "component",
    ]
    .map(String::from)
    .to_vec();
    header.extend(r.order.iter().map(|m| format!("pred_{m}")));
    if r.paths.is_some() {
        header.push("path".into());
    }
    w.write_record(&header).map_err(io)?;
    for (j, &i) in r.indices.iter().enumerate() {
        let mut row = vec![
            i.to_string(),
            r.labels[j].to_string(),
            // f32 precision, one form per column: entropies span many
            // orders of magnitude, λ lies in [0, 1].
            format!("{:.7e}", r.entropies.pt[j] as f32),
            format!("{:.7e}", r.entropies.ft[j] as f32),
            format!("{:.8}", r.lambda[j]),
            r.components.map(|c| c[j].to_string()).unwrap_or_default(),
        ];
        row.extend(r.order.iter().map(|m| r.predictions[m][j].to_string()));
        if let Some(p) = r.paths {
            row.push(p[j].clone());
        }
        w.write_record(&row).map_err(io)?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// The `pred_METHOD` columns of an earlier `samples.csv`, by method, when
/// its rows are exactly the samples `indices`; `None` when they are not
/// (or the file is unreadable: it is then not carried over). In the
/// file's column order.
pub fn read_predictions(path: &Path, indices: &[usize]) -> Option<Vec<(String, Vec<usize>)>> {
    let mut rd = csv::Reader::from_path(path).ok()?;
    let header = rd.headers().ok()?.clone();
    if header.get(0) != Some("index") {
        return None;
    }
    let cols: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(k, h)| h.strip_prefix("pred_").map(|m| (k, m.to_string())))
        .collect();
    let mut out: Vec<(String, Vec<usize>)> =
        cols.iter().map(|(_, m)| (m.clone(), vec![])).collect();
    let mut n = 0;
    for rec in rd.records() {
        let rec = rec.ok()?;
        let index: usize = rec.get(0)?.parse().ok()?;
        if indices.get(n) != Some(&index) {
            return None;
        }
        for ((k, _), (_, preds)) in cols.iter().zip(out.iter_mut()) {
            preds.push(rec.get(*k)?.parse().ok()?);
        }
        n += 1;
    }
    (n == indices.len()).then_some(out)
}

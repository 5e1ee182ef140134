//! Scale-out: per-shard expertise files and their merge, and the merge of
//! per-shard evaluation summaries.
//!
//! `dawin expertise --shard i/n` → `dawin merge` → `dawin eval --shard i/n
//! --expertise-from MERGED` → `dawin merge` of the summaries.

use super::lambda::Entropies;
use super::report::write_json;
use crate::error::{Error, Result};
use crate::tensorfile::{Tensor, TensorFile, write_f32};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// The samples of `shard` (i, n) of a set of `n` (`None`: all).
pub fn range(shard: Option<(usize, usize)>, n: usize) -> Result<Range<usize>> {
    let r = match shard {
        Some((i, k)) if k == 0 || i >= k => {
            return Err(crate::invalid!("--shard {i}/{k}: need 0 ≤ i < n"));
        }
        Some((i, k)) => (i * n / k)..((i + 1) * n / k),
        None => 0..n,
    };
    if r.is_empty() {
        let which = shard.map_or("the data".into(), |(i, k)| format!("shard {i}/{k}"));
        return Err(crate::invalid!("{which} of {n} samples is empty"));
    }
    Ok(r)
}

/// What `dawin expertise` computed for one shard.
pub struct ExpertiseResult {
    /// Dataset indices of the readable samples of the shard.
    pub indices: Vec<usize>,
    pub entropies: Entropies,
    /// Samples in the whole data set.
    pub total: usize,
}

/// Writes one shard's expertise: entropies at their dataset indices.
pub fn write_expertise(
    path: &Path,
    r: &ExpertiseResult,
    shard: Option<(usize, usize)>,
) -> Result<()> {
    let total = r.total;
    let n = r.indices.len();
    let idx = Tensor {
        shape: vec![n],
        data: r.indices.iter().map(|&i| i as f32).collect(),
    };
    let hp = Tensor {
        shape: vec![n],
        data: r.entropies.pt.iter().map(|&v| v as f32).collect(),
    };
    let hf = Tensor {
        shape: vec![n],
        data: r.entropies.ft.iter().map(|&v| v as f32).collect(),
    };
    let mut meta = HashMap::from([("samples_total".to_string(), total.to_string())]);
    if let Some((i, k)) = shard {
        meta.insert("shard".into(), format!("{i}/{k}"));
    }
    write_f32(
        path,
        &[("index", &idx), ("entropy_pt", &hp), ("entropy_ft", &hf)],
        Some(meta),
    )
}

/// Merges shard expertise files into one whole-set file (NaN where a sample
/// was unreadable). Every index must be covered exactly once.
pub fn merge_expertise(inputs: &[&Path], out: &Path) -> Result<usize> {
    let mut total: Option<usize> = None;
    let mut hp: Vec<f32> = Vec::new();
    let mut hf: Vec<f32> = Vec::new();
    let mut seen: Vec<bool> = Vec::new();
    for p in inputs {
        let f = TensorFile::open(p)?;
        let t: usize = f
            .metadata()
            .get("samples_total")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::file(
                    p,
                    "not an expertise file from `dawin expertise` (no samples_total)",
                )
            })?;
        if *total.get_or_insert(t) != t {
            return Err(Error::file(
                p,
                format!(
                    "is for {t} samples, the other shards for {}",
                    total.unwrap()
                ),
            ));
        }
        if hp.is_empty() {
            hp = vec![f32::NAN; t];
            hf = vec![f32::NAN; t];
            seen = vec![false; t];
        }
        let idx = f.read_f32("index")?.data;
        let (a, b) = (
            f.read_f32("entropy_pt")?.data,
            f.read_f32("entropy_ft")?.data,
        );
        for (k, &i) in idx.iter().enumerate() {
            let i = i as usize;
            if i >= t || seen[i] {
                return Err(Error::file(
                    p,
                    format!("sample {i} is out of range or in two shards"),
                ));
            }
            seen[i] = true;
            hp[i] = a[k];
            hf[i] = b[k];
        }
    }
    let t = total.ok_or_else(|| crate::invalid!("nothing to merge"))?;
    let readable = seen.iter().filter(|s| **s).count();
    let meta = HashMap::from([("samples_total".to_string(), t.to_string())]);
    let (a, b) = (
        Tensor {
            shape: vec![t],
            data: hp,
        },
        Tensor {
            shape: vec![t],
            data: hf,
        },
    );
    write_f32(out, &[("entropy_pt", &a), ("entropy_ft", &b)], Some(meta))?;
    read_expertise(out, t)?;
    Ok(readable)
}

/// Merges per-shard summary.json files: counts add up, accuracies are
/// recomputed, λ statistics are pooled.
pub fn merge_summaries(inputs: &[&Path], out: &Path) -> Result<Value> {
    let mut methods: serde_json::Map<String, Value> = serde_json::Map::new();
    let (mut n, mut sum, mut sumsq, mut min, mut max) =
        (0f64, 0f64, 0f64, f64::INFINITY, f64::NEG_INFINITY);
    let mut skipped = 0u64;
    let mut shards = Vec::new();
    for p in inputs {
        let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        let s: Value =
            serde_json::from_str(&text).map_err(|e| Error::file(p, format!("not JSON: {e}")))?;
        let ms = s["methods"]
            .as_object()
            .ok_or_else(|| Error::file(p, "not a dawin summary.json (no methods)"))?;
        for (name, m) in ms {
            let e = methods
                .entry(name.clone())
                .or_insert(json!({"correct": 0, "count": 0}));
            e["correct"] =
                json!(e["correct"].as_u64().unwrap_or(0) + m["correct"].as_u64().unwrap_or(0));
            e["count"] = json!(e["count"].as_u64().unwrap_or(0) + m["count"].as_u64().unwrap_or(0));
        }
        let count = ms
            .values()
            .next()
            .and_then(|m| m["count"].as_f64())
            .unwrap_or(0.0);
        let l = &s["lambda"];
        let (mean, std) = (
            l["mean"].as_f64().unwrap_or(0.0),
            l["std"].as_f64().unwrap_or(0.0),
        );
        n += count;
        sum += mean * count;
        sumsq += std * std * (count - 1.0).max(0.0) + mean * mean * count;
        min = min.min(l["min"].as_f64().unwrap_or(f64::INFINITY));
        max = max.max(l["max"].as_f64().unwrap_or(f64::NEG_INFINITY));
        skipped += s["skipped"].as_u64().unwrap_or(0);
        shards.push(s["shard"].clone());
    }
    for m in methods.values_mut() {
        let (c, k) = (
            m["correct"].as_f64().unwrap_or(0.0),
            m["count"].as_f64().unwrap_or(0.0),
        );
        m["accuracy"] = json!(if k > 0.0 { c / k } else { 0.0 });
    }
    let mean = sum / n.max(1.0);
    let std = if n > 1.0 {
        ((sumsq - n * mean * mean) / (n - 1.0)).max(0.0).sqrt()
    } else {
        0.0
    };
    let merged = json!({
        "methods": methods,
        "lambda": {"mean": mean, "std": std, "min": min, "max": max},
        "skipped": skipped,
        "shards": shards,
    });
    write_json(out, &merged)?;
    Ok(merged)
}

/// Reads a merged expertise file (`dawin merge` of `dawin expertise`
/// shards): the entropies of every readable sample of the whole set.
pub fn read_expertise(path: &Path, n: usize) -> Result<Entropies> {
    let f = TensorFile::open(path)?;
    let pt = f.read_f32("entropy_pt")?;
    let ft = f.read_f32("entropy_ft")?;
    if pt.data.len() != n || ft.data.len() != n {
        return Err(Error::file(
            path,
            format!(
                "holds {} entropies, but the data set has {n} samples",
                pt.data.len()
            ),
        ));
    }
    // Unreadable samples are NaN there; they take no part in the statistics.
    let (p, q): (Vec<f64>, Vec<f64>) = pt
        .data
        .iter()
        .zip(&ft.data)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (a as f64, b as f64))
        .unzip();
    if p.is_empty() {
        return Err(Error::file(path, "holds no finite entropies"));
    }
    Ok(Entropies { pt: p, ft: q })
}

//! Scale-out: per-shard expertise files and their merge, and the merge of
//! per-shard evaluation summaries.
//!
//! `dawin expertise --shard i/n` → `dawin merge` → `dawin eval --shard i/n
//! --expertise-from MERGED` → `dawin merge` of the summaries.

use crate::error::{Error, Result};
use crate::limits;
use crate::method::lambda::Entropies;
use crate::report::outdir::OutDir;
use crate::tensorfile::TensorFile;
use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

pub use super::shard_summary::merge_summaries;

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
    /// The models, data and settings the entropies come from.
    pub provenance: Value,
    /// The output folder, held until the file is written.
    pub out: OutDir,
}

/// Writes one shard's expertise: entropies at their dataset indices, with
/// the provenance that merges and `--expertise-from` check.
pub fn write_expertise(path: &Path, r: &ExpertiseResult) -> Result<()> {
    let n = r.indices.len();
    let index: Vec<i64> = r.indices.iter().map(|&i| i as i64).collect();
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (hp, hf) = (f32s(&r.entropies.pt), f32s(&r.entropies.ft));
    let mut meta = HashMap::from([
        ("samples_total".to_string(), r.total.to_string()),
        ("provenance".to_string(), r.provenance.to_string()),
    ]);
    if let Some(sh) = r.provenance["shard"].as_str() {
        meta.insert("shard".into(), sh.to_string());
    }
    let tensors = [
        ("index", Dtype::I64, bytemuck::cast_slice::<i64, u8>(&index)),
        ("entropy_pt", Dtype::F32, bytemuck::cast_slice(&hp)),
        ("entropy_ft", Dtype::F32, bytemuck::cast_slice(&hf)),
    ];
    write_tensors(path, &tensors, &[n], meta)
}

/// One file to merge: its provenance key and the shard it covers.
pub(super) struct Part<'a> {
    pub(super) path: &'a Path,
    pub(super) key: String,
    pub(super) shard: Option<(usize, usize)>,
}

/// Which shards a merge holds, and whether that is all of them.
pub(super) struct Coverage {
    pub(super) shards: Vec<String>,
    pub(super) partial: bool,
}

/// Parts may be merged when they come from the same inputs and settings
/// and cover shards `0..k` of one split exactly once (a subset only with
/// `allow_partial`); the error names the offending file.
pub(super) fn check_parts(parts: &[Part], allow_partial: bool) -> Result<Coverage> {
    let first = parts
        .first()
        .ok_or_else(|| crate::invalid!("nothing to merge"))?;
    let mut seen: HashMap<usize, &Path> = HashMap::new();
    let mut k0 = None;
    for p in parts {
        if p.key != first.key {
            return Err(Error::file(
                p.path,
                format!(
                    "was made from other models, data or settings than {}",
                    first.path.display()
                ),
            ));
        }
        let Some((i, k)) = p.shard else {
            return Err(Error::file(
                p.path,
                "covers the whole data set (no --shard): merging it with other results would count samples twice",
            ));
        };
        if *k0.get_or_insert(k) != k {
            return Err(Error::file(
                p.path,
                format!(
                    "is shard {i}/{k}, but {} is of a split into {}",
                    first.path.display(),
                    k0.unwrap_or(k)
                ),
            ));
        }
        if let Some(other) = seen.insert(i, p.path) {
            return Err(Error::file(
                p.path,
                format!("repeats shard {i}/{k} of {}", other.display()),
            ));
        }
    }
    let k = k0.unwrap_or(1);
    let missing: Vec<String> = (0..k)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{k}"))
        .collect();
    if !missing.is_empty() && !allow_partial {
        return Err(crate::invalid!(
            "shards {} are missing; pass --allow-partial to merge only the {} given",
            missing.join(", "),
            parts.len()
        ));
    }
    let mut shards: Vec<usize> = seen.into_keys().collect();
    shards.sort_unstable();
    Ok(Coverage {
        shards: shards.into_iter().map(|i| format!("{i}/{k}")).collect(),
        partial: !missing.is_empty(),
    })
}

/// The provenance of a file's metadata, or an error saying it has none.
fn provenance_of(path: &Path, meta: &HashMap<String, String>) -> Result<Value> {
    meta.get("provenance")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|p| p.get("set_key").is_some())
        .ok_or_else(|| {
            Error::file(
                path,
                "has no provenance: not an expertise file of this dawin (rerun `dawin expertise`)",
            )
        })
}

pub(super) fn parse_shard(path: &Path, v: &Value) -> Result<Option<(usize, usize)>> {
    let Some(s) = v.as_str() else { return Ok(None) };
    let bad = || Error::file(path, format!("has a shard `{s}` that is not i/n"));
    let (i, k) = s.split_once('/').ok_or_else(bad)?;
    let (i, k) = (
        i.parse::<usize>().map_err(|_| bad())?,
        k.parse::<usize>().map_err(|_| bad())?,
    );
    if k == 0 || i >= k {
        return Err(bad());
    }
    Ok(Some((i, k)))
}

/// One shard's expertise file, read and checked.
struct ShardFile {
    provenance: Value,
    total: usize,
    index: Vec<i64>,
    pt: Vec<f32>,
    ft: Vec<f32>,
}

fn read_shard(p: &Path) -> Result<ShardFile> {
    let f = TensorFile::open(p)?;
    let meta = f.metadata();
    let provenance = provenance_of(p, &meta)?;
    let total: usize = meta
        .get("samples_total")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Error::file(
                p,
                "not an expertise file from `dawin expertise` (no samples_total)",
            )
        })?;
    limits::at_most("samples_total", total, limits::MAX_SAMPLES)
        .map_err(|e| Error::file(p, e.to_string()))?;
    let (ishape, index) = f.read_i64("index")?;
    let (pt, ft) = (
        f.read_f32("entropy_pt")?.data,
        f.read_f32("entropy_ft")?.data,
    );
    if ishape.len() != 1 || pt.len() != index.len() || ft.len() != index.len() {
        return Err(Error::file(
            p,
            format!(
                "holds {} indices but {} and {} entropies",
                index.len(),
                pt.len(),
                ft.len()
            ),
        ));
    }
    Ok(ShardFile {
        provenance,
        total,
        index,
        pt,
        ft,
    })
}

/// Merges shard expertise files into one whole-set file (NaN where a sample
/// was unreadable): the same models, data and settings, every shard once,
/// every index inside its shard.
pub fn merge_expertise(inputs: &[&Path], out: &Path, allow_partial: bool) -> Result<usize> {
    crate::tensorfile::check_output(out)?;
    let files: Vec<ShardFile> = inputs
        .iter()
        .map(|p| read_shard(p))
        .collect::<Result<_>>()?;
    let parts: Vec<Part> = inputs
        .iter()
        .zip(&files)
        .map(|(p, f)| {
            let key = crate::report::provenance::key_of(&f.provenance)
                .unwrap_or("")
                .to_string();
            Ok(Part {
                path: p,
                key,
                shard: parse_shard(p, &f.provenance["shard"])?,
            })
        })
        .collect::<Result<_>>()?;
    let coverage = check_parts(&parts, allow_partial)?;
    let t = files[0].total;
    limits::check_alloc("the merged expertise", t, 12)?;
    let (mut hp, mut hf, mut seen) = (vec![f32::NAN; t], vec![f32::NAN; t], vec![false; t]);
    let mut nan = 0;
    for ((f, part), p) in files.iter().zip(&parts).zip(inputs) {
        if f.total != t {
            return Err(Error::file(
                p,
                format!("is for {} samples, the other shards for {t}", f.total),
            ));
        }
        let r = range(part.shard, t)?;
        for (k, &i) in f.index.iter().enumerate() {
            let ok = i >= 0 && r.contains(&(i as usize)) && !seen[i as usize];
            if !ok {
                return Err(Error::file(
                    p,
                    format!("sample index {i} is outside its shard {r:?} or repeated"),
                ));
            }
            let i = i as usize;
            seen[i] = true;
            (hp[i], hf[i]) = (f.pt[k], f.ft[k]);
            nan += usize::from(!(hp[i].is_finite() && hf[i].is_finite()));
        }
    }
    if nan > 0 {
        crate::reporter::warn(&format!(
            "{nan} evaluated samples have a NaN or infinite entropy in the shards; eval takes them as maximal, as a whole run does"
        ));
    }
    // Which samples were evaluated: a NaN entropy alone cannot tell an
    // unreadable sample from an evaluated one whose logits held a NaN.
    let readable: Vec<f32> = seen.iter().map(|&s| f32::from(u8::from(s))).collect();
    let mut provenance = files[0].provenance.clone();
    provenance["shard"] = Value::Null;
    provenance["shards"] = json!(coverage.shards);
    provenance["partial"] = json!(coverage.partial);
    let meta = HashMap::from([
        ("samples_total".to_string(), t.to_string()),
        ("provenance".to_string(), provenance.to_string()),
    ]);
    let tensors = [
        (
            "entropy_pt",
            Dtype::F32,
            bytemuck::cast_slice::<f32, u8>(&hp),
        ),
        ("entropy_ft", Dtype::F32, bytemuck::cast_slice(&hf)),
        ("readable", Dtype::F32, bytemuck::cast_slice(&readable)),
    ];
    write_tensors(out, &tensors, &[t], meta)?;
    read_expertise(out, t, 2)?;
    Ok(seen.iter().filter(|s| **s).count())
}

/// Writes 1-D tensors of one `shape` with `meta` (through a temporary file).
fn write_tensors(
    path: &Path,
    tensors: &[(&str, Dtype, &[u8])],
    shape: &[usize],
    meta: HashMap<String, String>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, d, b)| {
            let v = TensorView::new(*d, shape.to_vec(), b)
                .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))?;
            Ok((n.to_string(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))?;
    crate::tensorfile::write_atomic(path, &bytes)
}

/// Reads a merged expertise file (`dawin merge` of `dawin expertise`
/// shards): the entropies of every evaluated sample of the whole set, a
/// NaN one taken as maximal (ln of the `classes` count, as a whole run
/// takes it). Also returns the file's provenance, when it has one; a
/// partial merge is said once.
pub fn read_expertise(path: &Path, n: usize, classes: usize) -> Result<(Entropies, Option<Value>)> {
    let f = TensorFile::open(path)?;
    let provenance = provenance_of(path, &f.metadata()).ok();
    if let Some(p) = &provenance
        && p["partial"] == json!(true)
    {
        crate::reporter::note(&format!(
            "{} merges only the shards {}: whole-set statistics come from those",
            path.display(),
            p["shards"]
        ));
    }
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
    // Files merged before the `readable` mask mark unreadable samples by a
    // NaN entropy alone.
    let readable: Vec<bool> = match f.read_f32("readable") {
        Ok(r) if r.data.len() == n => r.data.iter().map(|&v| v != 0.0).collect(),
        _ => pt
            .data
            .iter()
            .zip(&ft.data)
            .map(|(a, b)| a.is_finite() && b.is_finite())
            .collect(),
    };
    let maximal = (classes.max(1) as f64).ln();
    let h = |v: f32| if v.is_finite() { v as f64 } else { maximal };
    let (p, q): (Vec<f64>, Vec<f64>) = (0..n)
        .filter(|&i| readable[i])
        .map(|i| (h(pt.data[i]), h(ft.data[i])))
        .unzip();
    if p.is_empty() {
        return Err(Error::file(path, "holds no evaluated samples"));
    }
    Ok((Entropies { pt: p, ft: q }, provenance))
}

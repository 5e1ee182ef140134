//! The cache of the expertise pass: raw logits per model for one shard,
//! kept in the output folder and keyed by the content hashes of both models
//! and the data, the shard and every setting that changes the logits. A
//! rerun with other methods or strategies reuses it; a cache from other
//! models or data is replaced, with a one-line notice. A cache with the right key is still checked
//! (every tensor's checksum, shape and values) before it is trusted; one
//! that fails is recomputed, with a one-line notice.

use crate::error::Result;
use crate::model::ModelSpec;
use crate::tensorfile::{Tensor, TensorFile, write_f32};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

pub struct Cache {
    pub key: String,
    /// Tensor name → values, one row per sample of the shard.
    pub tensors: HashMap<String, Vec<f32>>,
}

/// What the logits of a shard depend on.
pub struct KeyInputs<'a> {
    /// Content hashes of the pretrained and fine-tuned checkpoints.
    pub models: (&'a str, &'a str),
    /// The data's content fingerprint.
    pub data: &'a str,
    pub shard: Range<usize>,
    pub spec: &'a ModelSpec,
    /// The settings that change logits (precision, model flags, ...).
    pub settings: serde_json::Value,
}

/// The cache key of `k`.
pub fn key(k: &KeyInputs) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [k.models.0, k.models.1, k.data] {
        h.update(part.as_bytes());
    }
    let s = k.spec;
    let settings = format!(
        "{:?}|{}|{}|{}|{}",
        k.shard, s.heads, s.act, s.ln_eps, k.settings
    );
    h.update(settings.as_bytes());
    format!("{:032x}", h.digest128())
}

/// The checksum of a tensor's values, kept in the cache's metadata.
fn checksum(v: &[f32]) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(bytemuck::cast_slice(v))
    )
}

impl Cache {
    pub fn new(key: String) -> Cache {
        Cache {
            key,
            tensors: HashMap::new(),
        }
    }

    /// The cache at `path` if its key is `key` and every tensor is intact
    /// for `n` samples of `classes` logits; `Err` says why the file there
    /// cannot be used (another key, a broken tensor); `Ok(None)` when there
    /// is no readable cache file.
    pub fn load(
        path: &Path,
        key: &str,
        n: usize,
        classes: usize,
    ) -> std::result::Result<Option<Cache>, String> {
        let Ok(f) = TensorFile::open(path) else {
            return Ok(None);
        };
        let meta = f.metadata();
        if meta.get("key").map(String::as_str) != Some(key) {
            return Err("was made for other models, data, shard or logit settings".into());
        }
        let mut tensors = HashMap::new();
        for name in f.names() {
            let t = f.read_f32(&name).map_err(|e| e.to_string())?;
            if meta.get(&format!("xxh3:{name}")) != Some(&checksum(&t.data)) {
                return Err(format!("`{name}` does not match its checksum"));
            }
            check_tensor(&name, &t.data, n, classes)?;
            tensors.insert(name, t.data);
        }
        if let Some(valid) = tensors.get("valid") {
            for (name, v) in tensors.iter().filter(|(k, _)| k.starts_with("logits")) {
                let bad = (0..n).find(|&j| {
                    valid[j] > 0.5
                        && v[j * classes..(j + 1) * classes]
                            .iter()
                            .any(|x| !x.is_finite())
                });
                if let Some(j) = bad {
                    return Err(format!(
                        "`{name}` holds non-finite logits for readable sample {j}"
                    ));
                }
            }
        }
        Ok(Some(Cache {
            key: key.to_string(),
            tensors,
        }))
    }

    /// Writes every tensor as `[n]` or `[n, cols]`, with its checksum.
    pub fn save(&self, path: &Path, n: usize) -> Result<()> {
        let owned: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, v)| {
                let cols = v.len() / n.max(1);
                let shape = if cols == 1 { vec![n] } else { vec![n, cols] };
                let t = Tensor {
                    shape,
                    data: v.clone(),
                };
                (k.clone(), t)
            })
            .collect();
        let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let mut meta = HashMap::from([("key".to_string(), self.key.clone())]);
        for (k, v) in &self.tensors {
            meta.insert(format!("xxh3:{k}"), checksum(v));
        }
        write_f32(path, &refs, Some(meta))
    }
}

/// A cached tensor has the shape of its kind: `valid` one 0/1 per sample,
/// logits `classes` per sample.
fn check_tensor(
    name: &str,
    v: &[f32],
    n: usize,
    classes: usize,
) -> std::result::Result<(), String> {
    if name == "valid" {
        if v.len() != n || v.iter().any(|x| *x != 0.0 && *x != 1.0) {
            return Err(format!("`valid` is not one 0 or 1 for each of {n} samples"));
        }
    } else if name.starts_with("logits") {
        if v.len() != n * classes {
            return Err(format!(
                "`{name}` holds {} values, not {classes} logits for each of {n} samples",
                v.len()
            ));
        }
    } else {
        return Err(format!("unexpected tensor `{name}`"));
    }
    Ok(())
}

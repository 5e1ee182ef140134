//! The cache of the expertise pass: raw logits per model for one shard,
//! kept in the output folder and keyed by a hash of both model files, the
//! data, the shard and every setting that changes the logits. A rerun with
//! other methods or strategies reuses it; a cache from other models or data
//! is ignored.

use super::data::Dataset;
use crate::error::{Error, Result};
use crate::model::device::Precision;
use crate::model::{ModelSpec, Overrides};
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
    pub pretrained: &'a Path,
    pub finetuned: &'a Path,
    pub data: &'a Dataset,
    pub shard: Range<usize>,
    pub spec: &'a ModelSpec,
    pub overrides: Overrides,
    pub precision: Precision,
}

/// The cache key of `k`.
pub fn key(k: &KeyInputs) -> Result<String> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in [k.pretrained, k.finetuned] {
        h.update(file_hash(p)?.as_bytes());
    }
    h.update(k.data.fingerprint().as_bytes());
    let s = k.spec;
    let settings = format!(
        "{:?}|{}|{}|{}|{:?}",
        k.shard, s.heads, s.act, s.ln_eps, k.overrides
    );
    h.update(settings.as_bytes());
    // f32 keys stay as they were, so existing caches remain valid.
    if k.precision != Precision::F32 {
        h.update(format!("|{}", k.precision).as_bytes());
    }
    Ok(format!("{:032x}", h.digest128()))
}

fn file_hash(path: &Path) -> Result<String> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&b)))
}

impl Cache {
    pub fn new(key: String) -> Cache {
        Cache {
            key,
            tensors: HashMap::new(),
        }
    }

    /// The cache at `path` if its key is `key`.
    pub fn load(path: &Path, key: &str) -> Option<Cache> {
        let f = TensorFile::open(path).ok()?;
        if f.metadata().get("key").map(String::as_str) != Some(key) {
            return None;
        }
        let tensors = f
            .names()
            .into_iter()
            .filter_map(|n| f.read_f32(&n).ok().map(|t| (n, t.data)))
            .collect();
        Some(Cache {
            key: key.to_string(),
            tensors,
        })
    }

    /// Writes every tensor as `[n]` or `[n, cols]`.
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
        let meta = HashMap::from([("key".to_string(), self.key.clone())]);
        write_f32(path, &refs, Some(meta))
    }
}

//! Model folders: the HF hub layout (`config.json` beside
//! `model.safetensors`, `pytorch_model.bin`, or their shards listed in
//! `*.index.json`) and open_clip's (`open_clip_config.json` beside
//! `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`).

use super::{Checkpoint, OpenOptions, config};
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Weight files in the order they are preferred.
const HF_WEIGHTS: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];
const OPEN_CLIP_WEIGHTS: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

pub fn open(dir: &Path, opt: OpenOptions) -> Result<Checkpoint> {
    let (config_name, hints, weights): (&str, _, &[&str]) = if dir
        .join("open_clip_config.json")
        .is_file()
    {
        (
            "open_clip_config.json",
            config::open_clip(&dir.join("open_clip_config.json"))?,
            &OPEN_CLIP_WEIGHTS,
        )
    } else if dir.join("config.json").is_file() {
        (
            "config.json",
            config::hf(&dir.join("config.json"))?,
            &HF_WEIGHTS,
        )
    } else {
        return Err(Error::file(
            dir,
            format!(
                "a folder without `config.json` or `open_clip_config.json`, so not a model folder (found: {}); pass the weights file itself",
                listing(dir)
            ),
        ));
    };
    let Some(weights) = weights.iter().find(|w| dir.join(w).is_file()) else {
        return Err(Error::file(
            dir,
            format!(
                "has `{config_name}` but none of {} (found: {})",
                weights.join(", "),
                listing(dir)
            ),
        ));
    };
    let mut c = Checkpoint::empty(dir);
    let desc = if weights.ends_with(".index.json") {
        let shards = shard_files(&dir.join(weights))?;
        for s in &shards {
            c.add_file(&dir.join(s), opt)?;
        }
        check_index(&c, &dir.join(weights))?;
        format!("{} shards", shards.len())
    } else {
        c.add_file(&dir.join(weights), opt)?
    };
    c.description = format!("folder: {config_name} + {weights} ({desc})");
    // The weights' own metadata wins over the folder's config.
    c.hints = hints;
    c.hints.extend(c.metadata.clone());
    c.hint_source = Some(format!("`{config_name}`"));
    c.config_name = Some(format!("`{config_name}`"));
    c.drop_assumed_hints();
    Ok(c)
}

fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        return "nothing".into();
    }
    let more = names.len().saturating_sub(8);
    names.truncate(8);
    let mut s = names.join(", ");
    if more > 0 {
        s += &format!(", and {more} more");
    }
    s
}

fn read_index(index: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(index, format!("not valid JSON: {e}")))?;
    match v.get("weight_map") {
        Some(serde_json::Value::Object(m)) => Ok(m.clone()),
        _ => Err(Error::file(index, "no `weight_map` object")),
    }
}

/// The shard files an index names, each a plain file name in the folder.
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let mut shards = BTreeSet::new();
    for (tensor, file) in read_index(index)? {
        let Some(f) = file.as_str() else {
            return Err(Error::file(
                index,
                format!("`{tensor}` maps to a non-string"),
            ));
        };
        if f.contains(['/', '\\']) || f == ".." || f.is_empty() {
            return Err(Error::file(
                index,
                format!("shard name {f:?} is not a file name in the folder"),
            ));
        }
        shards.insert(f.to_string());
    }
    if shards.is_empty() {
        return Err(Error::file(index, "the index lists no shards"));
    }
    Ok(shards.into_iter().collect())
}

/// Every tensor the index lists is in the shards read.
fn check_index(c: &Checkpoint, index: &Path) -> Result<()> {
    let map = read_index(index)?;
    let missing: Vec<&String> = map.keys().filter(|t| c.entry(t).is_none()).collect();
    if let Some(first) = missing.first() {
        return Err(Error::file(
            index,
            format!(
                "{} tensor(s) listed in the index are in no shard, e.g. `{first}` (expected in {})",
                missing.len(),
                map[first.as_str()]
            ),
        ));
    }
    Ok(())
}

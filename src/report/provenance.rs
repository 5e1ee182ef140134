//! Where a result comes from: the dawin version, the command line, every
//! input's path and content hash, and every setting that changes a result.
//! `summary.json` and the expertise files carry it; merges and reruns
//! compare it (`set_key`: the hash of the inputs and settings, the shard
//! and the method list aside).

use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::path::Path;

/// xxh3-128 of a file's bytes, as hex.
pub fn file_hash(path: &Path) -> Result<String> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&b)))
}

/// This process's command line, quoted so that it can be pasted back.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "))
}

/// One input of a run: its role (`pretrained`, `data`, ...), path and
/// content hash.
pub struct Input<'a> {
    pub role: &'a str,
    pub path: &'a Path,
    pub hash: String,
}

/// The provenance record: `{"dawin", "command", "inputs", "settings",
/// "set_key"}`.
pub fn record(inputs: &[Input], settings: Value) -> Value {
    let files: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|i| {
            let v = json!({"path": i.path.display().to_string(), "hash": i.hash});
            (i.role.to_string(), v)
        })
        .collect();
    json!({
        "dawin": env!("CARGO_PKG_VERSION"),
        "command": command_line(),
        "inputs": files,
        "settings": settings,
        "set_key": set_key(inputs, &settings),
    })
}

/// The hash of the inputs' contents (by role) and the settings.
pub fn set_key(inputs: &[Input], settings: &Value) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for i in inputs {
        h.update(i.role.as_bytes());
        h.update(b"=");
        h.update(i.hash.as_bytes());
        h.update(b";");
    }
    // serde_json's maps are sorted by key: the text is canonical.
    h.update(settings.to_string().as_bytes());
    format!("{:032x}", h.digest128())
}

/// The `set_key` of a summary or an expertise file's provenance.
pub fn key_of(provenance: &Value) -> Option<&str> {
    provenance.get("set_key").and_then(Value::as_str)
}

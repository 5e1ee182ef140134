//! PyTorch's zip checkpoints (`torch.save` since 1.6, `.pt/.pth/.bin`):
//! `ARCHIVE/data.pkl` is unpickled with the restricted unpickler and every
//! tensor it names becomes a view into the memory-mapped `ARCHIVE/data/KEY`
//! entry. Nothing in the pickle is run.

use super::pickle::{self, Globals, PickleError, Record, StorageRef, Value};
use super::{Entry, Source};
use crate::error::{Error, Result};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Cursor;
use std::path::Path;

/// The first bytes of a zip file.
pub const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Keys under which training scripts nest the state dict, in order of
/// preference.
const NESTED: [&str; 6] = [
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "state_dict_ema",
    "model_ema",
];

/// The tensors of one torch zip file and how they were found.
pub struct TorchTensors {
    pub entries: BTreeMap<String, Entry>,
    /// What was read, e.g. "PyTorch zip, state dict under `state_dict`".
    pub description: String,
}

/// Reads the tensor index of a torch zip checkpoint mapped in `src`.
pub fn read(path: &Path, src: &Source, source: usize, globals: Globals) -> Result<TorchTensors> {
    let bytes: &[u8] = src;
    let err = |m: String| Error::file(path, m);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| err(format!("not a readable PyTorch zip checkpoint: {e}")))?;
    let entries = stored_entries(&mut zip, bytes.len()).map_err(err)?;
    let pkl = entries
        .keys()
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .cloned();
    let Some(pkl) = pkl else {
        let names: Vec<&String> = entries.keys().take(5).collect();
        return Err(err(format!(
            "a zip file without `data.pkl`, so not a torch.save checkpoint (entries: {names:?})"
        )));
    };
    let archive = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
    if let Some(r) = entries.get(&format!("{archive}byteorder"))
        && &bytes[r.clone()] != b"little"
    {
        return Err(err(
            "stored big-endian (the `byteorder` entry is not `little`); re-save it on a little-endian machine".into(),
        ));
    }
    let torchscript = entries.contains_key(&format!("{archive}constants.pkl"));
    let globals = if torchscript {
        Globals::Records
    } else {
        globals
    };
    let root = pickle::load(&bytes[entries[&pkl].clone()], globals)
        .map_err(|e| refused(path, e, torchscript))?;
    let lookup = |key: &str| entries.get(&format!("{archive}data/{key}")).cloned();
    let kind = if torchscript {
        "TorchScript archive (tensors by attribute path)"
    } else {
        "PyTorch zip"
    };
    build(
        path,
        (&root, &bytes[entries[&pkl].clone()]),
        source,
        &lookup,
        kind,
    )
}

/// Reads a plain pickle file: `pickle.dump(model)` as WiSE-FT writes it
/// (each storage a `torch.storage._load_from_bytes` blob), or torch's legacy
/// format (`torch.save` before 1.6 or with `_use_new_zipfile_serialization=False`).
pub fn read_pickle(
    path: &Path,
    src: &Source,
    source: usize,
    globals: Globals,
) -> Result<TorchTensors> {
    let bytes: &[u8] = src;
    let (legacy, kind) = if pickle::is_legacy(bytes) {
        (true, "PyTorch legacy format")
    } else {
        (false, "pickle (storages inline)")
    };
    let (root, storages) = if legacy {
        pickle::load_legacy(bytes, 0..bytes.len(), globals)
    } else {
        pickle::load_with_storages(bytes, globals)
    }
    .map_err(|e| refused(path, e, false))?;
    let lookup = |key: &str| storages.get(key).cloned();
    build(path, (&root, bytes), source, &lookup, kind)
}

/// The entries of every tensor of `root` (unpickled from `pickled`), their
/// storages found by `lookup`.
fn build(
    path: &Path,
    (root, pickled): (&Value, &[u8]),
    source: usize,
    lookup: &dyn Fn(&str) -> Option<std::ops::Range<usize>>,
    kind: &str,
) -> Result<TorchTensors> {
    let err = |m: String| Error::file(path, m);
    let (tensors, under) = state_dict(root, pickled).map_err(&err)?;
    if tensors.is_empty() {
        return Err(err(format!(
            "the checkpoint holds no tensors (its top level is a {}); dawin reads state dicts",
            describe_top(root)
        )));
    }
    let mut out = BTreeMap::new();
    for (name, t) in tensors {
        let e = entry(&t, lookup, source).map_err(|m| err(format!("tensor `{name}`: {m}")))?;
        out.insert(name, e);
    }
    check_views(&out).map_err(err)?;
    let description = match under {
        Some(k) => format!("{kind}, state dict under `{k}`"),
        None => kind.to_string(),
    };
    Ok(TorchTensors {
        entries: out,
        description,
    })
}

fn refused(path: &Path, e: PickleError, torchscript: bool) -> Error {
    let msg = match &e {
        PickleError::Refused(g) => format!(
            "{e}. dawin reads tensors without running code from the file, so it accepts only state dicts \
             (collections.OrderedDict, torch tensors and storages). If `{g}` is the class of a pickled whole \
             model (WiSE-FT's `pickle.dump(classifier)`, or `torch.save(model)`), pass --pickled-modules to read its tensors \
             by attribute path, still without running anything; otherwise save the weights alone in Python: \
             `torch.save(model.state_dict(), 'weights.pt')`"
        ),
        _ if torchscript => format!("{e} (in a TorchScript archive)"),
        _ => e.to_string(),
    };
    Error::file(path, msg)
}

/// The byte range of every stored (uncompressed) entry.
fn stored_entries(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    total: usize,
) -> std::result::Result<HashMap<String, std::ops::Range<usize>>, String> {
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| format!("zip entry {i}: {e}"))?;
        if f.is_dir() {
            continue;
        }
        let name = f
            .name()
            .map_err(|e| format!("zip entry {i}: {e}"))?
            .to_string();
        if f.compression() != zip::CompressionMethod::Stored {
            // torch writes tensors and pickles stored (mappable); TorchScript
            // compresses only its code, which is never read.
            let read =
                name.ends_with(".pkl") || name.contains("/data/") || name.ends_with("byteorder");
            if read {
                return Err(format!(
                    "zip entry `{name}` is compressed ({}); torch.save writes it stored; re-save it with torch.save",
                    f.compression()
                ));
            }
            continue;
        }
        let start = f
            .data_start()
            .ok_or_else(|| format!("zip entry `{name}` has no data offset"))?;
        let r = usize::try_from(start)
            .ok()
            .zip(usize::try_from(f.size()).ok())
            .and_then(|(s, n)| Some(s..s.checked_add(n)?))
            .filter(|r| r.end <= total)
            .ok_or_else(|| format!("zip entry `{name}` runs past the end of the file"))?;
        out.insert(name, r);
    }
    Ok(out)
}

/// The storage dtype of a torch storage class.
fn storage_dtype(kind: &str) -> Option<Dtype> {
    Some(match kind {
        "FloatStorage" => Dtype::F32,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "DoubleStorage" => Dtype::F64,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

/// The tensors' elements against their storages', each storage counted
/// once: views may share a storage (tied weights) but a file whose views
/// add up to far more elements than it stores is made of broadcast
/// (stride-0) views, which would cost memory far beyond the file's size.
fn check_views(entries: &BTreeMap<String, Entry>) -> std::result::Result<(), String> {
    let mut storages = HashSet::new();
    let (mut stored, mut viewed) = (0u128, 0u128);
    for e in entries.values() {
        if storages.insert((e.bytes.start, e.bytes.end)) {
            stored += e.bytes.len() as u128 / super::elem_size(e.dtype).unwrap_or(1) as u128;
        }
        viewed += e.numel() as u128;
    }
    if viewed > 4 * stored + (1 << 20) {
        return Err(format!(
            "its tensors view {viewed} elements of storages holding {stored}: views that repeat elements (stride 0) on this scale are not a checkpoint's, so the file is refused"
        ));
    }
    Ok(())
}

fn entry(
    t: &pickle::TensorRef,
    lookup: &dyn Fn(&str) -> Option<std::ops::Range<usize>>,
    source: usize,
) -> std::result::Result<Entry, String> {
    let StorageRef { kind, key, numel } = &t.storage;
    let dtype =
        storage_dtype(kind).ok_or_else(|| format!("unsupported storage type torch.{kind}"))?;
    let data =
        lookup(key).ok_or_else(|| format!("its storage `{key}` is missing from the file"))?;
    let size = super::elem_size(dtype).unwrap_or(1) as u64;
    if numel.checked_mul(size) != Some(data.len() as u64) {
        return Err(format!(
            "storage `{key}` holds {} bytes, but the pickle says {numel} elements of {kind}",
            data.len()
        ));
    }
    let to_usize =
        |v: &[u64]| -> Option<Vec<usize>> { v.iter().map(|&x| usize::try_from(x).ok()).collect() };
    let (Some(shape), Some(stride), Ok(offset)) = (
        to_usize(&t.shape),
        to_usize(&t.stride),
        usize::try_from(t.offset),
    ) else {
        return Err("size or stride does not fit in memory".into());
    };
    Entry::new(source, dtype, shape, stride, offset, data)
}

/// Every tensor of a checkpoint by its dotted name.
type Named = Vec<(String, pickle::TensorRef)>;

/// The tensors to load and the nesting key they were found under. A dict
/// of tensors is a state dict; a training checkpoint's dict is searched for
/// the usual keys; a record (pickled module) gives its tensors by attribute
/// path.
fn state_dict(
    root: &Value,
    pickled: &[u8],
) -> std::result::Result<(Named, Option<String>), String> {
    if let Value::Dict(d) = root {
        for key in NESTED {
            let found = d
                .borrow()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone());
            if let Some(v) = found {
                let t = collect(&v, pickled)?;
                if !t.is_empty() {
                    return Ok((t, Some(key.to_string())));
                }
            }
        }
    }
    Ok((collect(root, pickled)?, None))
}

/// Every tensor below `v`, named by its dotted path (nn.Module's
/// `_parameters`, `_buffers` and `_modules` add no name, as in
/// `state_dict()`). Containers seen twice are walked once. A key that is
/// neither a string nor an integer (bytes, a tuple) is an error naming it:
/// skipping it would leave a "missing tensor" that misleads.
fn collect(v: &Value, pickled: &[u8]) -> std::result::Result<Named, String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    walk((v, pickled), "", 0, &mut seen, &mut out)?;
    Ok(out)
}

fn walk(
    (v, pickled): (&Value, &[u8]),
    prefix: &str,
    depth: usize,
    seen: &mut HashSet<usize>,
    out: &mut Named,
) -> std::result::Result<(), String> {
    if depth > pickle::MAX_DEPTH {
        return Ok(());
    }
    let join = |k: &str| {
        if matches!(k, "_parameters" | "_buffers" | "_modules") {
            prefix.to_string()
        } else if prefix.is_empty() {
            format!("{k}.")
        } else {
            format!("{prefix}{k}.")
        }
    };
    match v {
        Value::Tensor(t) => out.push((prefix.trim_end_matches('.').to_string(), (**t).clone())),
        Value::Dict(d) => {
            if v.container_id().is_some_and(|id| !seen.insert(id)) {
                return Ok(());
            }
            for (k, v) in d.borrow().iter() {
                let k = match k {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(bad_key(other, prefix, pickled)),
                };
                walk((v, pickled), &join(&k), depth + 1, seen, out)?;
            }
        }
        Value::Record(r) => {
            if v.container_id().is_some_and(|id| !seen.insert(id)) {
                return Ok(());
            }
            let Record { state, .. } = &*r.borrow();
            walk((state, pickled), prefix, depth + 1, seen, out)?;
        }
        // Module state as (dict, slots) pairs.
        Value::Tuple(t) if t.len() == 2 && matches!(t[0], Value::Dict(_)) => {
            walk((&t[0], pickled), prefix, depth + 1, seen, out)?
        }
        _ => {}
    }
    Ok(())
}

/// A state-dict key that is not a parameter name, named.
fn bad_key(key: &Value, prefix: &str, pickled: &[u8]) -> String {
    let under = match prefix.trim_end_matches('.') {
        "" => "at the top level".to_string(),
        p => format!("under `{p}`"),
    };
    let shown = match key {
        Value::Bytes(r) => match pickled.get(r.clone()) {
            Some(b) => format!(" b\"{}\"", b.escape_ascii()),
            None => String::new(),
        },
        _ => String::new(),
    };
    format!(
        "a state-dict key {under} is {}{shown}, not a string: keys must be parameter names (str); \
         re-save with string keys",
        key.kind()
    )
}

fn describe_top(v: &Value) -> String {
    match v {
        Value::Dict(d) => {
            let keys: Vec<String> = d
                .borrow()
                .iter()
                .take(6)
                .filter_map(|(k, _)| k.as_str().map(|s| format!("`{s}`")))
                .collect();
            format!("dict with keys {}", keys.join(", "))
        }
        Value::Record(r) => format!("`{}` object", r.borrow().class),
        other => other.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bytes key is named in the error, not skipped.
    #[test]
    fn a_bytes_key_is_an_error_naming_it() {
        // {b'abc': 1, 'w': {b'x': 2}}
        let p = b"\x80\x03}(C\x03abcK\x01X\x01\x00\x00\x00w}C\x01xK\x02su.";
        let v = pickle::load(p, Globals::Strict).unwrap();
        let e = collect(&v, p).unwrap_err();
        assert!(e.contains("at the top level is bytes b\"abc\""), "{e}");
    }

    /// A stride-0 view that would expand 4 stored bytes to 4 M elements is
    /// refused; tied views of one storage are not.
    #[test]
    fn broadcast_views_are_bounded_by_what_is_stored() {
        let view = |shape: usize, stride: usize, bytes: std::ops::Range<usize>| {
            Entry::new(0, Dtype::F32, vec![shape], vec![stride], 0, bytes).unwrap()
        };
        let big = BTreeMap::from([("w".to_string(), view(1 << 22, 0, 0..4))]);
        let e = check_views(&big).unwrap_err();
        assert!(e.contains("stride 0"), "{e}");
        let tied = BTreeMap::from([
            ("a".to_string(), view(1 << 20, 1, 0..4 << 20)),
            ("b".to_string(), view(1 << 20, 1, 0..4 << 20)),
        ]);
        check_views(&tied).unwrap();
    }
}

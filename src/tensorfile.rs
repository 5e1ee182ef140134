//! Reading and writing plain tensor files (safetensors) for inputs and outputs.

use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::Path;

/// A memory-mapped safetensors file, validated on open.
pub struct TensorFile {
    path: std::path::PathBuf,
    map: memmap2::Mmap,
}

/// A dense f32 tensor read from or written to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Err(Error::file(
                path,
                "is a directory, expected a .safetensors file",
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us while we
        // run is outside what any loader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if let Some(name) = duplicate_key(&map) {
            return Err(Error::file(
                path,
                format!(
                    "the header lists the tensor `{name}` twice; a safetensors file names each tensor once (the file is damaged or hand-made)"
                ),
            ));
        }
        SafeTensors::deserialize(&map).map_err(|e| describe(path, &map, e))?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed view (cheap: the header was validated in `open`).
    pub fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.map).expect("validated in open")
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .tensors()
            .names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        n.sort();
        n
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.map)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors().tensor(name).ok().map(|t| t.shape().to_vec())
    }

    /// Reads a floating-point tensor as f32 (f16, bf16 and f64 are converted).
    pub fn read_f32(&self, name: &str) -> Result<Tensor> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("missing tensor `{name}`")))?;
        let data =
            f32_values(t.dtype(), t.data()).ok_or_else(|| self.not_float(name, t.dtype()))?;
        Ok(Tensor {
            shape: t.shape().to_vec(),
            data,
        })
    }

    /// The error for a tensor that should hold floats but does not.
    pub fn not_float(&self, name: &str, dtype: Dtype) -> Error {
        Error::file(
            &self.path,
            format!("tensor `{name}` has dtype {dtype:?}; supported: F32, F16, BF16, F64"),
        )
    }

    /// Reads an integer tensor (labels) as i64.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .map_err(|_| Error::file(&self.path, format!("missing tensor `{name}`")))?;
        let b = t.data();
        let data: Vec<i64> = match t.dtype() {
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            other => {
                return Err(Error::file(
                    &self.path,
                    format!("tensor `{name}` has dtype {other:?}; expected I64 or I32"),
                ));
            }
        };
        Ok((t.shape().to_vec(), data))
    }
}

/// Little-endian values of a float dtype as f32 (f16, bf16 exactly, f64
/// rounded to nearest); `None` for any other dtype.
pub fn f32_values(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    let v = match dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// Turns safetensors' parse errors into sentences a user can act on, naming
/// the tensor or metadata entry at fault where there is one.
pub(crate) fn describe(path: &Path, map: &[u8], e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    let msg = match e {
        E::HeaderTooSmall => format!(
            "not a safetensors file: {} bytes is too short for the 8-byte header length",
            map.len()
        ),
        E::InvalidHeaderLength | E::HeaderTooLarge => {
            let claimed = map
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .unwrap_or(0);
            format!(
                "not a safetensors file, or truncated: the header claims {claimed} bytes but the file holds {}",
                map.len()
            )
        }
        E::MetadataIncompleteBuffer => {
            "truncated or padded: the tensors' data does not end where the file ends".to_string()
        }
        E::InvalidHeader(_) => "not a safetensors file: the header is not UTF-8 text".to_string(),
        E::InvalidHeaderDeserialization(err) => match header_problem(map) {
            Some(p) => p,
            None => format!("not a safetensors file: the header is not valid JSON ({err})"),
        },
        E::InvalidOffset(name) => format!(
            "tensor `{name}`: its data offsets do not follow the previous tensor's or lie outside the file"
        ),
        E::TensorInvalidInfo | E::ValidationOverflow => match header_problem(map) {
            Some(p) => p,
            None => "a tensor's shape, dtype and data offsets do not agree".to_string(),
        },
        other => format!("invalid safetensors file: {other}"),
    };
    Error::file(path, msg)
}

/// The first key the header's JSON object lists twice: JSON parsers keep
/// one of the two silently, so a duplicate would drop a tensor unseen.
fn duplicate_key(map: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct FirstDuplicate;
    impl<'de> Visitor<'de> for FirstDuplicate {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut m: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) {
                    return Ok(Some(k));
                }
            }
            Ok(None)
        }
    }
    let n = u64::from_le_bytes(map.get(..8)?.try_into().ok()?) as usize;
    let header = map.get(8..8usize.checked_add(n)?)?;
    let mut de = serde_json::Deserializer::from_slice(header);
    de.deserialize_map(FirstDuplicate).ok().flatten()
}

/// What is wrong with a header that is JSON but not a valid safetensors
/// header: the first entry at fault, named.
fn header_problem(map: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(map.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(map.get(8..8usize.checked_add(n)?)?).ok()?;
    let entries = header.as_object()?;
    for (name, t) in entries {
        if name == "__metadata__" {
            let Some(meta) = t.as_object() else {
                return Some("`__metadata__` must be an object of strings".into());
            };
            if let Some((k, v)) = meta.iter().find(|(_, v)| !v.is_string()) {
                return Some(format!(
                    "metadata `{k}` is {v}, but safetensors metadata values must be strings (write \"{}\")",
                    v.to_string().trim_matches('"')
                ));
            }
            continue;
        }
        if let Some(p) = tensor_problem(name, t) {
            return Some(p);
        }
    }
    None
}

/// The fault of one tensor entry of a header, if any.
fn tensor_problem(name: &str, t: &serde_json::Value) -> Option<String> {
    const DTYPES: [(&str, usize); 12] = [
        ("BOOL", 1),
        ("U8", 1),
        ("I8", 1),
        ("F8_E5M2", 1),
        ("F8_E4M3", 1),
        ("I16", 2),
        ("U16", 2),
        ("F16", 2),
        ("BF16", 2),
        ("I32", 4),
        ("F32", 4),
        ("F64", 8),
    ];
    let dtype = t.get("dtype").and_then(|d| d.as_str());
    let size = match dtype {
        Some("I64") | Some("U64") => 8,
        Some("U32") => 4,
        Some(d) => match DTYPES.iter().find(|(k, _)| *k == d) {
            Some((_, s)) => *s,
            None => return Some(format!("tensor `{name}` has an unknown dtype \"{d}\"")),
        },
        None => return Some(format!("tensor `{name}` has no dtype")),
    };
    let shape: Option<Vec<u64>> = t
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
    let Some(shape) = shape else {
        return Some(format!("tensor `{name}`: its shape is not a list of sizes"));
    };
    let offsets: Option<Vec<u64>> = t
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
    let Some([a, b]) = offsets
        .as_deref()
        .map(|o| o.to_vec())
        .and_then(|o| <[u64; 2]>::try_from(o).ok())
    else {
        return Some(format!(
            "tensor `{name}`: `data_offsets` must be two byte offsets"
        ));
    };
    let bytes = shape
        .iter()
        .try_fold(size as u64, |acc, &d| acc.checked_mul(d));
    match bytes {
        None => Some(format!("tensor `{name}`: its shape {shape:?} overflows")),
        Some(n) if b < a || b - a != n => Some(format!(
            "tensor `{name}`: shape {shape:?} of {} needs {n} bytes, but its data offsets [{a}, {b}] hold {}",
            dtype.unwrap_or("?"),
            b.saturating_sub(a)
        )),
        _ => None,
    }
}

fn view<'a>(path: &Path, dtype: Dtype, shape: &[usize], bytes: &'a [u8]) -> Result<TensorView<'a>> {
    TensorView::new(dtype, shape.to_vec(), bytes)
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))
}

/// Streams the tensors into a temporary file beside `path`, then renames
/// it, as [`write_atomic`] does, without first building the whole file in
/// memory (a preprocessed data set is hundreds of MB).
fn serialize(
    path: &Path,
    views: Vec<(String, TensorView)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    check_output(path)?;
    let tmp = temp_beside(path);
    let written = safetensors::serialize_to_file(views, metadata, &tmp)
        .map_err(|e| match e {
            safetensors::SafeTensorError::IoError(e) => Error::io(path, e),
            e => Error::file(path, format!("cannot serialize: {e}")),
        })
        .and_then(|_| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .and_then(|_| std::fs::rename(&tmp, path))
                .and_then(|_| sync_parent(path))
                .map_err(|e| Error::io(path, e))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes f32 tensors to a safetensors file, via a temporary file and a
/// rename so that a failed run never leaves a half-written output.
pub fn write_f32(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.to_string(),
                view(path, Dtype::F32, &t.shape, bytemuck::cast_slice(&t.data))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    serialize(path, views, metadata)
}

/// Writes one i64 tensor and f32 tensors (token ids beside embeddings).
pub fn write_i64_and_f32(
    path: &Path,
    ints: (&str, &[usize], &[i64]),
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let (name, shape, data) = ints;
    let mut views = vec![(
        name.to_string(),
        view(path, Dtype::I64, shape, bytemuck::cast_slice(data))?,
    )];
    for (n, t) in tensors {
        let v = view(path, Dtype::F32, &t.shape, bytemuck::cast_slice(&t.data))?;
        views.push((n.to_string(), v));
    }
    serialize(path, views, metadata)
}

/// Writes a data set file: `pixel_values` f32 and `labels` i64.
pub fn write_f32_with_labels(path: &Path, pixels: &Tensor, labels: &[i64]) -> Result<()> {
    let px = (Dtype::F32, bytemuck::cast_slice(&pixels.data));
    write_pixels_with_labels(path, px, &pixels.shape, labels, None)
}

/// Writes a data set file: `pixel_values` of `dtype` from its
/// little-endian bytes, `labels` i64, and metadata.
pub fn write_pixels_with_labels(
    path: &Path,
    (dtype, bytes): (Dtype, &[u8]),
    shape: &[usize],
    labels: &[i64],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views = vec![
        (
            "labels".to_string(),
            view(
                path,
                Dtype::I64,
                &[labels.len()],
                bytemuck::cast_slice(labels),
            )?,
        ),
        ("pixel_values".to_string(), view(path, dtype, shape, bytes)?),
    ];
    serialize(path, views, metadata)
}

/// Writes `bytes` to `path` through a temporary file beside it and a
/// rename, so a failure never leaves a half-written output (nor the
/// temporary file). Errors name `path`, the file the user asked for.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_output(path)?;
    let tmp = temp_beside(path);
    let written = write_synced(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| sync_parent(path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Writes `bytes` to `path` and waits until they are on disk: a rename
/// after it can then never expose an empty or partial file after a power
/// loss (the order SQLite and git keep).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The folder holding `path`: its parent, or `.` for a bare file name
/// (whose parent is the empty path).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Flushes the folder holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    sync_dir(folder_of(path))
}

/// Flushes a folder's entries to disk (a no-op where folders cannot be
/// opened as files).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir) {
        Ok(f) => f.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

/// A temporary name beside `path`, unique to this process.
pub(crate) fn temp_beside(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp~", std::process::id()))
}

/// Checks, before any long work, that `path` can be written as a file: not
/// a directory, in a folder that exists.
pub fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::file(
            path,
            "is a directory; give a file name to write",
        ));
    }
    let parent = folder_of(path);
    if !parent.is_dir() {
        return Err(Error::file(
            path,
            format!(
                "cannot be written: the folder {} does not exist",
                parent.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor listed twice is named as a duplicate, not reported as a
    /// bad offset or silently dropped.
    #[test]
    fn a_duplicate_tensor_key_is_named() {
        let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dup.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let e = TensorFile::open(&p).err().unwrap().to_string();
        assert!(e.contains("lists the tensor `a` twice"), "{e}");
    }
}

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
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us while we
        // run is outside what any loader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
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
        let b = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
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
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => {
                return Err(Error::file(
                    &self.path,
                    format!("tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16, F64"),
                ));
            }
        };
        Ok(Tensor {
            shape: t.shape().to_vec(),
            data,
        })
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

/// Turns safetensors' parse errors into sentences a user can act on.
fn describe(path: &Path, map: &[u8], e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    let msg = match e {
        E::HeaderTooSmall => format!(
            "not a safetensors file: {} bytes is too short for the 8-byte header length",
            map.len()
        ),
        E::InvalidHeaderLength | E::HeaderTooLarge => {
            let claimed = map
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                .unwrap_or(0);
            format!(
                "not a safetensors file, or truncated: the header claims {claimed} bytes but the file holds {}",
                map.len()
            )
        }
        E::MetadataIncompleteBuffer => {
            "truncated or padded: the tensors' data does not end where the file ends".to_string()
        }
        E::InvalidHeader(_) | E::InvalidHeaderDeserialization(_) => {
            "not a safetensors file: the header is not valid JSON".to_string()
        }
        other => format!("invalid safetensors file: {other}"),
    };
    Error::file(path, msg)
}

fn view<'a>(path: &Path, dtype: Dtype, shape: &[usize], bytes: &'a [u8]) -> Result<TensorView<'a>> {
    TensorView::new(dtype, shape.to_vec(), bytes)
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))
}

fn serialize(
    path: &Path,
    views: Vec<(String, TensorView)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, &bytes)
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

/// Writes a data set file: `pixel_values` f32 and `labels` i64.
pub fn write_f32_with_labels(path: &Path, pixels: &Tensor, labels: &[i64]) -> Result<()> {
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
        (
            "pixel_values".to_string(),
            view(
                path,
                Dtype::F32,
                &pixels.shape,
                bytemuck::cast_slice(&pixels.data),
            )?,
        ),
    ];
    serialize(path, views, None)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

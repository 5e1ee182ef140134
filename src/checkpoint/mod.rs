//! Every kind of model artefact dawin reads, as one set of named tensors:
//! safetensors files, PyTorch zip checkpoints (read by a restricted
//! unpickler that runs nothing), and folders (HF hub layout with
//! `config.json`, sharded or not; open_clip's `open_clip_config.json`).
//! Tensor bytes stay in the memory-mapped files until a tensor is read.
//!
//! What tensor shapes cannot tell (heads, activation, layernorm eps) comes
//! from the file's own metadata or the folder's config, as `hints`.

pub mod config;
mod folder;
pub mod pickle;
mod torch;

use crate::error::{Error, Result};
use crate::tensorfile::f32_values;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use pickle::Globals;

/// A memory-mapped file.
pub type Source = memmap2::Mmap;

/// Where one tensor's elements are: a strided view into a byte range of a
/// mapped file, checked on open to stay inside it.
#[derive(Clone, Debug)]
pub struct Entry {
    source: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// In elements.
    stride: Vec<usize>,
    /// Element offset into `bytes`.
    offset: usize,
    bytes: Range<usize>,
}

impl Entry {
    /// Checks that every element the view addresses lies in `bytes`.
    pub fn new(
        source: usize,
        dtype: Dtype,
        shape: Vec<usize>,
        stride: Vec<usize>,
        offset: usize,
        bytes: Range<usize>,
    ) -> std::result::Result<Entry, String> {
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("its size overflows")?;
        if numel > 0 {
            let last = shape
                .iter()
                .zip(&stride)
                .try_fold(offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))
                .ok_or("its strides overflow")?;
            let es =
                elem_size(dtype).ok_or_else(|| format!("dtype {dtype:?} is not byte-sized"))?;
            let have = bytes.len() / es;
            if last >= have {
                return Err(format!(
                    "its view (offset {offset}, size {shape:?}, stride {stride:?}) reaches element {last} of a storage of {have}"
                ));
            }
        }
        Ok(Entry {
            source,
            dtype,
            shape,
            stride,
            offset,
            bytes,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn contiguous(&self) -> bool {
        let mut want = 1;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != want {
                return false;
            }
            want *= d;
        }
        true
    }

    /// The tensor's bytes in row-major order (copied only when strided).
    fn gather<'a>(&self, src: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let es = elem_size(self.dtype).unwrap_or(1);
        let base = &src[self.bytes.clone()];
        if self.numel() == 0 {
            return Vec::new().into();
        }
        if self.contiguous() {
            let s = self.offset * es;
            return base[s..s + self.numel() * es].into();
        }
        let mut out = Vec::with_capacity(self.numel() * es);
        let mut idx = vec![0usize; self.shape.len()];
        for _ in 0..self.numel() {
            let e: usize = self.offset
                + idx
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            out.extend_from_slice(&base[e * es..(e + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.into()
    }
}

/// Bytes per element; `None` for sub-byte dtypes (never valid in a model).
pub fn elem_size(d: Dtype) -> Option<usize> {
    let b = d.bitsize();
    (b.is_multiple_of(8) && b > 0).then_some(b / 8)
}

/// How a checkpoint is opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Read pickled whole modules (classes kept as inert records).
    pub pickled_modules: bool,
}

/// A plain pickle starts with PROTO (0x80) and a protocol of at most 5. A
/// safetensors file whose header length has those two low bytes (e.g. a
/// 640-byte header: 0x80 0x02) starts the same way, so a file whose first
/// 8 bytes are a header length that fits it, followed by `{`, is not one.
fn looks_like_pickle(map: &[u8]) -> bool {
    let proto = map.first() == Some(&0x80) && map.len() > 2 && map[1] <= 5;
    let safetensors = map.len() > 8 && {
        let n = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        n <= (map.len() - 8) as u64 && map[8] == b'{'
    };
    proto && !safetensors
}

/// What a file that is no model file is, by its first bytes, when they say:
/// a wrong file given as a model is named as one, not reported as a
/// safetensors file with a broken header.
fn other_file_kind(map: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 9] = [
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF", "a PDF document"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\x7fELF", "a program"),
        (b"\x93NUMPY", "a NumPy array"),
        (b"\x89HDF", "an HDF5 file"),
    ];
    if let Some((_, kind)) = MAGIC.iter().find(|(m, _)| map.starts_with(m)) {
        return Some(kind);
    }
    // A safetensors file starts with a little-endian length whose high
    // bytes are zero; text (JSON, CSV, YAML) starts with printable bytes.
    let head = &map[..map.len().min(8)];
    let text = !head.is_empty()
        && head
            .iter()
            .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    match (text, head.first()) {
        (true, Some(b'{' | b'[')) => Some("a JSON text file"),
        (true, _) => Some("a text file"),
        _ => None,
    }
}

/// Where a hint came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintOrigin {
    /// The file's own metadata.
    Metadata,
    /// The config file beside the weights (its name).
    Config(String),
}

/// The metadata key under which dawin records, for a model it wrote,
/// where each setting came from (`{"heads": "assumed", ...}`).
pub const SETTINGS_SOURCES_KEY: &str = "settings_sources";

/// The keys a file's [`SETTINGS_SOURCES_KEY`] says were assumed (or CLIP's
/// default) when it was written: not evidence, so they are read as absent
/// (and guessed again, alike).
fn assumed_keys(metadata: &HashMap<String, String>) -> Vec<String> {
    let Some(v) = metadata
        .get(SETTINGS_SOURCES_KEY)
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(t).ok())
    else {
        return Vec::new();
    };
    v.into_iter()
        .filter(|(_, s)| s == "assumed" || s == "default")
        .map(|(k, _)| k)
        .collect()
}

/// A model artefact's tensors, metadata and configuration hints.
pub struct Checkpoint {
    path: PathBuf,
    sources: Vec<Source>,
    tensors: BTreeMap<String, Entry>,
    /// What shapes can't tell, by key (`heads`, `act`, `ln_eps`,
    /// `image_size`, `patch_size`, `text_heads`, ...): file metadata or config.
    hints: HashMap<String, String>,
    /// Where the hints came from (`metadata`, `config.json`, ...).
    pub hint_source: Option<String>,
    /// The config file the hints not in the metadata came from.
    pub config_name: Option<String>,
    /// The file's own safetensors metadata (for `convert`).
    pub metadata: HashMap<String, String>,
    /// What was read: format, shards, nesting.
    pub description: String,
    /// Things the user should know (assumptions, ignored files).
    pub notes: Vec<String>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, a torch zip checkpoint, or a model folder.
    pub fn open(path: &Path, opt: OpenOptions) -> Result<Checkpoint> {
        if path.is_dir() {
            return folder::open(path, opt);
        }
        let mut c = Checkpoint::empty(path);
        let desc = c.add_file(path, opt)?;
        c.description = desc;
        if !c.metadata.is_empty() {
            c.hints = c.metadata.clone();
            c.hint_source = Some("the file's metadata".into());
        }
        c.drop_assumed_hints();
        Ok(c)
    }

    fn empty(path: &Path) -> Checkpoint {
        Checkpoint {
            path: path.to_path_buf(),
            sources: Vec::new(),
            tensors: BTreeMap::new(),
            hints: HashMap::new(),
            hint_source: None,
            config_name: None,
            metadata: HashMap::new(),
            description: String::new(),
            notes: Vec::new(),
        }
    }

    /// Maps one weights file and adds its tensors; returns what it was.
    fn add_file(&mut self, path: &Path, opt: OpenOptions) -> Result<String> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map; a file changed underneath a running
        // process is outside what any loader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let idx = self.sources.len();
        let globals = if opt.pickled_modules {
            Globals::Records
        } else {
            Globals::Strict
        };
        let (entries, desc, meta) = if map.starts_with(torch::ZIP_MAGIC) {
            let t = torch::read(path, &map, idx, globals)?;
            (t.entries, t.description, HashMap::new())
        } else if looks_like_pickle(&map) {
            // A plain pickle: WiSE-FT's pickle.dump, or torch's legacy format.
            let t = torch::read_pickle(path, &map, idx, globals)?;
            (t.entries, t.description, HashMap::new())
        } else if let Some(kind) = other_file_kind(&map) {
            return Err(Error::file(
                path,
                format!(
                    "is {kind}, not a model file; dawin reads safetensors files, PyTorch checkpoints (.pt, .pth, .bin) and HF or open_clip model folders"
                ),
            ));
        } else {
            safetensors_entries(path, &map, idx)?
        };
        for (name, e) in entries {
            if self.tensors.insert(name.clone(), e).is_some() {
                return Err(Error::file(
                    path,
                    format!("tensor `{name}` is also in another shard"),
                ));
            }
        }
        if self.metadata.is_empty() {
            self.metadata = meta;
        }
        self.sources.push(map);
        Ok(desc)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|e| e.shape.clone())
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.tensors.get(name)
    }

    /// A hint (metadata or config value) by key.
    pub fn hint(&self, key: &str) -> Option<&str> {
        self.hints.get(key).map(|s| s.as_str())
    }

    /// Forgets the hints the metadata says were guessed when the file was
    /// written (and the names they go by), so they are not taken as read.
    pub(crate) fn drop_assumed_hints(&mut self) {
        for key in assumed_keys(&self.metadata) {
            let also: &[&str] = match key.as_str() {
                "act" => &["act", "hidden_act"],
                "ln_eps" => &["ln_eps", "layer_norm_eps"],
                _ => &[],
            };
            self.hints.remove(&key);
            for k in also {
                self.hints.remove(*k);
            }
        }
    }

    /// Where the hint `key` came from: the file's metadata (which wins) or
    /// the folder's config.
    pub fn hint_origin(&self, key: &str) -> Option<HintOrigin> {
        if !self.hints.contains_key(key) {
            return None;
        }
        match (&self.config_name, self.metadata.contains_key(key)) {
            (Some(name), false) => Some(HintOrigin::Config(name.clone())),
            _ => Some(HintOrigin::Metadata),
        }
    }

    /// The row-major bytes of a tensor, in its stored dtype.
    pub fn bytes(&self, name: &str) -> Result<(Dtype, std::borrow::Cow<'_, [u8]>)> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::file(&self.path, format!("missing tensor `{name}`")))?;
        Ok((e.dtype, e.gather(&self.sources[e.source])))
    }

    /// Reads a floating-point tensor as f32 (f16, bf16 exactly; f64 rounded).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, b) = self.bytes(name)?;
        f32_values(dtype, &b).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("tensor `{name}` has dtype {dtype:?}; supported: F32, F16, BF16, F64"),
            )
        })
    }
}

/// One file's tensors, what it was, and its metadata.
type FileTensors = (BTreeMap<String, Entry>, String, HashMap<String, String>);

/// The tensors of a safetensors file and its metadata.
fn safetensors_entries(path: &Path, map: &[u8], source: usize) -> Result<FileTensors> {
    let st =
        SafeTensors::deserialize(map).map_err(|e| crate::tensorfile::describe(path, map, e))?;
    let base = map.as_ptr() as usize;
    let mut out = BTreeMap::new();
    for (name, t) in st.tensors() {
        let start = t.data().as_ptr() as usize - base;
        let shape = t.shape().to_vec();
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        let e = Entry::new(
            source,
            t.dtype(),
            shape,
            stride,
            0,
            start..start + t.data().len(),
        )
        .map_err(|m| Error::file(path, format!("tensor `{name}`: {m}")))?;
        out.insert(name, e);
    }
    let meta = SafeTensors::read_metadata(map)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default();
    Ok((out, "safetensors".into(), meta))
}

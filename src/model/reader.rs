//! What both towers' loaders share: tensors read from a checkpoint with
//! their shapes checked and their values checked finite, a record of what
//! was read (so unread tensors can be refused), hints parsed as numbers,
//! and a transformer block in either naming convention.

use super::Block;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;

/// A flat f32 parameter buffer being filled: each tensor is a range of it.
#[derive(Default)]
pub(super) struct Flat(pub Vec<f32>);

impl Flat {
    pub fn push(&mut self, v: Vec<f32>) -> Range<usize> {
        let r = self.0.len()..self.0.len() + v.len();
        self.0.extend_from_slice(&v);
        r
    }
}

pub(super) struct Reader<'a> {
    pub file: &'a Checkpoint,
    pub names: Vec<String>,
    /// How missing tensors are described ("layout openai (...)").
    pub what: String,
    /// Run a checkpoint with NaN/Inf weights (noting them) instead of
    /// refusing it.
    allow_non_finite: bool,
    non_finite: RefCell<Vec<String>>,
    /// Tensors read so far.
    pub used: RefCell<HashSet<String>>,
}

impl<'a> Reader<'a> {
    pub fn new(file: &'a Checkpoint, allow_non_finite: bool) -> Self {
        Reader {
            file,
            names: file.names(),
            what: String::new(),
            allow_non_finite,
            non_finite: Default::default(),
            used: Default::default(),
        }
    }

    pub fn err(&self, msg: String) -> Error {
        Error::file(self.file.path(), msg)
    }

    pub fn has(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.file.shape(name).ok_or_else(|| {
            self.err(format!(
                "missing tensor `{name}` ({}); closest present: `{}`",
                self.what,
                closest(name, &self.names)
            ))
        })
    }

    /// Reads a tensor, checking its shape and that every value is finite
    /// (unless allowed: then the count is noted).
    pub fn read(&self, name: &str, expect: &[usize]) -> Result<Vec<f32>> {
        let shape = self.shape(name)?;
        if shape != expect {
            return Err(self.err(format!(
                "tensor `{name}` has shape {shape:?}, expected {expect:?}"
            )));
        }
        let data = self.file.read_f32(name)?;
        self.used.borrow_mut().insert(name.to_string());
        let bad = data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            let first = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
            let what = format!(
                "tensor `{name}` holds {bad} NaN/Inf value{} (the first at element {first})",
                if bad == 1 { "" } else { "s" }
            );
            if !self.allow_non_finite {
                return Err(self.err(format!(
                    "{what}: the checkpoint is damaged or overflowed; --allow-non-finite runs it anyway"
                )));
            }
            self.non_finite.borrow_mut().push(what);
        }
        Ok(data)
    }

    pub fn dims<const N: usize>(&self, name: &str) -> Result<[usize; N]> {
        let s = self.shape(name)?;
        s.as_slice().try_into().map_err(|_| {
            self.err(format!(
                "tensor `{name}` has shape {s:?}, expected {N} dimensions"
            ))
        })
    }

    /// A hint as a number, or an error naming where it came from.
    pub fn hint_num<'k, T: std::str::FromStr>(
        &self,
        keys: &[&'k str],
    ) -> Result<Option<(T, &'k str)>> {
        let Some((key, v)) = keys.iter().find_map(|k| self.file.hint(k).map(|v| (*k, v))) else {
            return Ok(None);
        };
        match v.trim().parse::<T>() {
            Ok(x) => Ok(Some((x, key))),
            Err(_) => Err(self.err(format!(
                "{} says {key} = {v:?}, which is not a number",
                self.hint_source()
            ))),
        }
    }

    pub fn hint_source(&self) -> &str {
        self.file
            .hint_source
            .as_deref()
            .unwrap_or("the file's metadata")
    }

    /// The notes on non-finite weights run anyway.
    pub fn non_finite_notes(&self) -> Vec<String> {
        self.non_finite
            .take()
            .into_iter()
            .map(|w| format!("{w}; running it as --allow-non-finite asks"))
            .collect()
    }

    /// The tensors `in_part` claims that were never read (position ids,
    /// which no computation needs, aside).
    pub fn unread(&self, in_part: impl Fn(&str) -> bool) -> Vec<&String> {
        let used = self.used.borrow();
        self.names
            .iter()
            .filter(|n| in_part(n) && !used.contains(*n))
            .filter(|n| !n.ends_with("position_ids"))
            .collect()
    }

    /// A layernorm's weight and bias at `prefix` (`…ln_1.`).
    /// How many transformer blocks there are under `prefix` (block `i`'s
    /// names start `{prefix}{i}.`; HF's naming with `hf`), and their MLP
    /// width: what both towers' loaders count.
    pub fn blocks(&self, prefix: &str, hf: bool) -> Result<(usize, usize)> {
        let (ln1, fc1) = if hf {
            ("layer_norm1.weight", "mlp.fc1.weight")
        } else {
            ("ln_1.weight", "mlp.c_fc.weight")
        };
        let first_norm = |i: usize| format!("{prefix}{i}.{ln1}");
        let layers = (0..).take_while(|&i| self.has(&first_norm(i))).count();
        if layers == 0 {
            return Err(self.err(format!(
                "no transformer blocks: missing `{}`",
                first_norm(0)
            )));
        }
        let mlp_key = format!("{prefix}0.{fc1}");
        let [mlp, _] = self.dims::<2>(&mlp_key)?;
        if mlp == 0 {
            return Err(self.err(format!("`{mlp_key}` has no rows")));
        }
        Ok((layers, mlp))
    }

    pub fn ln(&self, prefix: &str, w: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.read(&format!("{prefix}weight"), &[w])?,
            self.read(&format!("{prefix}bias"), &[w])?,
        ))
    }

    /// Transformer block at `p` (ending in `.`) of width `w` and MLP `mlp`:
    /// HF names (`layer_norm1`, separate q/k/v) or OpenAI's (`ln_1`,
    /// `attn.in_proj_weight`, `mlp.c_fc`), into the canonical [`Block`].
    pub fn block(
        &self,
        flat: &mut Flat,
        hf: bool,
        p: &str,
        w: usize,
        mlp: usize,
    ) -> Result<Block<Range<usize>>> {
        let (ln1, ln2, fc1, fc2) = if hf {
            ("layer_norm1.", "layer_norm2.", "mlp.fc1.", "mlp.fc2.")
        } else {
            ("ln_1.", "ln_2.", "mlp.c_fc.", "mlp.c_proj.")
        };
        let (out, qkv_w, qkv_b) = if hf {
            let mut qkv_w = Vec::with_capacity(3 * w * w);
            let mut qkv_b = Vec::with_capacity(3 * w);
            for n in ["q_proj", "k_proj", "v_proj"] {
                qkv_w.extend(self.read(&format!("{p}self_attn.{n}.weight"), &[w, w])?);
                qkv_b.extend(self.read(&format!("{p}self_attn.{n}.bias"), &[w])?);
            }
            ("self_attn.out_proj.", qkv_w, qkv_b)
        } else {
            let qkv_w = self.read(&format!("{p}attn.in_proj_weight"), &[3 * w, w])?;
            let qkv_b = self.read(&format!("{p}attn.in_proj_bias"), &[3 * w])?;
            ("attn.out_proj.", qkv_w, qkv_b)
        };
        let (l1g, l1b) = self.ln(&format!("{p}{ln1}"), w)?;
        let (l2g, l2b) = self.ln(&format!("{p}{ln2}"), w)?;
        let t = |n: &str| format!("{p}{n}");
        Ok(Block {
            ln1_g: flat.push(l1g),
            ln1_b: flat.push(l1b),
            qkv_w: flat.push(qkv_w),
            qkv_b: flat.push(qkv_b),
            out_w: flat.push(self.read(&t(&format!("{out}weight")), &[w, w])?),
            out_b: flat.push(self.read(&t(&format!("{out}bias")), &[w])?),
            ln2_g: flat.push(l2g),
            ln2_b: flat.push(l2b),
            fc1_w: flat.push(self.read(&t(&format!("{fc1}weight")), &[mlp, w])?),
            fc1_b: flat.push(self.read(&t(&format!("{fc1}bias")), &[mlp])?),
            fc2_w: flat.push(self.read(&t(&format!("{fc2}weight")), &[w, mlp])?),
            fc2_b: flat.push(self.read(&t(&format!("{fc2}bias")), &[w])?),
        })
    }
}

/// `[rows, cols]` into `[cols, rows]` (OpenAI's `[W, D]` projections into
/// the canonical `[D, W]`).
pub(super) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = v[i * cols + j];
        }
    }
    t
}

/// The name in `names` most like `want` (for "missing tensor" errors).
pub(super) fn closest(want: &str, names: &[String]) -> String {
    names
        .iter()
        .max_by(|a, b| {
            strsim::normalized_levenshtein(want, a)
                .total_cmp(&strsim::normalized_levenshtein(want, b))
        })
        .cloned()
        .unwrap_or_else(|| "(the file has no tensors)".into())
}

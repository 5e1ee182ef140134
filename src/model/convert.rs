//! `dawin convert`: any readable model to one safetensors file that runs
//! with no flags, because what shapes cannot tell is in its metadata.

use super::load::Loader;
use super::{Model, Overrides};
use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::choice::{Choice, Named};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Which tensor names the output keeps.
/// Each value's meaning is its help in [`Names::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Names {
    #[default]
    Canonical,
    Keep,
}

impl Choice for Names {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            Names::Canonical,
            "canonical",
            "dawin's canonical OpenAI layout: the image tower and head only, f32 (visual.*, classification_head.*)",
        ),
        Named::new(
            Names::Keep,
            "keep",
            "Every tensor of the input under its own name and dtype (text tower included)",
        ),
    ];
}

crate::display_choice!(Names);

/// What a conversion wrote.
pub struct Converted {
    pub model: Model,
    pub tensors: usize,
    pub metadata: HashMap<String, String>,
}

/// Converts `input` (a file or model folder) to the safetensors `out`.
pub fn convert(input: &Path, out: &Path, ov: Overrides, names: Names) -> Result<Converted> {
    let opt = OpenOptions {
        pickled_modules: ov.pickled_modules,
    };
    let ck = Checkpoint::open(input, opt)?;
    let model = Loader::new(&ck, ov.allow_non_finite)?.load(ov)?;
    let mut meta = model.spec.metadata();
    meta.insert("layout".into(), layout_key(&model));
    meta.insert("converted_from".into(), ck.description.clone());
    if let Some(v) = logit_scale(&ck)? {
        meta.insert("logit_scale".into(), v.to_string());
    }
    let tensors = match names {
        Names::Canonical => {
            meta.insert("layout".into(), "openai".into());
            meta.insert("source_layout".into(), layout_key(&model));
            model.save_with(out, meta.clone())?;
            model.params.named().len()
        }
        Names::Keep => {
            // The text tower's settings, for readers of the kept names.
            for k in ["text_heads", "text_act", "text_ln_eps", "text_width"] {
                if let Some(v) = ck.hint(k) {
                    meta.insert(k.into(), v.to_string());
                }
            }
            write_kept(&ck, out, meta.clone())?
        }
    };
    Ok(Converted {
        model,
        tensors,
        metadata: meta,
    })
}

fn layout_key(m: &Model) -> String {
    use super::load::Layout::*;
    match m.layout {
        OpenAi => "openai",
        ModelSoups => "model-soups",
        Hf => "hf",
        HfBare => "hf-bare",
    }
    .into()
}

/// CLIP's `logit_scale` (the log of the softmax scale, as CLIP stores it),
/// when the checkpoint holds one.
fn logit_scale(ck: &Checkpoint) -> Result<Option<f32>> {
    let Some(name) = ck
        .names()
        .into_iter()
        .filter(|n| n == "logit_scale" || n.ends_with(".logit_scale"))
        .min_by_key(|n| n.len())
    else {
        return Ok(None);
    };
    let v = ck.read_f32(&name)?;
    match v.as_slice() {
        [x] if x.is_finite() => Ok(Some(*x)),
        _ => Err(Error::file(
            ck.path(),
            format!(
                "`{name}` should be one finite number, found {} values",
                v.len()
            ),
        )),
    }
}

fn write_kept(ck: &Checkpoint, out: &Path, meta: HashMap<String, String>) -> Result<usize> {
    let names = ck.names();
    let mut data = Vec::with_capacity(names.len());
    for n in &names {
        let (dtype, bytes) = ck.bytes(n)?;
        let shape = ck.shape(n).unwrap_or_default();
        data.push((n.clone(), dtype, shape, bytes));
    }
    let views = data
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::file(out, format!("cannot serialize `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::file(out, format!("cannot serialize: {e}")))?;
    crate::tensorfile::write_atomic(out, &bytes)?;
    Ok(names.len())
}

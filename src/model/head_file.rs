//! A classification head stored alone, as the multi-task checkpoints keep
//! them (`head_<task>.pt` beside image encoders without heads): one linear
//! layer applied to the normalised image embedding, logits =
//! normalize(e)·Wᵀ + b. Read from safetensors, a torch state dict, or a
//! pickled head module (its classes kept as inert records, no code run).

use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::error::{Error, Result};
use std::path::Path;

/// A head's weights: `w` is `[classes, embed_dim]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub classes: usize,
}

/// Reads the one 2-D `weight` (or `*.weight`) of the file, or the
/// `classification_head.weight` of a whole model file, its `bias` of the
/// same prefix (zeros without one), and checks it fits `embed_dim`.
pub fn read(path: &Path, embed_dim: usize) -> Result<Head> {
    let file = Checkpoint::open(
        path,
        OpenOptions {
            pickled_modules: true,
        },
    )?;
    let weights: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| n == "weight" || n.ends_with(".weight"))
        .filter(|n| file.shape(n).is_some_and(|s| s.len() == 2))
        .collect();
    // A whole model file serves too: its classifier is the head.
    let classifier: Vec<String> = weights
        .iter()
        .filter(|n| *n == "head.weight" || n.ends_with("classification_head.weight"))
        .cloned()
        .collect();
    let name = match (weights.as_slice(), classifier.as_slice()) {
        ([one], _) | (_, [one]) => one.clone(),
        ([], _) => {
            return Err(Error::file(
                path,
                format!(
                    "no 2-D `weight` tensor, so not a classification head (tensors: {})",
                    file.names().join(", ")
                ),
            ));
        }
        (many, _) => {
            let shown: Vec<&str> = many.iter().take(4).map(String::as_str).collect();
            return Err(Error::file(
                path,
                format!(
                    "{} 2-D weights ({}{}) and no classification_head.weight: a head file holds one linear layer",
                    many.len(),
                    shown.join(", "),
                    if many.len() > 4 { ", ..." } else { "" }
                ),
            ));
        }
    };
    let shape = file.shape(&name).unwrap_or_default();
    let (classes, d) = (shape[0], shape[1]);
    if d != embed_dim || classes == 0 {
        return Err(Error::file(
            path,
            format!(
                "`{name}` is [{classes}, {d}]; the models' embedding has {embed_dim} dimensions"
            ),
        ));
    }
    let w = file.read_f32(&name)?;
    let bias = format!("{}bias", name.strip_suffix("weight").unwrap_or(&name));
    let b = match file.shape(&bias) {
        Some(s) if s == [classes] => file.read_f32(&bias)?,
        Some(s) => {
            return Err(Error::file(
                path,
                format!("`{bias}` has shape {s:?}, expected [{classes}]"),
            ));
        }
        None => vec![0.0; classes],
    };
    if let Some(bad) = [(&name, &w), (&bias, &b)]
        .iter()
        .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
    {
        return Err(Error::file(path, format!("`{}` holds NaN or Inf", bad.0)));
    }
    Ok(Head { w, b, classes })
}

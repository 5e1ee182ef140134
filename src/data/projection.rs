//! Logit projection to the evaluated label space (ImageNet-A/-R's class
//! subsets, ObjectNet's pooled groups), applied before softmax and accuracy.

use crate::data::label_spaces::{self, Named};
use crate::error::{Error, Result};
use std::path::Path;

/// Logit projection to the evaluated label space, applied before softmax.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    None,
    /// Keep these class indices (ImageNet-A/-R's 200 classes).
    Subset(Vec<usize>),
    /// Max-pool these groups of classes (ObjectNet's 113).
    Map(Vec<Vec<usize>>),
}

impl Projection {
    /// A class subset from a file, or a shipped one by name
    /// (`imagenet-a`, `imagenet-r`): indices separated by commas or
    /// whitespace, `#` comments, Python's `[0, 1, 2]` syntax accepted.
    pub fn subset_file(path: &Path) -> Result<Self> {
        let (p, t) = named_text(path, label_spaces::subset(path), "--class-subset")?;
        Self::subset_text(&p, &t)
    }

    /// Parses a class subset's text (see [`Projection::subset_file`]).
    pub fn subset_text(path: &Path, t: &str) -> Result<Self> {
        let body: String = t
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let v = parse_indices(path, &body)?;
        if v.is_empty() {
            return Err(Error::file(path, "the class subset is empty"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(d) = v.iter().find(|i| !seen.insert(**i)) {
            return Err(Error::file(path, format!("class {d} is listed twice")));
        }
        Ok(Projection::Subset(v))
    }

    /// A class map from a file, or a shipped one by name (`objectnet`): one
    /// output class per line, listing the model classes pooled into it
    /// (commas or spaces, `[..]` accepted; `#` starts a comment).
    pub fn map_file(path: &Path) -> Result<Self> {
        let (p, t) = named_text(path, label_spaces::map(path), "--class-map")?;
        Self::map_text(&p, &t)
    }

    /// Parses a class map's text (see [`Projection::map_file`]).
    pub fn map_text(path: &Path, t: &str) -> Result<Self> {
        let mut groups = Vec::new();
        for (ln, line) in t.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let g = parse_indices(path, line)?;
            if g.is_empty() {
                return Err(Error::file(path, format!("line {}: empty group", ln + 1)));
            }
            groups.push(g);
        }
        if groups.is_empty() {
            return Err(Error::file(path, "the class map has no groups"));
        }
        Ok(Projection::Map(groups))
    }

    /// What the projection is, for provenance: its kind, output classes
    /// and a hash of its index lists.
    pub fn describe(&self) -> serde_json::Value {
        let kind = match self {
            Projection::None => return serde_json::Value::Null,
            Projection::Subset(_) => "class-subset",
            Projection::Map(_) => "class-map",
        };
        let hash = xxhash_rust::xxh3::xxh3_128(format!("{self:?}").as_bytes());
        serde_json::json!({"kind": kind, "classes": self.out_classes(0), "hash": format!("{hash:032x}")})
    }

    pub fn out_classes(&self, c: usize) -> usize {
        match self {
            Projection::None => c,
            Projection::Subset(v) => v.len(),
            Projection::Map(g) => g.len(),
        }
    }

    pub fn check(&self, c: usize) -> Result<()> {
        let bad = match self {
            Projection::None => None,
            Projection::Subset(v) => v.iter().find(|&&i| i >= c),
            Projection::Map(g) => g.iter().flatten().find(|&&i| i >= c),
        };
        match bad {
            Some(i) => Err(crate::invalid!(
                "class index {i} in the label projection is out of range for a {c}-class head"
            )),
            None => Ok(()),
        }
    }

    pub fn apply(&self, logits: &[f32], c: usize) -> Vec<f32> {
        match self {
            Projection::None => logits.to_vec(),
            Projection::Subset(v) => logits
                .chunks(c)
                .flat_map(|r| v.iter().map(move |&i| r[i]))
                .collect(),
            Projection::Map(g) => logits
                .chunks(c)
                .flat_map(|r| {
                    g.iter()
                        .map(move |grp| grp.iter().map(|&i| r[i]).fold(f32::NEG_INFINITY, f32::max))
                })
                .collect(),
        }
    }
}

/// The text a flag names: the file's, or the shipped list's (with its name
/// as the path for messages).
fn named_text(path: &Path, named: Named, flag: &str) -> Result<(std::path::PathBuf, String)> {
    match named {
        Named::File => {
            let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            Ok((path.to_path_buf(), t))
        }
        Named::Shipped(name, t) => Ok((name.into(), t.to_string())),
        Named::Unknown(msg) => Err(crate::invalid!("{flag} {msg}")),
    }
}

fn parse_indices(path: &Path, t: &str) -> Result<Vec<usize>> {
    t.split(|c: char| matches!(c, ',' | '[' | ']' | '(' | ')') || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| Error::file(path, format!("`{s}` is not a class index")))
        })
        .collect()
}

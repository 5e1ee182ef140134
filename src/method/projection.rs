//! Logit projection to the evaluated label space (ImageNet-A/-R's class
//! subsets, ObjectNet's pooled groups), applied before softmax and accuracy.

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
    /// Reads a class-subset file: indices separated by commas or whitespace.
    pub fn subset_file(path: &Path) -> Result<Self> {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v = parse_indices(path, &t)?;
        if v.is_empty() {
            return Err(Error::file(path, "the class subset is empty"));
        }
        Ok(Projection::Subset(v))
    }

    /// Reads a class-map file: one output class per line, listing the model
    /// classes pooled into it (commas or spaces; `#` starts a comment).
    pub fn map_file(path: &Path) -> Result<Self> {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
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

fn parse_indices(path: &Path, t: &str) -> Result<Vec<usize>> {
    t.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| Error::file(path, format!("`{s}` is not a class index")))
        })
        .collect()
}

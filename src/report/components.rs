//! `--save-components DIR`: the K merged models of a `bmm` run written as
//! checkpoints, so the groups DaWin found can be served without it.
//!
//! Component k is θ_k = (1 − λ_k)·θ_pt + λ_k·θ_ft at its mixture mean λ_k
//! (the λ the run evaluated its members with), every parameter included
//! (the heads too, as WiSE-FT and DaWin merge them). The merge runs in f32
//! on the host from the loaded checkpoints, whatever `--precision` the run
//! used, with the same lerp as the device (`ops::lerp::cpu`).

use crate::error::{Error, Result};
use crate::method::bmm::BetaMixture;
use crate::model::Model;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file of component `k` inside DIR.
pub fn file_name(k: usize) -> String {
    format!("component_{k}.safetensors")
}

/// The manifest inside DIR.
pub const MANIFEST: &str = "components.json";

/// Refuses a DIR that already holds a run's components (so none is
/// overwritten); called before the run starts, not after its long passes.
pub fn check_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(crate::invalid!(
            "--save-components {}: is a file, not a folder",
            dir.display()
        ));
    }
    let taken = dir.join(MANIFEST);
    if taken.exists() {
        return Err(crate::invalid!(
            "--save-components {}: already holds {MANIFEST} from another run; pick an empty folder or remove it",
            dir.display()
        ));
    }
    // Component files without their manifest are still another run's (one
    // stopped before writing it, or copied there): never overwritten.
    if let Some(f) = component_files(dir).first() {
        return Err(crate::invalid!(
            "--save-components {}: already holds {f}, a component file not written by this run; pick an empty folder or remove it",
            dir.display()
        ));
    }
    Ok(())
}

/// The `component_*.safetensors` files in `dir`, sorted.
fn component_files(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("component_") && n.ends_with(".safetensors"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Writes DIR/component_k.safetensors for every component and the manifest
/// (λ, mixture weight, Beta parameters, member count, provenance).
pub fn save(
    dir: &Path,
    (pt, ft): (&Model, &Model),
    mixture: &BetaMixture,
    members: &[usize],
    provenance: &Value,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let means = mixture.means();
    let mut written = Vec::new();
    let mut entries = Vec::new();
    for (k, &mean) in means.iter().enumerate() {
        let lambda = mean as f32;
        let path = dir.join(file_name(k));
        let count = members.iter().filter(|&&c| c == k).count();
        let meta = HashMap::from([
            ("dawin_component".to_string(), k.to_string()),
            ("dawin_lambda".to_string(), lambda.to_string()),
        ]);
        merged(pt, ft, lambda).save_with(&path, meta)?;
        entries.push(json!({
            "file": file_name(k),
            "component": k,
            "lambda": lambda,
            "weight": mixture.weights[k],
            "alpha": mixture.alpha[k],
            "beta": mixture.beta[k],
            "members": count,
        }));
        written.push(path);
    }
    let manifest = json!({
        "merge": "(1 - lambda) * pretrained + lambda * finetuned, f32, every parameter",
        "components": entries,
        "provenance": provenance,
    });
    crate::report::summary::write_json(&dir.join(MANIFEST), &manifest)?;
    Ok(written)
}

/// (1 − λ)·θ_pt + λ·θ_ft over the whole flat buffer.
pub fn merged(pt: &Model, ft: &Model, lambda: f32) -> Model {
    let mut m = pt.clone();
    crate::ops::lerp::cpu(&mut m.flat, &pt.flat, &ft.flat, lambda);
    m
}

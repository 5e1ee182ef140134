//! Gives the library the soname of NVIDIA's driver, and generates an entry
//! point for every other driver function cust declares: each answers
//! CUDA_ERROR_NOT_SUPPORTED and names itself on stderr, so nothing the
//! emulated driver lacks can succeed silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=DAWIN_CUST_RAW_BINDINGS");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("unsupported.rs");
    let implemented = implemented_names(Path::new("src"));
    let declared = match bindings() {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            declared_names(&path)
        }
        None => {
            // Run again once cargo unpacks cust_raw (the cuda build does).
            if let Some(dir) = registry_src() {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
            println!(
                "cargo:warning=cust_raw's bindings not found: only the implemented entry points are exported"
            );
            BTreeSet::new()
        }
    };
    let body: String = declared
        .difference(&implemented)
        .map(|n| format!("unsupported!({n});\n"))
        .collect();
    std::fs::write(out, body).unwrap();
}

/// cust_raw's `src/cuda.rs`: from DAWIN_CUST_RAW_BINDINGS, else the cargo
/// registry (the project's lock file pins cust_raw 0.11).
fn bindings() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DAWIN_CUST_RAW_BINDINGS") {
        return Some(PathBuf::from(p));
    }
    let registry = std::fs::read_dir(registry_src()?).ok()?;
    registry.flatten().find_map(|index| {
        std::fs::read_dir(index.path())
            .ok()?
            .flatten()
            .find_map(|c| {
                let name = c.file_name().to_string_lossy().to_string();
                let file = c.path().join("src/cuda.rs");
                (name.starts_with("cust_raw-0.11.") && file.exists()).then_some(file)
            })
    })
}

/// The cargo registry's unpacked sources.
fn registry_src() -> Option<PathBuf> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok()?;
    Some(home.join("registry/src"))
}

fn declared_names(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    names_after(&text, "pub fn ")
}

fn implemented_names(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        names.extend(names_after(&text, "extern \"C\" fn "));
    }
    names
}

/// Identifiers starting with `cu` that follow `prefix`.
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter_map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            let name = &rest[..end];
            name.starts_with("cu").then(|| name.to_string())
        })
        .collect()
}

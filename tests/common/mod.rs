//! Helpers shared by the integration tests: executors, comparison with a
//! normalised error, fixture access and f64 oracles.
#![allow(dead_code)]

pub mod oracle;

use dawin::exec::{self, Executor, ExecutorKind};
use std::path::PathBuf;

/// Every executor this build can run (see `dawin::exec::available`).
pub fn executors() -> Vec<(ExecutorKind, Box<dyn Executor>)> {
    exec::available()
        .into_iter()
        .map(|k| (k, exec::open(k).expect("available executor must open")))
        .collect()
}

/// Runs `f` on executor `kind` when this run tests it (see
/// `dawin::exec::available`); otherwise says so and passes, since a build
/// or machine without the executor has nothing to test there.
pub fn on_executor(kind: ExecutorKind, f: impl FnOnce(ExecutorKind, &dyn Executor)) {
    if !exec::available().contains(&kind) {
        eprintln!("skipped: {kind} is not among this run's executors (DAWIN_TEST_DEVICES)");
        return;
    }
    let ex = exec::open(kind)
        .unwrap_or_else(|e| panic!("{kind} is to be tested but does not open: {e}"));
    f(kind, ex.as_ref())
}

/// Tests that run once per executor, as `NAME::cpu`, `NAME::emu` and, in a
/// cuda build, `NAME::cuda`, so one executor's failure does not hide
/// another's (candle's `test_device!`). `fn NAME(kind, ex) { … }` is a plain
/// test; after `per_executor!(property CONFIG;`, `fn NAME(kind, ex; a in
/// strategy, …) { … }` is a property test.
#[macro_export]
macro_rules! per_executor {
    (property $cfg:expr; $($(#[$m:meta])* fn $name:ident($kind:ident, $ex:ident; $($arg:pat in $s:expr),+ $(,)?) $body:block)*) => {
        $($(#[$m])* mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::per_executor!(@each $kind, $ex, {
                proptest::proptest!($cfg, |($($arg in $s),+)| $body);
            });
        })*
    };
    ($($(#[$m:meta])* fn $name:ident($kind:ident, $ex:ident) $body:block)*) => {
        $($(#[$m])* mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::per_executor!(@each $kind, $ex, $body);
        })*
    };
    (@each $kind:ident, $ex:ident, $body:block) => {
        #[test]
        fn cpu() {
            $crate::common::on_executor(dawin::exec::ExecutorKind::Cpu, |$kind, $ex| $body)
        }
        #[test]
        fn emu() {
            $crate::common::on_executor(dawin::exec::ExecutorKind::Emu, |$kind, $ex| $body)
        }
        #[cfg(feature = "cuda")]
        #[test]
        fn cuda() {
            $crate::common::on_executor(dawin::exec::ExecutorKind::Cuda, |$kind, $ex| $body)
        }
    };
}

/// Max |got − want| divided by max |want| (the output's scale).
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max((v as f64).abs()))
        .max(1e-30);
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        let d = if g.is_nan() || w.is_nan() {
            if g.is_nan() && w.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if g == w {
            0.0
        } else {
            (*g as f64 - *w as f64).abs()
        };
        worst = worst.max(d);
    }
    worst / scale
}

/// Asserts `rel_err ≤ tol`, printing the first mismatches with their indices.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    if e.is_nan() || e > tol {
        let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let bad: Vec<String> = got
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (g, w))| {
                let d = (**g as f64 - **w as f64).abs();
                d.is_nan() || d > tol * scale
            })
            .take(6)
            .map(|(i, (g, w))| format!("[{i}] got {g} want {w}"))
            .collect();
        panic!("{what}: relative error {e:.3e} > {tol:.1e}; first mismatches: {bad:?}");
    }
}

/// The repository root: `DAWIN_REPO` when set (test executables carried to
/// another machine, where the build path does not exist), else the build's.
pub fn repo_root() -> PathBuf {
    std::env::var_os("DAWIN_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The `dawin` binary under test: `DAWIN_BIN` when set, else the build's.
pub fn dawin_bin() -> PathBuf {
    std::env::var_os("DAWIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dawin")))
}

pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures")
}

pub fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Deterministic data with a spread of magnitudes and signs.
pub fn data(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = dawin::rng::SplitMix(seed);
    (0..n).map(|_| scale * r.normal()).collect()
}

/// A tiny CLIP tower (width 32, 2 layers, 12×12 images of 4×4 patches).
pub fn small_spec(classes: usize, act: dawin::model::Act) -> dawin::model::ModelSpec {
    dawin::model::ModelSpec {
        width: 32,
        layers: 2,
        heads: 2,
        patch: 4,
        channels: 3,
        image_size: 12,
        mlp: 64,
        embed_dim: 16,
        has_proj: true,
        classes: Some(classes),
        act,
        ln_eps: 1e-5,
    }
}

/// A fixture's inputs (`NAME.io.safetensors`): the file and its pixels.
pub fn fixture_io(name: &str) -> (dawin::tensorfile::TensorFile, dawin::tensorfile::Tensor) {
    let io =
        dawin::tensorfile::TensorFile::open(&fixtures_dir().join(format!("{name}.io.safetensors")))
            .unwrap();
    let px = io.read_f32("pixel_values").unwrap();
    (io, px)
}

/// Property-test settings: `default` cases, or `PROPTEST_CASES` for a
/// longer soak (or a bounded run on a GPU).
pub fn proptest_config(default: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::prelude::ProptestConfig {
        cases,
        ..proptest::prelude::ProptestConfig::default()
    }
}

//! dawin: training-free dynamic weight interpolation (DaWin, Oh et al.,
//! ICLR 2025) for CLIP ViTs, on a small tensor engine with three executors
//! (`cpu` reference, `emu` PTX interpreter, `cuda`) running the same ops.
//!
//! The parts, bottom up (docs/design.md has the whole picture):
//! - [`buf`]: typed buffer handles; [`device`]: the PTX devices (`emu`,
//!   `cuda`) behind one `Gpu` interface;
//! - [`ops`]: every op, one file each, and the registry of them;
//! - [`exec`]: the executors that run ops (`cpu`, PTX) and the profiler;
//! - [`checkpoint`]: reading model artefacts (safetensors, PyTorch zip
//!   files by a restricted unpickler, HF and open_clip folders);
//! - [`model`]: the model spec, the weight layouts and the ViT forward;
//! - [`simd`]: the CPU executor's packed gemm, vector maths and peak;
//! - [`reporter`]: how the library reports (warnings, notes, progress)
//!   through the interface the program installs; it never prints;
//!   [`interrupt`]: a stop the user asked for, honoured at safe points;
//! - [`data`]: data sets, image folders, preprocessing, label spaces and
//!   the demo's synthetic images;
//! - [`method`]: DaWin's maths: the λ rules, the Beta mixture, the
//!   interpolation and its engine, the baselines, merging and statistics;
//! - [`report`]: what a run leaves behind: summary, samples.csv, plots,
//!   provenance and the output folder;
//! - [`pipelines`]: the commands' pipelines (eval, expertise, calibrate,
//!   multi-set, multi-task, zero-shot, demo, bench), each a chain of the
//!   rooms below.

pub mod buf;
pub mod checkpoint;
pub mod choice;
pub mod data;
pub mod device;
pub mod error;
pub mod exec;
pub mod hostmem;
pub mod interrupt;
pub mod limits;
pub mod method;
pub mod model;
pub mod ops;
pub mod pipelines;
pub mod profile;
pub mod report;
pub mod reporter;
pub mod rng;
pub mod simd;
pub mod tensorfile;
pub mod tokenizer;

pub use error::{Error, Result};

//! dawin: training-free dynamic weight interpolation (DaWin, Oh et al.,
//! ICLR 2025) for CLIP ViTs, on a small tensor engine with three executors
//! (`cpu` reference, `emu` PTX interpreter, `cuda`) running the same ops.

pub mod bench;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dawin;
pub mod emu;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod profile;
pub mod ptx;
pub mod tensorfile;
pub mod vit;

pub use error::{Error, Result};

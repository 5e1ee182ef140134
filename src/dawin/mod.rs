//! DaWin itself: data input, expertise (λ per sample), the Beta mixture, the
//! interpolation strategies, baselines and reports. Everything here but the
//! forward passes is plain Rust over logits and λ vectors.

pub mod bmm;
pub mod data;
pub mod demo;
pub mod eval;
pub mod expertise;
pub mod mtl;
pub mod preprocess;
pub mod report;
pub mod shard;
pub mod synth;

//! DaWin itself: data input, the expertise pass, the λ rules, the Beta
//! mixture, the interpolation strategies, baselines and reports.
//! Everything here but the forward passes is plain Rust over logits and λ
//! vectors.

pub mod bmm;
pub mod cache;
pub mod calibrate;
pub mod components;
pub mod data;
pub mod demo;
pub mod engine;
pub mod entropy;
pub mod eval;
pub mod expertise;
pub mod interp;
pub mod label_spaces;
pub mod lambda;
pub mod merging;
pub mod methods;
pub mod mtl;
pub mod mtl_tasks;
pub mod multiset;
pub mod options;
pub mod outdir;
pub mod plot;
pub mod preprocess;
pub mod probs;
pub mod progress;
pub mod projection;
pub mod provenance;
pub mod report;
pub mod samples_csv;
pub mod setup;
pub mod shard;
pub mod stats;
pub mod synth;
pub mod zeroshot;

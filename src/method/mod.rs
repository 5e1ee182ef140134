//! DaWin's maths: the λ rules and the entropies they read, the Beta
//! mixture (and the multi-task Dirichlet mixture, both started by
//! `kmeans.rs`), the interpolation strategies and the engine that runs them on
//! an executor, the baselines' predictions, the multi-task coefficients
//! and merges (`multitask.rs`), static merges (`merging.rs`) and
//! the statistics of every summary. Data input lives in [`crate::data`],
//! outputs in [`crate::report`], the commands in [`crate::pipelines`].

pub mod bmm;
pub mod dirichlet;
pub mod engine;
pub mod entropy;
pub mod interp;
pub mod kmeans;
pub mod lambda;
pub mod merging;
pub mod methods;
pub mod multitask;
pub mod probs;
pub mod search;
pub mod stats;

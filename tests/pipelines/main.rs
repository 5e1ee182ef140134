//! DaWin end to end through the library: eval and its rules, multi-task and multi-set runs, GPU result files, the SVGs.
//! One test binary for these subjects (a module each), so CI links it once.

#[path = "../common/mod.rs"]
mod common;

mod dawin;
mod dirichlet;
mod gpu_results;
mod mtl;
mod multiset;
mod rules;
mod svg_render;

//! The ops on every executor: property tests against f64 oracles (f32 and bf16) and every op compared across executors.
//! One test binary for these subjects (a module each), so CI links it once.

#[path = "../common/mod.rs"]
mod common;

mod executors;
mod ops;
mod ops_bf16;

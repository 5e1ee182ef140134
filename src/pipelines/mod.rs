//! The commands' pipelines, each a chain of named phases over the rooms
//! below: `eval` and `expertise` (with their options, setup, cache and
//! shards), `calibrate`, multi-set and multi-task runs, zero-shot heads,
//! the demo and `bench`.

pub mod bench;
pub mod bench_data;
pub mod cache;
pub mod calibrate;
pub mod demo;
pub mod eval;
pub mod expertise;
pub mod mtl;
pub mod mtl_domain;
pub mod mtl_tasks;
pub mod multiset;
pub mod options;
pub mod setup;
pub mod shard;
mod shard_summary;
pub mod zeroshot;

//! The command line: every command, bad inputs and data explained, the demo, the README examples.
//! One test binary for these subjects (a module each), so CI links it once.

#[path = "../common/mod.rs"]
mod common;

mod bad_data;
mod bad_input;
mod cli;
mod demo;
mod pipes;
mod readme;
mod slurm;

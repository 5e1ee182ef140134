//! The engine below the method: forwards against HF fixtures, the SIMD kernels, the PTX emulator and ptxas, checkpoints, the text tower and tokenizer, preprocessing, zero-shot heads and label spaces.
//! One test binary for these subjects (a module each), so CI links it once.

#[path = "../common/mod.rs"]
mod common;

mod checkpoints;
mod emu;
mod forward;
mod label_spaces;
mod preprocess;
mod ptxas;
mod simd;
mod simd_bf16;
mod text;
mod tokenizer;
mod zeroshot;

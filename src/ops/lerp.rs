//! lerp of a flat weight buffer: `out = w0 + λ·(w1 − w0)`, computed as one
//! fused multiply-add so every executor rounds it the same way.

use rayon::prelude::*;

#[inline(always)]
pub fn scalar(w0: f32, w1: f32, lambda: f32) -> f32 {
    lambda.mul_add(w1 - w0, w0)
}

/// CPU reference, `out` separate from `w0`.
pub fn cpu(out: &mut [f32], w0: &[f32], w1: &[f32], lambda: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    out.par_chunks_mut(CHUNK)
        .zip(w0.par_chunks(CHUNK).zip(w1.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| chunk(o, Some(a), b, lambda));
}

/// In place, `w ← w + λ(w1 − w)`: the materialize strategy's update, without
/// a copy of the whole model.
pub fn cpu_in_place(w: &mut [f32], w1: &[f32], lambda: f32) {
    assert!(w1.len() == w.len());
    w.par_chunks_mut(CHUNK)
        .zip(w1.par_chunks(CHUNK))
        .for_each(|(o, b)| chunk(o, None, b, lambda));
}

const CHUNK: usize = 1 << 15;

fn chunk(o: &mut [f32], a: Option<&[f32]>, b: &[f32], lambda: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return unsafe { chunk_fma(o, a, b, lambda) };
    }
    chunk_plain(o, a, b, lambda)
}

/// `f32::mul_add` is a library call unless FMA is enabled at compile time;
/// this copy of the loop is compiled with it, so it vectorises.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn chunk_fma(o: &mut [f32], a: Option<&[f32]>, b: &[f32], lambda: f32) {
    chunk_plain(o, a, b, lambda)
}

#[inline(always)]
fn chunk_plain(o: &mut [f32], a: Option<&[f32]>, b: &[f32], lambda: f32) {
    match a {
        Some(a) => {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = scalar(a, b, lambda);
            }
        }
        None => {
            for (o, &b) in o.iter_mut().zip(b) {
                *o = scalar(*o, b, lambda);
            }
        }
    }
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/lerp.ptx`: `out = w0 + λ(w1 − w0)` over `n` floats
/// (`out` may equal `w0`). Vectorised by 4 inside the kernel when aligned.
pub fn launch(gpu: &dyn Gpu, out: u64, w0: u64, w1: u64, n: usize, lambda: f32) -> Result<()> {
    let args = [
        Arg::U64(out),
        Arg::U64(w0),
        Arg::U64(w1),
        super::u32_arg("n", n)?,
        Arg::F32(lambda),
    ];
    gpu.launch("lerp", grid_1d(n.div_ceil(4), 256), [256, 1, 1], 0, &args)
}

/// Work of one call over `n` weights: read w0 and w1, write out.
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(n, 3, 2.0)
}

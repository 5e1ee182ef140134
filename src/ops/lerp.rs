//! lerp of a flat weight buffer: `out = w0 + λ·(w1 − w0)`, computed as one
//! fused multiply-add so every executor rounds it the same way.

use rayon::prelude::*;

#[inline]
pub fn scalar(w0: f32, w1: f32, lambda: f32) -> f32 {
    lambda.mul_add(w1 - w0, w0)
}

pub fn cpu(out: &mut [f32], w0: &[f32], w1: &[f32], lambda: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    out.par_chunks_mut(1 << 15)
        .zip(w0.par_chunks(1 << 15).zip(w1.par_chunks(1 << 15)))
        .for_each(|(o, (a, b))| {
            for i in 0..o.len() {
                o[i] = scalar(a[i], b[i], lambda);
            }
        });
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

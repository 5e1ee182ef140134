//! add_scaled_diff: `out += k·(w1 − w0)`, one fused multiply-add per element:
//! adds a scaled task vector to a working weight buffer (multi-task DaWin).

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};
use rayon::prelude::*;

#[inline]
pub fn scalar(out: f32, w0: f32, w1: f32, k: f32) -> f32 {
    k.mul_add(w1 - w0, out)
}

pub fn cpu(out: &mut [f32], w0: &[f32], w1: &[f32], k: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    out.par_chunks_mut(1 << 15)
        .zip(w0.par_chunks(1 << 15).zip(w1.par_chunks(1 << 15)))
        .for_each(|(o, (a, b))| {
            for i in 0..o.len() {
                o[i] = scalar(o[i], a[i], b[i], k);
            }
        });
}

/// Launches `ptx/add_scaled_diff.ptx` over `n` floats.
pub fn launch(gpu: &dyn Gpu, out: u64, w0: u64, w1: u64, n: usize, k: f32) -> Result<()> {
    let args = [
        Arg::U64(out),
        Arg::U64(w0),
        Arg::U64(w1),
        super::u32_arg("n", n)?,
        Arg::F32(k),
    ];
    gpu.launch(
        "add_scaled_diff",
        grid_1d(n.div_ceil(4), 256),
        [256, 1, 1],
        0,
        &args,
    )
}

/// Work of one call over `n` values: read out, w0, w1; write out.
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(n, 4, 3.0)
}

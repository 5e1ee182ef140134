//! lerp_bf16: `out = bf16(w0 + λ·(w1 − w0))` over bf16 weights, in f32 with
//! one fused multiply-add (as [`super::lerp::scalar`]) and one rounding.

use half::bf16;

pub fn cpu(out: &mut [bf16], w0: &[bf16], w1: &[bf16], lambda: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    for ((o, a), b) in out.iter_mut().zip(w0).zip(w1) {
        *o = bf16::from_f32(super::lerp::scalar(a.to_f32(), b.to_f32(), lambda));
    }
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/lerp_bf16.ptx` over `n` values; `out` may be `w0`.
pub fn launch(gpu: &dyn Gpu, out: u64, w0: u64, w1: u64, n: usize, lambda: f32) -> Result<()> {
    if [out, w0, w1].iter().any(|a| !a.is_multiple_of(4)) {
        return Err(crate::invalid!("lerp_bf16 needs 4-byte aligned buffers"));
    }
    let args = [
        Arg::U64(out),
        Arg::U64(w0),
        Arg::U64(w1),
        super::u32_arg("n", n)?,
        Arg::F32(lambda),
    ];
    gpu.launch(
        "lerp_bf16",
        grid_1d(n.div_ceil(2), 256),
        [256, 1, 1],
        0,
        &args,
    )
}

/// Work of one call over `n` values: read two, write one, 2 bytes each.
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost {
        flops: 2.0 * n as f64,
        bytes: 6.0 * n as f64,
    }
}

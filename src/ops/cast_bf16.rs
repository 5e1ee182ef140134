//! cast_bf16: `y = bf16(x)`, round to nearest even (f32 layernorm output
//! into the bf16 gemms).

use half::bf16;

pub fn cpu(x: &[f32], y: &mut [bf16]) {
    for (d, s) in y.iter_mut().zip(x) {
        *d = bf16::from_f32(*s);
    }
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/cast_bf16.ptx` over `n` values.
pub fn launch(gpu: &dyn Gpu, x: u64, y: u64, n: usize) -> Result<()> {
    let args = [Arg::U64(x), Arg::U64(y), super::u32_arg("n", n)?];
    gpu.launch("cast_bf16", grid_1d(n, 256), [256, 1, 1], 0, &args)
}

/// Work of one call over `n` values: read 4 bytes, write 2 each.
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost {
        flops: n as f64,
        bytes: 6.0 * n as f64,
    }
}

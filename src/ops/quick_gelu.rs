//! quick_gelu, OpenAI CLIP's activation: `x·σ(1.702·x)`, in place.

use rayon::prelude::*;

/// In f32: relative error a few ulp, well inside every tolerance we state.
pub fn scalar(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

pub fn cpu(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|c| c.iter_mut().for_each(|v| *v = scalar(*v)));
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/quick_gelu.ptx` in place over `n` floats.
pub fn launch(gpu: &dyn Gpu, x: u64, n: usize) -> Result<()> {
    let args = [Arg::U64(x), super::u32_arg("n", n)?];
    gpu.launch("quick_gelu", grid_1d(n, 256), [256, 1, 1], 0, &args)
}

/// Work of one in-place call over `n` values (exp counted as ~4 FLOPs).
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(n, 2, 8.0)
}

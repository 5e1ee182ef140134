//! gelu, exact erf form: `0.5·x·(1 + erf(x/√2))`, in place.

use rayon::prelude::*;

pub fn scalar(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

pub fn cpu(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|c| c.iter_mut().for_each(|v| *v = scalar(*v)));
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/gelu.ptx` in place over `n` floats.
pub fn launch(gpu: &dyn Gpu, x: u64, n: usize) -> Result<()> {
    let args = [Arg::U64(x), super::u32_arg("n", n)?];
    gpu.launch("gelu", grid_1d(n, 256), [256, 1, 1], 0, &args)
}

/// Work of one in-place call over `n` values (erf counted as ~10 FLOPs).
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(n, 2, 14.0)
}

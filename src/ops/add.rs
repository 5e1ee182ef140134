//! add: the residual connection, `y += x` in place.

use rayon::prelude::*;

pub fn cpu(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(yc, xc)| yc.iter_mut().zip(xc).for_each(|(a, b)| *a += b));
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/add.ptx`: `y += x` over `n` floats.
pub fn launch(gpu: &dyn Gpu, x: u64, y: u64, n: usize) -> Result<()> {
    let args = [Arg::U64(x), Arg::U64(y), super::u32_arg("n", n)?];
    gpu.launch("add", grid_1d(n, 256), [256, 1, 1], 0, &args)
}

/// Work of one call over `n` values: read x and y, write y.
pub fn cost(n: usize) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(n, 3, 1.0)
}

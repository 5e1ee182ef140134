//! l2_normalize: `y[r] = x[r] / ‖x[r]‖₂`, as the CLIP classifier head needs.
//! A zero row stays zero (PyTorch's `F.normalize` clamps the norm at 1e-12).

use rayon::prelude::*;

pub fn cpu(x: &[f32], y: &mut [f32], rows: usize, width: usize) {
    if width == 0 {
        return;
    }
    y[..rows * width]
        .par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .for_each(|(yr, xr)| {
            let n = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let inv = 1.0 / n.max(1e-12);
            for (a, b) in yr.iter_mut().zip(xr) {
                *a = (*b as f64 * inv) as f32;
            }
        });
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Launches `ptx/l2_normalize.ptx`: one warp per row, 8 rows per block.
pub fn launch(gpu: &dyn Gpu, x: u64, y: u64, rows: usize, width: usize) -> crate::Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let args = [
        Arg::U64(x),
        Arg::U64(y),
        super::u32_arg("rows", rows)?,
        super::u32_arg("width", width)?,
    ];
    gpu.launch(
        "l2_normalize",
        [rows.div_ceil(8) as u32, 1, 1],
        [256, 1, 1],
        0,
        &args,
    )
}

/// Work of one call over `rows·width` values.
pub fn cost(rows: usize, width: usize) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(rows * width, 2, 3.0)
}

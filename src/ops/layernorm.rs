//! layernorm over rows, optionally with per-row lerped γ/β.
//!
//! Strides let `ln_post` read only the class token of each sample
//! (`x_stride = tokens·width`) and write a dense `[batch, width]`.

use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormShape {
    pub rows: usize,
    pub width: usize,
    pub x_stride: usize,
    pub y_stride: usize,
    pub eps: f32,
}

impl LayerNormShape {
    pub fn dense(rows: usize, width: usize, eps: f32) -> Self {
        LayerNormShape {
            rows,
            width,
            x_stride: width,
            y_stride: width,
            eps,
        }
    }
}

/// Second γ/β and λ per row (see [`crate::exec::DualNorm`]).
pub struct DualRef<'a> {
    pub gamma1: &'a [f32],
    pub beta1: &'a [f32],
    pub lambda: &'a [f32],
    pub rows_per_lambda: usize,
}

/// CPU reference. Statistics in f64: it is the ground truth.
pub fn cpu(
    x: &[f32],
    y: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    dual: Option<&DualRef>,
    s: LayerNormShape,
) {
    let w = s.width;
    if s.rows == 0 {
        return;
    }
    assert!(x.len() >= (s.rows - 1) * s.x_stride + w && y.len() >= (s.rows - 1) * s.y_stride + w);
    y.par_chunks_mut(s.y_stride)
        .take(s.rows)
        .enumerate()
        .for_each(|(r, yr)| {
            let xr = &x[r * s.x_stride..r * s.x_stride + w];
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / w as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w as f64;
            let inv = 1.0 / (var + s.eps as f64).sqrt();
            for i in 0..w {
                let nrm = ((xr[i] as f64 - mean) * inv) as f32;
                let mut g = gamma[i];
                let mut b = beta[i];
                if let Some(d) = dual {
                    let l = super::row_lambda(d.lambda, d.rows_per_lambda, r);
                    g = l.mul_add(d.gamma1[i] - g, g);
                    b = l.mul_add(d.beta1[i] - b, b);
                }
                yr[i] = nrm.mul_add(g, b);
            }
        });
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Device addresses of the second γ/β and the λ per row group.
pub struct DualArgs {
    pub gamma1: u64,
    pub beta1: u64,
    pub lambda: u64,
    pub rows_per_lambda: usize,
}

/// Launches `ptx/layernorm.ptx`: one warp per row, 8 rows per block.
pub fn launch(
    gpu: &dyn Gpu,
    x: u64,
    y: u64,
    gamma: u64,
    beta: u64,
    dual: Option<DualArgs>,
    s: LayerNormShape,
) -> crate::Result<()> {
    if s.rows == 0 {
        return Ok(());
    }
    let d = dual.unwrap_or(DualArgs {
        gamma1: 0,
        beta1: 0,
        lambda: 0,
        rows_per_lambda: 1,
    });
    let args = [
        Arg::U64(x),
        Arg::U64(y),
        Arg::U64(gamma),
        Arg::U64(beta),
        Arg::U64(d.gamma1),
        Arg::U64(d.beta1),
        Arg::U64(d.lambda),
        super::u32_arg("rows", s.rows)?,
        super::u32_arg("width", s.width)?,
        super::u32_arg("x stride", s.x_stride)?,
        super::u32_arg("y stride", s.y_stride)?,
        super::u32_arg("rows per λ", d.rows_per_lambda.max(1))?,
        Arg::F32(s.eps),
    ];
    gpu.launch(
        "layernorm",
        [s.rows.div_ceil(8) as u32, 1, 1],
        [256, 1, 1],
        0,
        &args,
    )
}

/// Work of one call: statistics and the affine map per value; reads x and
/// γ/β (both sets when dual), writes y.
pub fn cost(s: LayerNormShape, dual: bool) -> crate::profile::Cost {
    let (r, w) = (s.rows as f64, s.width as f64);
    let sets = if dual { 2.0 } else { 1.0 };
    crate::profile::Cost {
        flops: r * w * if dual { 12.0 } else { 8.0 },
        bytes: 4.0 * (2.0 * r * w + 2.0 * sets * w),
    }
}

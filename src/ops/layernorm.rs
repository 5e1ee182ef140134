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

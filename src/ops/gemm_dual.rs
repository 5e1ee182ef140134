//! gemm_dual: `C_r = (1−λ_r)(A·B0ᵀ+b0) + λ_r(A·B1ᵀ+b1)`, DaWin's exact
//! per-sample interpolation of a linear layer without building merged weights.

use super::gemm::{self, GemmShape};
use rayon::prelude::*;

/// Mixes two weight sets row by row; the arguments mirror [`crate::exec::DualGemm`].
pub struct DualRef<'a> {
    pub b1: &'a [f32],
    pub bias1: Option<&'a [f32]>,
    pub lambda: &'a [f32],
    pub rows_per_lambda: usize,
}

/// CPU reference: both products, then the per-row mix `c0 + λ(c1 − c0)`.
pub fn cpu(
    a: &[f32],
    b0: &[f32],
    bias0: Option<&[f32]>,
    dual: &DualRef,
    c: &mut [f32],
    s: GemmShape,
) {
    let mut c1 = vec![0f32; s.m * s.n];
    gemm::cpu(a, b0, bias0, c, s);
    gemm::cpu(a, dual.b1, dual.bias1, &mut c1, s);
    if s.n == 0 {
        return;
    }
    c[..s.m * s.n]
        .par_chunks_mut(s.n)
        .zip(c1.par_chunks(s.n))
        .enumerate()
        .for_each(|(r, (row0, row1))| {
            let l = super::row_lambda(dual.lambda, dual.rows_per_lambda, r);
            for (x0, x1) in row0.iter_mut().zip(row1) {
                *x0 = l.mul_add(*x1 - *x0, *x0);
            }
        });
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Device addresses of the second weight set and the λ per row group.
pub struct DualArgs {
    pub b1: u64,
    pub bias1: u64,
    pub lambda: u64,
    pub rows_per_lambda: usize,
}

/// Launches `ptx/gemm_dual.ptx` (same tiling as `gemm`); null biases mean none.
pub fn launch(
    gpu: &dyn Gpu,
    a: u64,
    b0: u64,
    bias0: u64,
    d: &DualArgs,
    c: u64,
    s: GemmShape,
) -> crate::Result<()> {
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let args = [
        Arg::U64(a),
        Arg::U64(b0),
        Arg::U64(bias0),
        Arg::U64(d.b1),
        Arg::U64(d.bias1),
        Arg::U64(d.lambda),
        Arg::U64(c),
        super::u32_arg("m", s.m)?,
        super::u32_arg("n", s.n)?,
        super::u32_arg("k", s.k)?,
        super::u32_arg("rows per λ", d.rows_per_lambda.max(1))?,
    ];
    let t = super::gemm::TILE;
    let grid = [s.n.div_ceil(t) as u32, s.m.div_ceil(t) as u32, 1];
    gpu.launch("gemm_dual", grid, [256, 1, 1], 0, &args)
}

/// Work of one call: two products (4·m·n·k FLOPs) and the per-row mix;
/// reads A, both weight sets and λ, writes C.
pub fn cost(s: GemmShape, rows_per_lambda: usize) -> crate::profile::Cost {
    let (m, n, k) = (s.m as f64, s.n as f64, s.k as f64);
    crate::profile::Cost {
        flops: 4.0 * m * n * k + 5.0 * m * n,
        bytes: 4.0 * (m * k + 2.0 * n * k + m * n + 2.0 * n + m / rows_per_lambda.max(1) as f64),
    }
}

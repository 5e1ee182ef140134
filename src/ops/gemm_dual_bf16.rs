//! gemm_dual_bf16: the dual-weight gemm on bf16 tensor cores. Row `r` is
//! `epilogue((1−λ_r)(A·B0ᵀ+bias0) + λ_r(A·B1ᵀ+bias1))` with
//! `λ_r = lambda[r / rows_per_lambda]`: each sample's rows see the weights
//! lerped by that sample's λ, without building the lerped weights.

use super::gemm::GemmShape;
use super::gemm_bf16::Epilogue;
use half::bf16;

/// The second weight set and the per-row λ, as device addresses (biases and
/// `lambda` f32; a bias of 0 means none, read as zeros).
#[derive(Clone, Copy, Debug)]
pub struct DualArgs {
    pub b1: u64,
    pub bias0: u64,
    pub bias1: u64,
    pub lambda: u64,
    pub rows_per_lambda: usize,
}

/// CPU reference: the two products in f32, mixed per row. `c` holds the
/// output as f32 values (bf16-representable for a bf16 output).
#[allow(clippy::too_many_arguments)]
pub fn cpu(
    a: &[bf16],
    b0: &[bf16],
    b1: &[bf16],
    bias0: Option<&[f32]>,
    bias1: Option<&[f32]>,
    lambda: &[f32],
    rows_per_lambda: usize,
    c: &mut [f32],
    s: GemmShape,
    ep: Epilogue,
) {
    let widen = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let a = widen(a);
    let (mut y0, mut y1) = (vec![0f32; s.m * s.n], vec![0f32; s.m * s.n]);
    super::gemm::cpu(&a, &widen(b0), None, &mut y0, s);
    super::gemm::cpu(&a, &widen(b1), None, &mut y1, s);
    for r in 0..s.m {
        let l = super::row_lambda(lambda, rows_per_lambda, r);
        for j in 0..s.n {
            let i = r * s.n + j;
            let (p0, p1) = (bias0.map_or(0.0, |b| b[j]), bias1.map_or(0.0, |b| b[j]));
            let v = ep.activate(y0[i] + l * (y1[i] - y0[i]) + p0 + l * (p1 - p0));
            c[i] = ep.store(if ep.accumulate { c[i] + v } else { v });
        }
    }
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Launches `ptx/gemm_dual_bf16.ptx`.
pub fn launch(
    gpu: &dyn Gpu,
    a: u64,
    b0: u64,
    dual: DualArgs,
    c: u64,
    s: GemmShape,
    ep: Epilogue,
) -> crate::Result<()> {
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    super::gemm_bf16::check(a, b0, c, s, ep)?;
    if !dual.b1.is_multiple_of(16) {
        return Err(crate::invalid!(
            "gemm_dual_bf16 needs a 16-byte aligned second weight (b1 = {:#x})",
            dual.b1
        ));
    }
    if dual.rows_per_lambda == 0 {
        return Err(crate::invalid!(
            "gemm_dual_bf16: rows_per_lambda must be at least 1"
        ));
    }
    let args = [
        Arg::U64(a),
        Arg::U64(b0),
        Arg::U64(dual.b1),
        Arg::U64(dual.bias0),
        Arg::U64(dual.bias1),
        Arg::U64(dual.lambda),
        Arg::U64(c),
        super::u32_arg("m", s.m)?,
        super::u32_arg("n", s.n)?,
        super::u32_arg("k", s.k)?,
        super::u32_arg("rows_per_lambda", dual.rows_per_lambda)?,
        Arg::U32(ep.flags()),
    ];
    let tile = super::gemm_bf16::TILE;
    let grid = [s.n.div_ceil(tile) as u32, s.m.div_ceil(tile) as u32, 1];
    gpu.launch("gemm_dual_bf16", grid, [256, 1, 1], 0, &args)
}

/// Work of one call: two products (4·m·n·k FLOPs); reads A, B0, B1.
pub fn cost(s: GemmShape, ep: Epilogue) -> crate::profile::Cost {
    let one = super::gemm_bf16::cost(s, ep);
    crate::profile::Cost {
        flops: 2.0 * one.flops,
        bytes: one.bytes + 2.0 * (s.n * s.k) as f64,
    }
}

//! gemm_dual_bf16: the dual-weight gemm on bf16 tensor cores. Row `r` is
//! `epilogue((1−λ_r)(A·B0ᵀ+bias0) + λ_r(A·B1ᵀ+bias1))` with
//! `λ_r = lambda[r / rows_per_lambda]`: each sample's rows see the weights
//! lerped by that sample's λ, without building the lerped weights.

use super::gemm::{GemmShape, add_bias, check_operands, with_scratch};
use super::gemm_bf16::{Epilogue, OutRows, TILE, check_alignment, check_k};
use super::gemm_dual::{DualGemm, DualGemmRef, check_dual};
use super::{Addr, Host, OpDef, on_host, opt_addr};
use crate::buf::{Buf, DType, SliceMut};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use crate::simd::{self, Bf16, vmath};
use half::bf16;

/// The dual-weight gemm with bf16 `a`, `b0`, `dual.b1` and f32 biases and λ.
#[derive(Clone, Copy, Debug)]
pub struct GemmDualBf16 {
    pub a: Buf,
    pub b0: Buf,
    pub bias0: Option<Buf>,
    pub dual: DualGemm,
    pub c: Buf,
    pub shape: GemmShape,
    pub epilogue: Epilogue,
}

/// The reference: the two products in f32, mixed per row. `c` holds the
/// output as f32 values (bf16-representable for a bf16 output). The
/// executor runs [`cpu_at`].
pub fn cpu(
    a: &[bf16],
    b0: &[bf16],
    bias0: Option<&[f32]>,
    dual: &DualGemmRef<bf16>,
    c: &mut [f32],
    s: GemmShape,
    ep: Epilogue,
) {
    let widen = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let a = widen(a);
    let (mut y0, mut y1) = (vec![0f32; s.m * s.n], vec![0f32; s.m * s.n]);
    super::gemm::cpu(&a, &widen(b0), None, &mut y0, s);
    super::gemm::cpu(&a, &widen(dual.b1), None, &mut y1, s);
    for r in 0..s.m {
        let l = super::row_lambda(dual.lambda, dual.rows_per_lambda, r);
        for j in 0..s.n {
            let i = r * s.n + j;
            let (p0, p1) = (
                bias0.map_or(0.0, |b| b[j]),
                dual.bias1.map_or(0.0, |b| b[j]),
            );
            let v = ep.activate(y0[i] + l * (y1[i] - y0[i]) + p0 + l * (p1 - p0));
            c[i] = ep.store(if ep.accumulate { c[i] + v } else { v });
        }
    }
}

/// cpu implementation: both products from one pass over packed A
/// (`crate::simd::gemm_bf16` at `level`), mixed by the row's λ and
/// finished (activation, accumulation, rounding) per row segment.
pub fn cpu_at(
    level: Bf16,
    a: &[bf16],
    (b0, bias0): (&[bf16], Option<&[f32]>),
    dual: &DualGemmRef<bf16>,
    c: SliceMut,
    s: GemmShape,
    ep: Epilogue,
) {
    let GemmShape { m, n, k } = s;
    let out = OutRows::new(c, s, ep);
    let mix = |r: usize, j0: usize, segs: &mut [&mut [f32]]| {
        let l = super::row_lambda(dual.lambda, dual.rows_per_lambda, r);
        let (s0, s1) = segs.split_at_mut(1);
        add_bias(simd::active(), s0[0], bias0, j0);
        add_bias(simd::active(), s1[0], dual.bias1, j0);
        vmath::lerp_in_place(simd::active(), s0[0], s1[0], l);
        out.finish(r, j0, s0[0]);
    };
    with_scratch(2, m * n, |scratch| {
        // SAFETY: the scratch outputs hold m·n floats each and alias nothing.
        unsafe { simd::gemm_bf16::multi(level, a, &[b0, dual.b1], scratch, (m, n, k), &mix) }
    })
}

/// Work of one call: two products (4·m·n·k FLOPs); reads A, B0, B1.
pub fn cost(s: GemmShape, ep: Epilogue) -> crate::profile::Cost {
    let one = super::gemm_bf16::cost(s, ep);
    crate::profile::Cost {
        flops: 2.0 * one.flops,
        bytes: one.bytes + 2.0 * (s.n * s.k) as f64,
    }
}

impl OpDef for GemmDualBf16 {
    fn check(&self) -> Result<()> {
        let op = "gemm_dual_bf16";
        check_k(op, self.shape)?;
        let ops = (self.a, self.b0, self.bias0, self.c);
        check_operands(op, ops, self.shape, DType::Bf16, self.epilogue.out_dtype())?;
        check_dual(op, &self.dual, self.c, self.shape, DType::Bf16)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.epilogue)
    }

    fn tensor_core(&self) -> bool {
        true
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let d = self.dual;
        let ins = d.inputs(self.a, self.b0, self.bias0);
        on_host(host, self.c, &ins, |i, c| {
            let dual = d.host(i.bf16(3), i);
            let (a, b0, bias0) = (i.bf16(0), i.bf16(1), i.opt_f32(2));
            let level = simd::active_bf16();
            cpu_at(level, a, (b0, bias0), &dual, c, self.shape, self.epilogue)
        })
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let (s, d, ep) = (self.shape, self.dual, self.epilogue);
        if s.m == 0 || s.n == 0 {
            return Ok(());
        }
        let operands = [at(self.a)?, at(self.b0)?, at(d.b1)?];
        check_alignment("gemm_dual_bf16", &operands, at(self.c)?, ep)?;
        let args = [
            Arg::U64(operands[0]),
            Arg::U64(operands[1]),
            Arg::U64(operands[2]),
            Arg::U64(opt_addr(at, self.bias0)?),
            Arg::U64(opt_addr(at, d.bias1)?),
            Arg::U64(at(d.mix.lambda)?),
            Arg::U64(at(self.c)?),
            u32_arg("m", s.m)?,
            u32_arg("n", s.n)?,
            u32_arg("k", s.k)?,
            u32_arg("rows_per_lambda", d.mix.rows_per_lambda)?,
            Arg::U32(ep.flags()),
        ];
        let grid = [s.n.div_ceil(TILE) as u32, s.m.div_ceil(TILE) as u32, 1];
        gpu.launch("gemm_dual_bf16", Dims::new(grid, [256, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for GemmDualBf16 {
    const TOLERANCE: f64 = 1e-2;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (a, b0, bias0, dual, c) = super::gemm_dual::example_operands(i, DType::Bf16);
        (
            GemmDualBf16 {
                a,
                b0,
                bias0: Some(bias0),
                dual,
                c,
                shape: super::gemm::EXAMPLE_SHAPE,
                epilogue: super::gemm_bf16::EXAMPLE_EPILOGUE,
            },
            c,
        )
    }
}

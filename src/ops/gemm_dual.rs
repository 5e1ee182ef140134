//! gemm_dual: `C_r = (1−λ_r)(A·B0ᵀ+b0) + λ_r(A·B1ᵀ+b1)`, DaWin's exact
//! per-sample interpolation of a linear layer without building merged weights.

use super::gemm::{self, GemmShape, check_operands};
use super::{Addr, Host, Inputs, Mix, OpDef, disjoint, need, need_opt, on_host, opt_addr};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use crate::simd::Simd;
use crate::simd::gemm::{OutPtr, multi};

/// The second weight set of a dual-weight gemm and the per-row λ.
#[derive(Clone, Copy, Debug)]
pub struct DualGemm {
    pub b1: Buf,
    pub bias1: Option<Buf>,
    pub mix: Mix,
}

/// `c_r = (1−λ_r)(a·b0ᵀ+bias0) + λ_r(a·b1ᵀ+bias1)`.
#[derive(Clone, Copy, Debug)]
pub struct GemmDual {
    pub a: Buf,
    pub b0: Buf,
    pub bias0: Option<Buf>,
    pub dual: DualGemm,
    pub c: Buf,
    pub shape: GemmShape,
}

/// [`DualGemm`] on the host: the second weight set as slices, for the CPU
/// references (f32 weights here, bf16 ones for gemm_dual_bf16).
pub struct DualGemmRef<'a, T = f32> {
    pub b1: &'a [T],
    pub bias1: Option<&'a [f32]>,
    pub lambda: &'a [f32],
    pub rows_per_lambda: usize,
}

/// cpu implementation: both products from one pass over the packed A panels,
/// each finished tile mixed per row, `c0 + λ(c1 − c0)` with biases added.
pub fn cpu(
    a: &[f32],
    b0: &[f32],
    bias0: Option<&[f32]>,
    dual: &DualGemmRef,
    c: &mut [f32],
    s: GemmShape,
) {
    cpu_at(crate::simd::active(), a, b0, bias0, dual, c, s)
}

/// [`cpu`] at a given SIMD level.
pub fn cpu_at(
    level: Simd,
    a: &[f32],
    b0: &[f32],
    bias0: Option<&[f32]>,
    dual: &DualGemmRef,
    c: &mut [f32],
    s: GemmShape,
) {
    let GemmShape { m, n, k } = s;
    assert!(c.len() >= m * n);
    let mix = |r: usize, j0: usize, segs: &mut [&mut [f32]]| {
        let l = super::row_lambda(dual.lambda, dual.rows_per_lambda, r);
        let (s0, s1) = segs.split_at_mut(1);
        gemm::add_bias(level, s0[0], bias0, j0);
        gemm::add_bias(level, s1[0], dual.bias1, j0);
        crate::simd::vmath::lerp_in_place(level, s0[0], s1[0], l);
    };
    gemm::with_scratch(1, m * n, |c1| {
        let outs = [OutPtr(c.as_mut_ptr()), c1[0]];
        // SAFETY: `c` (borrowed mutably) and the scratch hold m·n floats
        // each and alias nothing else.
        unsafe { multi(level, a, &[b0, dual.b1], &outs, (m, n, k), &mix) }
    })
}

impl DualGemm {
    /// The inputs of a dual op's CPU run: `a, b0, bias0, b1, bias1, λ`.
    pub(super) fn inputs(&self, a: Buf, b0: Buf, bias0: Option<Buf>) -> [Option<Buf>; 6] {
        [
            Some(a),
            Some(b0),
            bias0,
            Some(self.b1),
            self.bias1,
            Some(self.mix.lambda),
        ]
    }

    /// The second weight set among those inputs, `b1` given in its dtype.
    pub(super) fn host<'s, T>(&self, b1: &'s [T], i: Inputs<'_, 's>) -> DualGemmRef<'s, T> {
        DualGemmRef {
            b1,
            bias1: i.opt_f32(4),
            lambda: i.f32(5),
            rows_per_lambda: self.mix.rows_per_lambda,
        }
    }
}

/// The checks of the second weight set, shared with gemm_dual_bf16.
pub(super) fn check_dual(op: &str, d: &DualGemm, c: Buf, s: GemmShape, dtype: DType) -> Result<()> {
    need(op, "b1", d.b1, dtype, super::elems(op, &[s.n, s.k])?)?;
    need_opt(op, "bias1", d.bias1, DType::F32, s.n)?;
    d.mix.check(op, s.m)?;
    let inputs = [
        ("b1", Some(d.b1)),
        ("bias1", d.bias1),
        ("lambda", Some(d.mix.lambda)),
    ];
    disjoint(op, ("c", c), &inputs)
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

impl OpDef for GemmDual {
    fn check(&self) -> Result<()> {
        let ops = (self.a, self.b0, self.bias0, self.c);
        check_operands("gemm_dual", ops, self.shape, DType::F32, DType::F32)?;
        check_dual("gemm_dual", &self.dual, self.c, self.shape, DType::F32)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.dual.mix.rows_per_lambda)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let d = self.dual;
        let ins = d.inputs(self.a, self.b0, self.bias0);
        on_host(host, self.c, &ins, |i, c| {
            let dual = d.host(i.f32(3), i);
            cpu(i.f32(0), i.f32(1), i.opt_f32(2), &dual, c.f32(), self.shape)
        })
    }

    /// Same tiling as `gemm`; null biases mean none.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let (s, d) = (self.shape, self.dual);
        if s.m == 0 || s.n == 0 {
            return Ok(());
        }
        let args = [
            Arg::U64(at(self.a)?),
            Arg::U64(at(self.b0)?),
            Arg::U64(opt_addr(at, self.bias0)?),
            Arg::U64(at(d.b1)?),
            Arg::U64(opt_addr(at, d.bias1)?),
            Arg::U64(at(d.mix.lambda)?),
            Arg::U64(at(self.c)?),
            u32_arg("m", s.m)?,
            u32_arg("n", s.n)?,
            u32_arg("k", s.k)?,
            u32_arg("rows per λ", d.mix.rows_per_lambda)?,
        ];
        let t = gemm::TILE;
        let grid = [s.n.div_ceil(t) as u32, s.m.div_ceil(t) as u32, 1];
        gpu.launch("gemm_dual", Dims::new(grid, [256, 1, 1]), &args)
    }
}

/// The dual gemms' example operands in `dtype` (f32 or bf16): activations,
/// both weight sets, their biases, λ for 7 samples of 10 rows, and `c`.
#[cfg(feature = "op-examples")]
pub(super) fn example_operands(
    i: &mut super::example::ExampleInputs,
    dtype: DType,
) -> (Buf, Buf, Buf, DualGemm, Buf) {
    let (a, b0, b1) = (
        i.of(dtype, 70 * 40, 1, 1.0),
        i.of(dtype, 45 * 40, 2, 0.2),
        i.of(dtype, 45 * 40, 3, 0.2),
    );
    let (bias0, bias1) = (i.f32(45, 4, 0.5), i.f32(45, 5, 0.5));
    let dual = DualGemm {
        b1,
        bias1: Some(bias1),
        mix: i.mix(7, 10),
    };
    (a, b0, bias0, dual, i.zeros(dtype, 70 * 45))
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for GemmDual {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (a, b0, bias0, dual, c) = example_operands(i, DType::F32);
        let shape = super::gemm::EXAMPLE_SHAPE;
        (
            GemmDual {
                a,
                b0,
                bias0: Some(bias0),
                dual,
                c,
                shape,
            },
            c,
        )
    }
}

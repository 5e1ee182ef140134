//! gemm: `C[m,n] = A[m,k] · B[n,k]ᵀ (+ bias[n])`, the layout of every linear
//! layer (PyTorch stores weights as [out, in]).

use super::{Addr, Host, OpDef, disjoint, elems, need, need_opt, on_host, opt_addr};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use crate::simd::Simd;
use crate::simd::gemm::{OutPtr, Panels, multi};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// `c[m,n] = a[m,k] · b[n,k]ᵀ (+ bias[n])`.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub a: Buf,
    pub b: Buf,
    pub bias: Option<Buf>,
    pub c: Buf,
    pub shape: GemmShape,
}

/// cpu implementation: the packed gemm of `crate::simd::gemm` at the machine's
/// SIMD level, the bias added on each finished tile.
pub fn cpu(a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32], s: GemmShape) {
    cpu_at(crate::simd::active(), a, b, bias, c, s)
}

/// [`cpu`] at a given SIMD level (the tests run every level the CPU has).
pub fn cpu_at(
    level: Simd,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    s: GemmShape,
) {
    let GemmShape { m, n, k } = s;
    assert!(c.len() >= m * n && bias.is_none_or(|b| b.len() >= n));
    let finish = |_row: usize, j: usize, segs: &mut [&mut [f32]]| add_bias(level, segs[0], bias, j);
    // SAFETY: `c` holds m·n floats (asserted) and is borrowed mutably, so
    // it aliases neither `a` nor `b`.
    unsafe {
        multi(
            level,
            a,
            &[b],
            &[OutPtr(c.as_mut_ptr())],
            (m, n, k),
            &finish,
        )
    }
}

/// Block tile: 64×64 outputs, 16-deep k slices, 256 threads of 4×4.
pub const TILE: usize = 64;

/// The buffer checks gemm and gemm_bf16 share: operands of `dtype`, an f32
/// bias, an output of `c_dtype` apart from every input.
pub(super) fn check_operands(
    op: &str,
    (a, b, bias, c): (Buf, Buf, Option<Buf>, Buf),
    s: GemmShape,
    dtype: DType,
    c_dtype: DType,
) -> Result<()> {
    need(op, "a", a, dtype, elems(op, &[s.m, s.k])?)?;
    need(op, "b", b, dtype, elems(op, &[s.n, s.k])?)?;
    need_opt(op, "bias", bias, DType::F32, s.n)?;
    need(op, "c", c, c_dtype, elems(op, &[s.m, s.n])?)?;
    disjoint(
        op,
        ("c", c),
        &[("a", Some(a)), ("b", Some(b)), ("bias", bias)],
    )
}

/// The parameters gemm and gemm_bf16 share: operands, bias, output, shape.
pub(super) fn args(
    at: &Addr,
    a: Buf,
    b: Buf,
    bias: Option<Buf>,
    c: Buf,
    s: GemmShape,
) -> Result<[Arg; 7]> {
    Ok([
        Arg::U64(at(a)?),
        Arg::U64(at(b)?),
        Arg::U64(opt_addr(at, bias)?),
        Arg::U64(at(c)?),
        u32_arg("m", s.m)?,
        u32_arg("n", s.n)?,
        u32_arg("k", s.k)?,
    ])
}

/// Work of one call: 2·m·n·k FLOPs; reads A, B and the bias, writes C.
pub fn cost(s: GemmShape) -> crate::profile::Cost {
    let (m, n, k) = (s.m as f64, s.n as f64, s.k as f64);
    crate::profile::Cost {
        flops: 2.0 * m * n * k + m * n,
        bytes: 4.0 * (m * k + n * k + m * n + n),
    }
}

impl OpDef for Gemm {
    fn check(&self) -> Result<()> {
        let ops = (self.a, self.b, self.bias, self.c);
        check_operands("gemm", ops, self.shape, DType::F32, DType::F32)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(
            host,
            self.c,
            &[Some(self.a), Some(self.b), self.bias],
            |i, c| cpu(i.f32(0), i.f32(1), i.opt_f32(2), c.f32(), self.shape),
        )
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        if s.m == 0 || s.n == 0 {
            return Ok(());
        }
        let grid = [s.n.div_ceil(TILE) as u32, s.m.div_ceil(TILE) as u32, 1];
        let args = args(at, self.a, self.b, self.bias, self.c, s)?;
        gpu.launch("gemm", Dims::new(grid, [256, 1, 1]), &args)
    }
}

/// The gemm family's example shape: no dimension a tile multiple.
#[cfg(feature = "op-examples")]
pub(super) const EXAMPLE_SHAPE: GemmShape = GemmShape {
    m: 70,
    n: 45,
    k: 40,
};

#[cfg(feature = "op-examples")]
impl super::example::OpExample for Gemm {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = super::gemm::EXAMPLE_SHAPE;
        let a = i.f32(70 * 40, 1, 1.0);
        let (b, bias) = (i.f32(45 * 40, 2, 0.5), i.f32(45, 3, 1.0));
        let c = i.zeros(DType::F32, 70 * 45);
        (
            Gemm {
                a,
                b,
                bias: Some(bias),
                c,
                shape,
            },
            c,
        )
    }
}

/// `seg += bias[j0..]` where there is a bias, at SIMD level `level`.
pub(super) fn add_bias(level: Simd, seg: &mut [f32], bias: Option<&[f32]>, j0: usize) {
    if let Some(b) = bias {
        crate::simd::vmath::add_in_place(level, seg, &b[j0..]);
    }
}

/// Runs `f` on `count` f32 buffers of `len` each, for the products a gemm
/// computes besides its output. They are kept between calls: fresh ones
/// cost page faults on every call (~10 % of a ViT-B/32 fc1 dual gemm).
/// Not zeroed: the packed gemm writes every element before it is read.
/// They start on a 64-byte boundary, where AMX stores its C tiles.
pub(super) fn with_scratch<R>(count: usize, len: usize, f: impl FnOnce(&[OutPtr]) -> R) -> R {
    static SCRATCH: Mutex<Vec<Panels<f32>>> = Mutex::new(Vec::new());
    let mut bufs = std::mem::take(&mut *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()));
    bufs.resize_with(count.max(bufs.len()), Panels::default);
    let ptrs: Vec<OutPtr> = bufs[..count]
        .iter_mut()
        .map(|b| {
            // The largest length so far: a buffer only grows, and only
            // its new memory is zeroed (by the growth), never the rest.
            let keep = len.max(b.as_slice().len());
            OutPtr(b.prepare(keep, false).as_mut_ptr())
        })
        .collect();
    let r = f(&ptrs);
    *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = bufs;
    r
}

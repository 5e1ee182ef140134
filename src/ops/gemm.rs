//! gemm: `C[m,n] = A[m,k] · B[n,k]ᵀ (+ bias[n])`, the layout of every linear
//! layer (PyTorch stores weights as [out, in]).

use super::{Addr, Host, OpDef, disjoint, elems, need, need_opt, on_host, opt_addr};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

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

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// CPU reference: tiles of C computed by `matrixmultiply` on rayon threads.
pub fn cpu(a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32], s: GemmShape) {
    let GemmShape { m, n, k } = s;
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // Split C into tiles so that both tall (many tokens) and wide (batch 1,
    // big N) products use every core.
    let threads = rayon::current_num_threads().max(1);
    let tm = if m >= 64 * threads {
        m.div_ceil(threads * 2)
    } else {
        m.min(64)
    };
    let tn = if n > 256 && m.div_ceil(tm) < 2 * threads {
        256
    } else {
        n
    };
    let tiles: Vec<(usize, usize)> = (0..m)
        .step_by(tm)
        .flat_map(|i| (0..n).step_by(tn).map(move |j| (i, j)))
        .collect();
    let cp = SendPtr(c.as_mut_ptr());
    tiles.par_iter().for_each(|&(i, j)| {
        let rows = tm.min(m - i);
        let cols = tn.min(n - j);
        let cp = &cp;
        // SAFETY: tiles are disjoint rectangles of C, all in bounds (asserted
        // above); A and B are only read.
        unsafe {
            let cptr = cp.0.add(i * n + j);
            if let Some(bias) = bias {
                for r in 0..rows {
                    std::ptr::copy_nonoverlapping(bias.as_ptr().add(j), cptr.add(r * n), cols);
                }
            }
            matrixmultiply::sgemm(
                rows,
                k,
                cols,
                1.0,
                a.as_ptr().add(i * k),
                k as isize,
                1,
                b.as_ptr().add(j * k),
                1,
                k as isize,
                if bias.is_some() { 1.0 } else { 0.0 },
                cptr,
                n as isize,
                1,
            );
        }
    });
}

/// The plain triple loop, kept as the oracle for the tiled version above.
pub fn naive(a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32], s: GemmShape) {
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = 0f64;
            for p in 0..s.k {
                acc += a[i * s.k + p] as f64 * b[j * s.k + p] as f64;
            }
            c[i * s.n + j] = (acc + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
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

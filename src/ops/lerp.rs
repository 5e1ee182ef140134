//! lerp of a flat weight buffer: `out = w0 + λ·(w1 − w0)`, computed as one
//! fused multiply-add so every executor rounds it the same way.

use super::{Addr, Host, OpDef, disjoint, need, on_host, same_len, same_or_disjoint};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `out = w0 + λ(w1 − w0)`; `out` may be `w0` itself (in place).
#[derive(Clone, Copy, Debug)]
pub struct Lerp {
    pub out: Buf,
    pub w0: Buf,
    pub w1: Buf,
    pub lambda: f32,
}

#[inline(always)]
pub fn scalar(w0: f32, w1: f32, lambda: f32) -> f32 {
    lambda.mul_add(w1 - w0, w0)
}

/// cpu implementation, `out` separate from `w0`.
pub fn cpu(out: &mut [f32], w0: &[f32], w1: &[f32], lambda: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    out.par_chunks_mut(CHUNK)
        .zip(w0.par_chunks(CHUNK).zip(w1.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| chunk(o, Some(a), b, lambda));
}

/// In place, `w ← w + λ(w1 − w)`: the materialize strategy's update, without
/// a copy of the whole model.
pub fn cpu_in_place(w: &mut [f32], w1: &[f32], lambda: f32) {
    assert!(w1.len() == w.len());
    w.par_chunks_mut(CHUNK)
        .zip(w1.par_chunks(CHUNK))
        .for_each(|(o, b)| chunk(o, None, b, lambda));
}

const CHUNK: usize = 1 << 15;

fn chunk(o: &mut [f32], a: Option<&[f32]>, b: &[f32], lambda: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        return unsafe { chunk_fma(o, a, b, lambda) };
    }
    chunk_plain(o, a, b, lambda)
}

/// `f32::mul_add` is a library call unless FMA is enabled at compile time;
/// this copy of the loop is compiled with it, so it vectorises.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn chunk_fma(o: &mut [f32], a: Option<&[f32]>, b: &[f32], lambda: f32) {
    chunk_plain(o, a, b, lambda)
}

#[inline(always)]
fn chunk_plain(o: &mut [f32], a: Option<&[f32]>, b: &[f32], lambda: f32) {
    match a {
        Some(a) => {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = scalar(a, b, lambda);
            }
        }
        None => {
            for (o, &b) in o.iter_mut().zip(b) {
                *o = scalar(*o, b, lambda);
            }
        }
    }
}

/// The checks lerp and lerp_bf16 share: three views of one dtype and one
/// length, `out` either `w0` or apart from it, and apart from `w1`.
pub(super) fn check_lerp(op: &str, dtype: DType, out: Buf, w0: Buf, w1: Buf) -> Result<()> {
    for (name, b) in [("out", out), ("w0", w0), ("w1", w1)] {
        need(op, name, b, dtype, 0)?;
    }
    same_len(op, out.len, &[("w0", w0), ("w1", w1)])?;
    same_or_disjoint(op, ("out", out), ("w0", w0))?;
    disjoint(op, ("out", out), &[("w1", Some(w1))])
}

/// The kernel parameters lerp and lerp_bf16 share.
pub(super) fn lerp_args(at: &Addr, out: Buf, w0: Buf, w1: Buf, lambda: f32) -> Result<[Arg; 5]> {
    Ok([
        Arg::U64(at(out)?),
        Arg::U64(at(w0)?),
        Arg::U64(at(w1)?),
        u32_arg("n", out.len)?,
        Arg::F32(lambda),
    ])
}

impl OpDef for Lerp {
    fn check(&self) -> Result<()> {
        check_lerp("lerp", DType::F32, self.out, self.w0, self.w1)
    }

    /// Read w0 and w1, write out.
    fn cost(&self) -> crate::profile::Cost {
        crate::profile::Cost::elementwise(self.out.len, 3, 2.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let l = self.lambda;
        if self.w0 == self.out {
            on_host(host, self.out, &[Some(self.w1)], |i, o| {
                cpu_in_place(o.f32(), i.f32(0), l)
            })
        } else {
            on_host(host, self.out, &[Some(self.w0), Some(self.w1)], |i, o| {
                cpu(o.f32(), i.f32(0), i.f32(1), l)
            })
        }
    }

    /// Vectorised by 4 inside the kernel when aligned.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let args = lerp_args(at, self.out, self.w0, self.w1, self.lambda)?;
        let dims = Dims::grid_stride(self.out.len.div_ceil(4), 256);
        gpu.launch("lerp", dims, &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for Lerp {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (w0, w1) = (i.f32(5000, 1, 1.0), i.f32(5000, 2, 1.0));
        (
            Lerp {
                out: w0,
                w0,
                w1,
                lambda: 0.3,
            },
            w0,
        )
    }
}

//! lerp_bf16: `out = bf16(w0 + λ·(w1 − w0))` over bf16 weights, in f32 with
//! one fused multiply-add (as [`super::lerp::scalar`]) and one rounding.

use super::lerp::{check_lerp, lerp_args};
use super::{Addr, Host, OpDef, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Dims, Gpu};
use crate::error::Result;
use crate::simd::{Simd, vmath};
use half::bf16;
use rayon::prelude::*;

/// `out = w0 + λ(w1 − w0)` over bf16 views; `out` may be `w0`.
#[derive(Clone, Copy, Debug)]
pub struct LerpBf16 {
    pub out: Buf,
    pub w0: Buf,
    pub w1: Buf,
    pub lambda: f32,
}

/// The reference: [`super::lerp::scalar`] per element, rounded by
/// `bf16::from_f32`. The executor runs [`cpu_at`].
pub fn cpu(out: &mut [bf16], w0: &[bf16], w1: &[bf16], lambda: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    for ((o, a), b) in out.iter_mut().zip(w0).zip(w1) {
        *o = bf16::from_f32(super::lerp::scalar(a.to_f32(), b.to_f32(), lambda));
    }
}

/// cpu implementation: the same values as [`cpu`] (the same fused
/// multiply-add, the same rounding), on every thread, in tiles widened to
/// f32 and run through the vector maths. `w0` None: `out` is w0 too.
pub fn cpu_at(level: Simd, out: &mut [bf16], w0: Option<&[bf16]>, w1: &[bf16], lambda: f32) {
    const CHUNK: usize = 1 << 15;
    const TILE: usize = 512;
    assert!(w1.len() == out.len() && w0.is_none_or(|w| w.len() == out.len()));
    let work = |(c, (o, b)): (usize, (&mut [bf16], &[bf16]))| {
        let (mut x, mut y) = ([0f32; TILE], [0f32; TILE]);
        for (t, (o, b)) in o.chunks_mut(TILE).zip(b.chunks(TILE)).enumerate() {
            let n = o.len();
            let a = w0.map_or(&*o, |w| &w[c * CHUNK + t * TILE..][..n]);
            x[..n].iter_mut().zip(a).for_each(|(d, v)| *d = v.to_f32());
            y[..n].iter_mut().zip(b).for_each(|(d, v)| *d = v.to_f32());
            vmath::lerp_in_place(level, &mut x[..n], &y[..n], lambda);
            vmath::to_bf16(level, &x[..n], o);
        }
    };
    out.par_chunks_mut(CHUNK)
        .zip(w1.par_chunks(CHUNK))
        .enumerate()
        .for_each(work);
}

impl OpDef for LerpBf16 {
    fn check(&self) -> Result<()> {
        check_lerp("lerp_bf16", DType::Bf16, self.out, self.w0, self.w1)
    }

    /// Read two, write one, 2 bytes each.
    fn cost(&self) -> crate::profile::Cost {
        let n = self.out.len as f64;
        crate::profile::Cost {
            flops: 2.0 * n,
            bytes: 6.0 * n,
        }
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let l = self.lambda;
        let level = crate::simd::active();
        if self.w0 == self.out {
            on_host(host, self.out, &[Some(self.w1)], |i, o| {
                cpu_at(level, o.bf16(), None, i.bf16(0), l)
            })
        } else {
            on_host(host, self.out, &[Some(self.w0), Some(self.w1)], |i, o| {
                cpu_at(level, o.bf16(), Some(i.bf16(0)), i.bf16(1), l)
            })
        }
    }

    /// Pairs of values per thread: the views must be 4-byte aligned.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let args = lerp_args(at, self.out, self.w0, self.w1, self.lambda)?;
        for (name, b) in [("out", self.out), ("w0", self.w0), ("w1", self.w1)] {
            if !at(b)?.is_multiple_of(4) {
                return Err(crate::invalid!(
                    "lerp_bf16 needs 4-byte aligned buffers (`{name}` starts at an odd element)"
                ));
            }
        }
        let dims = Dims::grid_stride(self.out.len.div_ceil(2), 256);
        gpu.launch("lerp_bf16", dims, &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for LerpBf16 {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (w0, w1) = (i.bf16(5000, 1, 1.0), i.bf16(5000, 2, 1.0));
        (
            LerpBf16 {
                out: w0,
                w0,
                w1,
                lambda: 0.3,
            },
            w0,
        )
    }
}

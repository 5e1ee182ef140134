//! lerp_bf16: `out = bf16(w0 + λ·(w1 − w0))` over bf16 weights, in f32 with
//! one fused multiply-add (as [`super::lerp::scalar`]) and one rounding.

use super::lerp::{check_lerp, lerp_args};
use super::{Addr, Host, OpDef, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Dims, Gpu};
use crate::error::Result;
use half::bf16;

/// `out = w0 + λ(w1 − w0)` over bf16 views; `out` may be `w0`.
#[derive(Clone, Copy, Debug)]
pub struct LerpBf16 {
    pub out: Buf,
    pub w0: Buf,
    pub w1: Buf,
    pub lambda: f32,
}

pub fn cpu(out: &mut [bf16], w0: &[bf16], w1: &[bf16], lambda: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    for ((o, a), b) in out.iter_mut().zip(w0).zip(w1) {
        *o = bf16::from_f32(super::lerp::scalar(a.to_f32(), b.to_f32(), lambda));
    }
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
        if self.w0 == self.out {
            on_host(host, self.out, &[Some(self.w1)], |i, o| {
                for (o, b) in o.bf16().iter_mut().zip(i.bf16(0)) {
                    *o = bf16::from_f32(super::lerp::scalar(o.to_f32(), b.to_f32(), l));
                }
            })
        } else {
            on_host(host, self.out, &[Some(self.w0), Some(self.w1)], |i, o| {
                cpu(o.bf16(), i.bf16(0), i.bf16(1), l)
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

//! add_scaled_diff: `out += k·(w1 − w0)`, one fused multiply-add per element:
//! adds a scaled task vector to a working weight buffer (multi-task DaWin).

use super::{Addr, Host, OpDef, disjoint, need, on_host, same_len};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `out += k·(w1 − w0)`; `out` overlaps neither input.
#[derive(Clone, Copy, Debug)]
pub struct AddScaledDiff {
    pub out: Buf,
    pub w0: Buf,
    pub w1: Buf,
    pub k: f32,
}

#[inline]
pub fn scalar(out: f32, w0: f32, w1: f32, k: f32) -> f32 {
    k.mul_add(w1 - w0, out)
}

pub fn cpu(out: &mut [f32], w0: &[f32], w1: &[f32], k: f32) {
    assert!(w0.len() == out.len() && w1.len() == out.len());
    out.par_chunks_mut(1 << 15)
        .zip(w0.par_chunks(1 << 15).zip(w1.par_chunks(1 << 15)))
        .for_each(|(o, (a, b))| {
            for i in 0..o.len() {
                o[i] = scalar(o[i], a[i], b[i], k);
            }
        });
}

impl OpDef for AddScaledDiff {
    fn check(&self) -> Result<()> {
        let op = "add_scaled_diff";
        for (name, b) in [("out", self.out), ("w0", self.w0), ("w1", self.w1)] {
            need(op, name, b, DType::F32, 0)?;
        }
        same_len(op, self.out.len, &[("w0", self.w0), ("w1", self.w1)])?;
        disjoint(
            op,
            ("out", self.out),
            &[("w0", Some(self.w0)), ("w1", Some(self.w1))],
        )
    }

    /// Read out, w0 and w1; write out.
    fn cost(&self) -> crate::profile::Cost {
        crate::profile::Cost::elementwise(self.out.len, 4, 3.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.out, &[Some(self.w0), Some(self.w1)], |i, o| {
            cpu(o.f32(), i.f32(0), i.f32(1), self.k)
        })
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let n = self.out.len;
        let args = [
            Arg::U64(at(self.out)?),
            Arg::U64(at(self.w0)?),
            Arg::U64(at(self.w1)?),
            u32_arg("n", n)?,
            Arg::F32(self.k),
        ];
        let dims = Dims::grid_stride(n.div_ceil(4), 256);
        gpu.launch("add_scaled_diff", dims, &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for AddScaledDiff {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (out, w0, w1) = (
            i.f32(1000, 1, 1.0),
            i.f32(1000, 2, 1.0),
            i.f32(1000, 3, 1.0),
        );
        (
            AddScaledDiff {
                out,
                w0,
                w1,
                k: 0.7,
            },
            out,
        )
    }
}

//! cast_bf16: `y = bf16(x)`, round to nearest even (f32 layernorm output
//! into the bf16 gemms).

use super::{Addr, Host, OpDef, need, on_host, same_len};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use half::bf16;

/// `y = bf16(x)` for f32 `x` and bf16 `y` of one length.
#[derive(Clone, Copy, Debug)]
pub struct CastBf16 {
    pub x: Buf,
    pub y: Buf,
}

/// cpu implementation: round to nearest even, vectorised
/// (`crate::simd::vmath::to_bf16`, the rounding of `bf16::from_f32`).
pub fn cpu(x: &[f32], y: &mut [bf16]) {
    crate::simd::vmath::to_bf16(crate::simd::active(), x, y)
}

impl OpDef for CastBf16 {
    fn check(&self) -> Result<()> {
        need("cast_bf16", "x", self.x, DType::F32, 0)?;
        need("cast_bf16", "y", self.y, DType::Bf16, 0)?;
        same_len("cast_bf16", self.x.len, &[("y", self.y)])
    }

    /// Read 4 bytes, write 2 per value.
    fn cost(&self) -> crate::profile::Cost {
        let n = self.x.len as f64;
        crate::profile::Cost {
            flops: n,
            bytes: 6.0 * n,
        }
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.y, &[Some(self.x)], |i, y| {
            cpu(i.f32(0), y.bf16())
        })
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let n = self.x.len;
        let args = [
            Arg::U64(at(self.x)?),
            Arg::U64(at(self.y)?),
            u32_arg("n", n)?,
        ];
        gpu.launch("cast_bf16", Dims::grid_stride(n, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for CastBf16 {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (x, y) = (i.f32(1000, 1, 3.0), i.zeros(DType::Bf16, 1000));
        (CastBf16 { x, y }, y)
    }
}

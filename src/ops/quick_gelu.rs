//! quick_gelu, OpenAI CLIP's activation: `x·σ(1.702·x)`, in place.

use super::{Addr, Host, OpDef, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `x ← x·σ(1.702·x)`.
#[derive(Clone, Copy, Debug)]
pub struct QuickGelu {
    pub x: Buf,
}

/// In f32: relative error a few ulp, well inside every tolerance we state.
pub fn scalar(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

/// cpu implementation: the vectorised form of `crate::simd::vmath` (its exp's
/// relative error is below 3e-7), chunks over threads.
pub fn cpu(x: &mut [f32]) {
    let level = crate::simd::active();
    x.par_chunks_mut(1 << 14)
        .for_each(|c| crate::simd::vmath::quick_gelu(level, c));
}

impl OpDef for QuickGelu {
    fn check(&self) -> Result<()> {
        need("quick_gelu", "x", self.x, DType::F32, 0)
    }

    /// In place over every value (exp counted as ~4 FLOPs).
    fn cost(&self) -> crate::profile::Cost {
        crate::profile::Cost::elementwise(self.x.len, 2, 8.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.x, &[], |_, x| cpu(x.f32()))
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let n = self.x.len;
        let args = [Arg::U64(at(self.x)?), u32_arg("n", n)?];
        gpu.launch("quick_gelu", Dims::grid_stride(n, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for QuickGelu {
    const TOLERANCE: f64 = 1e-6;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let x = i.f32(3000, 1, 4.0);
        (QuickGelu { x }, x)
    }
}

//! gelu, exact erf form: `0.5·x·(1 + erf(x/√2))`, in place.

use super::{Addr, Host, OpDef, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `x ← gelu(x)`.
#[derive(Clone, Copy, Debug)]
pub struct Gelu {
    pub x: Buf,
}

pub fn scalar(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// cpu implementation: the vectorised erf of `crate::simd::vmath` (absolute
/// error ≤ 4e-7), chunks over threads.
pub fn cpu(x: &mut [f32]) {
    let level = crate::simd::active();
    x.par_chunks_mut(1 << 14)
        .for_each(|c| crate::simd::vmath::gelu(level, c));
}

impl OpDef for Gelu {
    fn check(&self) -> Result<()> {
        need("gelu", "x", self.x, DType::F32, 0)
    }

    /// In place over every value (erf counted as ~10 FLOPs).
    fn cost(&self) -> crate::profile::Cost {
        crate::profile::Cost::elementwise(self.x.len, 2, 14.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.x, &[], |_, x| cpu(x.f32()))
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let n = self.x.len;
        let args = [Arg::U64(at(self.x)?), u32_arg("n", n)?];
        gpu.launch("gelu", Dims::grid_stride(n, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for Gelu {
    const TOLERANCE: f64 = 1e-6;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let x = i.f32(3000, 1, 4.0);
        (Gelu { x }, x)
    }
}

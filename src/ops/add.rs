//! add: the residual connection, `y += x` in place.

use super::{Addr, Host, OpDef, need, on_host, same_len, same_or_disjoint};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `y += x`; `x` and `y` have the same length.
#[derive(Clone, Copy, Debug)]
pub struct Add {
    pub x: Buf,
    pub y: Buf,
}

pub fn cpu(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(yc, xc)| yc.iter_mut().zip(xc).for_each(|(a, b)| *a += b));
}

impl OpDef for Add {
    fn check(&self) -> Result<()> {
        need("add", "x", self.x, DType::F32, 0)?;
        need("add", "y", self.y, DType::F32, 0)?;
        same_len("add", self.y.len, &[("x", self.x)])?;
        same_or_disjoint("add", ("y", self.y), ("x", self.x))
    }

    /// Read x and y, write y.
    fn cost(&self) -> crate::profile::Cost {
        crate::profile::Cost::elementwise(self.y.len, 3, 1.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.y, &[Some(self.x)], |i, y| cpu(i.f32(0), y.f32()))
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let n = self.y.len;
        let args = [
            Arg::U64(at(self.x)?),
            Arg::U64(at(self.y)?),
            u32_arg("n", n)?,
        ];
        gpu.launch("add", Dims::grid_stride(n, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for Add {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (x, y) = (i.f32(1000, 1, 1.0), i.f32(1000, 2, 1.0));
        (Add { x, y }, y)
    }
}

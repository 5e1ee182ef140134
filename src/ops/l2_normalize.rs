//! l2_normalize: `y[r] = x[r] / ‖x[r]‖₂`, as the CLIP classifier head needs.
//! A zero row stays zero (PyTorch's `F.normalize` clamps the norm at 1e-12).

use super::{Addr, Host, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `rows` rows of `width` from `x` into `y`.
#[derive(Clone, Copy, Debug)]
pub struct L2Normalize {
    pub x: Buf,
    pub y: Buf,
    pub rows: usize,
    pub width: usize,
}

pub fn cpu(x: &[f32], y: &mut [f32], rows: usize, width: usize) {
    if width == 0 {
        return;
    }
    y[..rows * width]
        .par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .for_each(|(yr, xr)| {
            let n = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let inv = 1.0 / n.max(1e-12);
            for (a, b) in yr.iter_mut().zip(xr) {
                *a = (*b as f64 * inv) as f32;
            }
        });
}

impl OpDef for L2Normalize {
    fn check(&self) -> Result<()> {
        let op = "l2_normalize";
        let n = elems(op, &[self.rows, self.width])?;
        need(op, "x", self.x, DType::F32, n)?;
        need(op, "y", self.y, DType::F32, n)?;
        disjoint(op, ("y", self.y), &[("x", Some(self.x))])
    }

    fn cost(&self) -> crate::profile::Cost {
        crate::profile::Cost::elementwise(self.rows * self.width, 2, 3.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.y, &[Some(self.x)], |i, y| {
            cpu(i.f32(0), y.f32(), self.rows, self.width)
        })
    }

    /// One warp per row, 8 rows per block.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let args = [
            Arg::U64(at(self.x)?),
            Arg::U64(at(self.y)?),
            u32_arg("rows", self.rows)?,
            u32_arg("width", self.width)?,
        ];
        let grid = [self.rows.div_ceil(8) as u32, 1, 1];
        gpu.launch("l2_normalize", Dims::new(grid, [256, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for L2Normalize {
    const TOLERANCE: f64 = 1e-6;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (x, y) = (i.f32(7 * 300, 1, 5.0), i.zeros(DType::F32, 7 * 300));
        (
            L2Normalize {
                x,
                y,
                rows: 7,
                width: 300,
            },
            y,
        )
    }
}

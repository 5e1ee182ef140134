//! patch_embed: im2col of the non-overlapping patches of the patch conv, so
//! the conv itself runs as a (dual) gemm against `conv1.weight[W, c·p·p]`.
//! Row `n·g² + py·g + px`, column `ch·p² + ky·p + kx`: the order of a flattened
//! PyTorch conv weight, and patches in raster order as CLIP's tokens.

use super::{Addr, Host, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchShape {
    pub batch: usize,
    pub channels: usize,
    pub image: usize,
    pub patch: usize,
}

impl PatchShape {
    pub fn grid(&self) -> usize {
        self.image / self.patch
    }
    pub fn rows(&self) -> usize {
        self.batch * self.grid() * self.grid()
    }
    pub fn cols(&self) -> usize {
        self.channels * self.patch * self.patch
    }
}

/// `pixels[n,c,h,w] → out[n·g², c·p·p]`.
#[derive(Clone, Copy, Debug)]
pub struct PatchEmbed {
    pub pixels: Buf,
    pub out: Buf,
    pub shape: PatchShape,
}

pub fn cpu(pixels: &[f32], out: &mut [f32], s: PatchShape) {
    im2col(pixels, out, s, |_, v| v)
}

/// The im2col both patch ops share: `out[r, ch·p² + ky·p + kx] =
/// value(ch, pixels[n, ch, py·p + ky, px·p + kx])`, rows in parallel.
pub(super) fn im2col<T: Copy + Sync>(
    pixels: &[T],
    out: &mut [f32],
    s: PatchShape,
    value: impl Fn(usize, T) -> f32 + Sync,
) {
    let (g, p, hw) = (s.grid(), s.patch, s.image);
    let cols = s.cols();
    if cols == 0 {
        return;
    }
    out[..s.rows() * cols]
        .par_chunks_mut(cols)
        .enumerate()
        .for_each(|(r, row)| {
            let (n, py, px) = (r / (g * g), (r / g) % g, r % g);
            for ch in 0..s.channels {
                for ky in 0..p {
                    let src = ((n * s.channels + ch) * hw + py * p + ky) * hw + px * p;
                    let dst = ch * p * p + ky * p;
                    let pairs = row[dst..dst + p].iter_mut().zip(&pixels[src..src + p]);
                    pairs.for_each(|(d, &v)| *d = value(ch, v));
                }
            }
        });
}

impl OpDef for PatchEmbed {
    fn check(&self) -> Result<()> {
        let (op, s) = ("patch_embed", self.shape);
        if s.patch == 0 || !s.image.is_multiple_of(s.patch) {
            return Err(crate::invalid!(
                "{op}: image side {} is not a multiple of the patch {}",
                s.image,
                s.patch
            ));
        }
        let px = elems(op, &[s.batch, s.channels, s.image, s.image])?;
        need(op, "pixels", self.pixels, DType::F32, px)?;
        need(
            op,
            "out",
            self.out,
            DType::F32,
            elems(op, &[s.rows(), s.cols()])?,
        )?;
        disjoint(op, ("out", self.out), &[("pixels", Some(self.pixels))])
    }

    /// A pure rearrangement: every pixel read and written once.
    fn cost(&self) -> crate::profile::Cost {
        let s = self.shape;
        crate::profile::Cost::elementwise(s.batch * s.channels * s.image * s.image, 2, 0.0)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.out, &[Some(self.pixels)], |i, o| {
            cpu(i.f32(0), o.f32(), self.shape)
        })
    }

    /// One thread per output element.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        let total = s.rows() * s.cols();
        let args = [
            Arg::U64(at(self.pixels)?),
            Arg::U64(at(self.out)?),
            u32_arg("patch rows", s.rows())?,
            u32_arg("channels", s.channels)?,
            u32_arg("image", s.image)?,
            u32_arg("patch", s.patch)?,
            u32_arg("patch elements", total)?,
        ];
        gpu.launch("patch_embed", Dims::grid_stride(total, 256), &args)
    }
}

/// The shape of both patch ops' examples: 2 images of 3×12×12, patch 4.
#[cfg(feature = "op-examples")]
pub(super) const EXAMPLE_SHAPE: PatchShape = PatchShape {
    batch: 2,
    channels: 3,
    image: 12,
    patch: 4,
};

#[cfg(feature = "op-examples")]
impl super::example::OpExample for PatchEmbed {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = EXAMPLE_SHAPE;
        let (pixels, out) = (i.f32(2 * 3 * 144, 1, 1.0), i.zeros(DType::F32, 18 * 48));
        (PatchEmbed { pixels, out, shape }, out)
    }
}

//! patch_embed: im2col of the non-overlapping patches of the patch conv, so
//! the conv itself runs as a (dual) gemm against `conv1.weight[W, c·p·p]`.
//! Row `n·g² + py·g + px`, column `ch·p² + ky·p + kx`: the order of a flattened
//! PyTorch conv weight, and patches in raster order as CLIP's tokens.

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

pub fn cpu(pixels: &[f32], out: &mut [f32], s: PatchShape) {
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
                    row[dst..dst + p].copy_from_slice(&pixels[src..src + p]);
                }
            }
        });
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Launches `ptx/patch_embed.ptx`: one thread per output element.
pub fn launch(gpu: &dyn Gpu, pixels: u64, out: u64, s: PatchShape) -> Result<()> {
    let total = s.rows() * s.cols();
    let args = [
        Arg::U64(pixels),
        Arg::U64(out),
        super::u32_arg("patch rows", s.rows())?,
        super::u32_arg("channels", s.channels)?,
        super::u32_arg("image", s.image)?,
        super::u32_arg("patch", s.patch)?,
        super::u32_arg("patch elements", total)?,
    ];
    gpu.launch("patch_embed", grid_1d(total, 256), [256, 1, 1], 0, &args)
}

/// Work of one call: a pure rearrangement, every pixel read and written once.
pub fn cost(s: PatchShape) -> crate::profile::Cost {
    crate::profile::Cost::elementwise(s.batch * s.channels * s.image * s.image, 2, 0.0)
}

//! patch_embed_u8: [`patch_embed`](super::patch_embed)'s im2col from u8
//! RGB pixels, normalising each as it is placed:
//! `(v / 255 − mean[ch]) / std[ch]` in f32, the formula and rounding of
//! the host's normalisation, so the result is the f32 path's bit for bit.
//! A pixel cache's bytes then cross to the device at a quarter of the f32
//! size, and no f32 copy of the images is ever made.

use super::patch_embed::{PatchShape, im2col};
use super::{Addr, Host, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;

/// `pixels[n,3,h,w]` u8 → `out[n·g², 3·p·p]` normalised f32.
#[derive(Clone, Copy, Debug)]
pub struct PatchEmbedU8 {
    pub pixels: Buf,
    pub out: Buf,
    pub shape: PatchShape,
    /// Per channel, in 0–1 units (CLIP's `image_mean` and `image_std`).
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The f32 value of byte `v` of channel `c`: the one formula both the
/// host's normalisation and the PTX kernel evaluate.
pub fn normalized(v: u8, mean: f32, std: f32) -> f32 {
    (v as f32 / 255.0 - mean) / std
}

pub fn cpu(pixels: &[u8], out: &mut [f32], s: PatchShape, mean: [f32; 3], std: [f32; 3]) {
    let table: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| normalized(v as u8, mean[c], std[c])));
    im2col(pixels, out, s, |ch, v| table[ch][v as usize])
}

impl OpDef for PatchEmbedU8 {
    fn check(&self) -> Result<()> {
        let (op, s) = ("patch_embed_u8", self.shape);
        if s.channels != 3 {
            return Err(crate::invalid!(
                "{op}: u8 pixels are RGB, 3 channels, not {}",
                s.channels
            ));
        }
        if s.patch == 0 || !s.image.is_multiple_of(s.patch) {
            return Err(crate::invalid!(
                "{op}: image side {} is not a multiple of the patch {}",
                s.image,
                s.patch
            ));
        }
        if self.std.iter().any(|&x| !(x.is_finite() && x > 0.0))
            || self.mean.iter().any(|x| !x.is_finite())
        {
            return Err(crate::invalid!(
                "{op}: mean {:?} and std {:?} must be finite, std positive",
                self.mean,
                self.std
            ));
        }
        let px = elems(op, &[s.batch, 3, s.image, s.image])?;
        need(op, "pixels", self.pixels, DType::U8, px)?;
        let cols = elems(op, &[s.rows(), s.cols()])?;
        need(op, "out", self.out, DType::F32, cols)?;
        disjoint(op, ("out", self.out), &[("pixels", Some(self.pixels))])
    }

    /// Every pixel read (1 byte) and written (4) once; three flops each.
    fn cost(&self) -> crate::profile::Cost {
        let s = self.shape;
        let n = (s.batch * 3 * s.image * s.image) as f64;
        crate::profile::Cost {
            flops: 3.0 * n,
            bytes: 5.0 * n,
        }
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.out, &[Some(self.pixels)], |i, o| {
            cpu(i.u8(0), o.f32(), self.shape, self.mean, self.std)
        })
    }

    /// One thread per output element.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        let total = s.rows() * s.cols();
        let [m0, m1, m2] = self.mean;
        let [s0, s1, s2] = self.std;
        let args = [
            Arg::U64(at(self.pixels)?),
            Arg::U64(at(self.out)?),
            u32_arg("image", s.image)?,
            u32_arg("patch", s.patch)?,
            u32_arg("patch elements", total)?,
            Arg::F32(m0),
            Arg::F32(m1),
            Arg::F32(m2),
            Arg::F32(s0),
            Arg::F32(s1),
            Arg::F32(s2),
        ];
        gpu.launch("patch_embed_u8", Dims::grid_stride(total, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for PatchEmbedU8 {
    const TOLERANCE: f64 = 0.0;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = super::patch_embed::EXAMPLE_SHAPE;
        let bytes: Vec<u8> = (0..2 * 3 * 144).map(|j| (j * 37 % 256) as u8).collect();
        let (pixels, out) = (i.u8(&bytes), i.zeros(DType::F32, 18 * 48));
        let (mean, std) = ([0.48, 0.46, 0.41], [0.27, 0.26, 0.28]);
        let op = PatchEmbedU8 {
            pixels,
            out,
            shape,
            mean,
            std,
        };
        (op, out)
    }
}

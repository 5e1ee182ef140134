//! A forward's images on the host: normalised f32 values, or RGB bytes
//! that the forward's first op (`patch_embed_u8`) normalises on the
//! device, so that decoded or cached images cross to it at a quarter of
//! the f32 size and no f32 copy of them is made on the host.

use std::ops::Range;

/// How RGB bytes become the model's input: `(v / 255 − mean) / std` per
/// channel, in f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Images `[n, c, s, s]`, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum HostPixels<'p> {
    /// Already normalised.
    F32(&'p [f32]),
    /// RGB bytes (c = 3), normalised on the device as given.
    U8(&'p [u8], Normalization),
}

impl<'p> HostPixels<'p> {
    /// Values (f32s or bytes).
    pub fn len(&self) -> usize {
        match self {
            HostPixels::F32(p) => p.len(),
            HostPixels::U8(b, _) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `r` (of every image, back to back).
    pub fn slice(&self, r: Range<usize>) -> HostPixels<'p> {
        match *self {
            HostPixels::F32(p) => HostPixels::F32(&p[r]),
            HostPixels::U8(b, norm) => HostPixels::U8(&b[r], norm),
        }
    }
}

impl<'p> From<&'p [f32]> for HostPixels<'p> {
    fn from(p: &'p [f32]) -> Self {
        HostPixels::F32(p)
    }
}

impl<'p> From<&'p Vec<f32>> for HostPixels<'p> {
    fn from(p: &'p Vec<f32>) -> Self {
        HostPixels::F32(p)
    }
}

/// Images `[n, c, s, s]`, owned (a loaded batch's).
#[derive(Clone, Debug)]
pub enum PixelBuf {
    F32(Vec<f32>),
    U8(Vec<u8>, Normalization),
}

impl PixelBuf {
    pub fn view(&self) -> HostPixels<'_> {
        match self {
            PixelBuf::F32(p) => HostPixels::F32(p),
            PixelBuf::U8(b, norm) => HostPixels::U8(b, *norm),
        }
    }

    pub fn len(&self) -> usize {
        self.view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

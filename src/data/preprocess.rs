//! OpenAI CLIP preprocessing, matching PIL + torchvision exactly:
//! resize the shorter side to `size` with PIL's bicubic (a = −0.5, support
//! widened when downscaling, 8-bit fixed-point passes: horizontal, then
//! vertical), center crop, scale to [0, 1], normalise per channel.

use crate::error::{Error, Result};
use std::path::Path;

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
// The published constants, kept digit for digit.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// CLIP's normalisation, for u8 images the forward normalises itself.
pub const CLIP_NORMALIZATION: crate::model::pixels::Normalization =
    crate::model::pixels::Normalization {
        mean: CLIP_MEAN,
        std: CLIP_STD,
    };

pub use super::resample::Rgb8;
use super::resample::{Crop, resize_crop};

/// PIL `Image.resize((w, h), BICUBIC)` on RGB8.
pub fn resize_bicubic(img: &Rgb8, w: usize, h: usize) -> Rgb8 {
    super::resample::resize(img, w, h)
}

/// torchvision `Resize(size)` + `CenterCrop(size)` + `ToTensor` + `Normalize`
/// on an RGB8 image: returns `[3, size, size]` f32.
pub fn clip_preprocess(img: &Rgb8, size: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * size * size];
    normalize(&clip_pixels(img, size), &mut out, size * size);
    out
}

/// torchvision `Resize(size)` + `CenterCrop(size)` on an RGB8 image, as
/// planar u8 `[3, size, size]`: what [`clip_preprocess`] normalises, and
/// what `dawin preprocess --dtype u8` stores. Only the crop is resampled.
pub fn clip_pixels(img: &Rgb8, size: usize) -> Vec<u8> {
    let (w, h) = (img.width, img.height);
    // Shorter side to `size`, the longer scaled and truncated like torchvision.
    let (nw, nh) = if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    };
    // torchvision: int(round((h - size) / 2)), Python's round-half-even.
    let top = ((nh as f64 - size as f64) / 2.0).round_ties_even().max(0.0) as usize;
    let left = ((nw as f64 - size as f64) / 2.0).round_ties_even().max(0.0) as usize;
    // The part of the crop inside the resized image (all of it, unless
    // truncation left the image a pixel short); the rest stays zero.
    let crop = Crop {
        x0: left,
        y0: top,
        w: size.min(nw.saturating_sub(left)),
        h: size.min(nh.saturating_sub(top)),
    };
    let px = resize_crop(img, nw, nh, crop);
    let mut out = vec![0u8; 3 * size * size];
    for y in 0..crop.h {
        for x in 0..crop.w {
            let at = (y * crop.w + x) * 3;
            for c in 0..3 {
                out[(c * size + y) * size + x] = px[at + c];
            }
        }
    }
    out
}

/// Planar u8 images `[3, S, S]` one after another (`plane` = S·S) to
/// CLIP's normalised f32: `(v / 255 − mean_c) / std_c`.
pub fn normalize(px: &[u8], out: &mut [f32], plane: usize) {
    assert!(out.len() >= px.len() && plane > 0);
    // 256 values per channel, computed by the formula once per process.
    static TABLE: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c])
        })
    });
    for (i, (o, p)) in out.chunks_mut(plane).zip(px.chunks(plane)).enumerate() {
        let t = &table[i % 3];
        o.iter_mut().zip(p).for_each(|(o, &v)| *o = t[v as usize]);
    }
}

/// Decodes a JPEG/PNG file to RGB8 (grey and alpha are converted like PIL's
/// `convert("RGB")`).
pub fn decode(path: &Path) -> Result<Rgb8> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::file(path, format!("cannot decode image: {e}")))?;
    // No copy when the image already is RGB8 (most JPEGs).
    let rgb = img.into_rgb8();
    Ok(Rgb8 {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}

/// Decode + CLIP preprocessing of one file.
pub fn load_image(path: &Path, size: usize) -> Result<Vec<f32>> {
    load_image_cropped(path, size, 0)
}

/// [`load_image`] after trimming `border` pixels from every side (PIL's
/// `crop((b, b, w - b, h - b))`, as ObjectNet's evaluation does).
pub fn load_image_cropped(path: &Path, size: usize, border: usize) -> Result<Vec<f32>> {
    let px = load_pixels_cropped(path, size, border)?;
    let mut out = vec![0f32; px.len()];
    normalize(&px, &mut out, size * size);
    Ok(out)
}

/// Decode, border trim, resize and center crop of one file, as planar u8
/// `[3, size, size]` (see [`clip_pixels`]).
pub fn load_pixels_cropped(path: &Path, size: usize, border: usize) -> Result<Vec<u8>> {
    let img = decode(path)?;
    let img = if border > 0 {
        crop_border(&img, border).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "a {}×{} image is too small for a {border}-pixel border crop",
                    img.width, img.height
                ),
            )
        })?
    } else {
        img
    };
    Ok(clip_pixels(&img, size))
}

/// The image without `b` pixels on each side; `None` if nothing is left.
pub fn crop_border(img: &Rgb8, b: usize) -> Option<Rgb8> {
    let (w, h) = (
        img.width.checked_sub(2 * b)?,
        img.height.checked_sub(2 * b)?,
    );
    if w == 0 || h == 0 {
        return None;
    }
    let mut data = Vec::with_capacity(w * h * 3);
    for y in b..b + h {
        let row = (y * img.width + b) * 3;
        data.extend_from_slice(&img.data[row..row + w * 3]);
    }
    Some(Rgb8 {
        width: w,
        height: h,
        data,
    })
}

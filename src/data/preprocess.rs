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

/// PIL's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index and fixed-point weights (PIL's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            let one = (1u64 << PRECISION_BITS) as f64;
            let fixed = w
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= 255i64 << PRECISION_BITS {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// An interleaved RGB8 image.
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// PIL `Image.resize((w, h), BICUBIC)` on RGB8.
pub fn resize_bicubic(img: &Rgb8, w: usize, h: usize) -> Rgb8 {
    let mut cur = Rgb8 {
        width: img.width,
        height: img.height,
        data: img.data.clone(),
    };
    if w != cur.width {
        let cs = coefficients(cur.width, w);
        let mut out = vec![0u8; w * cur.height * 3];
        for y in 0..cur.height {
            let row = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            for (xx, (xmin, k)) in cs.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kw) in k.iter().enumerate() {
                        ss += row[(xmin + i) * 3 + c] as i64 * kw as i64;
                    }
                    out[(y * w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = Rgb8 {
            width: w,
            height: cur.height,
            data: out,
        };
    }
    if h != cur.height {
        let cs = coefficients(cur.height, h);
        let mut out = vec![0u8; cur.width * h * 3];
        for (yy, (ymin, k)) in cs.iter().enumerate() {
            for x in 0..cur.width {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kw) in k.iter().enumerate() {
                        ss += cur.data[((ymin + i) * cur.width + x) * 3 + c] as i64 * kw as i64;
                    }
                    out[(yy * cur.width + x) * 3 + c] = clip8(ss);
                }
            }
        }
        cur = Rgb8 {
            width: cur.width,
            height: h,
            data: out,
        };
    }
    cur
}

/// torchvision `Resize(size)` + `CenterCrop(size)` + `ToTensor` + `Normalize`
/// on an RGB8 image: returns `[3, size, size]` f32.
pub fn clip_preprocess(img: &Rgb8, size: usize) -> Vec<f32> {
    let (w, h) = (img.width, img.height);
    // Shorter side to `size`, the longer scaled and truncated like torchvision.
    let (nw, nh) = if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    };
    let r = resize_bicubic(img, nw, nh);
    // torchvision: int(round((h - size) / 2)), Python's round-half-even.
    let top = ((nh as f64 - size as f64) / 2.0).round_ties_even().max(0.0) as usize;
    let left = ((nw as f64 - size as f64) / 2.0).round_ties_even().max(0.0) as usize;
    let mut out = vec![0f32; 3 * size * size];
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                let (sy, sx) = (top + y, left + x);
                let v = if sy < nh && sx < nw {
                    r.data[(sy * nw + sx) * 3 + c] as f32 / 255.0
                } else {
                    0.0
                };
                out[(c * size + y) * size + x] = (v - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    out
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
    let rgb = img.to_rgb8();
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
    Ok(clip_preprocess(&img, size))
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

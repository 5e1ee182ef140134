//! A procedural image set for the demo: 10 classes of shapes at 32×32,
//! deterministic from a seed, in an in-distribution domain and five shifted
//! ones. One source of truth: `dawin synth` writes it for training
//! (tools/train_demo.py) and `dawin demo` regenerates it for evaluation.

use crate::data::preprocess::{CLIP_MEAN, CLIP_STD};
use crate::rng::SplitMix;

pub const SIZE: usize = 32;
pub const CLASSES: [&str; 10] = [
    "disk", "square", "triangle", "plus", "ring", "hbar", "vbar", "diamond", "cross", "dots",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// Plain dark background, bright shape.
    Clean,
    /// Strong Gaussian pixel noise.
    Noise,
    /// Striped / checkered background texture.
    Texture,
    /// Inverted colours at reduced contrast.
    Colour,
    /// 5×5 box blur.
    Blur,
    /// A grey block hides part of the shape.
    Occlusion,
}

pub const DOMAINS: [Domain; 6] = [
    Domain::Clean,
    Domain::Noise,
    Domain::Texture,
    Domain::Colour,
    Domain::Blur,
    Domain::Occlusion,
];

impl Domain {
    pub fn name(self) -> &'static str {
        match self {
            Domain::Clean => "id",
            Domain::Noise => "noise",
            Domain::Texture => "texture",
            Domain::Colour => "colour",
            Domain::Blur => "blur",
            Domain::Occlusion => "occlusion",
        }
    }
}

fn inside(class: usize, u: f32, v: f32) -> bool {
    let r2 = u * u + v * v;
    match class {
        0 => r2 < 1.0,
        1 => u.abs() < 0.8 && v.abs() < 0.8,
        2 => v > -0.8 && v < 0.8 && u.abs() < (v + 0.8) / 1.6 * 0.95,
        3 => (u.abs() < 0.25 && v.abs() < 0.9) || (v.abs() < 0.25 && u.abs() < 0.9),
        4 => r2 < 1.0 && r2 > 0.36,
        5 => v.abs() < 0.3 && u.abs() < 1.0,
        6 => u.abs() < 0.3 && v.abs() < 1.0,
        7 => u.abs() + v.abs() < 1.0,
        8 => ((u - v).abs() < 0.3 || (u + v).abs() < 0.3) && u.abs() < 0.85 && v.abs() < 0.85,
        _ => (u + 0.5).powi(2) + v * v < 0.16 || (u - 0.5).powi(2) + v * v < 0.16,
    }
}

/// One image as RGB in [0, 1], `[3, SIZE, SIZE]`.
pub fn render(class: usize, domain: Domain, r: &mut SplitMix) -> Vec<f32> {
    let s = SIZE as f32;
    let scale = s * (0.22 + 0.12 * r.uniform());
    let (cx, cy) = (
        s * (0.35 + 0.3 * r.uniform()),
        s * (0.35 + 0.3 * r.uniform()),
    );
    let fg: [f32; 3] = std::array::from_fn(|_| 0.55 + 0.45 * r.uniform());
    let bg: [f32; 3] = std::array::from_fn(|_| 0.25 * r.uniform());
    let tex: [f32; 3] = std::array::from_fn(|_| 0.3 + 0.6 * r.uniform());
    let period = 2 + (r.next_u64() % 3) as usize;
    let checker = r.uniform() < 0.5;
    let mut img = vec![0f32; 3 * SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (u, v) = ((x as f32 + 0.5 - cx) / scale, (y as f32 + 0.5 - cy) / scale);
            let on = inside(class, u, v);
            let back = if domain == Domain::Texture {
                let stripe = if checker {
                    (x / period + y / period).is_multiple_of(2)
                } else {
                    (x / period).is_multiple_of(2)
                };
                if stripe { tex } else { bg }
            } else {
                bg
            };
            for c in 0..3 {
                img[(c * SIZE + y) * SIZE + x] = if on { fg[c] } else { back[c] };
            }
        }
    }
    match domain {
        Domain::Noise => img
            .iter_mut()
            .for_each(|p| *p = (*p + 0.35 * r.normal()).clamp(0.0, 1.0)),
        Domain::Colour => img.iter_mut().for_each(|p| *p = 0.5 + 0.45 * (0.5 - *p)),
        Domain::Blur => img = box_blur(&img, 2),
        Domain::Occlusion => {
            let (w, h) = (10, 7);
            let x0 = (cx as usize + (r.next_u64() % 9) as usize).saturating_sub(w / 2 + 4);
            let y0 = (cy as usize + (r.next_u64() % 9) as usize).saturating_sub(h / 2 + 4);
            for c in 0..3 {
                for y in y0..(y0 + h).min(SIZE) {
                    for x in x0..(x0 + w).min(SIZE) {
                        img[(c * SIZE + y) * SIZE + x] = 0.5;
                    }
                }
            }
        }
        _ => {}
    }
    img
}

fn box_blur(img: &[f32], radius: usize) -> Vec<f32> {
    let mut out = vec![0f32; img.len()];
    let k = radius as isize;
    for c in 0..3 {
        for y in 0..SIZE as isize {
            for x in 0..SIZE as isize {
                let (mut s, mut n) = (0f32, 0f32);
                for dy in -k..=k {
                    for dx in -k..=k {
                        let (yy, xx) = (y + dy, x + dx);
                        if (0..SIZE as isize).contains(&yy) && (0..SIZE as isize).contains(&xx) {
                            s += img[(c * SIZE + yy as usize) * SIZE + xx as usize];
                            n += 1.0;
                        }
                    }
                }
                out[(c * SIZE + y as usize) * SIZE + x as usize] = s / n;
            }
        }
    }
    out
}

/// `per_class` images of each class in `domain`, CLIP-normalised, with
/// labels; the stream is fixed by `seed` and the domain.
pub fn generate(domain: Domain, per_class: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut r = SplitMix(seed ^ (0x5851_F42D_4C95_7F2D_u64.wrapping_mul(domain as u64 + 1)));
    let mut pixels = Vec::with_capacity(per_class * 10 * 3 * SIZE * SIZE);
    let mut labels = Vec::with_capacity(per_class * 10);
    for i in 0..per_class * CLASSES.len() {
        let class = i % CLASSES.len();
        let img = render(class, domain, &mut r);
        for (k, p) in img.iter().enumerate() {
            let c = k / (SIZE * SIZE);
            pixels.push((p - CLIP_MEAN[c]) / CLIP_STD[c]);
        }
        labels.push(class as i64);
    }
    (pixels, labels)
}

/// `dawin synth`: writes `OUT/<domain>.safetensors` for every domain and
/// OUT/preview.png (the first ten images of each domain, one row each);
/// returns the data files written.
pub fn write_domains(
    out: &std::path::Path,
    per_class: usize,
    seed: u64,
) -> crate::Result<Vec<std::path::PathBuf>> {
    use crate::error::Error;
    use crate::tensorfile::{Tensor, write_f32_with_labels};
    if per_class == 0 {
        return Err(crate::invalid!("--per-class must be positive"));
    }
    crate::limits::check_alloc(
        "one domain's images",
        per_class * CLASSES.len(),
        4 * 3 * SIZE * SIZE,
    )?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let cols = 10;
    let (w, h) = (cols * (SIZE + 2), DOMAINS.len() * (SIZE + 2));
    let mut sheet = image::RgbImage::new(w as u32, h as u32);
    let mut written = Vec::new();
    for (row, d) in DOMAINS.iter().enumerate() {
        let (px, labels) = generate(*d, per_class, seed);
        let path = out.join(format!("{}.safetensors", d.name()));
        let t = Tensor {
            shape: vec![labels.len(), 3, SIZE, SIZE],
            data: px,
        };
        write_f32_with_labels(&path, &t, &labels)?;
        for col in 0..cols.min(labels.len()) {
            draw(
                &mut sheet,
                &t.data,
                col,
                (col * (SIZE + 2), row * (SIZE + 2)),
            );
        }
        written.push(path);
    }
    let preview = out.join("preview.png");
    sheet
        .save(&preview)
        .map_err(|e| Error::file(&preview, e.to_string()))?;
    Ok(written)
}

/// Draws image `i` of normalised `pixels[n,3,SIZE,SIZE]` at `(x0, y0)`.
fn draw(sheet: &mut image::RgbImage, pixels: &[f32], i: usize, (x0, y0): (usize, usize)) {
    for y in 0..SIZE {
        for x in 0..SIZE {
            let rgb: [u8; 3] = std::array::from_fn(|c| {
                let v = pixels[((i * 3 + c) * SIZE + y) * SIZE + x] * CLIP_STD[c] + CLIP_MEAN[c];
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            });
            sheet.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(rgb));
        }
    }
}

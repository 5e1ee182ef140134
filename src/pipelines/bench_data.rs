//! `dawin bench --suite data`: the image path on the CPU's threads. JPEGs
//! the size of ImageNet's (500×375 and 375×500, quality 90, textured so
//! they compress like photographs: about 100 KB) are written to a
//! temporary folder, then each repeat decodes all of them in parallel:
//! decode alone, decode + CLIP's resize and center crop (what
//! `dawin preprocess --dtype u8` stores), and the normalisation of those
//! u8 pixels to f32 (what reading the pixel cache costs). Files are read
//! from the page cache (written just before), as a second epoch reads
//! them. `tools/bench_data.py` races `dawin preprocess` against
//! torchvision's DataLoader.

use super::bench::{BenchOptions, Row};
use crate::data::preprocess;
use crate::error::{Error, Result};
use crate::profile::Cost;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The model input side the preprocessing rows resize to.
const SIZE: usize = 224;

/// The data rows (those the filter keeps).
pub fn rows(o: &BenchOptions) -> Result<Vec<Row>> {
    let n = if o.quick { 8 } else { o.batch.clamp(16, 256) };
    // Removed on drop, whatever happens to the rows.
    let dir = tempfile::Builder::new()
        .prefix("dawin-bench-data-")
        .tempdir()
        .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
    let files = write_jpegs(dir.path(), n)?;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let mut rows = Vec::new();
    let wanted = |name: &str| o.filter.as_deref().is_none_or(|f| name.contains(f));
    let name = format!(
        "data decode jpeg 500x375 ({} KB each)",
        bytes / n as u64 / 1024
    );
    if wanted(&name) {
        let cost = Cost {
            flops: 0.0,
            bytes: bytes as f64,
        };
        let row = time(o, name, n, cost, || {
            each(&files, |f| preprocess::decode(f).map(drop))
        })?;
        rows.push(row);
    }
    let name = format!("data preprocess {SIZE} u8 (decode, resize, crop)");
    if wanted(&name) {
        let cost = Cost {
            flops: 0.0,
            bytes: bytes as f64 + (n * 3 * SIZE * SIZE) as f64,
        };
        let load = |f: &Path| preprocess::load_pixels_cropped(f, SIZE, 0).map(drop);
        rows.push(time(o, name, n, cost, || each(&files, load))?);
    }
    let name = format!("data normalise u8 {SIZE} (pixel cache)");
    if wanted(&name) {
        let px = preprocess::load_pixels_cropped(&files[0], SIZE, 0)?;
        let plane = SIZE * SIZE;
        let cost = Cost {
            flops: 0.0,
            bytes: (n * px.len() * 5) as f64,
        };
        let run = || {
            (0..n).into_par_iter().for_each(|_| {
                let mut out = vec![0f32; px.len()];
                preprocess::normalize(&px, &mut out, plane);
                std::hint::black_box(out);
            });
            Ok(())
        };
        rows.push(time(o, name, n, cost, run)?);
    }
    Ok(rows)
}

/// Runs `f` on every file on all threads; the first error stops the row.
fn each(files: &[PathBuf], f: impl Fn(&Path) -> Result<()> + Sync) -> Result<()> {
    files.par_iter().try_for_each(|p| f(p))
}

/// One warm-up, then `o.repeats` timed runs of `f` over `n` images.
fn time(
    o: &BenchOptions,
    name: String,
    n: usize,
    cost: Cost,
    f: impl Fn() -> Result<()>,
) -> Result<Row> {
    f()?;
    let mut ms = Vec::with_capacity(o.repeats);
    for _ in 0..o.repeats.max(1) {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let row = Row::from_times(name, ms, cost, Some(n));
    o.finished(&row);
    Ok(row)
}

/// `n` textured JPEGs, landscape and portrait, in `dir`.
fn write_jpegs(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let (w, h) = if i % 3 == 2 { (375, 500) } else { (500, 375) };
            let img = textured(w, h, i as u64);
            let path = dir.join(format!("img{i:04}.jpg"));
            let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                std::io::BufWriter::new(file),
                90,
            );
            enc.encode_image(&img)
                .map_err(|e| Error::file(&path, format!("cannot encode: {e}")))?;
            Ok(path)
        })
        .collect()
}

/// Smooth colour waves plus noise: compresses like a photograph.
fn textured(w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut rng = crate::rng::SplitMix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let f: Vec<f32> = (0..6).map(|_| 0.005 + 0.045 * rng.uniform()).collect();
    image::RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32, y as f32);
        image::Rgb(std::array::from_fn(|c| {
            let wave = 127.0 + 80.0 * (x * f[2 * c] + y * f[2 * c + 1] + c as f32).sin();
            (wave + 8.0 * rng.normal()).clamp(0.0, 255.0) as u8
        }))
    })
}

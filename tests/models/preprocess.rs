//! CLIP preprocessing against the reference vector in
//! ../shared/data/clip-preprocess (PIL bicubic + center crop + normalise).
//! Skipped with a message when that folder is absent.

use dawin::data::preprocess::{Rgb8, load_image, resize_bicubic};
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/clip-preprocess")
}

/// Minimal .npy reader for a little-endian f32 array.
fn read_npy_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

#[test]
fn matches_the_pil_reference_vector() {
    let dir = shared();
    if !dir.exists() {
        eprintln!("{} not found: not checked", dir.display());
        return;
    }
    let (shape, want) = read_npy_f32(&dir.join("expected_preprocessed_image.npy"));
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let got = load_image(&dir.join("franz-kafka.jpg"), 224).unwrap();
    let mae: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() as f64)
        .sum::<f64>()
        / want.len() as f64;
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("clip preprocessing vs PIL reference: mean abs error {mae:.3e}, max {max:.3e}");
    assert!(mae <= 1e-3, "mean absolute error {mae}");
}

#[test]
fn resize_identity_and_constant_images() {
    let img = Rgb8 {
        width: 5,
        height: 3,
        data: (0..45).map(|v| (v * 5) as u8).collect(),
    };
    let same = resize_bicubic(&img, 5, 3);
    assert_eq!(same.data, img.data);
    let flat = Rgb8 {
        width: 37,
        height: 23,
        data: vec![200; 37 * 23 * 3],
    };
    for (w, h) in [(10, 7), (80, 50), (37, 5)] {
        let r = resize_bicubic(&flat, w, h);
        assert!(
            r.data.iter().all(|&v| v == 200),
            "constant image must stay constant at {w}x{h}"
        );
    }
}

/// The crop-aware path (only the center crop resampled) equals PIL's whole
/// resize followed by torchvision's center crop, bit for bit: down- and
/// upscaling, landscape and portrait, an axis already at size, odd crops.
#[test]
fn crop_aware_resize_is_resize_then_crop() {
    use dawin::data::preprocess::clip_pixels;
    let mut state = 12345u32;
    for (w, h, size) in [
        (500, 375, 224),
        (375, 500, 224),
        (224, 300, 224),
        (31, 17, 24),
        (20, 20, 24),
        (7, 90, 16),
        (301, 299, 64),
        (64, 64, 64),
    ] {
        let data = (0..w * h * 3)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let img = Rgb8 {
            width: w,
            height: h,
            data,
        };
        let (nw, nh) = if w <= h {
            (size, (size as f64 * h as f64 / w as f64) as usize)
        } else {
            ((size as f64 * w as f64 / h as f64) as usize, size)
        };
        let top = ((nh as f64 - size as f64) / 2.0).round_ties_even() as usize;
        let left = ((nw as f64 - size as f64) / 2.0).round_ties_even() as usize;
        let full = resize_bicubic(&img, nw, nh);
        let mut want = vec![0u8; 3 * size * size];
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    want[(c * size + y) * size + x] =
                        full.data[((top + y) * nw + left + x) * 3 + c];
                }
            }
        }
        assert_eq!(clip_pixels(&img, size), want, "{w}x{h} at {size}");
    }
}

/// The horizontal pass's AVX-512 VBMI route (16 outputs per byte permute)
/// and the generic loop give the same bytes: ImageNet-sized downscales,
/// upscales, a downscale too wide for the route's window (which falls
/// back), widths that leave partial groups, extreme values (clipping).
#[test]
#[cfg(target_arch = "x86_64")]
fn horizontal_routes_agree_bit_for_bit() {
    use dawin::data::resample::{allow_vbmi, resize};
    let mut state = 777u32;
    let mut noise = |n: usize, spread: bool| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (state >> 24) as u8;
                // Black and white stripes overshoot: both clip ends.
                if spread {
                    if v < 128 { 0 } else { 255 }
                } else {
                    v
                }
            })
            .collect()
    };
    let vbmi = std::arch::is_x86_feature_detected!("avx512vbmi");
    if !vbmi {
        eprintln!("no AVX-512 VBMI on this CPU: only the generic route ran");
    }
    for (i, (w, h, nw, nh)) in [
        (500, 375, 298, 224),
        (375, 500, 224, 298),
        (33, 20, 101, 7),
        (1000, 700, 320, 224),
        (17, 5, 3, 2),
        (640, 480, 300, 300),
        (227, 40, 224, 40),
    ]
    .into_iter()
    .enumerate()
    {
        let img = Rgb8 {
            width: w,
            height: h,
            data: noise(w * h * 3, i % 2 == 1),
        };
        let before = allow_vbmi(true);
        let fast = resize(&img, nw, nh);
        allow_vbmi(false);
        let generic = resize(&img, nw, nh);
        allow_vbmi(before);
        let first = fast
            .data
            .iter()
            .zip(&generic.data)
            .position(|(a, b)| a != b);
        assert!(
            fast.data == generic.data,
            "{w}x{h} to {nw}x{nh}: the routes differ first at byte {first:?}"
        );
    }
}

/// The host's normalisation of u8 pixels and the device-side one of
/// patch_embed_u8 are one formula: every byte of every channel gives the
/// same f32 bits.
#[test]
fn host_and_device_normalisation_agree_bit_for_bit() {
    use dawin::data::preprocess::{CLIP_MEAN, CLIP_STD, normalize};
    use dawin::ops::patch_embed_u8::normalized;
    let bytes: Vec<u8> = (0..3).flat_map(|_| 0..=255u8).collect();
    let mut host = vec![0f32; bytes.len()];
    normalize(&bytes, &mut host, 256);
    for (i, (&v, h)) in bytes.iter().zip(&host).enumerate() {
        let c = i / 256;
        let d = normalized(v, CLIP_MEAN[c], CLIP_STD[c]);
        assert_eq!(h.to_bits(), d.to_bits(), "channel {c}, byte {v}");
    }
}

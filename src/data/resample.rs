//! PIL's bicubic resampling of 8-bit images, exactly: a = −0.5, support
//! widened when downscaling, weights in 22-bit fixed point, a horizontal
//! pass then a vertical one, each rounded and clipped to u8 (PIL's
//! `ImagingResample` for RGB).
//!
//! Two entry points compute the same values: [`resize`], the whole image
//! (the reference), and [`resize_crop`], only the pixels of a crop box,
//! which is what CLIP's resize-then-center-crop needs: the columns outside
//! the box are never computed and the vertical pass starts at the box.
//! Every output value is a function of its own taps alone, so the two
//! agree bit for bit (a test holds them to it). The horizontal pass runs
//! 16 outputs at a time where the CPU has AVX-512 VBMI (the same integer
//! sums, so the same bytes; `horizontal_routes_agree_bit_for_bit`).

use crate::simd::vmath::per_level;

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

/// The fixed-point taps of one axis (PIL's `precompute_coeffs` +
/// `normalize_coeffs_8bpc`) for outputs `first..first + count`: output
/// `first + i` reads inputs `start[i]..start[i] + len[i]` with weights
/// `k[i * width..][..len[i]]`.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
    width: usize,
}

impl Taps {
    fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let width = support.ceil() as usize * 2 + 1;
        let one = (1u64 << PRECISION_BITS) as f64;
        let mut t = Taps {
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            k: vec![0; count * width],
            width,
        };
        let mut w = Vec::with_capacity(width);
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            w.clear();
            w.extend((xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)));
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            for (d, &v) in t.k[i * width..].iter_mut().zip(&w) {
                // PIL rounds half away from zero.
                *d = if v < 0.0 {
                    (-0.5 + v * one) as i32
                } else {
                    (0.5 + v * one) as i32
                };
            }
            t.start.push(xmin);
            t.len.push(w.len());
        }
        t
    }

    fn weights(&self, i: usize) -> &[i32] {
        &self.k[i * self.width..][..self.len[i]]
    }

    /// The input range all outputs read.
    fn span(&self) -> std::ops::Range<usize> {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = (0..self.start.len())
            .map(|i| self.start[i] + self.len[i])
            .max()
            .unwrap_or(0);
        lo..hi
    }
}

/// A fixed-point sum rounded and clipped to u8. PIL accumulates in 32-bit
/// ints, which hold it: |weights| sum below 2²³, times 255.
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// An interleaved RGB8 image.
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A crop box of a resized image: columns `x0..x0 + w`, rows `y0..y0 + h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub x0: usize,
    pub y0: usize,
    pub w: usize,
    pub h: usize,
}

/// PIL `Image.resize((w, h), BICUBIC)` on RGB8: the reference.
pub fn resize(img: &Rgb8, w: usize, h: usize) -> Rgb8 {
    let whole = Crop { x0: 0, y0: 0, w, h };
    Rgb8 {
        width: w,
        height: h,
        data: resize_crop(img, w, h, whole),
    }
}

/// The pixels of `crop` (inside `w`×`h`) of `img` resized to `w`×`h` as
/// [`resize`] computes them, interleaved RGB, `crop.w * crop.h * 3` bytes.
/// An axis that keeps its size is copied, as PIL skips its pass.
pub fn resize_crop(img: &Rgb8, w: usize, h: usize, crop: Crop) -> Vec<u8> {
    assert!(crop.x0 + crop.w <= w && crop.y0 + crop.h <= h);
    let rows = if h == img.height {
        None
    } else {
        Some(Taps::new(img.height, h, crop.y0, crop.h))
    };
    // The input rows the vertical pass reads (or the crop's, without it).
    let needed = rows.as_ref().map_or(crop.y0..crop.y0 + crop.h, Taps::span);
    let mid = horizontal(img, w, crop, needed.clone());
    match rows {
        None => mid,
        Some(t) => vertical(&mid, crop.w * 3, needed.start, &t),
    }
}

/// Columns `crop.x0..+crop.w` of every row in `rows`, resized to width `w`.
fn horizontal(img: &Rgb8, w: usize, crop: Crop, rows: std::ops::Range<usize>) -> Vec<u8> {
    let stride = img.width * 3;
    let mut out = Vec::with_capacity(rows.len() * crop.w * 3);
    if w == img.width {
        for y in rows {
            out.extend_from_slice(&img.data[y * stride + crop.x0 * 3..][..crop.w * 3]);
        }
        return out;
    }
    let t = Taps::new(img.width, w, crop.x0, crop.w);
    out.resize(rows.len() * crop.w * 3, 0);
    let rows = rows.map(|y| &img.data[y * stride..][..stride]);
    #[cfg(target_arch = "x86_64")]
    if let Some(groups) = vbmi::Groups::plan(&t).filter(|_| vbmi::usable()) {
        // Zero bytes past the row's end: a group's window may reach them.
        let mut padded = vec![0u8; stride + vbmi::WINDOW_BYTES];
        for (row, dst) in rows.zip(out.chunks_exact_mut(crop.w * 3)) {
            padded[..stride].copy_from_slice(row);
            // SAFETY: `usable` checked the CPU; `padded` holds the row and
            // a window's bytes past any group's first pixel.
            unsafe { vbmi::row(&padded, &groups, dst) };
        }
        return out;
    }
    let level = crate::simd::active();
    let has_avx2 = level >= crate::simd::Simd::Avx2;
    // Zero pixels past the row's end: the full-width taps may reach them.
    let mut wide = vec![[0i32; 4]; img.width + t.width];
    for (row, dst) in rows.zip(out.chunks_exact_mut(crop.w * 3)) {
        horizontal_row(level, row, &t, &mut wide, dst, has_avx2);
    }
    out
}

/// The vertical pass over `mid` (rows of `row_len` bytes, the first being
/// input row `first`): one output row per tap set, each a sum of whole
/// rows (a loop the compiler vectorises at the CPU's level).
fn vertical(mid: &[u8], row_len: usize, first: usize, t: &Taps) -> Vec<u8> {
    let mut out = vec![0u8; t.start.len() * row_len];
    let mut acc = vec![0i32; row_len];
    let level = crate::simd::active();
    for (i, dst) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
        let rows = &mid[(t.start[i] - first) * row_len..];
        vertical_row(level, rows, t.weights(i), &mut acc, dst);
    }
    out
}

per_level! {
    /// One row of the horizontal pass. Each pixel is widened to four i32
    /// lanes (R, G, B, unused) first, so a tap is one 4-lane multiply-add
    /// rather than three scalar ones, and two output pixels share a
    /// 256-bit register: both run the full tap width, the taps past an
    /// output's own being zero weights on the zero pixels `wide` ends with.
    fn horizontal_row(row: &[u8], t: &Taps, wide: &mut [[i32; 4]], dst: &mut [u8], has_avx2: bool) {
        for (d, px) in wide.iter_mut().zip(row.chunks_exact(3)) {
            *d = [px[0] as i32, px[1] as i32, px[2] as i32, 0];
        }
        let tw = t.width;
        let pairs = dst.len() / 6;
        for (q, out) in dst.chunks_exact_mut(6).enumerate() {
            let (a, b) = (2 * q, 2 * q + 1);
            let (pa, pb) = (&wide[t.start[a]..][..tw], &wide[t.start[b]..][..tw]);
            let (ka, kb) = (&t.k[a * tw..][..tw], &t.k[b * tw..][..tw]);
            let ss = pair_sums(pa, pb, ka, kb, has_avx2);
            for (o, v) in out.iter_mut().zip([ss[0], ss[1], ss[2], ss[4], ss[5], ss[6]]) {
                *o = clip8(v);
            }
        }
        for (i, out) in dst.chunks_exact_mut(3).enumerate().skip(2 * pairs) {
            let mut ss = [HALF; 4];
            for (px, &k) in wide[t.start[i]..].iter().zip(t.weights(i)) {
                for c in 0..4 {
                    ss[c] += px[c] * k;
                }
            }
            out[0] = clip8(ss[0]);
            out[1] = clip8(ss[1]);
            out[2] = clip8(ss[2]);
        }
    }
}

/// The fixed-point sums of two output pixels: `Σ_j p[j]·k[j]` for `a`
/// in lanes 0–3 and `b` in lanes 4–7 (one 256-bit multiply-add per tap
/// with AVX2).
/// `avx2`: the CPU has AVX2.
#[inline(always)]
fn pair_sums(pa: &[[i32; 4]], pb: &[[i32; 4]], ka: &[i32], kb: &[i32], avx2: bool) -> [i32; 8] {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller says AVX2 is there; the loads read pa[j],
        // pb[j], ka[j], kb[j] for j below the shortest length.
        return unsafe { x86::pair_sums(pa, pb, ka, kb) };
    }
    let _ = avx2;
    let mut ss = [HALF; 8];
    for j in 0..ka.len() {
        for c in 0..4 {
            ss[c] += pa[j][c] * ka[j];
            ss[4 + c] += pb[j][c] * kb[j];
        }
    }
    ss
}

/// Whether the horizontal pass may take the AVX-512 VBMI route (tests
/// turn it off to hold both routes to the same bytes).
static VBMI: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Allows or forbids the VBMI route of the horizontal pass; returns what
/// was set before. For tests that compare the routes.
#[doc(hidden)]
pub fn allow_vbmi(on: bool) -> bool {
    VBMI.swap(on, std::sync::atomic::Ordering::Relaxed)
}

/// The horizontal pass on AVX-512 VBMI: 16 output pixels at once, their
/// 48 values (R, G, B lanes) picked out of the interleaved row by one
/// two-register byte permute per tap, widened and multiplied in i32 as
/// PIL does (the same sums, so the same bytes), then clipped and
/// interleaved back by one more permute. It serves groups whose taps fit
/// in a 42-pixel window (downscales up to about 2.5×, which covers an
/// ImageNet image going to 224); wider ones take the generic loop.
#[cfg(target_arch = "x86_64")]
mod vbmi {
    use super::{HALF, PRECISION_BITS, Taps};
    use std::arch::x86_64::*;

    /// Output pixels per group.
    const LANES: usize = 16;
    /// Bytes one permute reads from the row: two zmm registers.
    pub const WINDOW_BYTES: usize = 128;

    pub fn usable() -> bool {
        super::VBMI.load(std::sync::atomic::Ordering::Relaxed)
            && crate::simd::active() == crate::simd::Simd::Avx512
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi")
    }

    /// A row's outputs in groups of 16: the first pixel each group reads,
    /// the byte each lane (channel c of output i at lane 16c + i) reads at
    /// tap 0, relative to it, and the taps' weights, 16 per tap.
    pub struct Groups {
        first: Vec<usize>,
        index: Vec<[u8; 64]>,
        k: Vec<[i32; LANES]>,
        taps: usize,
        outputs: usize,
    }

    impl Groups {
        /// `None` when a group's taps do not fit in one window.
        pub fn plan(t: &Taps) -> Option<Groups> {
            let (outputs, taps) = (t.start.len(), t.width);
            let mut g = Groups {
                first: vec![],
                index: vec![],
                k: vec![],
                taps,
                outputs,
            };
            for o in (0..outputs).step_by(LANES) {
                let lanes = o..(o + LANES).min(outputs);
                let first = t.start[lanes.clone()].iter().copied().min()?;
                let mut index = [0u8; 64];
                let mut k = vec![[0i32; LANES]; taps];
                for (i, x) in lanes.enumerate() {
                    let from = t.start[x] - first;
                    if 3 * (from + taps) > WINDOW_BYTES {
                        return None;
                    }
                    for c in 0..3 {
                        index[c * LANES + i] = (3 * from + c) as u8;
                    }
                    for (j, &w) in t.k[x * taps..][..taps].iter().enumerate() {
                        k[j][i] = w;
                    }
                }
                g.first.push(first);
                g.index.push(index);
                g.k.extend(k);
            }
            Some(g)
        }
    }

    /// One row of the horizontal pass (`dst`: the outputs' RGB bytes).
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and VBMI; `row` holds the input row and
    /// [`WINDOW_BYTES`] more from any group's first pixel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub unsafe fn row(row: &[u8], g: &Groups, dst: &mut [u8]) {
        assert!(dst.len() == 3 * g.outputs);
        assert!(g.first.iter().all(|&f| 3 * f + WINDOW_BYTES <= row.len()));
        // Output byte 3i + c comes from lane 16c + i.
        let interleave: [u8; 64] = std::array::from_fn(|b| {
            if b < 3 * LANES {
                ((b % 3) * LANES + b / 3) as u8
            } else {
                0
            }
        });
        // SAFETY: the asserts above bound every load; stores are masked to
        // the group's outputs inside `dst`.
        unsafe {
            let interleave = _mm512_loadu_si512(interleave.as_ptr() as *const _);
            let three = _mm512_set1_epi8(3);
            for (q, &first) in g.first.iter().enumerate() {
                let src = row.as_ptr().add(3 * first);
                let lo = _mm512_loadu_si512(src as *const _);
                let hi = _mm512_loadu_si512(src.add(64) as *const _);
                let mut idx = _mm512_loadu_si512(g.index[q].as_ptr() as *const _);
                let mut acc = [_mm512_set1_epi32(HALF); 3];
                for w in &g.k[q * g.taps..][..g.taps] {
                    let px = _mm512_permutex2var_epi8(lo, idx, hi);
                    let w = _mm512_loadu_si512(w.as_ptr() as *const _);
                    let lanes = [
                        _mm512_castsi512_si128(px),
                        _mm512_extracti32x4_epi32::<1>(px),
                        _mm512_extracti32x4_epi32::<2>(px),
                    ];
                    for (a, l) in acc.iter_mut().zip(lanes) {
                        *a = _mm512_add_epi32(*a, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(l), w));
                    }
                    idx = _mm512_add_epi8(idx, three);
                }
                // PIL's clip8: the sum >> 22, clamped to 0..=255.
                let bytes = acc.map(|a| {
                    let v = _mm512_max_epi32(
                        _mm512_srai_epi32::<PRECISION_BITS>(a),
                        _mm512_setzero_si512(),
                    );
                    _mm512_cvtusepi32_epi8(v)
                });
                let z = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(bytes[0]), bytes[1]);
                let z = _mm512_inserti32x4::<2>(z, bytes[2]);
                let out = _mm512_permutexvar_epi8(interleave, z);
                let n = 3 * (g.outputs - q * LANES).min(LANES);
                let mask: __mmask64 = (1u64 << n) - 1;
                _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(48 * q) as *mut _, mask, out);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// See [`super::pair_sums`].
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pair_sums(pa: &[[i32; 4]], pb: &[[i32; 4]], ka: &[i32], kb: &[i32]) -> [i32; 8] {
        let n = ka.len().min(kb.len()).min(pa.len()).min(pb.len());
        // SAFETY: j < n stays inside all four slices.
        unsafe {
            let mut acc = _mm256_set1_epi32(super::HALF);
            for j in 0..n {
                let a = _mm_loadu_si128(pa.as_ptr().add(j) as *const __m128i);
                let b = _mm_loadu_si128(pb.as_ptr().add(j) as *const __m128i);
                let p = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(a), b);
                let k = _mm256_inserti128_si256::<1>(
                    _mm256_set1_epi32(*ka.get_unchecked(j)),
                    _mm_set1_epi32(*kb.get_unchecked(j)),
                );
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(p, k));
            }
            let mut out = [0i32; 8];
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, acc);
            out
        }
    }
}

per_level! {
    /// One output row of the vertical pass: `dst = Σ_j k_j · rows[j]`, the
    /// rows `dst.len()` bytes apart from the first.
    fn vertical_row(rows: &[u8], k: &[i32], acc: &mut [i32], dst: &mut [u8]) {
        let n = dst.len();
        acc.fill(HALF);
        for (j, &kj) in k.iter().enumerate() {
            let src = &rows[j * n..][..n];
            acc.iter_mut().zip(src).for_each(|(a, &v)| *a += v as i32 * kj);
        }
        dst.iter_mut().zip(&acc[..]).for_each(|(d, &v)| *d = clip8(v));
    }
}

//! Vectorisable transcendental functions for the elementwise ops, written
//! with bit tricks instead of libm calls so the compiler can vectorise the
//! loops that use them, each compiled once per SIMD level.
//!
//! `exp`: range reduction `x = n·ln2 + r`, |r| ≤ ln2/2, with ln2 split in
//! two parts, a degree-6 polynomial for e^r, and 2^n put into the exponent
//! bits (on AVX-512, `vscalefps`). Measured max relative error against
//! f64 `exp` over [−87, 88.7]:
//! below 3e-7, about 2 ulp (`tests/models/simd.rs::exp_error`; 2.4e-7 seen); inputs below −87.3 give 0
//! (e^x under f32's normal range, flushed), −inf gives 0, above 88.72 +inf,
//! NaN stays NaN.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding it rounds a float in ±2²² to an integer in its low bits.
const ROUNDER: f32 = 12_582_912.0;

/// e^x for one value (the scalar form of the vector loops).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.5, 88.72);
    let t = xc * LOG2E + ROUNDER;
    let n = t - ROUNDER;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k! to degree 6 (error of the tail < 2e-8 on
    // |r| ≤ ln2/2).
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n as 2^h · 2^(n−h), h = ⌊n/2⌋: n reaches 128 below 88.72, one past
    // the largest normal exponent, so one factor alone would be inf (the
    // clamp used to stop at 88, giving e^88 up to 88.72). Both factors
    // are normal for n in [−126, 128], and multiplying by them is exact.
    let n = t.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    let h = n >> 1;
    let pow2 = |e: i32| f32::from_bits(((e + 127) << 23) as u32);
    let y = p * pow2(h) * pow2(n - h);
    // Below −87.3 e^x is subnormal in f32: flush to 0 (also −inf). NaN
    // fails both comparisons and is passed through.
    if x < -87.3 {
        0.0
    } else if x > 88.72 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7 in exact
/// arithmetic; with f32 rounding and [`exp`], ≤ 4e-7, `tests/models/simd.rs`).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let p = 1.061_405_4_f32;
    let p = p * t - 1.453_152_1;
    let p = p * t + 1.421_413_8;
    let p = p * t - 0.284_496_72;
    let p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// Defines `pub fn $name(level, args…)`: one body, compiled for each SIMD
/// level (`#[target_feature]` wrappers around an always-inlined body), so
/// its loops vectorise for the instruction set the CPU has. A trailing
/// `avx512: path` gives the AVX-512 level hand-written intrinsics instead
/// (an `unsafe fn` of the same arguments).
macro_rules! per_level {
    (@avx512 [] $body:ident ($($arg:ident),*)) => { $body($($arg),*) };
    // SAFETY: the AVX-512 wrapper runs only where the CPU has AVX-512F.
    (@avx512 [$fast:path] $body:ident ($($arg:ident),*)) => { unsafe { $fast($($arg),*) } };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block $(avx512: $fast:path)?) => {
        $(#[$m])*
        $vis fn $name(level: $crate::simd::Simd, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                per_level!(@avx512 [$($fast)?] body ($($arg),*))
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
            match level {
                // SAFETY: a level is only used when the CPU has it.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Simd::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Simd::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

// Other rooms compile their loops per level the same way.
pub(crate) use per_level;

/// Lanes of the partial sums: enough independent chains for any level.
const PARTS: usize = 16;

/// Σ x with 16 partial sums (so the loop vectorises).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; PARTS];
    let chunks = x.chunks_exact(PARTS);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

per_level! {
    /// `x ← e^(scale·x − shift)`, returning Σ of the new values (the
    /// softmax's exponentials). On AVX-512 through FMA and `vscalefps`
    /// (`x86::exp_scaled_sum`): the compiled scalar form is about 45
    /// vector instructions per 16 values, and a zmm instruction issues on
    /// two ports only, which made it a fifth of the CPU attention.
    pub fn exp_scaled_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
        for v in x.iter_mut() {
            *v = exp(*v * scale - shift);
        }
        sum(x)
    }
    avx512: x86::exp_scaled_sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    /// e^x on 16 lanes, as [`super::exp`] (the same reduction and
    /// polynomial, with FMA): `vscalefps` multiplies by 2^n (overflow to
    /// +inf on its own), lanes below −87.3 are flushed to 0, NaN stays NaN
    /// (`min`/`max` return their second operand, x, when it is NaN).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_max_ps(
            _mm512_set1_ps(-88.0),
            _mm512_min_ps(_mm512_set1_ps(89.0), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_scalef_ps(p, n);
        let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.3));
        _mm512_mask_mov_ps(y, tiny, _mm512_setzero_ps())
    }

    /// `x ← f(x)` 16 lanes at a time, the tail masked; `f` also gets the
    /// lanes' mask.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn map16(x: &mut [f32], mut f: impl FnMut(__m512, __mmask16) -> __m512) {
        for chunk in x.chunks_mut(16) {
            let mask: __mmask16 = (1u32 << chunk.len()).wrapping_sub(1) as u16;
            let p = chunk.as_mut_ptr();
            // SAFETY: the mask covers exactly the chunk's elements.
            unsafe { _mm512_mask_storeu_ps(p, mask, f(_mm512_maskz_loadu_ps(mask, p), mask)) };
        }
    }

    /// [`super::exp_scaled_sum`] on 16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_scaled_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
        let (s, sh) = (_mm512_set1_ps(scale), _mm512_set1_ps(shift));
        let mut acc = _mm512_setzero_ps();
        map16(x, |v, mask| {
            let e = exp16(_mm512_fmsub_ps(v, s, sh));
            acc = _mm512_mask_add_ps(acc, mask, acc, e);
            e
        });
        _mm512_reduce_add_ps(acc)
    }

    /// [`super::max`] on 16 lanes: `vmaxps` returns its second operand
    /// when either is NaN, so `max(x, acc)` skips NaN entries without the
    /// compare and blend that `f32::max` compiles to.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn max(x: &[f32]) -> f32 {
        let mut acc = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
        let mut chunks = x.chunks_exact(64);
        for c in &mut chunks {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: 16 floats from 16k inside a chunk of 64.
                *a = _mm512_max_ps(unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * k)) }, *a);
            }
        }
        for c in chunks.remainder().chunks(16) {
            let mask: __mmask16 = (1u32 << c.len()).wrapping_sub(1) as u16;
            // SAFETY: the mask covers exactly the chunk's elements.
            let v = unsafe { _mm512_maskz_loadu_ps(mask, c.as_ptr()) };
            acc[0] = _mm512_mask_max_ps(acc[0], mask, v, acc[0]);
        }
        let m = _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]));
        _mm512_reduce_max_ps(m)
    }

    /// [`super::quick_gelu`] on 16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quick_gelu(x: &mut [f32]) {
        let (k, one) = (_mm512_set1_ps(-1.702), _mm512_set1_ps(1.0));
        map16(x, |v, _| {
            _mm512_div_ps(v, _mm512_add_ps(one, exp16(_mm512_mul_ps(k, v))))
        });
    }
}

per_level! {
    /// max of x (−inf when empty; NaN entries are skipped).
    pub fn max(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; PARTS];
        let chunks = x.chunks_exact(PARTS);
        let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a = a.max(v);
            }
        }
        acc.iter().fold(tail, |m, &v| m.max(v))
    }
    avx512: x86::max
}

per_level! {
    /// quick_gelu in place: `x·σ(1.702x)` = x / (1 + e^(−1.702x)); on
    /// AVX-512 through the same 16-lane exp as the softmax.
    pub fn quick_gelu(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v /= 1.0 + exp(-1.702 * *v);
        }
    }
    avx512: x86::quick_gelu
}

per_level! {
    /// gelu (erf form) in place: `0.5·x·(1 + erf(x/√2))`.
    pub fn gelu(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

per_level! {
    /// Mean (as an f32 pair hi + lo) and 1/√(var + eps) of a row, both
    /// passes accumulated in f64 (the subtraction of the mean before
    /// squaring keeps the variance exact for rows far from zero).
    pub fn row_stats(x: &[f32], eps: f32) -> ([f32; 2], f32) {
        let n = x.len() as f64;
        let mut acc = [0f64; 8];
        let chunks = x.chunks_exact(8);
        let mut tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v as f64;
            }
        }
        let mean = (acc.iter().sum::<f64>() + tail) / n;
        acc = [0f64; 8];
        let chunks = x.chunks_exact(8);
        tail = chunks.remainder().iter().map(|&v| (v as f64 - mean).powi(2)).sum();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                let d = v as f64 - mean;
                *a += d * d;
            }
        }
        let var = (acc.iter().sum::<f64>() + tail) / n;
        let hi = mean as f32;
        let lo = (mean - hi as f64) as f32;
        ([hi, lo], (1.0 / (var + eps as f64).sqrt()) as f32)
    }
}

per_level! {
    /// `y = (x − mean)·inv·γ + β`, the mean subtracted as `(x − hi) − lo`:
    /// `x − hi` is exact when x is near the mean (Sterbenz), so rows with a
    /// large common offset keep f64's accuracy in f32 arithmetic.
    pub fn normalize(x: &[f32], y: &mut [f32], mean: [f32; 2], inv: f32, gamma: &[f32], beta: &[f32]) {
        let [hi, lo] = mean;
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            // Not `mul_add`: a software fma on the portable level.
            *y = ((x - hi) - lo) * inv * g + b;
        }
    }
}

per_level! {
    /// `a[i] ← a[i] + b[i]` (a gemm's bias: the generic loop is not
    /// compiled for AVX-512 and was 3 % of a bf16 forward).
    pub fn add_in_place(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

per_level! {
    /// `a[i] ← a[i] + λ·(b[i] − a[i])` with a fused multiply-add (the
    /// rounding of the PTX kernels' `fma`).
    pub fn lerp_in_place(a: &mut [f32], b: &[f32], lambda: f32) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = lambda.mul_add(y - *x, *x);
        }
    }
}

per_level! {
    /// `y = bf16(x)`, round to nearest even, NaN kept quiet: the rounding
    /// of `half::bf16::from_f32`, without its branch so the loop vectorises.
    pub fn to_bf16(x: &[f32], y: &mut [half::bf16]) {
        for (d, &s) in y.iter_mut().zip(x) {
            *d = half::bf16::from_bits(bf16_bits(s));
        }
    }
}

/// The bits of `s` rounded to bf16 (to nearest even, NaN kept quiet).
#[inline(always)]
fn bf16_bits(s: f32) -> u16 {
    let b = s.to_bits();
    let rounded = (b.wrapping_add(0x7fff + (b >> 16 & 1)) >> 16) as u16;
    let nan = (b >> 16) as u16 | 0x40;
    if s.is_nan() { nan } else { rounded }
}

/// `s` split into bf16 `hi` = bf16(s) and `lo` = bf16(s − hi): hi + lo
/// is within 2⁻¹⁷ of s (relative) where s is a normal f32.
#[inline(always)]
fn bf16_split(s: f32) -> (u32, u32) {
    let hi = bf16_bits(s);
    let rest = s - f32::from_bits((hi as u32) << 16);
    (hi as u32, bf16_bits(rest) as u32)
}

per_level! {
    /// Each `x[j]` split as `bf16_split` into one u32, hi in the low
    /// half and lo in the high one (a pair AMX multiplies by a value
    /// paired with itself: hi·v + lo·v), 16 at a time: values 16q.. at
    /// `q·stride` of `out` (a row of an AMX tile every 16 pairs).
    pub fn split_bf16_hi_lo(x: &[f32], out: &mut [u32], stride: usize) {
        for (q, chunk) in x.chunks(16).enumerate() {
            for (o, &v) in out[q * stride..].iter_mut().zip(chunk) {
                let (hi, lo) = bf16_split(v);
                *o = hi | lo << 16;
            }
        }
    }
}

per_level! {
    /// `y = f32(x)`: exact (a bf16 is the top half of an f32), written as
    /// a shift so the loop vectorises. NaNs keep their payload; unlike
    /// `half`, a signalling one is not quietened.
    pub fn from_bf16(x: &[half::bf16], y: &mut [f32]) {
        for (d, s) in y.iter_mut().zip(x) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
}

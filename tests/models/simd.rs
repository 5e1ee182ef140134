//! The CPU executor's SIMD kernels at every level this machine has
//! (portable, AVX2+FMA, AVX-512), against the f64 oracles, on shapes
//! that cross the packing blocks (k > 256, n > 512, m > 96) and the
//! threading threshold. `tests/numerics/ops.rs` covers the ops through the executor
//! at the default level; this file makes sure no level goes untested.

use crate::common::{assert_close, data, oracle as r};
use dawin::ops::MultiRef;
use dawin::ops::attention::AttentionShape;
use dawin::ops::gemm::{self, GemmShape};
use dawin::ops::gemm_dual::{self, DualGemmRef};
use dawin::ops::gemm_multi;
use dawin::simd::{self, vmath};
use proptest::prelude::*;

proptest! {
    #![proptest_config(crate::common::proptest_config(12))]

    /// gemm at each level: tolerance 1e-5 of scale (k up to 600).
    #[test]
    fn gemm_every_level(m in 1usize..200, n in 1usize..600, k in 1usize..600, bias in any::<bool>(), seed in any::<u64>()) {
        let a = data(seed, m * k, 1.0);
        let b = data(seed ^ 1, n * k, 0.5);
        let bi = data(seed ^ 2, n, 3.0);
        let want = r::to_f32(&r::gemm(&a, &b, bias.then_some(&bi[..]), m, n, k));
        for level in simd::available() {
            let mut c = vec![f32::NAN; m * n];
            gemm::cpu_at(level, &a, &b, bias.then_some(&bi[..]), &mut c, GemmShape { m, n, k });
            assert_close(&format!("gemm at {}", level.name()), &c, &want, 1e-5);
        }
    }

    /// gemm_dual at each level against per-row lerped weights; 1e-5.
    #[test]
    fn gemm_dual_every_level(samples in 1usize..5, rows_per in 1usize..60, n in 1usize..300, k in 1usize..400, seed in any::<u64>()) {
        let m = samples * rows_per;
        let a = data(seed, m * k, 1.0);
        let (b0, b1) = (data(seed ^ 1, n * k, 0.5), data(seed ^ 2, n * k, 0.5));
        let (c0, c1) = (data(seed ^ 3, n, 1.0), data(seed ^ 4, n, 1.0));
        let lambda: Vec<f32> = data(seed ^ 5, samples, 1.0).iter().map(|v| v.abs().fract()).collect();
        let want = r::dual_gemm(&a, (&b0, &b1), (&c0, &c1), &lambda, rows_per, n, k);
        for level in simd::available() {
            let dual = DualGemmRef { b1: &b1, bias1: Some(&c1), lambda: &lambda, rows_per_lambda: rows_per };
            let mut c = vec![f32::NAN; m * n];
            gemm_dual::cpu_at(level, &a, &b0, Some(&c0), &dual, &mut c, GemmShape { m, n, k });
            assert_close(&format!("gemm_dual at {}", level.name()), &c, &want, 1e-5);
        }
    }

    /// gemm_multi at each level, both of its routes (rows per sample below
    /// 8: all products mixed per row; from 8: per-sample merged weights),
    /// against the f64 gemm of each row's merged weights; 1e-5.
    #[test]
    fn gemm_multi_every_level(samples in 1usize..4, rows_per in 1usize..60, n in 1usize..200, k in 1usize..300, sets in 1usize..4, seed in any::<u64>()) {
        let m = samples * rows_per;
        let a = data(seed, m * k, 1.0);
        let stride = n * k + 3;
        let w = data(seed ^ 1, sets * stride + n * k, 0.5);
        let wb = data(seed ^ 2, sets * stride + n, 1.0);
        let coef: Vec<f32> = data(seed ^ 3, samples * sets, 1.0).iter().map(|v| v.abs().fract() * 2.0 - 0.5).collect();
        let merged = |stack: &[f32], len: usize, kr: &[f32]| -> Vec<f32> {
            (0..len).map(|j| {
                let b = stack[j] as f64;
                (b + kr.iter().enumerate().map(|(t, &kt)| kt as f64 * (stack[(t + 1) * stride + j] as f64 - b)).sum::<f64>()) as f32
            }).collect()
        };
        let mut want = Vec::new();
        for row in 0..m {
            let kr = &coef[row / rows_per * sets..][..sets];
            want.extend(r::gemm(&a[row * k..(row + 1) * k], &merged(&w, n * k, kr), Some(&merged(&wb, n, kr)), 1, n, k));
        }
        let want = r::to_f32(&want);
        let mix = MultiRef { coef: &coef, sets, stride, rows_per_sample: rows_per };
        let stacked = gemm_multi::StackedRef { b: &w, bias: Some(&wb), mix };
        for level in simd::available() {
            let mut c = vec![f32::NAN; m * n];
            gemm_multi::cpu_at(level, &a, &stacked, &mut c, GemmShape { m, n, k });
            assert_close(&format!("gemm_multi at {} ({rows_per} rows per sample)", level.name()), &c, &want, 1e-5);
        }
    }
}

proptest! {
    #![proptest_config(crate::common::proptest_config(12))]

    /// The flash-style attention at each level, full and causal, token
    /// counts across the query blocks (48 rows) with every key in one
    /// block; 1e-5.
    #[test]
    fn attention_every_level(batch in 1usize..3, tokens in 1usize..150, heads in 1usize..3, hd in prop::sample::select(vec![8usize, 13, 64, 80]), causal in any::<bool>(), seed in any::<u64>()) {
        check_attention(AttentionShape { batch, tokens, heads, head_dim: hd, causal }, seed);
    }
}

/// Past 512 tokens the keys come in blocks of 64, with the online
/// softmax rescaling between them: a last block of 1 key, of 18, causal
/// and not; 1e-5.
#[test]
fn attention_past_one_key_block() {
    for (tokens, hd, causal) in [(513, 64, false), (530, 13, true), (577, 64, true)] {
        let s = AttentionShape {
            batch: 1,
            tokens,
            heads: 2,
            head_dim: hd,
            causal,
        };
        check_attention(s, tokens as u64);
    }
}

/// The CLIP towers' token counts (ViT-B/32 50, text 77, B/16 197, L/14
/// 257): key counts whose last panel of 32 has few live keys (197, 257:
/// the half-width tile) or many (50, 77), in query blocks with a short
/// last block; 1e-5.
#[test]
fn attention_at_vit_token_counts() {
    for tokens in [50, 77, 197, 257] {
        for causal in [false, true] {
            let s = AttentionShape {
                batch: 2,
                tokens,
                heads: 2,
                head_dim: 64,
                causal,
            };
            check_attention(s, tokens as u64);
        }
    }
}

/// simd attention at every level against the f64 reference, 1e-5.
fn check_attention(s: AttentionShape, seed: u64) {
    let AttentionShape {
        batch,
        tokens,
        heads,
        head_dim: hd,
        causal,
    } = s;
    let w = heads * hd;
    let qkv = data(seed, batch * tokens * 3 * w, 2.0);
    let want = r::to_f32(&r::attention_fused(
        &qkv,
        (batch, tokens, heads, hd),
        causal,
    ));
    for level in simd::available() {
        let mut out = vec![f32::NAN; batch * tokens * w];
        simd::attention::attention(level, &qkv, &mut out, s);
        assert_close(&format!("attention at {}", level.name()), &out, &want, 1e-5);
    }
}

/// vmath's exp: relative error below 3e-7 on [−87, 88] at every level,
/// and the stated edges (flush below −87.3, +inf above 88.72, NaN kept).
#[test]
fn exp_error() {
    let xs: Vec<f32> = (0..200_001)
        .map(|i| -87.0 + 175.7 * i as f32 / 200_000.0)
        .collect();
    for level in simd::available() {
        let mut y = xs.clone();
        vmath::exp_scaled_sum(level, &mut y, 1.0, 0.0);
        let worst = xs
            .iter()
            .zip(&y)
            .map(|(&x, &v)| {
                let e = (x as f64).exp();
                ((v as f64 - e) / e).abs()
            })
            .fold(0f64, f64::max);
        assert!(
            worst < 3e-7,
            "exp at {}: relative error {worst:e}",
            level.name()
        );
        let mut edges = [-90.0, f32::NEG_INFINITY, 89.0, f32::INFINITY, f32::NAN, 0.0];
        vmath::exp_scaled_sum(level, &mut edges, 1.0, 0.0);
        let ok = edges[..4] == [0.0, 0.0, f32::INFINITY, f32::INFINITY]
            && edges[4].is_nan()
            && edges[5] == 1.0;
        assert!(ok, "exp edges at {}: {edges:?}", level.name());
    }
}

/// quick_gelu at every level, on lengths that leave vector tails and
/// inputs whose e^(−1.702x) overflows (x below −52), against the f64
/// form: relative error within 1e-6 plus |1.702x|·2⁻²³ (the f32 product
/// 1.702x is rounded, and e^ turns that rounding into a relative error
/// of its size), plus 1e-35 absolute (below x ≈ −52.1 the exponential
/// overflows to inf and the result is 0, where the true value is under
/// 2e-37).
#[test]
fn quick_gelu_error() {
    let xs: Vec<f32> = (0..40_003)
        .map(|i| -60.0 + 75.0 * i as f32 / 40_000.0)
        .collect();
    for level in simd::available() {
        let mut y = xs.clone();
        vmath::quick_gelu(level, &mut y);
        for (&x, &v) in xs.iter().zip(&y) {
            let x64 = x as f64;
            let want = x64 / (1.0 + (-1.702 * x64).exp());
            let err = (v as f64 - want).abs();
            assert!(
                err <= (1e-6 + (1.702 * x64).abs() * 2f64.powi(-23)) * want.abs() + 1e-35,
                "quick_gelu({x}) at {}: {v} against {want}",
                level.name()
            );
        }
    }
}

/// vmath's gelu (through erf): absolute error of erf below 4e-7, so gelu
/// is within 2e-7·|x| of the f64 form, at every level.
#[test]
fn gelu_error() {
    let xs: Vec<f32> = (0..100_001)
        .map(|i| -12.0 + 24.0 * i as f32 / 100_000.0)
        .collect();
    for level in simd::available() {
        let mut y = xs.clone();
        vmath::gelu(level, &mut y);
        for (&x, &v) in xs.iter().zip(&y) {
            let want = r::erf_gelu(x);
            let bound = 2e-7 * (x.abs() as f64).max(1.0) + 1e-7 * want.abs();
            assert!(
                (v as f64 - want).abs() <= bound,
                "gelu({x}) at {}: {v} vs {want}",
                level.name()
            );
        }
    }
}

/// `max` at every level: exact against a plain fold for lengths around
/// the vector chunks (0..200), the max at every position, NaN entries
/// skipped, all −inf and empty giving −inf.
#[test]
fn max_every_level() {
    for level in simd::available() {
        for len in 0..200usize {
            let x = data(len as u64, len, 10.0);
            let want = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(vmath::max(level, &x), want, "{} len {len}", level.name());
            for at in [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&i| i < len)
            {
                let mut y = x.clone();
                y[at] = 1e30;
                assert_eq!(
                    vmath::max(level, &y),
                    1e30,
                    "{} len {len} at {at}",
                    level.name()
                );
                y[at] = f32::NAN;
                let want = y.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                assert_eq!(
                    vmath::max(level, &y),
                    want,
                    "{} NaN at {at} of {len}",
                    level.name()
                );
            }
            let lows = vec![f32::NEG_INFINITY; len];
            assert_eq!(
                vmath::max(level, &lows),
                f32::NEG_INFINITY,
                "{}",
                level.name()
            );
        }
    }
}

/// The levels this machine reports include the portable one, and the
/// active level is one of them.
#[test]
fn levels_are_consistent() {
    let have = simd::available();
    assert_eq!(have[0], simd::Simd::Portable);
    assert!(have.contains(&simd::active()));
}

/// Packed panels start on a 64-byte boundary whatever their length (AMX
/// tile rows must not straddle cache lines), are zero when asked, and
/// otherwise keep what was there whatever the length (every user that
/// does not ask writes what it reads; fresh memory is zero).
#[test]
fn panels_are_aligned_and_zeroed_when_they_must_be() {
    use dawin::simd::gemm::Panels;
    let mut p: Panels<u32> = Panels::default();
    assert!(p.prepare(64, false).iter().all(|&v| v == 0), "fresh memory");
    for len in [1usize, 17, 1000, 1000, 33, 4096] {
        let s = p.prepare(len, false);
        assert_eq!(s.as_ptr() as usize % 64, 0, "length {len}");
        assert_eq!(s.len(), len);
        s.fill(9);
    }
    // Not asked to zero: the last contents are kept, at any length...
    assert!(p.prepare(100, false).iter().all(|&v| v == 9));
    assert!(p.prepare(4096, false).iter().all(|&v| v == 9));
    // ...and zeroed when asked.
    assert!(p.prepare(4096, true).iter().all(|&v| v == 0));
    let mut f: Panels<f32> = Panels::default();
    assert_eq!(f.prepare(12 * 256, true).as_ptr() as usize % 64, 0);
}

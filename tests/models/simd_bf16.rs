//! The CPU's bf16 routes (widened to f32, AVX512-BF16 `vdpbf16ps`, AMX
//! tiles), each one this machine has, against f64 oracles of the widened
//! operands, on shapes that cross the packing blocks, odd depths (which
//! widen) and depths that are and are not multiples of AMX's 32.
//! `tests/numerics/ops_bf16.rs` covers the ops through the executors at
//! the default route; this file makes sure no route goes untested.

use crate::common::{assert_close, data, oracle as r};
use dawin::buf::SliceMut;
use dawin::ops::attention::AttentionShape;
use dawin::ops::gemm::GemmShape;
use dawin::ops::gemm_bf16::{self, Activation, Epilogue};
use dawin::ops::gemm_dual::DualGemmRef;
use dawin::ops::gemm_dual_bf16;
use dawin::simd::{self, Bf16, vmath};
use half::bf16;
use proptest::prelude::*;

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

const F32_OUT: Epilogue = Epilogue {
    activation: Activation::None,
    f32_out: true,
    accumulate: false,
};

/// Depths: any (odd ones run widened), and multiples of 32 up to 1280,
/// which AMX takes, crossing its 1024-deep slice.
fn depth() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..400, (1usize..41).prop_map(|x| 32 * x)]
}

proptest! {
    #![proptest_config(crate::common::proptest_config(12))]

    /// gemm_bf16 on every route, f32 out: f32 accumulation of exact bf16
    /// products, so 1e-5 of scale as the f32 gemm.
    #[test]
    fn gemm_bf16_every_route(m in 1usize..160, n in 1usize..300, k in depth(), bias in any::<bool>(), seed in any::<u64>()) {
        let a = to_bf16(&data(seed, m * k, 1.0));
        let b = to_bf16(&data(seed ^ 1, n * k, 0.5));
        let bi = data(seed ^ 2, n, 3.0);
        let want = r::to_f32(&r::gemm(&widen(&a), &widen(&b), bias.then_some(&bi[..]), m, n, k));
        for route in simd::available_bf16() {
            let mut c = vec![f32::NAN; m * n];
            let s = GemmShape { m, n, k };
            gemm_bf16::cpu_at(route, &a, &b, bias.then_some(&bi[..]), SliceMut::F32(&mut c), s, F32_OUT);
            assert_close(&format!("gemm_bf16 {s:?} on {}", route.name()), &c, &want, 1e-5);
        }
    }

    /// gemm_dual_bf16 on every route against per-row lerped weights; 1e-5.
    #[test]
    fn gemm_dual_bf16_every_route(samples in 1usize..4, rows_per in 1usize..50, n in 1usize..200, k in depth(), seed in any::<u64>()) {
        let m = samples * rows_per;
        let a = to_bf16(&data(seed, m * k, 1.0));
        let (b0, b1) = (to_bf16(&data(seed ^ 1, n * k, 0.5)), to_bf16(&data(seed ^ 2, n * k, 0.5)));
        let (c0, c1) = (data(seed ^ 3, n, 1.0), data(seed ^ 4, n, 1.0));
        let lambda: Vec<f32> = data(seed ^ 5, samples, 1.0).iter().map(|v| v.abs().fract()).collect();
        let want = r::dual_gemm(&widen(&a), (&widen(&b0), &widen(&b1)), (&c0, &c1), &lambda, rows_per, n, k);
        for route in simd::available_bf16() {
            let dual = DualGemmRef { b1: &b1[..], bias1: Some(&c1), lambda: &lambda, rows_per_lambda: rows_per };
            let mut c = vec![f32::NAN; m * n];
            let s = GemmShape { m, n, k };
            gemm_dual_bf16::cpu_at(route, &a, (&b0, Some(&c0)), &dual, SliceMut::F32(&mut c), s, F32_OUT);
            assert_close(&format!("gemm_dual_bf16 {s:?} on {}", route.name()), &c, &want, 1e-5);
        }
    }

    /// The flash attention reading bf16 qkv and writing bf16, at each SIMD
    /// level: within 2⁻⁸ of each value (the output's rounding, 2⁻⁹, and
    /// the f32 arithmetic) plus 1e-5 of the scale, of the f64 attention of
    /// the widened inputs.
    #[test]
    fn attention_bf16_every_level(batch in 1usize..3, tokens in 1usize..120, heads in 1usize..3, hd in prop::sample::select(vec![8usize, 13, 64]), causal in any::<bool>(), seed in any::<u64>()) {
        let w = heads * hd;
        let qkv = to_bf16(&data(seed, batch * tokens * 3 * w, 2.0));
        let wide = widen(&qkv);
        let want = r::attention_fused(&wide, (batch, tokens, heads, hd), causal);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let s = AttentionShape { batch, tokens, heads, head_dim: hd, causal };
        for level in simd::available() {
            let mut out = vec![bf16::NAN; batch * tokens * w];
            simd::attention::attention(level, &qkv, &mut out, s);
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                let tol = 2f64.powi(-8) * w.abs() + 1e-5 * scale;
                let g = g.to_f32() as f64;
                prop_assert!((g - w).abs() <= tol, "attention bf16 {s:?} at {}: [{i}] got {g} want {w}", level.name());
            }
        }
    }

    /// The same attention with Q·Kᵀ on every bf16 route this CPU has
    /// (AMX tiles at head dims that are multiples of 32, the widened f32
    /// kernels elsewhere), at every level; the same tolerance.
    #[test]
    fn attention_bf16_every_route(batch in 1usize..3, tokens in 1usize..120, heads in 1usize..3, hd in prop::sample::select(vec![8usize, 13, 32, 64]), causal in any::<bool>(), seed in any::<u64>()) {
        let w = heads * hd;
        let qkv = to_bf16(&data(seed, batch * tokens * 3 * w, 2.0));
        let want = r::attention_fused(&widen(&qkv), (batch, tokens, heads, hd), causal);
        let s = AttentionShape { batch, tokens, heads, head_dim: hd, causal };
        for level in simd::available() {
            for route in simd::available_bf16() {
                let mut out = vec![bf16::NAN; batch * tokens * w];
                simd::attention::attention_on(level, route, &qkv, &mut out, s);
                check_attention_bf16(&out, &want, &format!("{s:?} at {} on {}", level.name(), route.name()))?;
            }
        }
    }
}

/// Within 2⁻⁸ of each value plus 1e-5 of the scale (as
/// `attention_bf16_every_level`).
fn check_attention_bf16(out: &[bf16], want: &[f64], what: &str) -> Result<(), TestCaseError> {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in out.iter().zip(want).enumerate() {
        let tol = 2f64.powi(-8) * w.abs() + 1e-5 * scale;
        let g = g.to_f32() as f64;
        prop_assert!(
            (g - w).abs() <= tol,
            "attention bf16 {what}: [{i}] got {g} want {w}"
        );
    }
    Ok(())
}

/// Sequences longer than the attention's whole-row limit (512) run in key
/// blocks with the online softmax's rescaling: every route and level, at
/// ViT's head dim, causal and not.
#[test]
fn attention_bf16_key_blocks_every_route() {
    let (batch, tokens, heads, hd) = (1, 530, 1, 64);
    let qkv = to_bf16(&data(7, batch * tokens * 3 * heads * hd, 2.0));
    for causal in [false, true] {
        let want = r::attention_fused(&widen(&qkv), (batch, tokens, heads, hd), causal);
        let s = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim: hd,
            causal,
        };
        for level in simd::available() {
            for route in simd::available_bf16() {
                let mut out = vec![bf16::NAN; batch * tokens * heads * hd];
                simd::attention::attention_on(level, route, &qkv, &mut out, s);
                let what = format!("{s:?} at {} on {}", level.name(), route.name());
                check_attention_bf16(&out, &want, &what).unwrap();
                // A qkv that does not start on 4 bytes cannot be read as
                // pairs: it runs widened, with the same result.
                let mut shifted = vec![bf16::ZERO];
                shifted.extend_from_slice(&qkv);
                simd::attention::attention_on(level, route, &shifted[1..], &mut out, s);
                check_attention_bf16(&out, &want, &format!("{what}, unaligned")).unwrap();
            }
        }
    }
}

/// vmath's split_bf16_hi_lo at every level: hi = bf16(x), lo = bf16(x −
/// hi) as `bf16::from_f32` rounds, hi in the low half of each u32, 16
/// values per `stride`; hi + lo within 2⁻¹⁶ of x.
#[test]
fn split_bf16_hi_lo_every_level() {
    let x: Vec<f32> = data(11, 90, 1.0)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 2f32.powi(i as i32 % 40 - 20))
        .collect();
    let stride = 24;
    for level in simd::available() {
        let mut out = vec![0u32; 6 * stride];
        vmath::split_bf16_hi_lo(level, &x, &mut out, stride);
        for (j, &v) in x.iter().enumerate() {
            let got = out[j / 16 * stride + j % 16];
            let h = bf16::from_f32(v);
            let l = bf16::from_f32(v - h.to_f32());
            assert_eq!(got as u16, h.to_bits(), "hi of {v} at {}", level.name());
            assert_eq!(
                (got >> 16) as u16,
                l.to_bits(),
                "lo of {v} at {}",
                level.name()
            );
            let sum = h.to_f32() as f64 + l.to_f32() as f64;
            assert!((sum - v as f64).abs() <= 2f64.powi(-16) * (v as f64).abs());
        }
    }
}

/// vmath's to_bf16 rounds exactly as `bf16::from_f32` at every level:
/// random bit patterns (every exponent, NaNs and infinities included) and
/// the ties and edges.
#[test]
fn to_bf16_is_half_rounding() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut xs: Vec<f32> = (0..200_000)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f32::from_bits((state >> 32) as u32)
        })
        .collect();
    xs.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(0x3f80_8000), // a tie, rounds to even (down)
        f32::from_bits(0x3f81_8000), // a tie, rounds to even (up)
        f32::from_bits(0x7fff_ffff), // NaN with every payload bit
    ]);
    for level in simd::available() {
        let mut got = vec![bf16::ZERO; xs.len()];
        vmath::to_bf16(level, &xs, &mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = bf16::from_f32(*x);
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "to_bf16({x:e} = {:#x}) at {}",
                x.to_bits(),
                level.name()
            );
        }
    }
}

/// The bf16 routes this machine reports start with widening, and the
/// active route is one of them.
#[test]
fn bf16_routes_are_consistent() {
    let have = simd::available_bf16();
    assert_eq!(have[0], Bf16::Widen);
    assert!(have.contains(&simd::active_bf16()));
    eprintln!(
        "bf16 routes here: {:?}",
        have.iter().map(|r| r.name()).collect::<Vec<_>>()
    );
}

/// lerp_bf16's threaded, vectorised path gives exactly the reference's
/// values at every level, into a separate output and in place, on a length
/// that crosses its chunks and tiles unevenly.
#[test]
fn lerp_bf16_every_level_is_the_reference() {
    use dawin::ops::lerp_bf16;
    let n = (1 << 16) + 777;
    let w0 = to_bf16(&data(7, n, 2.0));
    let w1 = to_bf16(&data(8, n, 2.0));
    for lambda in [0.0, 0.3, 1.0, -0.25] {
        let mut want = vec![bf16::ZERO; n];
        lerp_bf16::cpu(&mut want, &w0, &w1, lambda);
        for level in simd::available() {
            let mut out = vec![bf16::NAN; n];
            lerp_bf16::cpu_at(level, &mut out, Some(&w0), &w1, lambda);
            let mut inplace = w0.clone();
            lerp_bf16::cpu_at(level, &mut inplace, None, &w1, lambda);
            for (got, what) in [(&out, "out"), (&inplace, "in place")] {
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "lerp_bf16 {what} at {} (λ {lambda})", level.name());
            }
        }
    }
}

/// The transposing pack of the bf16 and f32 kernels lays out exactly what
/// the scalar `pack` does, for u32 pairs and for f32, on edges of every
/// kind (partial panels and halves, step tails). It needs AVX-512F;
/// elsewhere there is nothing to check.
#[cfg(target_arch = "x86_64")]
#[test]
fn pack_transposed_is_pack() {
    use dawin::simd::gemm::{Panels, pack, pack_transposed};
    if !is_x86_feature_detected!("avx512f") {
        eprintln!("skipped: no AVX-512F here");
        return;
    }
    let k = 77;
    let src: Vec<u32> = (0..100 * k as u32)
        .map(|v| v.wrapping_mul(2654435761))
        .collect();
    let floats: Vec<f32> = src.iter().map(|&v| (v >> 8) as f32).collect();
    for (rows, ks) in [
        (0..100, 0..77),
        (3..40, 5..69),
        (16..48, 0..32),
        (7..8, 1..2),
        (0..31, 16..77),
    ] {
        // `got` holds garbage of the right length: the packer must
        // overwrite (or zero) every element it reuses.
        let (mut want, mut got) = (Panels::default(), Panels::default());
        pack(&src, k, rows.clone(), ks.clone(), 32, &mut want);
        got.prepare(want.as_slice().len(), false).fill(7u32);
        pack_transposed(&src, k, rows.clone(), ks.clone(), 32, &mut got);
        assert_eq!(
            got.as_slice(),
            want.as_slice(),
            "u32: rows {rows:?} steps {ks:?}"
        );
        let (mut want, mut got) = (Panels::default(), Panels::default());
        pack(&floats, k, rows.clone(), ks.clone(), 32, &mut want);
        got.prepare(want.as_slice().len(), false).fill(7f32);
        pack_transposed(&floats, k, rows.clone(), ks.clone(), 32, &mut got);
        assert_eq!(
            got.as_slice(),
            want.as_slice(),
            "f32: rows {rows:?} steps {ks:?}"
        );
    }
}

/// vmath's from_bf16 widens every one of the 65,536 bf16 bit patterns to
/// the bits `half::bf16::to_f32` gives, at every level; NaNs stay NaN
/// with their payload (`half` also sets the quiet bit of signalling ones).
#[test]
fn from_bf16_is_exact() {
    let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    for level in simd::available() {
        let mut got = vec![0f32; all.len()];
        vmath::from_bf16(level, &all, &mut got);
        for (x, g) in all.iter().zip(&got) {
            let (at, want) = (level.name(), x.to_f32());
            if want.is_nan() {
                assert_eq!(
                    g.to_bits(),
                    (x.to_bits() as u32) << 16,
                    "{:#06x} at {at}",
                    x.to_bits()
                );
            } else {
                assert_eq!(g.to_bits(), want.to_bits(), "{:#06x} at {at}", x.to_bits());
            }
        }
    }
}

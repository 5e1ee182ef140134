//! Every op on every executor against the f64 oracles in
//! `common/oracle.rs`, on random shapes that are not tile multiples.
//! Each test states its tolerance (relative to the output's scale).

use crate::common::{assert_close, data, oracle as r};
use dawin::ops::attention::{Attention, AttentionShape};
use dawin::ops::embed_add::{DualEmbed, EmbedAdd, EmbedShape};
use dawin::ops::embed_add_multi::EmbedAddMulti;
use dawin::ops::gather_rows::{GatherRows, GatherShape};
use dawin::ops::gemm::{Gemm, GemmShape};
use dawin::ops::gemm_dual::{DualGemm, GemmDual};
use dawin::ops::gemm_multi::GemmMulti;
use dawin::ops::layernorm::{DualNorm, LayerNorm, LayerNormShape};
use dawin::ops::layernorm_multi::LayerNormMulti;
use dawin::ops::patch_embed::{PatchEmbed, PatchShape};
use dawin::ops::patch_embed_u8::PatchEmbedU8;
use dawin::ops::softmax_entropy::SoftmaxEntropy;
use dawin::ops::{
    Mix, MultiMix, add::Add, add_scaled_diff::AddScaledDiff, gelu::Gelu, l2_normalize::L2Normalize,
    lerp::Lerp, quick_gelu::QuickGelu,
};
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    // CI uses 24 cases.
    crate::common::proptest_config(24)
}

crate::per_executor! {
    property cfg();

    /// gemm: f32 accumulation over k ≤ 300, tolerance 1e-5.
    fn gemm(kind, ex; m in 1usize..70, n in 1usize..90, k in 1usize..300, bias in any::<bool>(), seed in any::<u64>()) {
        let a = data(seed, m * k, 1.0);
        let b = data(seed ^ 1, n * k, 0.5);
        let bi = data(seed ^ 2, n, 3.0);
        let want = r::to_f32(&r::gemm(&a, &b, bias.then_some(&bi[..]), m, n, k));
        let (ba, bb, bc) = (ex.upload(&a).unwrap(), ex.upload(&b).unwrap(), ex.alloc(m * n).unwrap());
        let bbias = bias.then(|| ex.upload(&bi).unwrap());
        ex.run(Gemm { a: *ba, b: *bb, bias: bbias.as_deref().copied(), c: *bc, shape: GemmShape { m, n, k } }).unwrap();
        assert_close(&format!("gemm on {kind}"), &ex.download(*bc).unwrap(), &want, 1e-5);
    }

    /// gemm_dual equals the gemm of per-row lerped weights; tolerance 1e-5.
    fn gemm_dual(kind, ex; samples in 1usize..5, rows_per in 1usize..20, n in 1usize..70, k in 1usize..130, seed in any::<u64>()) {
        let m = samples * rows_per;
        let a = data(seed, m * k, 1.0);
        let (b0, b1) = (data(seed ^ 1, n * k, 0.5), data(seed ^ 2, n * k, 0.5));
        let (c0, c1) = (data(seed ^ 3, n, 1.0), data(seed ^ 4, n, 1.0));
        let lam: Vec<f32> = data(seed ^ 5, samples, 1.0).iter().map(|v| v.abs().fract()).collect();
        let want = r::dual_gemm(&a, (&b0, &b1), (&c0, &c1), &lam, rows_per, n, k);
        let up = |v: &[f32]| ex.upload(v).unwrap();
        let c = ex.alloc(m * n).unwrap();
        let (ub1, uc1, ulam) = (up(&b1), up(&c1), up(&lam));
        let dual = DualGemm { b1: *ub1, bias1: Some(*uc1), mix: Mix { lambda: *ulam, rows_per_lambda: rows_per } };
        ex.run(GemmDual { a: *up(&a), b0: *up(&b0), bias0: Some(*up(&c0)), dual, c: *c, shape: GemmShape { m, n, k } }).unwrap();
        assert_close(&format!("gemm_dual on {kind}"), &ex.download(*c).unwrap(), &want, 1e-5);
    }

    /// gemm_multi equals the gemm of each row's merged weights
    /// θ0 + Σ_t k_t·(θ_t − θ0) (f64), for 0..4 stacked sets with NaN in
    /// the gaps between them; tolerance 1e-5.
    fn gemm_multi(kind, ex; samples in 1usize..5, rows_per in 1usize..20, n in 1usize..70, k in 1usize..130, sets in 0usize..4, gap in 0usize..9, bias in any::<bool>(), seed in any::<u64>()) {
        let m = samples * rows_per;
        let a = data(seed, m * k, 1.0);
        let stride = n * k + gap;
        let (w, wb) = (stacked(seed ^ 1, n * k, sets, stride), stacked(seed ^ 2, n, sets, stride));
        let coef = coefficients(seed ^ 3, samples, sets);
        let mut want = Vec::new();
        for r in 0..m {
            let kr = &coef[r / rows_per * sets..][..sets];
            let (wr, br) = (merged(&w, n * k, stride, kr), merged(&wb, n, stride, kr));
            want.extend(r::gemm(&a[r * k..(r + 1) * k], &r::to_f32(&wr), bias.then(|| r::to_f32(&br)).as_deref(), 1, n, k));
        }
        let want = r::to_f32(&want);
        let up = |v: &[f32]| ex.upload(v).unwrap();
        let (uw, ub, uc, c) = (up(&w), up(&wb), up(&coef), ex.alloc(m * n).unwrap());
        let mix = MultiMix { coef: *uc, sets, stride, rows_per_sample: rows_per };
        ex.run(GemmMulti { a: *up(&a), b: *uw, bias: bias.then_some(*ub), mix, c: *c, shape: GemmShape { m, n, k } }).unwrap();
        assert_close(&format!("gemm_multi on {kind}"), &ex.download(*c).unwrap(), &want, 1e-5);
    }

    /// layernorm_multi equals layernorm with each row's merged γ/β (f64);
    /// strided rows, 0..4 sets; tolerance 1e-5.
    fn layernorm_multi(kind, ex; samples in 1usize..4, rows_per in 1usize..8, width in 1usize..200, stride_extra in 0usize..3, sets in 0usize..4, gap in 0usize..5, seed in any::<u64>()) {
        let rows = samples * rows_per;
        let xs = width * (1 + stride_extra);
        let x = data(seed, rows * xs, 2.0);
        let stride = width + gap;
        let (g, b) = (stacked(seed ^ 1, width, sets, stride), stacked(seed ^ 2, width, sets, stride));
        let coef = coefficients(seed ^ 3, samples, sets);
        let mut want = Vec::new();
        for i in 0..rows {
            let kr = &coef[i / rows_per * sets..][..sets];
            let (gi, bi) = (r::to_f32(&merged(&g, width, stride, kr)), r::to_f32(&merged(&b, width, stride, kr)));
            want.extend(r::to_f32(&r::layernorm(&x[i * xs..i * xs + width], &gi, &bi, 1e-5)));
        }
        let up = |v: &[f32]| ex.upload(v).unwrap();
        let (uc, y) = (up(&coef), ex.alloc(rows * width).unwrap());
        let mix = MultiMix { coef: *uc, sets, stride, rows_per_sample: rows_per };
        let s = LayerNormShape { rows, width, x_stride: xs, y_stride: width, eps: 1e-5 };
        ex.run(LayerNormMulti { x: *up(&x), y: *y, gamma: *up(&g), beta: *up(&b), mix, shape: s }).unwrap();
        assert_close(&format!("layernorm_multi on {kind}"), &ex.download(*y).unwrap(), &want, 1e-5);
    }

    /// embed_add_multi equals embed_add with each sample's merged class and
    /// position embeddings (f64); 0..4 sets; tolerance 1e-6.
    fn embed_add_multi(kind, ex; batch in 1usize..4, tokens in 2usize..20, width in 1usize..60, sets in 0usize..4, gap in 0usize..5, seed in any::<u64>()) {
        let pe = data(seed, batch * (tokens - 1) * width, 1.0);
        let stride = tokens * width + gap;
        let (cl, pos) = (stacked(seed ^ 1, width, sets, stride), stacked(seed ^ 2, tokens * width, sets, stride));
        let coef = coefficients(seed ^ 3, batch, sets);
        let mut want = Vec::new();
        for b in 0..batch {
            let kb = &coef[b * sets..][..sets];
            let (c, p) = (merged(&cl, width, stride, kb), merged(&pos, tokens * width, stride, kb));
            for t in 0..tokens {
                for i in 0..width {
                    let base = if t == 0 { c[i] } else { pe[(b * (tokens - 1) + t - 1) * width + i] as f64 };
                    want.push((base + p[t * width + i]) as f32);
                }
            }
        }
        let up = |v: &[f32]| ex.upload(v).unwrap();
        let (uc, out) = (up(&coef), ex.alloc(want.len()).unwrap());
        let mix = MultiMix { coef: *uc, sets, stride, rows_per_sample: tokens };
        ex.run(EmbedAddMulti { patches: *up(&pe), class: *up(&cl), pos: *up(&pos), mix, out: *out, shape: EmbedShape { batch, tokens, width } }).unwrap();
        assert_close(&format!("embed_add_multi on {kind}"), &ex.download(*out).unwrap(), &want, 1e-6);
    }

    /// attention for head dims 32/64/80/128 (and odd ones), full and causal
    /// (row t against the f64 reference on keys 0..=t); tolerance 1e-5.
    fn attention(kind, ex; batch in 1usize..3, tokens in 1usize..60, heads in 1usize..4, hd in prop::sample::select(vec![8usize, 32, 64, 80, 128, 13]), causal in any::<bool>(), seed in any::<u64>()) {
        let w = heads * hd;
        // Scaled so the softmax is far from uniform.
        let qkv = data(seed, batch * tokens * 3 * w, 2.0);
        let want = r::to_f32(&r::attention_fused(&qkv, (batch, tokens, heads, hd), causal));
        let out = ex.alloc(want.len()).unwrap();
        ex.run(Attention { qkv: *ex.upload(&qkv).unwrap(), out: *out, shape: AttentionShape { batch, tokens, heads, head_dim: hd, causal } }).unwrap();
        assert_close(&format!("attention on {kind}"), &ex.download(*out).unwrap(), &want, 1e-5);
    }

    /// layernorm, dense and strided, with and without per-row lerped γ/β;
    /// inputs with a large common offset test the variance's stability. 1e-5.
    fn layernorm(kind, ex; rows in 1usize..20, width in 1usize..300, stride_extra in 0usize..3, dual in any::<bool>(), offset in -100f32..100f32, seed in any::<u64>()) {
        let xs = width * (1 + stride_extra);
        let x: Vec<f32> = data(seed, rows * xs, 2.0).iter().map(|v| v + offset).collect();
        let (g0, b0, g1, b1) = (data(seed ^ 1, width, 1.0), data(seed ^ 2, width, 1.0), data(seed ^ 3, width, 1.0), data(seed ^ 4, width, 1.0));
        let lam: Vec<f32> = (0..rows).map(|i| (i as f32 * 0.37).fract()).collect();
        let mut want = Vec::new();
        for i in 0..rows {
            let (g, b) = if dual { (r::lerp(&g0, &g1, lam[i]), r::lerp(&b0, &b1, lam[i])) } else { (g0.clone(), b0.clone()) };
            want.extend(r::to_f32(&r::layernorm(&x[i * xs..i * xs + width], &g, &b, 1e-5)));
        }
        let up = |v: &[f32]| ex.upload(v).unwrap();
        let y = ex.alloc(rows * width).unwrap();
        let (ug1, ub1, ulam) = (up(&g1), up(&b1), up(&lam));
        let d = dual.then(|| DualNorm { gamma1: *ug1, beta1: *ub1, mix: Mix { lambda: *ulam, rows_per_lambda: 1 } });
        let s = LayerNormShape { rows, width, x_stride: xs, y_stride: width, eps: 1e-5 };
        ex.run(LayerNorm { x: *up(&x), y: *y, gamma: *up(&g0), beta: *up(&b0), dual: d, shape: s }).unwrap();
        assert_close(&format!("layernorm on {kind}"), &ex.download(*y).unwrap(), &want, 1e-5);
    }

    /// gelu (erf) and quick_gelu elementwise, over a wide range; 1e-6.
    fn gelu(kind, ex; n in 1usize..3000, scale in 0.1f32..20.0, seed in any::<u64>()) {
        let x = data(seed, n, scale);
        let want: Vec<f32> = x.iter().map(|&v| r::erf_gelu(v) as f32).collect();
        let b = ex.upload(&x).unwrap();
        ex.run(Gelu { x: *b }).unwrap();
        assert_close(&format!("gelu on {kind}"), &ex.download(*b).unwrap(), &want, 1e-6);
    }

    fn quick_gelu(kind, ex; n in 1usize..3000, scale in 0.1f32..20.0, seed in any::<u64>()) {
        let x = data(seed, n, scale);
        let want: Vec<f32> = x.iter().map(|&v| (v as f64 / (1.0 + (-1.702 * v as f64).exp())) as f32).collect();
        let b = ex.upload(&x).unwrap();
        ex.run(QuickGelu { x: *b }).unwrap();
        assert_close(&format!("quick_gelu on {kind}"), &ex.download(*b).unwrap(), &want, 1e-6);
    }

    /// add: exact.
    fn add(kind, ex; n in 1usize..5000, seed in any::<u64>()) {
        let (x, y) = (data(seed, n, 1.0), data(seed ^ 9, n, 1.0));
        let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        let by = ex.upload(&y).unwrap();
        ex.run(Add { x: *ex.upload(&x).unwrap(), y: *by }).unwrap();
        assert_close(&format!("add on {kind}"), &ex.download(*by).unwrap(), &want, 0.0);
    }

    /// patch_embed (im2col): exact.
    fn patch_embed(kind, ex; batch in 1usize..3, channels in 1usize..4, grid in 1usize..5, patch in 1usize..9, seed in any::<u64>()) {
        let image = grid * patch;
        let px = data(seed, batch * channels * image * image, 1.0);
        let s = PatchShape { batch, channels, image, patch };
        let mut want = Vec::new();
        for nb in 0..batch {
            for py in 0..grid {
                for pxx in 0..grid {
                    for c in 0..channels {
                        for ky in 0..patch {
                            for kx in 0..patch {
                                want.push(px[((nb * channels + c) * image + py * patch + ky) * image + pxx * patch + kx]);
                            }
                        }
                    }
                }
            }
        }
        let out = ex.alloc(s.rows() * s.cols()).unwrap();
        ex.run(PatchEmbed { pixels: *ex.upload(&px).unwrap(), out: *out, shape: s }).unwrap();
        assert_close(&format!("patch_embed on {kind}"), &ex.download(*out).unwrap(), &want, 0.0);
    }

    /// patch_embed_u8 (im2col of u8 RGB, normalised as placed): the f64
    /// value of (v/255 − mean)/std within 1e-6 of the largest output, and
    /// bit for bit the host's normalisation followed by patch_embed.
    fn patch_embed_u8(kind, ex; batch in 1usize..3, grid in 1usize..5, patch in 1usize..9, mean in prop::array::uniform3(0.0f32..1.0), std in prop::array::uniform3(0.05f32..1.0), seed in any::<u64>()) {
        let image = grid * patch;
        let bytes: Vec<u8> = data(seed, batch * 3 * image * image, 1.0).iter().map(|x| ((x + 1.0) * 127.9) as u8).collect();
        let s = PatchShape { batch, channels: 3, image, patch };
        let mut want = Vec::new();
        let mut host = Vec::new();
        for nb in 0..batch {
            for py in 0..grid {
                for pxx in 0..grid {
                    for c in 0..3 {
                        for ky in 0..patch {
                            for kx in 0..patch {
                                let v = bytes[((nb * 3 + c) * image + py * patch + ky) * image + pxx * patch + kx];
                                want.push(((v as f64 / 255.0 - mean[c] as f64) / std[c] as f64) as f32);
                                host.push((v as f32 / 255.0 - mean[c]) / std[c]);
                            }
                        }
                    }
                }
            }
        }
        let out = ex.alloc(s.rows() * s.cols()).unwrap();
        ex.run(PatchEmbedU8 { pixels: *ex.upload(&bytes).unwrap(), out: *out, shape: s, mean, std }).unwrap();
        let got = ex.download(*out).unwrap();
        assert_close(&format!("patch_embed_u8 on {kind}"), &got, &want, 1e-6);
        let same = got.iter().zip(&host).all(|(g, h)| g.to_bits() == h.to_bits());
        prop_assert!(same, "patch_embed_u8 on {kind}: not the host formula's bits");
    }

    /// embed_add with and without per-sample lerped embeddings; 1e-6.
    fn embed_add(kind, ex; batch in 1usize..4, tokens in 2usize..30, width in 1usize..100, dual in any::<bool>(), seed in any::<u64>()) {
        let pe = data(seed, batch * (tokens - 1) * width, 1.0);
        let (c0, c1) = (data(seed ^ 1, width, 1.0), data(seed ^ 2, width, 1.0));
        let (p0, p1) = (data(seed ^ 3, tokens * width, 1.0), data(seed ^ 4, tokens * width, 1.0));
        let lam: Vec<f32> = (0..batch).map(|i| 0.2 + 0.3 * i as f32).collect();
        let mut want = Vec::new();
        for b in 0..batch {
            let l = if dual { lam[b] } else { 0.0 };
            let (c, p) = (r::lerp(&c0, &c1, l), r::lerp(&p0, &p1, l));
            for t in 0..tokens {
                for i in 0..width {
                    let base = if t == 0 { c[i] } else { pe[(b * (tokens - 1) + t - 1) * width + i] };
                    want.push(base + p[t * width + i]);
                }
            }
        }
        let up = |v: &[f32]| ex.upload(v).unwrap();
        let out = ex.alloc(want.len()).unwrap();
        let (uc1, up1, ulam) = (up(&c1), up(&p1), up(&lam));
        let d = dual.then(|| DualEmbed { class1: *uc1, pos1: *up1, mix: Mix { lambda: *ulam, rows_per_lambda: tokens } });
        ex.run(EmbedAdd { patches: *up(&pe), class: *up(&c0), pos: *up(&p0), dual: d, out: *out, shape: EmbedShape { batch, tokens, width } }).unwrap();
        assert_close(&format!("embed_add on {kind}"), &ex.download(*out).unwrap(), &want, 1e-6);
    }

    /// softmax_entropy on logits up to ±1e4 with some −inf entries; entropy,
    /// max prob and logsumexp within 1e-5 (absolute for H and p, relative
    /// for lse), argmax exact.
    fn softmax_entropy(kind, ex; rows in 1usize..12, cols in 1usize..1100, scale in prop::sample::select(vec![0.1f32, 3.0, 50.0, 1e4]), neg_inf in 0usize..4, t in 0.5f32..2.0, seed in any::<u64>()) {
        let mut z = data(seed, rows * cols, scale);
        for i in 0..neg_inf.min(cols.saturating_sub(1)) {
            for rr in 0..rows {
                z[rr * cols + (i * 7) % cols] = f32::NEG_INFINITY;
            }
        }
        let out = ex.alloc(rows * 4).unwrap();
        ex.run(SoftmaxEntropy { logits: *ex.upload(&z).unwrap(), out: *out, rows, cols, temperature: t }).unwrap();
        let got = dawin::ops::softmax_entropy::unpack(&ex.download(*out).unwrap());
        for (i, g) in got.iter().enumerate() {
            let row = &z[i * cols..(i + 1) * cols];
            let (h, am, pm, lse) = r::entropy(row, t);
            prop_assert!((g.entropy as f64 - h).abs() <= 1e-5 * (1.0 + h), "{kind} row {i}: H {} vs {h}", g.entropy);
            prop_assert_eq!(row[g.argmax], row[am], "{} row {}: argmax", kind, i);
            prop_assert!((g.max_prob as f64 - pm).abs() <= 1e-5, "{kind} row {i}: pmax {} vs {pm}", g.max_prob);
            prop_assert!((g.logsumexp as f64 - lse).abs() <= 1e-5 * (1.0 + lse.abs()), "{kind} row {i}: lse {} vs {lse}", g.logsumexp);
        }
    }

    /// lerp in place and out of place: exactly the fused w0 + λ(w1−w0).
    fn lerp(kind, ex; n in 1usize..10000, l in 0f32..1.0, inplace in any::<bool>(), seed in any::<u64>()) {
        let (w0, w1) = (data(seed, n, 1.0), data(seed ^ 1, n, 1.0));
        let want: Vec<f32> = w0.iter().zip(&w1).map(|(&a, &b)| l.mul_add(b - a, a)).collect();
        let (b0, b1) = (ex.upload(&w0).unwrap(), ex.upload(&w1).unwrap());
        let sep = ex.alloc(n).unwrap();
        let out = if inplace { *b0 } else { *sep };
        ex.run(Lerp { out, w0: *b0, w1: *b1, lambda: l }).unwrap();
        assert_close(&format!("lerp on {kind}"), &ex.download(out).unwrap(), &want, 0.0);
    }

    /// add_scaled_diff: exactly the fused out + k(w1−w0).
    fn add_scaled_diff(kind, ex; n in 1usize..10000, k in -1f32..2.0, seed in any::<u64>()) {
        let (o, w0, w1) = (data(seed, n, 1.0), data(seed ^ 1, n, 1.0), data(seed ^ 2, n, 1.0));
        let want: Vec<f32> = (0..n).map(|i| k.mul_add(w1[i] - w0[i], o[i])).collect();
        let out = ex.upload(&o).unwrap();
        ex.run(AddScaledDiff { out: *out, w0: *ex.upload(&w0).unwrap(), w1: *ex.upload(&w1).unwrap(), k }).unwrap();
        assert_close(&format!("add_scaled_diff on {kind}"), &ex.download(*out).unwrap(), &want, 0.0);
    }

    /// l2_normalize: 1e-6.
    fn l2_normalize(kind, ex; rows in 1usize..10, width in 1usize..600, seed in any::<u64>()) {
        let x = data(seed, rows * width, 5.0);
        let mut want = Vec::new();
        for rr in x.chunks(width) {
            let nrm = rr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            want.extend(rr.iter().map(|&v| (v as f64 / nrm) as f32));
        }
        let y = ex.alloc(x.len()).unwrap();
        ex.run(L2Normalize { x: *ex.upload(&x).unwrap(), y: *y, rows, width }).unwrap();
        assert_close(&format!("l2_normalize on {kind}"), &ex.download(*y).unwrap(), &want, 1e-6);
    }

    /// gather_rows, with and without the periodic add, some ids out of the
    /// table (those rows must be NaN on every executor); exact for the
    /// copies, 1 ulp-level (1e-6) for the sums.
    fn gather_rows(kind, ex; rows in 1usize..40, width in 1usize..300, table_rows in 1usize..50, add_rows in 1usize..9,
                   with_add in any::<bool>(), bad in any::<bool>(), seed in any::<u64>()) {
        let table = data(seed, table_rows * width, 2.0);
        let add = data(seed ^ 1, add_rows * width, 1.0);
        let mut ids: Vec<i32> = (0..rows).map(|i| ((seed as usize / 7 + i * 31) % table_rows) as i32).collect();
        if bad {
            ids[rows / 2] = if seed % 2 == 0 { table_rows as i32 } else { -1 };
        }
        let mut want = Vec::with_capacity(rows * width);
        for (r, &id) in ids.iter().enumerate() {
            for c in 0..width {
                let v = if id < 0 || id as usize >= table_rows {
                    f32::NAN
                } else {
                    let t = table[id as usize * width + c] as f64;
                    let a = if with_add { add[(r % add_rows) * width + c] as f64 } else { 0.0 };
                    (t + a) as f32
                };
                want.push(v);
            }
        }
        let shape = GatherShape { rows, width, table_rows, add_rows };
        let out = ex.alloc(rows * width).unwrap();
        let (t, i, a) = (ex.upload(&table).unwrap(), ex.upload(&ids).unwrap(), ex.upload(&add).unwrap());
        let add_buf = with_add.then_some(*a);
        ex.run(GatherRows { table: *t, ids: *i, add: add_buf, out: *out, shape }).unwrap();
        let got = ex.download(*out).unwrap();
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert!(g.is_nan() == w.is_nan() && (w.is_nan() || (g - w).abs() <= 1e-6 * w.abs().max(1.0)),
                "gather_rows on {kind}: [{j}] got {g} want {w}");
        }
    }
}

crate::per_executor! {
    /// Edge rows for softmax_entropy: all-equal, one-hot at ±1e4, a single
    /// class, all −inf but one, and NaN.
    fn softmax_entropy_edges(kind, ex) {
    let rows: Vec<Vec<f32>> = vec![
        vec![1.0; 10],
        vec![1e4, -1e4, -1e4, 0.0],
        vec![-1e4, 1e4, 1e4 - 1.0],
        vec![7.0],
        vec![f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY],
    ];
        for row in &rows {
            let out = ex.alloc(4).unwrap();
            let logits = ex.upload(row).unwrap();
            let op = SoftmaxEntropy {
                logits: *logits,
                out: *out,
                rows: 1,
                cols: row.len(),
                temperature: 1.0,
            };
            ex.run(op).unwrap();
            let g = dawin::ops::softmax_entropy::unpack(&ex.download(*out).unwrap())[0];
            let (h, am, pm, lse) = r::entropy(row, 1.0);
            assert!(
                (g.entropy as f64 - h).abs() < 1e-5,
                "{kind} {row:?}: H {} vs {h}",
                g.entropy
            );
            assert_eq!(g.argmax, am, "{kind} {row:?}");
            assert!((g.max_prob as f64 - pm).abs() < 1e-6, "{kind} {row:?}");
            assert!(
                (g.logsumexp as f64 - lse).abs() <= 1e-6 * (1.0 + lse.abs()),
                "{kind} {row:?}"
            );
        }
        // Uniform over 10 classes: exactly ln 10 nats.
        let out = ex.alloc(4).unwrap();
        let logits = ex.upload(&rows[0]).unwrap();
        let op = SoftmaxEntropy {
            logits: *logits,
            out: *out,
            rows: 1,
            cols: 10,
            temperature: 1.0,
        };
        ex.run(op).unwrap();
        approx::assert_relative_eq!(
            ex.download(*out).unwrap()[0],
            10f32.ln(),
            max_relative = 1e-6
        );
        // A NaN logit makes the entropy NaN so callers can treat it specially.
        let out = ex.alloc(4).unwrap();
        let logits = ex.upload(&[1.0, f32::NAN]).unwrap();
        let op = SoftmaxEntropy {
            logits: *logits,
            out: *out,
            rows: 1,
            cols: 2,
            temperature: 1.0,
        };
        ex.run(op).unwrap();
        assert!(ex.download(*out).unwrap()[0].is_nan(), "{kind}: NaN row");
    }
}

/// `sets + 1` random tensors of `len` stacked `stride` apart, NaN between
/// them: a kernel that reads a gap poisons its output.
fn stacked(seed: u64, len: usize, sets: usize, stride: usize) -> Vec<f32> {
    let mut v = vec![f32::NAN; sets * stride + len];
    for t in 0..=sets {
        v[t * stride..t * stride + len].copy_from_slice(&data(seed ^ (t as u64) << 8, len, 0.5));
    }
    v
}

/// Per-sample task coefficients in [−0.5, 1.5): the paper's s·T·c_t can
/// exceed 1, and negative ones test the difference form.
fn coefficients(seed: u64, samples: usize, sets: usize) -> Vec<f32> {
    data(seed, samples * sets, 1.0)
        .iter()
        .map(|v| v.abs().fract() * 2.0 - 0.5)
        .collect()
}

/// θ0 + Σ_t k_t·(θ_t − θ0) in f64 over a stacked tensor.
fn merged(stack: &[f32], len: usize, stride: usize, k: &[f32]) -> Vec<f64> {
    (0..len)
        .map(|j| {
            let base = stack[j] as f64;
            base + k
                .iter()
                .enumerate()
                .map(|(t, &kt)| kt as f64 * (stack[(t + 1) * stride + j] as f64 - base))
                .sum::<f64>()
        })
        .collect()
}

//! The f64 oracles: independent references for the ops, written as plainly as possible.
//! They share no code with `dawin::ops` so that a bug there cannot hide.

pub fn gemm(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[j * k + p] as f64;
            }
            c[i * n + j] = acc;
        }
    }
    c
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn lerp(a: &[f32], b: &[f32], l: f32) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 + l as f64 * (y as f64 - x as f64)) as f32)
        .collect()
}

pub fn layernorm(x: &[f32], g: &[f32], b: &[f32], eps: f32) -> Vec<f64> {
    let w = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / w;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w;
    x.iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 - mean) / (var + eps as f64).sqrt() * g[i] as f64 + b[i] as f64)
        .collect()
}

/// softmax(QKᵀ/√d)V for one (sample, head) with rows of q, k, v given.
pub fn attention_head(q: &[Vec<f64>], k: &[Vec<f64>], v: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let d = q[0].len() as f64;
    q.iter()
        .map(|qi| {
            let s: Vec<f64> = k
                .iter()
                .map(|kj| qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() / d.sqrt())
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            (0..v[0].len())
                .map(|c| e.iter().zip(v).map(|(p, vj)| p * vj[c]).sum::<f64>() / z)
                .collect()
        })
        .collect()
}

/// softmax(QKᵀ/√d)V of a fused `qkv` `[batch, tokens, 3, heads, hd]`
/// (the layout of the attention ops), `[batch, tokens, heads, hd]`; with
/// `causal`, row t sees keys 0..=t.
pub fn attention_fused(
    qkv: &[f32],
    (batch, tokens, heads, hd): (usize, usize, usize, usize),
    causal: bool,
) -> Vec<f64> {
    let w = heads * hd;
    let mut out = vec![0f64; batch * tokens * w];
    for b in 0..batch {
        for h in 0..heads {
            let get = |part: usize| -> Vec<Vec<f64>> {
                (0..tokens)
                    .map(|t| {
                        let at = (b * tokens + t) * 3 * w + part * w + h * hd;
                        qkv[at..at + hd].iter().map(|&x| x as f64).collect()
                    })
                    .collect()
            };
            let (q, k, v) = (get(0), get(1), get(2));
            for t in 0..tokens {
                let keys = if causal { t + 1 } else { tokens };
                let o = attention_head(&q[t..=t], &k[..keys], &v[..keys]).remove(0);
                out[(b * tokens + t) * w + h * hd..][..hd].copy_from_slice(&o);
            }
        }
    }
    out
}

/// Entropy (nats) of softmax(z/T) computed directly from probabilities.
pub fn entropy(z: &[f32], t: f32) -> (f64, usize, f64, f64) {
    let zs: Vec<f64> = z.iter().map(|&v| v as f64 / t as f64).collect();
    let m = zs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + zs.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    let mut h = 0.0;
    let mut best = 0;
    for (i, v) in zs.iter().enumerate() {
        let p = (v - lse).exp();
        if p > 0.0 {
            h -= p * (v - lse);
        }
        if *v > zs[best] {
            best = i;
        }
    }
    (h, best, (m - lse).exp(), lse)
}

pub fn erf_gelu(x: f32) -> f64 {
    let x = x as f64;
    0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()))
}

/// The dual gemm as the gemm of per-row lerped weights and biases: row `i`
/// uses λ[i / rows_per] (the oracle of both dual-gemm tests).
#[allow(clippy::too_many_arguments, dead_code)]
pub fn dual_gemm(
    a: &[f32],
    (b0, b1): (&[f32], &[f32]),
    (c0, c1): (&[f32], &[f32]),
    lambda: &[f32],
    rows_per: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let m = a.len() / k.max(1);
    let mut want = Vec::new();
    for i in 0..m {
        let l = lambda[i / rows_per];
        let (bl, cl) = (lerp(b0, b1, l), lerp(c0, c1, l));
        want.extend(to_f32(&gemm(
            &a[i * k..(i + 1) * k],
            &bl,
            Some(&cl),
            1,
            n,
            k,
        )));
    }
    want
}

//! The λ rules: how much each sample leans on the fine-tuned model, from
//! the two models' expertise on it (entropies, logits, or the label for the
//! oracle). Every rule returns λ ∈ [0, 1], the weight on the fine-tuned
//! model. Plain Rust over host vectors: no device involved.

use crate::ops::softmax_entropy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LambdaRule {
    /// λ = e^(−H_ft) / (e^(−H_pt) + e^(−H_ft)), H the entropy of softmax(z/T).
    Entropy,
    /// The official scripts' default: entropy with a dataset-level offset
    /// b and weight w (docs/design.md §2), with per-model temperatures.
    EntropyOffset,
    /// Uses the labels: λ = p_ft(y) / (p_pt(y) + p_ft(y)) (an upper bound).
    Oracle,
    /// λ = max z_ft / (max z_pt + max z_ft), clamped to [0, 1].
    MaxLogit,
    /// The lower-entropy model wins outright: λ ∈ {0, 1}.
    Selective,
}

/// Per-sample entropies (nats), after NaN handling.
#[derive(Clone, Debug, Default)]
pub struct Entropies {
    pub pt: Vec<f64>,
    pub ft: Vec<f64>,
}

/// Mean and Bessel-corrected std (as torch's `Tensor.std`).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// The entropy-offset constants b and w over the evaluated set.
pub fn offset_constants(e: &Entropies) -> (f64, f64) {
    let (mp, sp) = mean_std(&e.pt);
    let (mf, sf) = mean_std(&e.ft);
    let b = (sp / mp + sf / mf) / 2.0;
    let w = (mp + mf) / mp;
    (b, w)
}

/// Inputs the rules may need, all already projected to the evaluated label space.
pub struct Inputs<'a> {
    pub logits_pt: &'a [f32],
    pub logits_ft: &'a [f32],
    pub classes: usize,
    pub labels: &'a [i64],
    pub entropies: &'a Entropies,
    /// (b, w) for `entropy-offset`; computed over the whole evaluated set,
    /// possibly by a shared pass over all shards.
    pub offset: (f64, f64),
}

/// λ for every sample under `rule`.
pub fn lambdas(rule: LambdaRule, x: &Inputs) -> Vec<f32> {
    let n = x.labels.len();
    let c = x.classes;
    (0..n)
        .map(|i| {
            let (hp, hf) = (x.entropies.pt[i], x.entropies.ft[i]);
            let l = match rule {
                LambdaRule::Entropy => return lambda_from_entropies(hp, hf),
                LambdaRule::EntropyOffset => {
                    let (b, w) = x.offset;
                    ratio((-hf).exp(), (-hp).exp(), b, w)
                }
                LambdaRule::Oracle => {
                    let y = x.labels[i] as usize;
                    let p = |z: &[f32]| {
                        let s = softmax_entropy::row(z, 1.0);
                        ((z[y] - s.logsumexp) as f64).exp()
                    };
                    let (pp, pf) = (
                        p(&x.logits_pt[i * c..(i + 1) * c]),
                        p(&x.logits_ft[i * c..(i + 1) * c]),
                    );
                    ratio(pf, pp, 0.0, 1.0)
                }
                LambdaRule::MaxLogit => {
                    let mx = |z: &[f32]| z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let (mp, mf) = (
                        mx(&x.logits_pt[i * c..(i + 1) * c]),
                        mx(&x.logits_ft[i * c..(i + 1) * c]),
                    );
                    (mf / (mp + mf)).clamp(0.0, 1.0)
                }
                LambdaRule::Selective => {
                    if hp > hf {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
            if l.is_finite() { l as f32 } else { 0.5 }
        })
        .collect()
}

/// λ of every sample of a merged expertise file, which holds entropies
/// only: for the rules that need nothing else.
pub fn lambdas_of_entropies(
    rule: LambdaRule,
    e: &Entropies,
    offset: (f64, f64),
) -> crate::Result<Vec<f32>> {
    if !matches!(
        rule,
        LambdaRule::Entropy | LambdaRule::EntropyOffset | LambdaRule::Selective
    ) {
        return Err(crate::invalid!(
            "--expertise-from supports entropy, entropy-offset and selective"
        ));
    }
    let inputs = Inputs {
        logits_pt: &[],
        logits_ft: &[],
        classes: 0,
        labels: &vec![0; e.pt.len()],
        entropies: e,
        offset,
    };
    Ok(lambdas(rule, &inputs))
}

/// DaWin's rule on one sample: λ = e^(−H_ft) / (e^(−H_pt) + e^(−H_ft)).
pub fn lambda_from_entropies(h_pt: f64, h_ft: f64) -> f32 {
    let l = ratio((-h_ft).exp(), (-h_pt).exp(), 0.0, 1.0);
    if l.is_finite() { l as f32 } else { 0.5 }
}

/// (e_ft + b/w) / (e_pt + e_ft + b); with b = 0 the plain ratio. A 0/0
/// (both models certain to underflow) splits evenly.
fn ratio(e_ft: f64, e_pt: f64, b: f64, w: f64) -> f64 {
    let den = e_pt + e_ft + b;
    if den > 0.0 { (e_ft + b / w) / den } else { 0.5 }
}

//! The λ rules: how much each sample leans on the fine-tuned model, from
//! the two models' expertise on it (entropies, losses, confidences, logits,
//! or chance for the random baselines). Every rule returns λ ∈ [0, 1], the
//! weight on the fine-tuned model. Plain Rust over host vectors: no device
//! involved. The official scripts' names are given beside each rule.

use crate::choice::{Choice, Named};
use crate::method::probs::{self, Target};
use crate::rng::SplitMix;

/// How λ is computed from the two models' expertise on a sample; each
/// rule's meaning is its help in [`LambdaRule::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LambdaRule {
    Entropy,
    EntropyOffset,
    Oracle,
    OracleOffset,
    MaxLogit,
    MaxLogitRaw,
    Expconf,
    Expconfdiff,
    Selective,
    SelectiveLoss,
    T3,
    PseudoSoftEnsemble,
    PseudoSoftMerged,
    PseudoHardEnsemble,
    PseudoHardMerged,
    RandomUniform,
    RandomGaussian,
    RandomWiseGaussian,
}

impl Choice for LambdaRule {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            LambdaRule::Entropy,
            "entropy",
            "λ = e^(−H_ft) / (e^(−H_pt) + e^(−H_ft)), H the entropy of softmax(z/T) (official negexp_ent_ratio)",
        ),
        Named::new(
            LambdaRule::EntropyOffset,
            "entropy-offset",
            "Entropy with the set-level offset: (e^(−H_ft) + b/w) / (e^(−H_pt) + e^(−H_ft) + b), b = (σ/μ of H_pt + σ/μ of H_ft)/2, w = (μ_pt + μ_ft)/μ_pt (official negexp_ent_ratio --offset-adjustment, their default)",
        ),
        Named::new(
            LambdaRule::Oracle,
            "oracle",
            "Uses the labels: λ = e^(−L_ft) / (e^(−L_pt) + e^(−L_ft)), L the cross-entropy of softmax(z) with the label, = p_ft(y)/(p_pt(y)+p_ft(y)) (official negexp_loss_ratio; an upper bound, not a method)",
        ),
        Named::new(
            LambdaRule::OracleOffset,
            "oracle-offset",
            "The oracle with the loss-based offset (b, w as entropy-offset's, over the losses)",
        ),
        Named::new(
            LambdaRule::MaxLogit,
            "max-logit",
            "λ = max z_ft / (max z_pt + max z_ft) on the projected logits, clamped to [0, 1]",
        ),
        Named::new(
            LambdaRule::MaxLogitRaw,
            "max-logit-raw",
            "max-logit on the raw (unprojected) logits, as the official maxlogit_ratio computes it",
        ),
        Named::new(
            LambdaRule::Expconf,
            "expconf",
            "λ = e^(c_ft) / (e^(c_pt) + e^(c_ft)), c the top softmax(z/T) probability of each model (official expconf_ratio, whose code takes the fine-tuned value from the zero-shot logits; here each model's own)",
        ),
        Named::new(
            LambdaRule::Expconfdiff,
            "expconfdiff",
            "expconf with c the gap between the top two probabilities (official expconfdiff_ratio, same fix)",
        ),
        Named::new(
            LambdaRule::Selective,
            "selective",
            "The lower-entropy model wins outright: λ ∈ {0, 1} (selective_entropy)",
        ),
        Named::new(
            LambdaRule::SelectiveLoss,
            "selective-loss",
            "The lower-loss model wins outright; uses the labels (selective_loss)",
        ),
        Named::new(
            LambdaRule::T3,
            "t3",
            "T³ (Imam et al. 2025): the pretrained model's weight is λ_min + (λ_max − λ_min)·σ(γ·JS(p_pt‖p_ft)), JS the Jensen–Shannon divergence (nats) of softmax(z/T), so λ = 1 − that; γ = --t3-gamma (0.5), [λ_min, λ_max] = --t3-range (0,1)",
        ),
        Named::new(
            LambdaRule::PseudoSoftEnsemble,
            "pseudo-soft-ensemble",
            "Loss ratio with the loss offset against a soft pseudo-label, the mean of both models' softmax(z/T) (official --pseudo_label 1)",
        )
        .alias(&["pseudo:1"]),
        Named::new(
            LambdaRule::PseudoSoftMerged,
            "pseudo-soft-merged",
            "... against softmax(z) of the weight-averaged model (α = --wise-alpha, else 0.5; --pseudo_label 2)",
        )
        .alias(&["pseudo:2"]),
        Named::new(
            LambdaRule::PseudoHardEnsemble,
            "pseudo-hard-ensemble",
            "... against the ensemble's top class (--pseudo_label 3)",
        )
        .alias(&["pseudo:3"]),
        Named::new(
            LambdaRule::PseudoHardMerged,
            "pseudo-hard-merged",
            "... against the weight-averaged model's top class (--pseudo_label 4)",
        )
        .alias(&["pseudo:4"]),
        Named::new(
            LambdaRule::RandomUniform,
            "random:uniform",
            "Baseline: λ ~ U[0, 1), seeded by --seed and the sample's index (official --baseline uniform)",
        ),
        Named::new(
            LambdaRule::RandomGaussian,
            "random:gaussian",
            "Baseline: λ ~ N(0.5, 0.2) clipped to [0.01, 0.99] (--baseline gaussian)",
        ),
        Named::new(
            LambdaRule::RandomWiseGaussian,
            "random:wise-gaussian",
            "Baseline: λ ~ N(0.8, 0.1) clipped to [0.01, 0.99] (--baseline wise_gaussian)",
        ),
    ];
}

crate::display_choice!(LambdaRule);

impl LambdaRule {
    /// Reads the weight-averaged model's logits (the pseudo-label rules).
    pub fn needs_merged(self) -> bool {
        matches!(
            self,
            LambdaRule::PseudoSoftMerged | LambdaRule::PseudoHardMerged
        )
    }

    /// Reads the labels: not a method one can deploy.
    pub fn uses_labels(self) -> bool {
        matches!(
            self,
            LambdaRule::Oracle | LambdaRule::OracleOffset | LambdaRule::SelectiveLoss
        )
    }

    /// Draws λ at random instead of reading the models.
    pub fn is_random(self) -> bool {
        matches!(
            self,
            LambdaRule::RandomUniform | LambdaRule::RandomGaussian | LambdaRule::RandomWiseGaussian
        )
    }

    /// Uses set-level offset constants over per-sample losses.
    pub fn loss_offset(self) -> bool {
        self.loss_target().is_some()
            && !matches!(self, LambdaRule::Oracle | LambdaRule::SelectiveLoss)
    }

    /// Which target the rule's losses are measured against, for loss rules.
    fn loss_target(self) -> Option<TargetKind> {
        use LambdaRule::*;
        Some(match self {
            Oracle | OracleOffset | SelectiveLoss => TargetKind::Label,
            PseudoSoftEnsemble => TargetKind::SoftEnsemble,
            PseudoSoftMerged => TargetKind::SoftMerged,
            PseudoHardEnsemble => TargetKind::HardEnsemble,
            PseudoHardMerged => TargetKind::HardMerged,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy)]
enum TargetKind {
    Label,
    SoftEnsemble,
    SoftMerged,
    HardEnsemble,
    HardMerged,
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

/// The offset constants b and w over the evaluated set, from per-sample
/// entropies (entropy-offset) or losses (the loss rules with an offset).
pub fn offset_constants(e: &Entropies) -> (f64, f64) {
    let (mp, sp) = mean_std(&e.pt);
    let (mf, sf) = mean_std(&e.ft);
    let b = (sp / mp + sf / mf) / 2.0;
    let w = (mp + mf) / mp;
    (b, w)
}

static NO_ENTROPIES: Entropies = Entropies {
    pt: Vec::new(),
    ft: Vec::new(),
};

/// Inputs the rules may need, all already projected to the evaluated label
/// space unless named raw.
pub struct Inputs<'a> {
    pub logits_pt: &'a [f32],
    pub logits_ft: &'a [f32],
    pub classes: usize,
    pub labels: &'a [i64],
    pub entropies: &'a Entropies,
    /// (b, w) for `entropy-offset`; computed over the whole evaluated set,
    /// possibly by a shared pass over all shards.
    pub offset: (f64, f64),
    /// (T_pt, T_ft) of the entropies and confidences.
    pub temperature: (f32, f32),
    /// Per-sample maxima of the raw logits (pt, ft), for `max-logit-raw`.
    pub raw_max: Option<(&'a [f32], &'a [f32])>,
    /// The weight-averaged model's logits, for the `pseudo-*-merged` rules.
    pub merged: Option<&'a [f32]>,
    /// Dataset index of each sample: random λ depends on it and the seed
    /// only, so shards draw what one run would.
    pub indices: &'a [usize],
    pub seed: u64,
    /// The constants of the `t3` rule.
    pub t3: T3Shape,
}

/// The constants of T³'s rule: the sigmoid's slope γ on the Jensen–Shannon
/// divergence and the range [lo, hi] of the pretrained model's weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct T3Shape {
    pub gamma: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Default for T3Shape {
    /// The defaults of T³'s published description: γ = 0.5 over [0, 1].
    fn default() -> Self {
        T3Shape {
            gamma: 0.5,
            lo: 0.0,
            hi: 1.0,
        }
    }
}

impl T3Shape {
    /// Checked constants: γ finite, 0 ≤ lo ≤ hi ≤ 1.
    pub fn new(gamma: f64, lo: f64, hi: f64) -> crate::error::Result<T3Shape> {
        if !(gamma.is_finite() && 0.0 <= lo && lo <= hi && hi <= 1.0) {
            return Err(crate::invalid!(
                "t3 needs a finite γ and a range 0 ≤ lo ≤ hi ≤ 1, got γ {gamma} over [{lo}, {hi}]"
            ));
        }
        Ok(T3Shape { gamma, lo, hi })
    }

    /// λ (the fine-tuned model's weight) for one sample. T³'s coefficient
    /// grows with the models' disagreement and, as its authors describe
    /// it, defers to the generalist under drift: so it is read as the
    /// pretrained model's weight, and λ is its complement.
    pub fn lambda(&self, p_pt: &[f64], p_ft: &[f64]) -> f64 {
        let js = probs::jensen_shannon(p_pt, p_ft);
        let sigmoid = 1.0 / (1.0 + (-self.gamma * js).exp());
        1.0 - (self.lo + (self.hi - self.lo) * sigmoid)
    }
}

impl Default for Inputs<'_> {
    fn default() -> Self {
        Inputs {
            logits_pt: &[],
            logits_ft: &[],
            classes: 0,
            labels: &[],
            entropies: &NO_ENTROPIES,
            offset: (0.0, 1.0),
            temperature: (1.0, 1.0),
            raw_max: None,
            merged: None,
            indices: &[],
            seed: 1,
            t3: T3Shape::default(),
        }
    }
}

impl Inputs<'_> {
    fn row<'b>(&self, z: &'b [f32], i: usize) -> &'b [f32] {
        &z[i * self.classes..(i + 1) * self.classes]
    }

    fn samples(&self) -> usize {
        self.labels.len().max(self.entropies.pt.len())
    }
}

/// λ for every sample under `rule`; a λ that comes out non-finite (a 0/0
/// of two certain models, a NaN logit) is 0.5.
pub fn lambdas(rule: LambdaRule, x: &Inputs) -> Vec<f32> {
    let raw: Vec<f64> = if let Some(kind) = rule.loss_target() {
        from_losses(rule, kind, x)
    } else if rule.is_random() {
        random(rule, x)
    } else {
        (0..x.samples()).map(|i| pointwise(rule, x, i)).collect()
    };
    raw.into_iter()
        .map(|l| if l.is_finite() { l as f32 } else { 0.5 })
        .collect()
}

/// The rules that read one sample at a time.
fn pointwise(rule: LambdaRule, x: &Inputs, i: usize) -> f64 {
    let (hp, hf) = (x.entropies.pt[i], x.entropies.ft[i]);
    let max = |z: &[f32]| z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    match rule {
        LambdaRule::Entropy => ratio((-hf).exp(), (-hp).exp(), 0.0, 1.0),
        LambdaRule::EntropyOffset => {
            let (b, w) = x.offset;
            ratio((-hf).exp(), (-hp).exp(), b, w)
        }
        LambdaRule::Selective => (hp > hf) as u8 as f64,
        LambdaRule::MaxLogit => {
            let (mp, mf) = (max(x.row(x.logits_pt, i)), max(x.row(x.logits_ft, i)));
            (mf / (mp + mf)).clamp(0.0, 1.0)
        }
        LambdaRule::MaxLogitRaw => {
            let (p, f) = x.raw_max.expect("max-logit-raw reads the raw maxima");
            let (mp, mf) = (p[i] as f64, f[i] as f64);
            (mf / (mp + mf)).clamp(0.0, 1.0)
        }
        LambdaRule::Expconf | LambdaRule::Expconfdiff => {
            let conf = |z: &[f32], t: f32| {
                let (a, b) = probs::top_two(&probs::softmax(z, t));
                if rule == LambdaRule::Expconf {
                    a
                } else {
                    a - b
                }
            };
            let cp = conf(x.row(x.logits_pt, i), x.temperature.0);
            let cf = conf(x.row(x.logits_ft, i), x.temperature.1);
            ratio(cf.exp(), cp.exp(), 0.0, 1.0)
        }
        LambdaRule::T3 => {
            let p_pt = probs::softmax(x.row(x.logits_pt, i), x.temperature.0);
            let p_ft = probs::softmax(x.row(x.logits_ft, i), x.temperature.1);
            x.t3.lambda(&p_pt, &p_ft)
        }
        _ => unreachable!("{rule:?} is not a per-sample rule"),
    }
}

/// The loss rules: each model's cross-entropy against the rule's target,
/// then the loss ratio (with the loss offset where the rule has one), or
/// the lower-loss model outright.
fn from_losses(rule: LambdaRule, kind: TargetKind, x: &Inputs) -> Vec<f64> {
    let losses = losses(kind, x);
    if rule == LambdaRule::SelectiveLoss {
        return losses
            .pt
            .iter()
            .zip(&losses.ft)
            .map(|(p, f)| (p > f) as u8 as f64)
            .collect();
    }
    let (b, w) = if rule.loss_offset() {
        offset_constants(&losses)
    } else {
        (0.0, 1.0)
    };
    (losses.pt.iter().zip(&losses.ft))
        .map(|(lp, lf)| ratio((-lf).exp(), (-lp).exp(), b, w))
        .collect()
}

/// Per-sample cross-entropies (T = 1, as the official code) of both models
/// against the target `kind` names, in an [`Entropies`] pair.
fn losses(kind: TargetKind, x: &Inputs) -> Entropies {
    let (pt, ft): (Vec<f64>, Vec<f64>) = (0..x.samples())
        .map(|i| {
            let (zp, zf) = (x.row(x.logits_pt, i), x.row(x.logits_ft, i));
            let q = target(kind, x, i);
            (probs::cross_entropy(zp, &q), probs::cross_entropy(zf, &q))
        })
        .unzip();
    Entropies { pt, ft }
}

/// The loss constants (b, w) a loss rule with an offset used.
pub fn loss_offset_constants(rule: LambdaRule, x: &Inputs) -> Option<(f64, f64)> {
    let kind = rule.loss_target().filter(|_| rule.loss_offset())?;
    Some(offset_constants(&losses(kind, x)))
}

/// Sample `i`'s target: its label, or a pseudo-label from the unlabeled
/// models (the output ensemble at the temperatures, or the merged model at T = 1).
fn target(kind: TargetKind, x: &Inputs, i: usize) -> Target {
    let ensemble = || -> Vec<f64> {
        let p = probs::softmax(x.row(x.logits_pt, i), x.temperature.0);
        let f = probs::softmax(x.row(x.logits_ft, i), x.temperature.1);
        p.iter().zip(&f).map(|(a, b)| (a + b) / 2.0).collect()
    };
    let merged = || {
        x.row(
            x.merged.expect("pseudo-*-merged reads the merged logits"),
            i,
        )
    };
    match kind {
        TargetKind::Label => Target::Hard(x.labels[i] as usize),
        TargetKind::SoftEnsemble => Target::Soft(ensemble()),
        TargetKind::HardEnsemble => Target::Hard(probs::argmax(&ensemble())),
        TargetKind::SoftMerged => Target::Soft(probs::softmax(merged(), 1.0)),
        TargetKind::HardMerged => Target::Hard(probs::argmax(merged())),
    }
}

/// The random baselines, one generator per (seed, dataset index).
fn random(rule: LambdaRule, x: &Inputs) -> Vec<f64> {
    x.indices
        .iter()
        .map(|&i| {
            let mut r = SplitMix(x.seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
            r.next_u64();
            let gaussian =
                |r: &mut SplitMix, m: f64, s: f64| (m + s * r.normal() as f64).clamp(0.01, 0.99);
            match rule {
                LambdaRule::RandomUniform => r.uniform() as f64,
                LambdaRule::RandomGaussian => gaussian(&mut r, 0.5, 0.2),
                _ => gaussian(&mut r, 0.8, 0.1),
            }
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
            "--expertise-from supports entropy, entropy-offset and selective, not {}",
            rule.name()
        ));
    }
    let inputs = Inputs {
        entropies: e,
        offset,
        ..Inputs::default()
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

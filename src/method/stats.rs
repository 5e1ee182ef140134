//! The statistics `summary.json` gives per method: calibration (NLL, ECE,
//! Brier), a bootstrap interval of accuracy, paired McNemar tests against
//! DaWin, and the λ diagnostics (AUROC, correlation). Plain f64 over
//! per-sample vectors; formulas in docs/design.md §Statistics.

use crate::rng::SplitMix;
use rayon::prelude::*;
use serde_json::{Value, json};

/// Equal-width confidence bins of the ECE.
pub const ECE_BINS: usize = 15;
/// Bootstrap resamples of `ci95` unless told otherwise.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// Per-sample quantities the calibration statistics average, from a
/// method's class probabilities p and the label y.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    /// −ln p(y).
    pub nll: Vec<f64>,
    /// Top-1 probability.
    pub confidence: Vec<f64>,
    /// Σ_c (p_c − [c = y])².
    pub brier: Vec<f64>,
}

impl Scores {
    /// Adds one sample: `p` its class probabilities, `log_py` ln p(y) when
    /// known more exactly than `ln p[y]` (a log-softmax), `y` its label.
    pub fn push(&mut self, p: &[f64], log_py: Option<f64>, y: usize) {
        self.nll.push(-log_py.unwrap_or_else(|| p[y].ln()));
        self.confidence
            .push(p.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        let sq: f64 = p.iter().map(|v| v * v).sum();
        self.brier.push(sq - 2.0 * p[y] + 1.0);
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Expected calibration error: Σ_b (n_b / n)·|acc_b − conf_b| over
/// [`ECE_BINS`] bins (lo, hi] of the top-1 confidence.
pub fn ece(confidence: &[f64], correct: &[bool]) -> f64 {
    let mut bins = vec![(0usize, 0usize, 0f64); ECE_BINS];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[b].0 += 1;
        bins[b].1 += ok as usize;
        bins[b].2 += c;
    }
    let n = confidence.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.0 > 0)
        .map(|&(k, ok, conf)| (ok as f64 / k as f64 - conf / k as f64).abs() * k as f64 / n)
        .sum()
}

/// NLL, ECE and Brier of one method.
pub fn calibration(s: &Scores, correct: &[bool]) -> Value {
    json!({
        "nll": mean(&s.nll),
        "ece": ece(&s.confidence, correct),
        "brier": mean(&s.brier),
    })
}

/// The q-quantile of sorted values, linearly interpolated (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Percentile-bootstrap 95 % interval of accuracy: `resamples` draws of n
/// samples with replacement, resample b from SplitMix(seed + b), so every
/// method of a run is resampled the same way.
pub fn bootstrap_ci95(correct: &[bool], resamples: usize, seed: u64) -> [f64; 2] {
    let n = correct.len();
    if n == 0 || resamples == 0 {
        return [f64::NAN, f64::NAN];
    }
    let mut acc: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map(|b| {
            let mut r = SplitMix(seed.wrapping_add(b as u64));
            let hits = (0..n)
                .filter(|_| correct[(r.next_u64() % n as u64) as usize])
                .count();
            hits as f64 / n as f64
        })
        .collect();
    acc.sort_by(f64::total_cmp);
    [quantile(&acc, 0.025), quantile(&acc, 0.975)]
}

/// McNemar's exact test of two classifiers on the same samples: `wins`
/// where only `a` is right, `losses` where only `b` is, and the two-sided
/// p-value min(1, 2·P[X ≤ min(wins, losses)]), X ~ Binomial(wins + losses, ½).
pub fn mcnemar(a: &[bool], b: &[bool]) -> (usize, usize, f64) {
    let wins = a.iter().zip(b).filter(|(x, y)| **x && !**y).count();
    let losses = a.iter().zip(b).filter(|(x, y)| !**x && **y).count();
    (wins, losses, mcnemar_p(wins, losses))
}

/// The p-value of McNemar's exact test for discordant counts (b, c).
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    let ln_choose = |i: usize| {
        libm::lgamma(n as f64 + 1.0)
            - libm::lgamma(i as f64 + 1.0)
            - libm::lgamma((n - i) as f64 + 1.0)
    };
    let ln_half = (n as f64) * 0.5f64.ln();
    // P[X ≤ k], summed in log space so large n neither overflows nor underflows.
    let terms: Vec<f64> = (0..=k).map(|i| ln_choose(i) + ln_half).collect();
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let cdf = (m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()).exp();
    (2.0 * cdf).min(1.0)
}

/// Area under the ROC curve of `score` for telling `positive` samples from
/// the others (Mann–Whitney, ties counting ½); NaN when either class is empty.
pub fn auroc(score: &[f64], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&i, &j| score[i].total_cmp(&score[j]));
    // Mid-ranks (1-based) over runs of equal scores.
    let mut rank = vec![0f64; score.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&k| rank[k] = mid);
        i = j + 1;
    }
    let np = positive.iter().filter(|p| **p).count() as f64;
    let nn = positive.len() as f64 - np;
    if np == 0.0 || nn == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = rank
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

/// Pearson's correlation of two equally long vectors (NaN if either is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

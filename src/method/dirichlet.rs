//! A Dirichlet mixture over per-sample coefficient vectors (points on the
//! simplex): the multi-task domain-wise merge's grouping. EM from a
//! k-means start, with one of two M-steps:
//! - `MaximumLikelihood`: each component's concentrations α are the
//!   responsibility-weighted Dirichlet MLE, by Minka's fixed point
//!   α_j ← ψ⁻¹(ψ(Σα) + mean log x_j) ("Estimating a Dirichlet
//!   distribution", 2000);
//! - `MomentMatching`: the official multi-task code's heuristic, α = the
//!   responsibility-weighted mean of the points (a point on the simplex,
//!   then used as concentrations in the E-step).
//!
//! The merge uses each component's mean α/Σα as its coefficients (for the
//! moment-matching step that is α itself).

use super::kmeans::kmeans;
use crate::choice::{Choice, Named};

/// Coordinates are floored here before their logarithm: a softmax in f32
/// can underflow to an exact 0, where a Dirichlet density is undefined.
pub const FLOOR: f64 = 1e-12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MStep {
    MaximumLikelihood,
    MomentMatching,
}

impl Choice for MStep {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            MStep::MaximumLikelihood,
            "dirichlet",
            "a Dirichlet mixture fitted by EM with the maximum-likelihood M-step (Minka's fixed point); each sample's coefficients are its component's mean",
        ),
        Named::new(
            MStep::MomentMatching,
            "moments",
            "the official multi-task code's mixture: EM whose M-step sets each component to the responsibility-weighted mean of the coefficient vectors",
        ),
    ];
}

crate::display_choice!(MStep);

/// A fitted mixture.
#[derive(Clone, Debug, PartialEq)]
pub struct DirichletMixture {
    pub m_step: MStep,
    pub weights: Vec<f64>,
    /// Concentrations, one vector per component.
    pub alpha: Vec<Vec<f64>>,
    /// Mean log-likelihood of the best restart.
    pub log_likelihood: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// How a fit runs: the official code's n_init = 5, max_iter = 500 and
/// tol = 1e-5 by default.
#[derive(Clone, Copy, Debug)]
pub struct FitSettings {
    pub restarts: usize,
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
}

impl Default for FitSettings {
    fn default() -> Self {
        FitSettings {
            restarts: 5,
            max_iter: 500,
            tol: 1e-5,
            seed: 0,
        }
    }
}

/// ψ(x) for x > 0: recurrence up to 6, then the asymptotic series.
pub fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 6.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    let series = f
        * (-1.0 / 12.0
            + f * (1.0 / 120.0 + f * (-1.0 / 252.0 + f * (1.0 / 240.0 + f * (-1.0 / 132.0)))));
    acc + x.ln() - 0.5 / x + series
}

/// ψ'(x) for x > 0.
pub fn trigamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 6.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    let series =
        1.0 / x + f / 2.0 + f / x * (1.0 / 6.0 + f * (-1.0 / 30.0 + f * (1.0 / 42.0 - f / 30.0)));
    acc + series
}

/// ψ⁻¹(y): Minka's starting point, then Newton steps.
pub fn inverse_digamma(y: f64) -> f64 {
    let euler = 0.577_215_664_901_532_9;
    let mut x = if y >= -2.22 {
        y.exp() + 0.5
    } else {
        -1.0 / (y + euler)
    };
    for _ in 0..8 {
        x -= (digamma(x) - y) / trigamma(x);
    }
    x
}

/// log Dir(x | α) of one point (coordinates already floored).
fn log_density(x: &[f64], alpha: &[f64]) -> f64 {
    let total: f64 = alpha.iter().sum();
    let norm = libm::lgamma(total) - alpha.iter().map(|&a| libm::lgamma(a)).sum::<f64>();
    norm + x
        .iter()
        .zip(alpha)
        .map(|(v, a)| (a - 1.0) * v.ln())
        .sum::<f64>()
}

/// The responsibility-weighted Dirichlet MLE from `alpha` (its start), by
/// Minka's fixed point on the weighted mean log of each coordinate. A
/// component whose points all coincide has no finite MLE: the fixed point
/// then only grows α's scale, so it stops once Σα passes 1e8 (its mean
/// α/Σα, what the merge uses, has converged by then).
pub fn weighted_mle(x: &[Vec<f64>], w: &[f64], alpha: &[f64]) -> Vec<f64> {
    let total_w: f64 = w.iter().sum();
    let d = alpha.len();
    let mean_log: Vec<f64> = (0..d)
        .map(|j| x.iter().zip(w).map(|(v, wi)| wi * v[j].ln()).sum::<f64>() / total_w)
        .collect();
    let mut a = alpha.to_vec();
    for _ in 0..1000 {
        let psi_total = digamma(a.iter().sum());
        let next: Vec<f64> = mean_log
            .iter()
            .map(|m| inverse_digamma(psi_total + m))
            .collect();
        let moved = next
            .iter()
            .zip(&a)
            .map(|(n, o)| ((n - o) / o).abs())
            .fold(0.0, f64::max);
        a = next;
        if moved < 1e-12 || a.iter().sum::<f64>() > 1e8 {
            break;
        }
    }
    a
}

/// A starting α from the weighted moments (Minka's eq. 21 on the first
/// coordinate): the weighted mean scaled by the precision its variance
/// implies, or by d where the variance is zero.
fn moment_start(x: &[Vec<f64>], w: &[f64]) -> Vec<f64> {
    let total_w: f64 = w.iter().sum();
    let d = x[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().zip(w).map(|(v, wi)| wi * v[j]).sum::<f64>() / total_w)
        .collect();
    let second = x.iter().zip(w).map(|(v, wi)| wi * v[0] * v[0]).sum::<f64>() / total_w;
    let precision = (mean[0] - second) / (second - mean[0] * mean[0]);
    let s = if precision.is_finite() && precision > 0.0 {
        precision
    } else {
        d as f64
    };
    mean.iter().map(|m| (m * s).max(1e-3)).collect()
}

impl DirichletMixture {
    /// Fits `k` components to `points` (each a probability vector of the
    /// same length ≥ 2). None when there are no points or k is 0.
    pub fn fit(points: &[Vec<f32>], k: usize, m: MStep, s: FitSettings) -> Option<Self> {
        if points.is_empty() || k == 0 || points[0].len() < 2 {
            return None;
        }
        let x: Vec<Vec<f64>> = points
            .iter()
            .map(|p| p.iter().map(|&v| (v as f64).max(FLOOR)).collect())
            .collect();
        let k = k.min(x.len());
        (0..s.restarts.max(1))
            .map(|r| Self::fit_once(&x, k, m, s, kmeans(&x, k, s.seed + r as u64)))
            .reduce(|a, b| {
                if b.log_likelihood > a.log_likelihood {
                    b
                } else {
                    a
                }
            })
    }

    fn fit_once(x: &[Vec<f64>], k: usize, m: MStep, s: FitSettings, labels: Vec<usize>) -> Self {
        // A hard start, with a small floor so no component is empty.
        let mut resp: Vec<Vec<f64>> = labels
            .iter()
            .map(|&l| (0..k).map(|c| if c == l { 1.0 } else { 1e-14 }).collect())
            .collect();
        let mut fit = DirichletMixture {
            m_step: m,
            weights: vec![1.0 / k as f64; k],
            alpha: vec![vec![1.0; x[0].len()]; k],
            log_likelihood: f64::NEG_INFINITY,
            iterations: 0,
            converged: false,
        };
        fit.m_step(x, &resp, m, true);
        for it in 1..=s.max_iter {
            let (ll, r) = fit.e_step(x);
            resp = r;
            fit.m_step(x, &resp, m, false);
            let moved = (ll - fit.log_likelihood).abs();
            fit.log_likelihood = ll;
            fit.iterations = it;
            if moved < s.tol {
                fit.converged = true;
                break;
            }
        }
        // The likelihood of the parameters kept.
        fit.log_likelihood = fit.e_step(x).0;
        fit
    }

    /// Mean log-likelihood and the responsibilities.
    fn e_step(&self, x: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
        let mut total = 0.0;
        let resp = x
            .iter()
            .map(|v| {
                let lp: Vec<f64> = (0..self.weights.len())
                    .map(|c| self.weights[c].ln() + log_density(v, &self.alpha[c]))
                    .collect();
                let top = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let norm = top + lp.iter().map(|l| (l - top).exp()).sum::<f64>().ln();
                total += norm;
                lp.iter().map(|l| (l - norm).exp()).collect()
            })
            .collect();
        (total / x.len() as f64, resp)
    }

    fn m_step(&mut self, x: &[Vec<f64>], resp: &[Vec<f64>], m: MStep, first: bool) {
        let n = x.len() as f64;
        for c in 0..self.weights.len() {
            let w: Vec<f64> = resp.iter().map(|r| r[c]).collect();
            let nk = w.iter().sum::<f64>() + 1e-14;
            self.weights[c] = nk / n;
            self.alpha[c] = match m {
                MStep::MomentMatching => (0..x[0].len())
                    .map(|j| x.iter().zip(&w).map(|(v, wi)| wi * v[j]).sum::<f64>() / nk)
                    .collect(),
                MStep::MaximumLikelihood => {
                    let start = if first {
                        moment_start(x, &w)
                    } else {
                        self.alpha[c].clone()
                    };
                    weighted_mle(x, &w, &start)
                }
            };
        }
        let total: f64 = self.weights.iter().sum();
        self.weights.iter_mut().for_each(|w| *w /= total);
    }

    /// The coefficients component c's samples merge with: its mean α/Σα,
    /// or for the moment-matching step α itself (already a mean of the
    /// points, so with one component exactly `dawin-domain`'s).
    pub fn mean(&self, c: usize) -> Vec<f64> {
        if self.m_step == MStep::MomentMatching {
            return self.alpha[c].clone();
        }
        let total: f64 = self.alpha[c].iter().sum();
        self.alpha[c].iter().map(|a| a / total).collect()
    }

    /// Each point's most probable component.
    pub fn assign(&self, points: &[Vec<f32>]) -> Vec<usize> {
        let x: Vec<Vec<f64>> = points
            .iter()
            .map(|p| p.iter().map(|&v| (v as f64).max(FLOOR)).collect())
            .collect();
        let (_, resp) = self.e_step(&x);
        resp.iter()
            .map(|r| (0..r.len()).fold(0, |b, c| if r[c] > r[b] { c } else { b }))
            .collect()
    }
}

/// One domain-wise grouping of `eval-mtl --domain-fit`: the M-step and the
/// number of components, written `dirichlet`, `dirichlet:K`, `moments`
/// or `moments:K`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainFit {
    pub m_step: MStep,
    pub components: usize,
}

impl std::str::FromStr for DomainFit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, k) = s.split_once(':').unwrap_or((s, "1"));
        let m_step = MStep::from_name(name.trim()).ok_or_else(|| {
            format!("`{s}`: expected dirichlet[:K] or moments[:K] (K components)")
        })?;
        let components = k
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=64).contains(k))
            .ok_or_else(|| format!("`{s}`: the number of components is an integer in 1..=64"))?;
        Ok(DomainFit { m_step, components })
    }
}

impl std::fmt::Display for DomainFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.components {
            1 => write!(f, "{}", self.m_step),
            k => write!(f, "{}:{k}", self.m_step),
        }
    }
}

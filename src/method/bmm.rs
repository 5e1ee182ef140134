//! A Beta mixture fitted to the λ values, following the official DaWin
//! algorithm: k-means initialisation, 3 restarts, EM with a moment-matching
//! M-step (variance capped at m(1−m)/4), stop when the mean log-likelihood
//! moves less than `tol` or after `max_iter` iterations; keep the best restart.

use super::kmeans::kmeans;

/// λ values are clamped into (0, 1) by this much before fitting, since the
/// Beta log-density is infinite at the ends (e.g. for `selective`).
pub const CLAMP: f64 = 1e-6;
const EPS10: f64 = 10.0 * f64::EPSILON;

#[derive(Clone, Debug, PartialEq)]
pub struct BetaMixture {
    pub weights: Vec<f64>,
    pub alpha: Vec<f64>,
    pub beta: Vec<f64>,
    /// Mean log-likelihood of the best restart.
    pub log_likelihood: f64,
    pub converged: bool,
}

fn betaln(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

impl BetaMixture {
    /// Fits `k` components to `x` (values in [0, 1]).
    pub fn fit(x: &[f32], k: usize, seed: u64) -> Option<BetaMixture> {
        Self::fit_with(x, k, seed, 3, 1000, 1e-4)
    }

    pub fn fit_with(
        x: &[f32],
        k: usize,
        seed: u64,
        restarts: usize,
        max_iter: usize,
        tol: f64,
    ) -> Option<BetaMixture> {
        if x.is_empty() || k == 0 {
            return None;
        }
        let x: Vec<f64> = x
            .iter()
            .map(|&v| (v as f64).clamp(CLAMP, 1.0 - CLAMP))
            .collect();
        let points: Vec<Vec<f64>> = x.iter().map(|&v| vec![v]).collect();
        let mut best: Option<BetaMixture> = None;
        for round in 0..restarts.max(1) {
            let labels = kmeans(&points, k, seed + round as u64);
            let mut resp: Vec<Vec<f64>> = labels
                .iter()
                .map(|&l| {
                    (0..k)
                        .map(|c| if c == l { 1.0 + EPS10 } else { EPS10 })
                        .collect()
                })
                .collect();
            let mut m = BetaMixture {
                weights: vec![0.0; k],
                alpha: vec![0.0; k],
                beta: vec![0.0; k],
                log_likelihood: f64::NEG_INFINITY,
                converged: false,
            };
            m.m_step(&x, &resp);
            let mut ll = f64::NEG_INFINITY;
            for _ in 0..max_iter {
                let prev = ll;
                let (mean_ll, r) = m.e_step(&x);
                resp = r;
                m.m_step(&x, &resp);
                ll = mean_ll;
                if (ll - prev).abs() < tol {
                    m.converged = true;
                    break;
                }
            }
            // Final weights from the last responsibilities, as the reference does.
            let counts: Vec<f64> = (0..k)
                .map(|c| resp.iter().map(|r| r[c]).sum::<f64>() + EPS10)
                .collect();
            let total: f64 = counts.iter().sum();
            m.weights = counts.iter().map(|c| c / total).collect();
            m.log_likelihood = ll;
            if best.as_ref().is_none_or(|b| ll > b.log_likelihood) {
                best = Some(m);
            }
        }
        best.map(BetaMixture::sorted_by_mean)
    }

    /// The components in increasing order of mean, so component 0 is the
    /// one nearest the zero-shot model in plots, tables and samples.csv.
    fn sorted_by_mean(self) -> BetaMixture {
        let means = self.means();
        let mut order: Vec<usize> = (0..means.len()).collect();
        order.sort_by(|&i, &j| means[i].total_cmp(&means[j]));
        let pick = |v: &[f64]| order.iter().map(|&i| v[i]).collect();
        BetaMixture {
            weights: pick(&self.weights),
            alpha: pick(&self.alpha),
            beta: pick(&self.beta),
            ..self
        }
    }

    fn log_probs(&self, x: f64) -> Vec<f64> {
        (0..self.alpha.len())
            .map(|c| {
                let (a, b) = (self.alpha[c], self.beta[c]);
                (a - 1.0) * x.ln() + (b - 1.0) * (1.0 - x).ln() - betaln(a, b)
                    + self.weights[c].ln()
            })
            .collect()
    }

    /// Mean log-likelihood and responsibilities.
    fn e_step(&self, x: &[f64]) -> (f64, Vec<Vec<f64>>) {
        let mut total = 0.0;
        let resp = x
            .iter()
            .map(|&v| {
                let lp = self.log_probs(v);
                let norm = logsumexp(&lp);
                total += norm;
                lp.iter().map(|l| (l - norm).exp()).collect()
            })
            .collect();
        (total / x.len() as f64, resp)
    }

    fn m_step(&mut self, x: &[f64], resp: &[Vec<f64>]) {
        let k = self.alpha.len();
        let counts: Vec<f64> = (0..k)
            .map(|c| resp.iter().map(|r| r[c]).sum::<f64>() + EPS10)
            .collect();
        let total: f64 = counts.iter().sum();
        for c in 0..k {
            self.weights[c] = counts[c] / total;
            let s: f64 = x.iter().zip(resp).map(|(v, r)| r[c] * v).sum();
            let s2: f64 = x.iter().zip(resp).map(|(v, r)| r[c] * v * v).sum();
            let mean = s / counts[c];
            let var = (s2 / counts[c] - mean * mean).min(mean * (1.0 - mean) / 4.0) + EPS10;
            let scale = mean * (1.0 - mean) / (var + 1e-10) - 1.0;
            self.alpha[c] = scale * mean;
            self.beta[c] = scale * (1.0 - mean);
        }
    }

    /// Component means α/(α+β): the λ each component is merged at.
    pub fn means(&self) -> Vec<f64> {
        self.alpha
            .iter()
            .zip(&self.beta)
            .map(|(a, b)| a / (a + b))
            .collect()
    }

    /// Most probable component of each value.
    pub fn predict(&self, x: &[f32]) -> Vec<usize> {
        x.iter()
            .map(|&v| {
                let lp = self.log_probs((v as f64).clamp(CLAMP, 1.0 - CLAMP));
                (0..lp.len())
                    .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Σ ln p(x_i) of the values under the fitted mixture (clamped as in the fit).
    pub fn total_log_likelihood(&self, x: &[f32]) -> f64 {
        x.iter()
            .map(|&v| logsumexp(&self.log_probs((v as f64).clamp(CLAMP, 1.0 - CLAMP))))
            .sum()
    }

    /// Bayesian information criterion of the fit on `x`: −2·ln L + p·ln n,
    /// p = 3K − 1 free parameters (K α, K β, K − 1 weights).
    pub fn bic(&self, x: &[f32]) -> f64 {
        let p = 3 * self.weights.len() - 1;
        -2.0 * self.total_log_likelihood(x) + p as f64 * (x.len() as f64).ln()
    }

    /// Mixture density at `x` (for plots).
    pub fn pdf(&self, x: f64) -> f64 {
        let x = x.clamp(CLAMP, 1.0 - CLAMP);
        self.log_probs(x).iter().map(|l| l.exp()).sum()
    }
}

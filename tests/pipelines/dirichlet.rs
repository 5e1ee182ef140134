//! The multi-task Dirichlet mixture (`method::dirichlet`) against
//! references written here: ψ as the derivative of log Γ, the one-component
//! maximum-likelihood α by Newton's method on the log-likelihood itself
//! (finite differences of log Γ only), the official moment-matching
//! estimator's one-component answer (the plain mean), and two groups drawn
//! from known Dirichlets recovered by a two-component fit.

use dawin::method::dirichlet::{
    DirichletMixture, DomainFit, FitSettings, MStep, digamma, inverse_digamma,
};
use dawin::rng::SplitMix;

/// Gamma(shape, 1) by Marsaglia and Tsang (shape ≥ 1; boosted below 1).
fn gamma(r: &mut SplitMix, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = (r.uniform() as f64).max(1e-12);
        return gamma(r, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = r.normal() as f64;
        let v = (1.0 + c * x).powi(3);
        let u = (r.uniform() as f64).max(1e-12);
        if v > 0.0 && u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn draw(r: &mut SplitMix, alpha: &[f64], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let g: Vec<f64> = alpha.iter().map(|&a| gamma(r, a)).collect();
            let s: f64 = g.iter().sum();
            g.iter().map(|v| (v / s) as f32).collect()
        })
        .collect()
}

/// Mean log-likelihood of one Dirichlet over the points.
fn log_likelihood(alpha: &[f64], x: &[Vec<f32>]) -> f64 {
    let norm =
        libm::lgamma(alpha.iter().sum()) - alpha.iter().map(|&a| libm::lgamma(a)).sum::<f64>();
    let data: f64 = x
        .iter()
        .map(|p| {
            p.iter()
                .zip(alpha)
                .map(|(&v, a)| (a - 1.0) * (v as f64).ln())
                .sum::<f64>()
        })
        .sum();
    norm + data / x.len() as f64
}

/// The MLE by Newton's method in log α with a finite-difference gradient
/// and Hessian of the log-likelihood (3×3, solved by Cramer's rule).
fn newton_mle(x: &[Vec<f32>], start: [f64; 3]) -> [f64; 3] {
    let f = |u: [f64; 3]| log_likelihood(&u.map(f64::exp), x);
    let mut u = start.map(f64::ln);
    let h = 1e-4;
    for _ in 0..60 {
        let shifted = |i: usize, d: f64| {
            let mut v = u;
            v[i] += d;
            v
        };
        let g: Vec<f64> = (0..3)
            .map(|i| (f(shifted(i, h)) - f(shifted(i, -h))) / (2.0 * h))
            .collect();
        let mut hs = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                let at = |a: f64, b: f64| {
                    let mut v = u;
                    v[i] += a;
                    v[j] += b;
                    f(v)
                };
                hs[i][j] = (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4.0 * h * h);
            }
        }
        let det = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        let dh = det(hs);
        let step: Vec<f64> = (0..3)
            .map(|k| {
                let mut m = hs;
                for (row, gi) in m.iter_mut().zip(&g) {
                    row[k] = *gi;
                }
                det(m) / dh
            })
            .collect();
        // Backtracking: halve the Newton step until the likelihood rises.
        let mut t = 1.0;
        while t > 1e-6 {
            let next = [0, 1, 2].map(|k| u[k] - t * step[k]);
            if f(next) >= f(u) {
                u = next;
                break;
            }
            t /= 2.0;
        }
    }
    u.map(f64::exp)
}

#[test]
fn digamma_is_the_derivative_of_log_gamma_and_inverts() {
    for x in [0.01f64, 0.3, 1.0, 2.5, 5.9, 6.1, 40.0, 1e4] {
        let h = 1e-6 * x.max(1.0);
        let fd = (libm::lgamma(x + h) - libm::lgamma(x - h)) / (2.0 * h);
        let d = digamma(x);
        assert!(
            (d - fd).abs() <= 1e-6 * d.abs().max(1.0),
            "ψ({x}) {d} vs {fd}"
        );
        let back = inverse_digamma(d);
        assert!((back - x).abs() <= 1e-9 * x, "ψ⁻¹(ψ({x})) = {back}");
    }
}

#[test]
fn one_component_mle_matches_newton_on_the_likelihood() {
    let mut r = SplitMix(11);
    let x = draw(&mut r, &[2.0, 5.0, 1.5], 400);
    let fit =
        DirichletMixture::fit(&x, 1, MStep::MaximumLikelihood, FitSettings::default()).unwrap();
    let want = newton_mle(&x, [1.0, 1.0, 1.0]);
    for (a, w) in fit.alpha[0].iter().zip(want) {
        assert!(
            (a - w).abs() <= 1e-4 * w,
            "α {:?} vs Newton {want:?}",
            fit.alpha[0]
        );
    }
    // The likelihood is at its maximum: no nearby α does better.
    let best = log_likelihood(&fit.alpha[0], &x);
    for i in 0..3 {
        for d in [-1e-3, 1e-3] {
            let mut a = fit.alpha[0].clone();
            a[i] *= 1.0 + d;
            assert!(log_likelihood(&a, &x) <= best + 1e-12);
        }
    }
    assert!((fit.log_likelihood - best).abs() <= 1e-9);
}

#[test]
fn moment_matching_with_one_component_is_the_plain_mean() {
    let mut r = SplitMix(5);
    let x = draw(&mut r, &[0.7, 3.0, 1.2, 0.4], 257);
    let fit = DirichletMixture::fit(&x, 1, MStep::MomentMatching, FitSettings::default()).unwrap();
    for (j, m) in fit.mean(0).iter().enumerate() {
        let plain = x.iter().map(|p| p[j] as f64).sum::<f64>() / x.len() as f64;
        assert!((m - plain).abs() <= 1e-12, "coordinate {j}: {m} vs {plain}");
    }
}

fn two_groups(seed: u64) -> ([f64; 3], [f64; 3], Vec<Vec<f32>>) {
    let (a, b) = ([20.0, 2.0, 2.0], [2.0, 3.0, 20.0]);
    let mut r = SplitMix(seed);
    let mut x = draw(&mut r, &a, 300);
    x.extend(draw(&mut r, &b, 200));
    (a, b, x)
}

#[test]
fn two_groups_are_recovered_by_the_maximum_likelihood_mixture() {
    let (a, _, x) = two_groups(3);
    let truth: Vec<usize> = (0..500).map(|i| (i >= 300) as usize).collect();
    {
        let m = MStep::MaximumLikelihood;
        let fit = DirichletMixture::fit(&x, 2, m, FitSettings::default()).unwrap();
        let labels = fit.assign(&x);
        // Components may come in either order.
        let same = labels.iter().zip(&truth).filter(|(l, t)| l == t).count();
        let agree = same.max(500 - same);
        assert!(agree >= 495, "{m}: {agree}/500 assigned to their group");
        let first = if same >= 250 { 0 } else { 1 };
        let want_a = a.map(|v| v / 24.0);
        for (g, w) in fit.mean(first).iter().zip(want_a) {
            assert!(
                (g - w).abs() <= 0.02,
                "{m}: mean {:?} vs {want_a:?}",
                fit.mean(first)
            );
        }
        assert!(
            (fit.weights[first] - 0.6).abs() <= 0.02,
            "{m}: {:?}",
            fit.weights
        );
        assert!(fit.converged, "{m}");
    }
}

#[test]
fn domain_fits_parse_and_name_themselves() {
    let f: DomainFit = "dirichlet:3".parse().unwrap();
    assert_eq!((f.m_step, f.components), (MStep::MaximumLikelihood, 3));
    assert_eq!(f.to_string(), "dirichlet:3");
    assert_eq!(
        "moments".parse::<DomainFit>().unwrap().to_string(),
        "moments"
    );
    for bad in ["dirichlet:0", "gauss:2", "moments:x", "dirichlet:65"] {
        assert!(bad.parse::<DomainFit>().is_err(), "{bad}");
    }
}

/// The official multi-task code's EM written out (its `DirichletMixtureModel`
/// with the k-means start taken from dawin's k-means, seeds 0..5): E-step
/// log w + log Dir(x | α), M-step α = Σ r·x / (Σ r + 1e-14), weights
/// normalised, stop when the mean log-likelihood moves less than 1e-5.
fn official_moments(x: &[Vec<f32>], k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let pts: Vec<Vec<f64>> = x
        .iter()
        .map(|p| p.iter().map(|&v| (v as f64).max(1e-12)).collect())
        .collect();
    let (n, d) = (pts.len(), pts[0].len());
    let m_step = |resp: &[Vec<f64>]| {
        let nk: Vec<f64> = (0..k)
            .map(|c| resp.iter().map(|r| r[c]).sum::<f64>() + 1e-14)
            .collect();
        let total: f64 = nk.iter().sum();
        let alpha: Vec<Vec<f64>> = (0..k)
            .map(|c| {
                (0..d)
                    .map(|j| (0..n).map(|i| resp[i][c] * pts[i][j]).sum::<f64>() / nk[c])
                    .collect()
            })
            .collect();
        (nk.iter().map(|v| v / total).collect::<Vec<f64>>(), alpha)
    };
    let log_dir = |v: &[f64], a: &[f64]| {
        libm::lgamma(a.iter().sum()) - a.iter().map(|&x| libm::lgamma(x)).sum::<f64>()
            + v.iter()
                .zip(a)
                .map(|(x, a)| (a - 1.0) * x.ln())
                .sum::<f64>()
    };
    let mut best: Option<(f64, Vec<f64>, Vec<Vec<f64>>)> = None;
    for seed in 0..5u64 {
        let labels = dawin::method::kmeans::kmeans(&pts, k, seed);
        let resp: Vec<Vec<f64>> = labels
            .iter()
            .map(|&l| (0..k).map(|c| if c == l { 1.0 } else { 1e-14 }).collect())
            .collect();
        let (mut w, mut alpha) = m_step(&resp);
        let mut ll = f64::NEG_INFINITY;
        for _ in 0..500 {
            let mut total = 0.0;
            let resp: Vec<Vec<f64>> = pts
                .iter()
                .map(|v| {
                    let lp: Vec<f64> = (0..k).map(|c| w[c].ln() + log_dir(v, &alpha[c])).collect();
                    let top = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let norm = top + lp.iter().map(|l| (l - top).exp()).sum::<f64>().ln();
                    total += norm;
                    lp.iter().map(|l| (l - norm).exp()).collect()
                })
                .collect();
            (w, alpha) = m_step(&resp);
            let prev = ll;
            ll = total / n as f64;
            if (ll - prev).abs() < 1e-5 {
                break;
            }
        }
        let final_ll = pts
            .iter()
            .map(|v| {
                let lp: Vec<f64> = (0..k).map(|c| w[c].ln() + log_dir(v, &alpha[c])).collect();
                let top = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                top + lp.iter().map(|l| (l - top).exp()).sum::<f64>().ln()
            })
            .sum::<f64>()
            / n as f64;
        if best.as_ref().is_none_or(|b| final_ll > b.0) {
            best = Some((final_ll, w, alpha));
        }
    }
    let (_, w, alpha) = best.unwrap();
    (w, alpha)
}

/// The moment-matching mixture is the official estimator: the same
/// weights and components as the EM written out above. On two well-apart
/// groups its components stay close to the overall mean (its flat
/// "concentrations", which sum to 1, hardly tell points apart), which is
/// why the official domain-wise coefficient is near the plain mean.
#[test]
fn moment_matching_mixture_is_the_official_estimator() {
    let (_, _, x) = two_groups(3);
    for k in [2, 3] {
        let fit =
            DirichletMixture::fit(&x, k, MStep::MomentMatching, FitSettings::default()).unwrap();
        let (w, alpha) = official_moments(&x, k);
        for c in 0..k {
            assert!(
                (fit.weights[c] - w[c]).abs() <= 1e-9,
                "K {k}: {:?} vs {w:?}",
                fit.weights
            );
            for (g, r) in fit.alpha[c].iter().zip(&alpha[c]) {
                assert!((g - r).abs() <= 1e-9, "K {k}: {:?} vs {alpha:?}", fit.alpha);
            }
        }
    }
}

//! Class probabilities of logit rows on the host, in f64: what the λ rules
//! built on losses and confidences, the output ensembles and the
//! statistics of `summary.json` read.

/// log softmax(z / t) of one row. A row holding a NaN gives NaNs.
pub fn log_softmax(z: &[f32], t: f32) -> Vec<f64> {
    let t = t as f64;
    let m = z
        .iter()
        .map(|&v| v as f64 / t)
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z
        .iter()
        .map(|&v| (v as f64 / t - m).exp())
        .sum::<f64>()
        .ln();
    z.iter().map(|&v| v as f64 / t - lse).collect()
}

/// softmax(z / t) of one row.
pub fn softmax(z: &[f32], t: f32) -> Vec<f64> {
    log_softmax(z, t).into_iter().map(f64::exp).collect()
}

/// Jensen–Shannon divergence (nats) of two distributions over the same
/// classes: the mean KL of each to their midpoint, in [0, ln 2]. Zero
/// probabilities add nothing (0·log 0 = 0).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl_to_mid = |a: f64, b: f64| {
        if a > 0.0 {
            a * (2.0 * a / (a + b)).ln()
        } else {
            0.0
        }
    };
    let js: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| kl_to_mid(a, b) + kl_to_mid(b, a))
        .sum();
    js / 2.0
}

/// Cross-entropy −Σ_c q_c · log softmax(z)_c of one row against a target
/// distribution `q` (a one-hot target gives −log p(y)).
pub fn cross_entropy(z: &[f32], q: &Target) -> f64 {
    let lp = log_softmax(z, 1.0);
    match q {
        Target::Hard(y) => -lp[*y],
        Target::Soft(q) => -q.iter().zip(&lp).map(|(a, b)| a * b).sum::<f64>(),
    }
}

/// What a loss is measured against: a class or a distribution over classes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Hard(usize),
    Soft(Vec<f64>),
}

/// Index of the first largest value.
pub fn argmax<T: Copy + PartialOrd>(r: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in r.iter().enumerate() {
        if x > &r[best] {
            best = i;
        }
    }
    best
}

/// The largest and the second largest value of a row (−∞ where absent).
pub fn top_two(r: &[f64]) -> (f64, f64) {
    r.iter()
        .fold((f64::NEG_INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            if v > a {
                (v, a)
            } else if v > b {
                (a, v)
            } else {
                (a, b)
            }
        })
}

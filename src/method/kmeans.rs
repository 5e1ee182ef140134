//! k-means (k-means++ seeding, Lloyd iterations) over points of any
//! dimension: the hard assignment that starts the Beta and Dirichlet
//! mixtures' EM, as the official code starts its mixtures.

use crate::rng::SplitMix;

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// The next k-means++ centre: a point drawn with probability proportional
/// to its squared distance from the nearest centre so far.
fn next_center(x: &[Vec<f64>], centers: &[Vec<f64>], r: &mut SplitMix) -> usize {
    let n = x.len();
    let d: Vec<f64> = x
        .iter()
        .map(|v| {
            centers
                .iter()
                .map(|c| squared_distance(v, c))
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let total: f64 = d.iter().sum();
    if total <= 0.0 {
        return (r.next_u64() % n as u64) as usize;
    }
    let mut t = r.uniform() as f64 * total;
    for (i, di) in d.iter().enumerate() {
        if t < *di {
            return i;
        }
        t -= di;
    }
    n - 1
}

/// Labels in 0..k of `x` (non-empty) after k-means from seeded k-means++
/// centres; at most 300 Lloyd iterations.
pub fn kmeans(x: &[Vec<f64>], k: usize, seed: u64) -> Vec<usize> {
    let mut r = SplitMix(seed);
    let n = x.len();
    let mut centers = vec![x[(r.next_u64() % n as u64) as usize].clone()];
    while centers.len() < k {
        let pick = next_center(x, &centers, &mut r);
        centers.push(x[pick].clone());
    }
    let mut labels = vec![0; n];
    for _ in 0..300 {
        let mut changed = false;
        for (i, v) in x.iter().enumerate() {
            let best = (0..k)
                .min_by(|&a, &b| {
                    squared_distance(v, &centers[a]).total_cmp(&squared_distance(v, &centers[b]))
                })
                .unwrap_or(0);
            changed |= labels[i] != best;
            labels[i] = best;
        }
        for (c, center) in centers.iter_mut().enumerate() {
            let members: Vec<&Vec<f64>> = x
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == c)
                .map(|(v, _)| v)
                .collect();
            if members.is_empty() {
                continue;
            }
            for (j, cj) in center.iter_mut().enumerate() {
                *cj = members.iter().map(|v| v[j]).sum::<f64>() / members.len() as f64;
            }
        }
        if !changed {
            break;
        }
    }
    labels
}

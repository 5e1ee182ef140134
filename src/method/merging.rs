//! Static multi-task merges, the baselines of `eval-mtl`: TIES-merging
//! (trim each task vector to its largest entries, elect a sign per
//! parameter, average the entries that agree with it). Task arithmetic
//! and weight averaging are plain weighted sums and live in `multitask`.
//!
//! Task vectors are taken over the model's parameter ranges only (never
//! the layout's padding), as the official code flattens the state dict.

use crate::choice::{Choice, Named};
use std::ops::Range;

/// How TIES aggregates the entries that agree with the elected sign.
/// Each value's meaning is its help in [`TiesMerge::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TiesMerge {
    Mean,
    Sum,
}

impl Choice for TiesMerge {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            TiesMerge::Mean,
            "mean",
            "Their mean (the TIES paper's \"disjoint mean\")",
        ),
        Named::new(
            TiesMerge::Sum,
            "sum",
            "Their sum (the official DaWin script's dis-sum)",
        ),
    ];
}

crate::display_choice!(TiesMerge);

/// The magnitude threshold that keeps the top `keep` fraction of `tau`,
/// as the official `topk_values_mask`: with d entries, the (d − ⌊d·keep⌋)-th
/// smallest |τ|; entries at or above it are kept (ties keep a few more).
pub fn trim_threshold(tau: &[f32], keep: f64) -> f32 {
    let d = tau.len();
    let k = d - (d as f64 * keep) as usize;
    if d == 0 || k == 0 {
        return 0.0;
    }
    let mut mags: Vec<f32> = tau.iter().map(|v| v.abs()).collect();
    let (_, kth, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
    *kth
}

/// The TIES task vector of `taus` (one flat task vector per task, equal
/// lengths): trimmed to the top `keep` fraction per task, the sign of each
/// entry elected by the sum of the trimmed values (a zero sum takes the
/// majority of the elected signs), then the agreeing entries merged.
pub fn ties(taus: &[Vec<f32>], keep: f64, merge: TiesMerge) -> Vec<f32> {
    let Some(d) = taus.first().map(Vec::len) else {
        return Vec::new();
    };
    let thresholds: Vec<f32> = taus.iter().map(|t| trim_threshold(t, keep)).collect();
    let trimmed = |t: usize, j: usize| {
        let v = taus[t][j];
        if v.abs() >= thresholds[t] { v } else { 0.0 }
    };
    // torch.sign: 0 stays 0.
    let sgn = |s: f64| (s > 0.0) as i8 as f32 - (s < 0.0) as i8 as f32;
    let mut sign: Vec<f32> = (0..d)
        .map(|j| sgn((0..taus.len()).map(|t| trimmed(t, j) as f64).sum()))
        .collect();
    let majority = sgn(sign.iter().map(|&s| s as f64).sum());
    sign.iter_mut()
        .filter(|s| **s == 0.0)
        .for_each(|s| *s = majority);
    (0..d)
        .map(|j| {
            let agreeing = (0..taus.len())
                .map(|t| trimmed(t, j))
                .filter(|v| if sign[j] > 0.0 { *v > 0.0 } else { *v < 0.0 });
            let (sum, count) = agreeing.fold((0f64, 0usize), |(s, n), v| (s + v as f64, n + 1));
            match merge {
                TiesMerge::Sum => sum as f32,
                TiesMerge::Mean => (sum / count.max(1) as f64) as f32,
            }
        })
        .collect()
}

/// The entries of `flat` over `ranges`, concatenated.
pub fn gather(flat: &[f32], ranges: &[Range<usize>]) -> Vec<f32> {
    ranges
        .iter()
        .flat_map(|r| flat[r.clone()].iter().copied())
        .collect()
}

/// Writes `values` (concatenated over `ranges`) back into `flat`.
pub fn scatter(flat: &mut [f32], ranges: &[Range<usize>], values: &[f32]) {
    let mut at = 0;
    for r in ranges {
        flat[r.clone()].copy_from_slice(&values[at..at + r.len()]);
        at += r.len();
    }
}

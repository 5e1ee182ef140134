//! The multi-task maths of `eval-mtl`: each sample's coefficients over T
//! task vectors, c = softmax_t(−H_t(x)); their mean (the domain-wise
//! model's); the merge θ0 + Σ_t k_t·(θ_t − θ0) built on an executor; and
//! the TIES-merged model. The pipeline that runs them is
//! `pipelines::mtl`.

use super::merging::TiesMerge;
use crate::error::Result;
use crate::exec::Executor;
use crate::model::Model;
use crate::model::placed::PlacedModel;
use crate::model::stack::ModelStack;
use crate::ops::{add_scaled_diff::AddScaledDiff, lerp::Lerp};

/// Softmax over tasks of −H_t per sample (a NaN entropy counts as maximal).
pub fn coefficients(entropies: &[Vec<f64>], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            let neg: Vec<f64> = entropies.iter().map(|h| -h[i]).collect();
            let m = neg.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = neg.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| (v / z) as f32).collect()
        })
        .collect()
}

/// The mean coefficient vector over the evaluated samples: the domain-wise
/// mode's one merged model (the official default, a one-component mixture).
pub fn mean_coefficients(coefficients: &[Vec<f32>], readable: &[usize]) -> Vec<f32> {
    let t_count = coefficients.first().map_or(0, Vec::len);
    (0..t_count)
        .map(|t| {
            let s: f64 = readable.iter().map(|&i| coefficients[i][t] as f64).sum();
            (s / readable.len().max(1) as f64) as f32
        })
        .collect()
}

/// Builds `work = θ0 + Σ_t k_t·(θ_t − θ0)` from a stack's base and tasks:
/// a copy of θ0, then one `add_scaled_diff` per task (the official code's
/// per-sample merge).
pub fn merge_into(
    ex: &dyn Executor,
    work: &PlacedModel,
    stack: &ModelStack,
    k: impl Fn(usize) -> f32,
) -> Result<()> {
    let (out, w0) = (*work.flat, *stack.model(0).flat);
    ex.run(Lerp {
        out,
        w0,
        w1: w0,
        lambda: 0.0,
    })?;
    for t in 1..stack.sets() {
        ex.run(AddScaledDiff {
            out,
            w0,
            w1: *stack.model(t).flat,
            k: k(t - 1),
        })?;
    }
    Ok(())
}

/// θ0 + scale·TIES(θ_t − θ0) over the image tower's parameters: each task
/// vector is the tower's every tensor flattened (the projection included,
/// the classification head not), as the official code's
/// `state_dict_to_vector` of the image encoder, so the top `keep` fraction
/// is taken over the tower alone. The head stays the base's (the evaluated
/// task's).
pub fn ties_model(
    base: &Model,
    tasks: &[Model],
    (keep, merge, scale): (f64, TiesMerge, f32),
) -> Model {
    let ranges: Vec<std::ops::Range<usize>> = base
        .params
        .named()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("classification_head"))
        .map(|(_, r)| r.clone())
        .collect();
    let theta0 = super::merging::gather(&base.flat, &ranges);
    let taus: Vec<Vec<f32>> = tasks
        .iter()
        .map(|m| {
            let th = super::merging::gather(&m.flat, &ranges);
            th.iter().zip(&theta0).map(|(a, b)| a - b).collect()
        })
        .collect();
    let tv = super::merging::ties(&taus, keep, merge);
    let merged: Vec<f32> = theta0.iter().zip(&tv).map(|(a, v)| a + scale * v).collect();
    let mut m = base.clone();
    super::merging::scatter(&mut m.flat, &ranges, &merged);
    m
}

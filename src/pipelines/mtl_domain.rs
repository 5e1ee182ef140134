//! `eval-mtl --domain-fit`: the domain-wise merge from a Dirichlet mixture
//! over the per-sample coefficient vectors (`method::dirichlet`) instead of
//! their plain mean. Each sample takes its most probable component and is
//! classified by the model θ0 + s·T·Σ_t m_t·τ_t at that component's mean
//! m: K merged models, each run on its own members. The caller merges and
//! runs a model (`eval_at`), so this room needs nothing of the multi-task
//! pipeline's.

use crate::error::Result;
use crate::method::dirichlet::{DirichletMixture, DomainFit, FitSettings};
use serde_json::{Value, json};

/// Logits per method name, one row per dataset index.
pub type NamedLogits = Vec<(String, Vec<f32>)>;

/// Runs the model merged at coefficients `mean` on the samples `members`
/// (dataset indices), labelled `name`; its logits at dataset indices.
pub type EvalAt<'a> = dyn FnMut(&[f64], &[usize], &str) -> Result<Vec<f32>> + 'a;

/// Logits of every readable sample under each fit (rows at dataset
/// indices of a `[samples, classes]` table, named `dawin-domain:FIT`), and
/// what each fit found. `coefficients` holds every sample's, by index.
pub fn fitted_merges(
    fits: &[DomainFit],
    readable: &[usize],
    coefficients: &[Vec<f32>],
    (samples, classes): (usize, usize),
    eval_at: &mut EvalAt,
) -> Result<(NamedLogits, Value)> {
    let points: Vec<Vec<f32>> = readable.iter().map(|&i| coefficients[i].clone()).collect();
    let mut logits = Vec::new();
    let mut records = Vec::new();
    for fit in fits {
        let name = format!("dawin-domain:{fit}");
        let mix =
            DirichletMixture::fit(&points, fit.components, fit.m_step, FitSettings::default())
                .ok_or_else(|| {
                    crate::invalid!(
                        "--domain-fit {fit} needs at least two tasks and one readable sample"
                    )
                })?;
        let labels = mix.assign(&points);
        let mut all = vec![0.0; samples * classes];
        for comp in 0..mix.weights.len() {
            let members: Vec<usize> = readable
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == comp)
                .map(|(i, _)| *i)
                .collect();
            if members.is_empty() {
                continue;
            }
            let l = eval_at(&mix.mean(comp), &members, &name)?;
            for &i in &members {
                let row = i * classes..(i + 1) * classes;
                all[row.clone()].copy_from_slice(&l[row]);
            }
        }
        logits.push((name, all));
        records.push(record(fit, &mix, &labels));
    }
    Ok((logits, Value::Array(records)))
}

/// summary.json's account of one fit.
fn record(fit: &DomainFit, mix: &DirichletMixture, labels: &[usize]) -> Value {
    let components: Vec<Value> = (0..mix.weights.len())
        .map(|c| {
            json!({
                "weight": mix.weights[c],
                "alpha": mix.alpha[c],
                "mean": mix.mean(c),
                "members": labels.iter().filter(|l| **l == c).count(),
            })
        })
        .collect();
    json!({
        "method": format!("dawin-domain:{fit}"),
        "m_step": fit.m_step.to_string(),
        "components": components,
        "log_likelihood": mix.log_likelihood,
        "iterations": mix.iterations,
        "converged": mix.converged,
    })
}

//! `eval-mtl --domain-fit`: the domain-wise merge from a Dirichlet mixture
//! over the per-sample coefficient vectors (`method::dirichlet`) instead of
//! their plain mean. Each sample takes its most probable component and is
//! classified by the model θ0 + s·T·Σ_t m_t·τ_t at that component's mean
//! m: K merged models, each run on its own members.

use crate::data::dataset::Dataset;
use crate::error::Result;
use crate::exec::Executor;
use crate::method::dirichlet::{DirichletMixture, DomainFit, FitSettings};
use crate::pipelines::mtl::{MtlOptions, Resident, model_logits};
use serde_json::{Value, json};

/// Logits per method name, one row per dataset index.
type NamedLogits = Vec<(String, Vec<f32>)>;

/// Logits of every readable sample under each asked fit (rows at dataset
/// indices, named `dawin-domain:FIT`), and what each fit found.
pub(super) fn fitted_merges(
    ex: &dyn Executor,
    r: &Resident,
    data: &Dataset,
    readable: &[usize],
    o: &MtlOptions,
    coefficients: &[Vec<f32>],
) -> Result<(NamedLogits, Value)> {
    let points: Vec<Vec<f32>> = readable.iter().map(|&i| coefficients[i].clone()).collect();
    let mut logits = Vec::new();
    let mut records = Vec::new();
    for fit in &o.domain_fits {
        let name = format!("dawin-domain:{fit}");
        let mix =
            DirichletMixture::fit(&points, fit.components, fit.m_step, FitSettings::default())
                .ok_or_else(|| {
                    crate::invalid!(
                        "--domain-fit {fit} needs at least two tasks and one readable sample"
                    )
                })?;
        let labels = mix.assign(&points);
        logits.push((
            name.clone(),
            component_logits(ex, r, data, readable, o, (&mix, &labels), &name)?,
        ));
        records.push(record(fit, &mix, &labels));
    }
    Ok((logits, Value::Array(records)))
}

/// Each component's merged model on its members.
fn component_logits(
    ex: &dyn Executor,
    r: &Resident,
    data: &Dataset,
    readable: &[usize],
    o: &MtlOptions,
    (mix, labels): (&DirichletMixture, &[usize]),
    name: &str,
) -> Result<Vec<f32>> {
    let c = r.work.spec.classes.unwrap_or(0);
    let mut all = vec![0.0; data.len() * c];
    let scale = o.scale * r.tasks() as f32;
    for comp in 0..mix.weights.len() {
        let members: Vec<usize> = readable
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l == comp)
            .map(|(i, _)| *i)
            .collect();
        if members.is_empty() {
            continue;
        }
        let mean = mix.mean(comp);
        r.merge(ex, |t| scale * mean[t] as f32)?;
        let l = model_logits(ex, &r.work, data, &members, o, name)?;
        for &i in &members {
            all[i * c..(i + 1) * c].copy_from_slice(&l[i * c..(i + 1) * c]);
        }
    }
    Ok(all)
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

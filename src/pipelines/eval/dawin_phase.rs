//! The DaWin phase of `eval`: the Beta mixture a `bmm` run fits, then the
//! DaWin pass under the chosen interpolation.

use crate::error::Result;
use crate::method::bmm::BetaMixture;
use crate::method::engine::Engine;
use crate::method::interp::{BMM_AUTO_MAX_K, Groups, Interp, dawin_logits};
use crate::method::lambda::{self, Entropies};
use crate::method::methods::Method;
use crate::pipelines::expertise::Samples;
use crate::pipelines::setup::Setup;
use serde_json::Value;

use super::lambda_phase::Lambdas;
use crate::pipelines::options::EvalOptions;

/// The λ values a `bmm` run fits: the whole set's when a merged expertise
/// file is given, else the evaluated samples'.
pub(super) fn fit_values(
    o: &EvalOptions,
    lambda: &[f32],
    whole: Option<&Entropies>,
    offset: (f64, f64),
) -> Result<Vec<f32>> {
    match whole {
        Some(full) => lambda::lambdas_of_entropies(o.rule, full, offset),
        None => Ok(lambda.to_vec()),
    }
}

/// The Beta mixture of a `bmm:K` run.
pub(super) fn fit_mixture(o: &EvalOptions, k: usize, fit_on: &[f32]) -> Result<BetaMixture> {
    let n = fit_on.len();
    if k > n {
        return Err(crate::invalid!(
            "--interp bmm:{k} asks for {k} components from {n} λ values: use K ≤ {n} (the official runs use 3)"
        ));
    }
    if n < 5 * k {
        crate::reporter::warn(&format!(
            "bmm:{k} on {n} λ values: under 5 samples per component, the fit is loose (the official runs use K = 3)"
        ));
    }
    BetaMixture::fit(fit_on, k, o.seed)
        .ok_or_else(|| crate::invalid!("cannot fit a mixture to no λ values"))
}

/// `bmm:auto`: fits K = 1…8 (at most one per 5 values) and keeps the
/// lowest BIC; each K's log-likelihood and BIC go to summary.json.
pub(super) fn fit_mixture_auto(o: &EvalOptions, fit_on: &[f32]) -> Result<(BetaMixture, Value)> {
    let top = BMM_AUTO_MAX_K.min(fit_on.len() / 5).max(1);
    let mut best: Option<(f64, BetaMixture)> = None;
    let mut table = Vec::new();
    for k in 1..=top {
        let m = BetaMixture::fit(fit_on, k, o.seed)
            .ok_or_else(|| crate::invalid!("cannot fit a mixture to no λ values"))?;
        let bic = m.bic(fit_on);
        let ll = m.total_log_likelihood(fit_on);
        table.push(serde_json::json!({"k": k, "log_likelihood": ll, "bic": bic}));
        if best.as_ref().is_none_or(|(b, _)| bic < *b) {
            best = Some((bic, m));
        }
    }
    let (_, m) = best.expect("K = 1 was fitted");
    let chosen = m.weights.len();
    Ok((
        m,
        serde_json::json!({"criterion": "bic", "chosen_k": chosen, "fits": table}),
    ))
}

/// What the DaWin pass produced.
#[derive(Default)]
pub(super) struct DawinPass {
    /// Projected logits, one row per evaluated sample.
    pub(super) logits: Option<Vec<f32>>,
    pub(super) bmm: Option<BetaMixture>,
    pub(super) components: Option<Vec<usize>>,
    /// Every K `bmm:auto` fitted, with its log-likelihood and BIC.
    pub(super) selection: Option<Value>,
}

pub(super) fn dawin_pass(
    engine: &mut Engine,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    lambda: &[f32],
    mixture: Option<BetaMixture>,
) -> Result<DawinPass> {
    let components = mixture.as_ref().map(|m| m.predict(lambda));
    let means: Option<Vec<f32>> = mixture
        .as_ref()
        .map(|m| m.means().iter().map(|&v| v as f32).collect());
    let groups = components
        .as_deref()
        .zip(means.as_deref())
        .map(|(component, means)| Groups { component, means });
    let pass = o.pass();
    let raw = dawin_logits(
        engine,
        &s.data,
        &smp.indices,
        lambda,
        o.interp,
        groups,
        pass,
    )?;
    Ok(DawinPass {
        logits: Some(o.projection.apply(&raw, s.classes_raw)),
        bmm: mixture,
        components,
        selection: None,
    })
}

pub(super) fn dawin_phase(
    engine: &mut Engine,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    l: &Lambdas,
) -> Result<DawinPass> {
    let _phase = crate::exec::range(engine.ex, "dawin pass");
    if !o.methods.contains(&Method::Dawin) {
        return Ok(DawinPass::default());
    }
    let (mixture, selection) = match o.interp {
        Interp::Bmm(k) => {
            let fit_on = fit_values(o, &l.lambda, l.whole.as_ref(), l.offset)?;
            (Some(fit_mixture(o, k, &fit_on)?), None)
        }
        Interp::BmmAuto => {
            let fit_on = fit_values(o, &l.lambda, l.whole.as_ref(), l.offset)?;
            let (m, table) = fit_mixture_auto(o, &fit_on)?;
            (Some(m), Some(table))
        }
        Interp::Batchwise(b) if o.shard.is_some() && !s.shard.start.is_multiple_of(b) => {
            crate::reporter::warn(&format!(
                "--interp batchwise:{b} on a shard starting at sample {}: its batches start there, not where a whole run's do, so shards differ from one run (use a shard size that is a multiple of {b})",
                s.shard.start
            ));
            (None, None)
        }
        _ => (None, None),
    };
    let mut pass = dawin_pass(engine, o, s, smp, &l.lambda, mixture)?;
    pass.selection = selection;
    Ok(pass)
}

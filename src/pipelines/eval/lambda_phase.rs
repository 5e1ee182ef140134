//! The λ phase of `eval`: both models' entropies on the evaluated samples,
//! λ per sample under the chosen rule (with the whole set's constants from
//! a merged expertise file), and how well λ tracks the oracle.

use crate::choice::Choice;
use crate::error::Result;
use crate::exec::Executor;
use crate::method::entropy::{entropies, warn_nan};
use crate::method::lambda::{self, Entropies};
use crate::method::methods::{Method, argmax_rows};
use crate::pipelines::expertise::Samples;
use crate::pipelines::setup::{Setup, check_expertise_from};
use crate::pipelines::shard::read_expertise;

use crate::pipelines::options::EvalOptions;

/// Both models' entropies on the evaluated samples (NaN rows reported).
pub(super) fn sample_entropies(
    ex: &dyn Executor,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
) -> Result<Entropies> {
    let c = s.classes;
    let (pt, nan_pt) = entropies(ex, &smp.pt, c, o.temperature.0)?;
    let (ft, nan_ft) = entropies(ex, &smp.ft, c, o.temperature.1)?;
    warn_nan(&s.data, &smp.indices, "pretrained", &nan_pt);
    warn_nan(&s.data, &smp.indices, "fine-tuned", &nan_ft);
    Ok(Entropies { pt, ft })
}

/// λ per sample, and the entropy-offset constants (b, w) it used: over
/// the whole set when a merged expertise file is given. `--wise-alpha`
/// scales every rule's λ but the random baselines', as the official code.
pub(super) fn lambdas(
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
    ent: &Entropies,
    whole: Option<&Entropies>,
) -> (Vec<f32>, (f64, f64)) {
    let offset = lambda::offset_constants(whole.unwrap_or(ent));
    let inputs = rule_inputs(o, s, smp, ent, offset);
    let mut l = lambda::lambdas(o.rule, &inputs);
    if let Some(a) = o.wise_alpha.filter(|_| !o.rule.is_random()) {
        l.iter_mut().for_each(|v| *v *= a);
    }
    (l, offset)
}

/// What the λ rules read, from the expertise pass's samples.
pub(super) fn rule_inputs<'a>(
    o: &EvalOptions,
    s: &Setup,
    smp: &'a Samples,
    ent: &'a Entropies,
    offset: (f64, f64),
) -> lambda::Inputs<'a> {
    lambda::Inputs {
        logits_pt: &smp.pt,
        logits_ft: &smp.ft,
        classes: s.classes,
        labels: &smp.labels,
        entropies: ent,
        offset,
        temperature: o.temperature,
        raw_max: Some((&smp.raw_max.0, &smp.raw_max.1)),
        merged: smp
            .wise
            .get(&Method::WiseFt(o.pseudo_alpha()).name())
            .map(Vec::as_slice),
        indices: &smp.indices,
        seed: o.seed,
        t3: o.t3,
    }
}

/// λ per sample and what it came from.
pub(super) struct Lambdas {
    pub(super) entropies: Entropies,
    pub(super) lambda: Vec<f32>,
    pub(super) offset: (f64, f64),
    /// (b, w) over the losses, for the loss rules with an offset.
    pub(super) loss_offset: Option<(f64, f64)>,
    /// The oracle's λ (from the labels), which the diagnostics compare with.
    pub(super) oracle: Vec<f32>,
    /// The whole set's entropies, from `--expertise-from`.
    pub(super) whole: Option<Entropies>,
}

/// T³'s constants set for another rule would change nothing: refused
/// before the passes rather than ignored.
pub(super) fn check_rule_constants(o: &EvalOptions) -> Result<()> {
    if o.t3 != lambda::T3Shape::default() && o.rule != lambda::LambdaRule::T3 {
        return Err(crate::invalid!(
            "t3's constants (γ, range) are set but the λ rule is {}: they apply to the t3 rule only",
            o.rule.name()
        ));
    }
    Ok(())
}

/// The loss rules with an offset need every sample's logits for their
/// constants, which a merged expertise file (entropies only) lacks; a
/// shard alone would give other constants than the whole set.
pub(super) fn check_set_level(o: &EvalOptions) -> Result<()> {
    if !o.rule.loss_offset() {
        return Ok(());
    }
    if o.expertise_from.is_some() {
        return Err(crate::invalid!(
            "--lambda-rule {} sets its offset from every sample's losses, which --expertise-from (entropies only) does not hold: run it without --shard",
            o.rule.name()
        ));
    }
    if o.shard.is_some() {
        crate::reporter::warn(&format!(
            "--lambda-rule {} on a shard: its loss offset (b, w) comes from this shard's samples only, so shards differ from one whole run",
            o.rule.name()
        ));
    }
    Ok(())
}

pub(super) fn lambda_phase(
    ex: &dyn Executor,
    o: &EvalOptions,
    s: &Setup,
    smp: &Samples,
) -> Result<Lambdas> {
    let _phase = crate::exec::range(ex, "lambda");
    check_set_level(o)?;
    let whole = match &o.expertise_from {
        Some(p) => {
            // Entropies are over the evaluated label space's classes.
            let classes = match smp.indices.len() {
                0 => s.pt.spec.classes.unwrap_or(1),
                n => smp.pt.len() / n,
            };
            let (whole, found) = read_expertise(p, s.data.len(), classes)?;
            check_expertise_from(p, &s.expertise_provenance(o), found)?;
            Some(whole)
        }
        None => None,
    };
    let entropies = sample_entropies(ex, o, s, smp)?;
    let (lambda, offset) = lambdas(o, s, smp, &entropies, whole.as_ref());
    let inputs = rule_inputs(o, s, smp, &entropies, offset);
    let loss_offset = lambda::loss_offset_constants(o.rule, &inputs);
    let oracle = lambda::lambdas(lambda::LambdaRule::Oracle, &inputs);
    Ok(Lambdas {
        oracle,
        entropies,
        lambda,
        offset,
        loss_offset,
        whole,
    })
}

/// Whether the pretrained and the fine-tuned model were right on each
/// evaluated sample (their top class on the projected logits).
pub(super) fn model_correct(s: &Setup, smp: &Samples) -> (Vec<bool>, Vec<bool>) {
    let correct = |z: &[f32]| -> Vec<bool> {
        let pred = argmax_rows(z, s.classes);
        pred.iter()
            .zip(&smp.labels)
            .map(|(p, y)| *p as i64 == *y)
            .collect()
    };
    (correct(&smp.pt), correct(&smp.ft))
}

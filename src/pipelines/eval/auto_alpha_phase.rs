//! `wise-ft:auto`: the WiSE-FT α of lowest mean prediction entropy on the
//! evaluated samples (AdaWiSE-style, a test-time static baseline beside
//! WiSE-FT's fixed α), found by golden-section search over [0, 1]; each
//! step is one pass of the merged model over the samples.

use crate::error::{Error, Result};
use crate::method::engine::Engine;
use crate::method::entropy::entropies;
use crate::method::methods::Method;
use crate::method::search::golden_section_min;
use crate::pipelines::expertise::Samples;
use crate::pipelines::options::EvalOptions;
use crate::pipelines::setup::Setup;
use serde_json::{Value, json};

/// How finely α is searched for.
const TOLERANCE: f64 = 1e-3;

/// Fits `wise-ft:auto`'s α when `--methods` has it and adds its merged
/// model's logits to `smp.wise`; what was found, for summary.json.
pub(super) fn auto_alpha_phase(
    engine: &mut Engine,
    o: &EvalOptions,
    s: &Setup,
    smp: &mut Samples,
) -> Result<Option<Value>> {
    if !o.methods.contains(&Method::WiseFtAuto) {
        return Ok(None);
    }
    if o.shard.is_some() {
        return Err(crate::invalid!(
            "wise-ft:auto fits one α on the whole evaluated set, so each shard would fit its own: run it without --shard"
        ));
    }
    let mut mean_entropy = |alpha: f64| -> Result<f64> {
        let z = merged_logits(engine, o, s, &smp.indices, alpha as f32)?;
        let (h, _) = entropies(engine.ex, &z, s.classes, 1.0)?;
        Ok(h.iter().sum::<f64>() / h.len().max(1) as f64)
    };
    let (alpha, h, evaluations) = golden_section_min(&mut mean_entropy, (0.0, 1.0), TOLERANCE)?;
    let z = merged_logits(engine, o, s, &smp.indices, alpha as f32)?;
    smp.wise.insert(Method::WiseFtAuto.name(), z);
    crate::reporter::note(&format!(
        "wise-ft:auto: α = {alpha:.4} (mean entropy {h:.4} over {} samples, {evaluations} passes of the merged model)",
        smp.indices.len()
    ));
    Ok(Some(json!({
        "alpha": alpha,
        "mean_entropy": h,
        "evaluations": evaluations,
        "search": format!(
            "golden section over α in [0, 1] to width {TOLERANCE}, then both ends; the merged model's mean entropy of softmax(z) over the evaluated samples"
        ),
    })))
}

/// The projected logits of the model merged at `alpha` on `indices`.
fn merged_logits(
    engine: &mut Engine,
    o: &EvalOptions,
    s: &Setup,
    indices: &[usize],
    alpha: f32,
) -> Result<Vec<f32>> {
    engine.set_merged(alpha)?;
    let mut raw = Vec::with_capacity(indices.len() * s.classes_raw);
    s.data.for_each_batch(indices, o.batch_size, |b| {
        if let Some((i, why)) = b.failed.first() {
            return Err(Error::file(
                &s.data.path,
                format!("{} could not be read again: {why}", s.data.describe(*i)),
            ));
        }
        raw.extend(engine.merged_logits_ahead(b.images(), None)?);
        Ok(())
    })?;
    Ok(o.projection.apply(&raw, s.classes_raw))
}

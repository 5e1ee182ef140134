//! `dawin calibrate`: each model's softmax temperature fitted by NLL on
//! held-out labelled data (temperature scaling), written as
//! `temperature.json`, which `eval --temperature FILE` reads.
//!
//! The mean NLL of softmax(β·z) is convex in β = 1/T (a log-sum-exp of
//! linear functions minus a linear one), so a golden-section search over
//! β finds its one minimum.

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::method::engine::Engine;
use crate::method::probs;
use crate::pipelines::eval::EvalOptions;
use crate::pipelines::setup::Setup;
use crate::report::summary::write_json;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The range of β = 1/T searched: T from 0.01 to 100.
const BETA_RANGE: (f64, f64) = (0.01, 100.0);

/// Mean `−ln softmax(z/t)[y]` over the rows.
pub fn mean_nll(logits: &[f32], labels: &[i64], c: usize, t: f32) -> f64 {
    let total: f64 = logits
        .chunks(c)
        .zip(labels)
        .map(|(z, &y)| -probs::log_softmax(z, t)[y as usize])
        .sum();
    total / labels.len().max(1) as f64
}

/// The temperature minimising the mean NLL of `logits` against `labels`,
/// or why there is none inside T ∈ [0.01, 100]: a minimum at a bound means
/// the NLL still falls beyond it (every sample right with a margin sends
/// T → 0; no better than chance sends T → ∞), and a bound is no estimate.
pub fn fit_temperature(
    logits: &[f32],
    labels: &[i64],
    c: usize,
) -> std::result::Result<f32, String> {
    let nll = |beta: f64| mean_nll(logits, labels, c, (1.0 / beta) as f32);
    // Golden section in ln β, on which the convex function stays unimodal.
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (BETA_RANGE.0.ln(), BETA_RANGE.1.ln());
    let (mut x1, mut x2) = (b - g * (b - a), a + g * (b - a));
    let (mut f1, mut f2) = (nll(x1.exp()), nll(x2.exp()));
    while b - a > 1e-7 {
        if f1 <= f2 {
            (b, x2, f2) = (x2, x1, f1);
            x1 = b - g * (b - a);
            f1 = nll(x1.exp());
        } else {
            (a, x1, f1) = (x1, x2, f2);
            x2 = a + g * (b - a);
            f2 = nll(x2.exp());
        }
    }
    let ln_beta = (a + b) / 2.0;
    // A bound as good as the optimum (to rounding: far out the f32 NLL goes
    // flat at 0 or at its limit) means the minimum is not inside the range.
    let best = nll(ln_beta.exp());
    let no_better = |bound: f64| nll(bound) <= best + 1e-9 * best.abs() + 1e-12;
    if no_better(BETA_RANGE.1) {
        return Err(format!(
            "the NLL keeps falling below T = {} (the model is right on every sample with a margin); \
             temperature scaling is undefined on these data",
            1.0 / BETA_RANGE.1
        ));
    }
    if no_better(BETA_RANGE.0) {
        return Err(format!(
            "the NLL keeps falling above T = {} (the logits carry no more information than chance \
             on these labels); temperature scaling is undefined on these data",
            1.0 / BETA_RANGE.0
        ));
    }
    Ok((1.0 / ln_beta.exp()) as f32)
}

/// What `calibrate` fitted.
pub struct Calibration {
    pub temperature: (f32, f32),
    pub file: PathBuf,
    pub summary: Value,
}

/// Fits both models' temperatures on the labelled data of `o` (through
/// the expertise pass and its cache) and writes `OUT/temperature.json`.
pub fn run(o: &EvalOptions, ex: &dyn Executor) -> Result<Calibration> {
    let s = Setup::open(o)?;
    let mut engine = Engine::new(ex, &s.pt, &s.ft, o.precision)?;
    let (_, smp) = s.expertise(&mut engine, o, &[])?;
    drop(engine);
    let c = s.classes;
    let fit = |z: &[f32], model: &str| -> Result<(f32, f64, f64)> {
        let t = fit_temperature(z, &smp.labels, c)
            .map_err(|e| Error::Invalid(format!("calibrate, {model} model: {e}")))?;
        let before = mean_nll(z, &smp.labels, c, 1.0);
        Ok((t, before, mean_nll(z, &smp.labels, c, t)))
    };
    let (pt, ft) = (fit(&smp.pt, "pretrained")?, fit(&smp.ft, "fine-tuned")?);
    let summary = json!({
        "temperature": [pt.0, ft.0],
        "nll_at_t1": [pt.1, ft.1],
        "nll_fitted": [pt.2, ft.2],
        "samples": smp.labels.len(),
        "data": o.data.display().to_string(),
        "provenance": s.provenance(o),
    });
    let file = o.out_dir.join("temperature.json");
    write_json(&file, &summary)?;
    Ok(Calibration {
        temperature: (pt.0, ft.0),
        file,
        summary,
    })
}

/// The (T_pt, T_ft) of a temperature.json `calibrate` wrote.
pub fn read_temperature(path: &Path) -> std::result::Result<(f32, f32), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let t = |i: usize| {
        v["temperature"][i]
            .as_f64()
            .map(|x| x as f32)
            .filter(|x| *x > 0.0 && x.is_finite())
    };
    t(0).zip(t(1)).ok_or_else(|| {
        format!(
            "{}: expected {{\"temperature\": [T_pt, T_ft]}} with positive numbers (as `dawin calibrate` writes)",
            path.display()
        )
    })
}

//! `dawin eval` and `dawin expertise` as chains of named phases: open the
//! models and data, the expertise pass (cached), λ per sample, the DaWin
//! pass under one interpolation, the baselines' predictions and the
//! reports.

use crate::choice::Choice;
use crate::error::Result;
use crate::exec::Executor;
use crate::method::engine::Engine;
use crate::pipelines::setup::Setup;
use crate::pipelines::shard::ExpertiseResult;
use std::collections::BTreeMap;
use std::time::Instant;

mod auto_alpha_phase;
mod dawin_phase;
mod lambda_phase;
mod report_phase;

use auto_alpha_phase::auto_alpha_phase;
use dawin_phase::dawin_phase;
use lambda_phase::{Lambdas, check_rule_constants, lambda_phase, sample_entropies};
use report_phase::{Clock, check_save_components, report_phase, save_components};

pub use crate::pipelines::options::EvalOptions;
pub use report_phase::{EvalResult, OUTPUTS};

/// The settings that produced a run's results, for summary.json.
fn settings(
    o: &EvalOptions,
    s: &Setup,
    cache_hit: bool,
    engine: &Engine,
    l: &Lambdas,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "set": o.set_name(),
        "expertise": o.rule.name(),
        "wise_alpha": o.wise_alpha,
        "interp": o.interp.to_string(),
        "precision": o.precision.to_string(),
        "temperature": [o.temperature.0, o.temperature.1],
        "samples": s.shard.len(),
        "shard": o.shard.map(|(i, n)| format!("{i}/{n}")),
        "cache": if cache_hit { "hit" } else { "computed" },
        "lerps": engine.lerps,
        "lerps_skipped": engine.lerps_skipped,
        "device_param_bytes": engine.resident_bytes(),
        // What the shapes cannot tell, each with where it came from.
        "model_settings": {
            "pretrained": s.pt.settings_record(),
            "finetuned": s.ft.settings_record(),
        },
    });
    if o.rule == crate::method::lambda::LambdaRule::T3 {
        v["t3"] = o.t3_record();
    }
    // The offset constants only where the rule uses them.
    if o.rule == crate::method::lambda::LambdaRule::EntropyOffset {
        v["offset"] = serde_json::json!({"b": l.offset.0, "w": l.offset.1, "over": "entropies"});
    }
    if let Some((b, w)) = l.loss_offset {
        v["offset"] = serde_json::json!({"b": b, "w": w, "over": "losses"});
    }
    if o.rule.uses_labels() {
        v["uses_labels"] = true.into();
    }
    v
}

pub fn run(o: &EvalOptions, ex: &dyn Executor) -> Result<EvalResult> {
    let mut clock = Clock(BTreeMap::new(), Instant::now());
    check_save_components(o)?;
    check_rule_constants(o)?;
    let s = Setup::open(o)?;
    clock.lap("load");
    let alphas = o.expertise_alphas();
    let mut engine = Engine::new(ex, &s.pt, &s.ft, o.precision)?;
    let phase = crate::exec::range(ex, "expertise pass");
    let (cache_hit, mut smp) = s.expertise(&mut engine, o, &alphas)?;
    drop(phase);
    clock.lap("expertise");
    let wise_auto = auto_alpha_phase(&mut engine, o, &s, &mut smp)?;
    if wise_auto.is_some() {
        clock.lap("wise_ft_auto");
    }
    let l = lambda_phase(ex, o, &s, &smp)?;
    clock.lap("lambda");
    let dawin = dawin_phase(&mut engine, o, &s, &smp, &l)?;
    clock.lap("dawin");
    let mut settings = settings(o, &s, cache_hit, &engine, &l);
    if let Some(t) = &dawin.selection {
        settings["bmm_selection"] = t.clone();
    }
    if let Some(w) = wise_auto {
        settings["wise_ft_auto"] = w;
    }
    drop(engine);
    if let Some(files) = save_components(o, &s, &dawin)? {
        settings["components"] = files;
        clock.lap("save_components");
    }
    report_phase(o, ex, &s, smp, l, dawin, (settings, clock))
}

/// `dawin expertise`: only the expertise pass (its logits, with those of
/// the WiSE-FT models `o.methods` names, cached in the output folder for a
/// later `eval` of the same shard) and both models' entropies on the
/// shard's readable samples.
pub fn run_expertise(o: &EvalOptions, ex: &dyn Executor) -> Result<ExpertiseResult> {
    let s = Setup::open(o)?;
    let mut engine = Engine::new(ex, &s.pt, &s.ft, o.precision)?;
    let (_, smp) = s.expertise(&mut engine, o, &o.expertise_alphas())?;
    drop(engine);
    let entropies = sample_entropies(ex, o, &s, &smp)?;
    Ok(ExpertiseResult {
        indices: smp.indices,
        entropies,
        total: s.data.len(),
        provenance: s.expertise_provenance(o),
        out: s.out,
    })
}

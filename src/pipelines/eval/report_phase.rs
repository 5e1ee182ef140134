//! The report phase of `eval`: every method's predictions, the results
//! kept from an earlier run in the same folder, the reports and the
//! terminal table; the merged models `--save-components` writes.

use crate::choice::Choice;
use crate::error::Result;
use crate::exec::Executor;
use crate::method::interp::Interp;
use crate::method::lambda::Entropies;
use crate::method::methods::{Logits, Method, outcomes};
use crate::method::stats::Scores;
use crate::pipelines::expertise::Samples;
use crate::pipelines::setup::{Setup, skipped_count, skipped_lines};
use crate::report::components;
use crate::report::outdir::Earlier;
use crate::report::results::Report;
use crate::report::samples_csv;
use crate::report::summary;
use crate::tensorfile::write_atomic;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

use super::dawin_phase::DawinPass;
use super::lambda_phase::{Lambdas, model_correct};
use crate::pipelines::options::EvalOptions;

/// Everything `eval` computed, also written to the output folder.
pub struct EvalResult {
    pub summary: serde_json::Value,
    /// Dataset indices of the evaluated (readable) samples.
    pub indices: Vec<usize>,
    pub lambdas: Vec<f32>,
    pub entropies: Entropies,
    /// Projected DaWin logits, one row per evaluated sample.
    pub dawin_logits: Option<Vec<f32>>,
    pub predictions: BTreeMap<String, Vec<usize>>,
    pub table: String,
    /// The files of the result set this run wrote, in [`OUTPUTS`]' order.
    pub written: Vec<&'static str>,
}

/// Wall-clock seconds per phase, for summary.json.
pub(super) struct Clock(pub(super) BTreeMap<String, f64>, pub(super) Instant);

impl Clock {
    /// Records the time since the last lap under `phase`.
    pub(super) fn lap(&mut self, phase: &str) {
        self.0.insert(phase.into(), self.1.elapsed().as_secs_f64());
        self.1 = Instant::now();
    }
}

/// `--save-components` needs a mixture to save and a folder that holds no
/// other run's components; both are checked before the passes.
pub(super) fn check_save_components(o: &EvalOptions) -> Result<()> {
    let Some(dir) = &o.save_components else {
        return Ok(());
    };
    if !matches!(o.interp, Interp::Bmm(_) | Interp::BmmAuto) {
        return Err(crate::invalid!(
            "--save-components saves the K merged models of a Beta mixture: use it with --interp bmm[:K] or bmm:auto (this run is {})",
            o.interp
        ));
    }
    if !o.methods.contains(&Method::Dawin) {
        return Err(crate::invalid!(
            "--save-components needs the dawin method in --methods"
        ));
    }
    components::check_dir(dir)
}

/// Writes the mixture's merged models (`--save-components`); the folder and
/// files for summary.json.
pub(super) fn save_components(
    o: &EvalOptions,
    s: &Setup,
    dawin: &DawinPass,
) -> Result<Option<Value>> {
    let (Some(dir), Some(m), Some(members)) = (&o.save_components, &dawin.bmm, &dawin.components)
    else {
        return Ok(None);
    };
    let files = components::save(dir, (&s.pt, &s.ft), m, members, &s.provenance(o))?;
    crate::reporter::note(&format!(
        "saved {} merged models to {}",
        files.len(),
        dir.display()
    ));
    Ok(Some(serde_json::json!({
        "dir": dir.display().to_string(),
        "files": files.iter().map(|f| f.file_name().unwrap_or_default().to_string_lossy().to_string()).collect::<Vec<_>>(),
    })))
}

/// Every method's predictions, the reports and the terminal table.
pub(super) fn report_phase(
    o: &EvalOptions,
    ex: &dyn Executor,
    s: &Setup,
    smp: Samples,
    l: Lambdas,
    dawin: DawinPass,
    (settings, mut clock): (serde_json::Value, Clock),
) -> Result<EvalResult> {
    let logits = Logits {
        pt: &smp.pt,
        ft: &smp.ft,
        wise: &smp.wise,
        dawin: dawin.logits.as_deref(),
        lambda: &l.lambda,
        classes: s.classes,
        temperature: o.temperature,
        labels: &smp.labels,
    };
    let outcomes = outcomes(&o.methods, &logits);
    let mut scores = BTreeMap::new();
    let mut predictions = BTreeMap::new();
    for (name, out) in outcomes {
        scores.insert(name.clone(), out.scores);
        predictions.insert(name, out.pred);
    }
    let mut order: Vec<String> = o.methods.iter().map(Method::name).collect();
    let provenance = s.provenance(o);
    let earlier = carry_over(
        s,
        &provenance,
        &smp.indices,
        &mut order,
        (&mut predictions, &mut scores),
    );
    let previous = match &earlier {
        Earlier::MoveTo(p) => Some(p.clone()),
        _ => None,
    };
    let mut settings = settings;
    settings["provenance"] = provenance;
    settings["previous"] = previous
        .as_ref()
        .map_or(Value::Null, |p| p.display().to_string().into());
    let paths: Option<Vec<String>> = s.data.is_folder().then(|| {
        let path = |i: usize| s.data.sample_path(i).map(|p| p.display().to_string());
        smp.indices
            .iter()
            .map(|&i| path(i).unwrap_or_default())
            .collect()
    });
    let stage = s.out.stage()?;
    let correct = model_correct(s, &smp);
    let titles = crate::report::plot::lambda_titles(
        &o.set_name(),
        o.rule.name(),
        &o.interp.to_string(),
        (&o.pretrained, &o.finetuned),
        dawin.bmm.as_ref().map(|b| b.weights.len()),
    );
    let summary = summary::write_all(&Report {
        out_dir: &stage.dir,
        order: &order,
        predictions: &predictions,
        labels: &smp.labels,
        indices: &smp.indices,
        entropies: &l.entropies,
        lambda: &l.lambda,
        components: dawin.components.as_deref(),
        bmm: dawin.bmm.as_ref(),
        paths: paths.as_deref(),
        skipped: skipped_count(&s.data, &s.shard, smp.failed.len()),
        device: &ex.name(),
        seconds: &mut clock.0,
        extra: settings,
        t0: Instant::now(),
        titles: &titles,
        scores: &scores,
        bootstrap: (o.bootstrap, o.seed),
        oracle_lambda: Some(&l.oracle),
        model_correct: (&correct.0, &correct.1),
    })?;
    if s.data.is_folder() {
        write_atomic(
            &stage.dir.join("classes.txt"),
            (s.data.classes.join("\n") + "\n").as_bytes(),
        )?;
    }
    let skipped = skipped_lines(&s.data, &s.shard, &smp.failed);
    if !skipped.is_empty() {
        write_atomic(&stage.dir.join("skipped.txt"), skipped.as_bytes())?;
    }
    let written: Vec<&'static str> = OUTPUTS
        .into_iter()
        .filter(|n| stage.dir.join(n).exists())
        .collect();
    stage.commit(&s.out, &OUTPUTS, "summary.json", earlier)?;
    if let Some(p) = previous {
        crate::reporter::note(&format!(
            "{} held the results of another run (other inputs, settings or samples); moved them to {}",
            s.out.path.display(),
            p.display()
        ));
    }
    Ok(EvalResult {
        table: summary::table(&order, &summary),
        summary,
        indices: smp.indices,
        lambdas: l.lambda,
        entropies: l.entropies,
        dawin_logits: dawin.logits,
        predictions,
        written,
    })
}

/// The files of one run's result set in the output folder.
pub const OUTPUTS: [&str; 6] = [
    "summary.json",
    "samples.csv",
    "lambdas.svg",
    "lambda_oracle.svg",
    "classes.txt",
    "skipped.txt",
];

/// What becomes of an earlier run's set in the output folder at this run's
/// commit: with the same inputs, settings and samples, the methods this run
/// did not rerun join its results (predictions and scores) and the earlier files are replaced;
/// otherwise the earlier set moves to `previous/` (a set without its
/// summary, left by an interrupted older version, too: nothing is dropped).
pub(super) fn carry_over(
    s: &Setup,
    provenance: &Value,
    indices: &[usize],
    order: &mut Vec<String>,
    (predictions, scores): (
        &mut BTreeMap<String, Vec<usize>>,
        &mut BTreeMap<String, Scores>,
    ),
) -> Earlier {
    if !s.out.holds_any(&OUTPUTS) {
        return Earlier::Keep;
    }
    let before: Option<Value> = std::fs::read_to_string(s.out.path.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let prov = before.as_ref().map(|b| &b["provenance"]);
    let same = prov.is_some_and(|p| {
        p["set_key"] == provenance["set_key"] && p["shard"] == provenance["shard"]
    });
    let old = samples_csv::read(&s.out.path.join("samples.csv")).ok();
    let Some(mut old) = old.filter(|t| same && t.indices == indices) else {
        return Earlier::MoveTo(s.out.previous_path());
    };
    for m in old.order {
        if predictions.contains_key(&m) {
            continue;
        }
        if let Some(p) = old.predictions.remove(&m) {
            predictions.insert(m.clone(), p);
        }
        if let Some(sc) = old.scores.remove(&m) {
            scores.insert(m.clone(), sc);
        }
        order.push(m);
    }
    Earlier::Replace
}

//! The merge of per-shard `eval` results into one result set, as a whole
//! run writes it: the shards' samples.csv rows concatenated in shard
//! order, and every statistic (accuracies, ci95, NLL, ECE, Brier, the
//! McNemar tests, the λ diagnostics) and plot recomputed on them.

use super::shard::{Part, check_parts, parse_shard};
use crate::error::{Error, Result};
use crate::method::bmm::BetaMixture;
use crate::report::outdir::{Earlier, OutDir};
use crate::report::results::Report;
use crate::report::samples_csv::{self, SampleTable};
use crate::report::{plot, summary};
use crate::tensorfile::write_atomic;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One shard's results: its summary and the folder it sits in.
struct ShardResults<'a> {
    path: &'a Path,
    summary: Value,
    /// `(i, n)`; `None` for a whole-set summary (check_parts refuses it).
    shard: Option<(usize, usize)>,
}

impl ShardResults<'_> {
    /// A file the shard's eval wrote beside its summary.
    fn beside(&self, name: &str) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(name)
    }
}

/// Merges per-shard summary.json files of one split into a result set in
/// the folder of `out` (the summary there; samples.csv, the λ plots,
/// classes.txt and skipped.txt beside it). Refused unless every summary
/// comes from the same inputs, settings and methods, has its samples.csv
/// beside it, and the shards cover the set exactly once (a subset only
/// with `allow_partial`, and then the merged summary says it is partial).
pub fn merge_summaries(inputs: &[&Path], out: &Path, allow_partial: bool) -> Result<Value> {
    crate::tensorfile::check_output(out)?;
    let mut shards = read_shards(inputs)?;
    let coverage = check_parts(&parts(&shards), allow_partial)?;
    shards.sort_by_key(|s| s.shard.map_or(0, |(i, _)| i));
    let tables = shards
        .iter()
        .map(|s| read_rows(s))
        .collect::<Result<Vec<_>>>()?;
    let rows = SampleTable::concat(tables).map_err(|why| Error::file(inputs[0], why))?;
    let dir = crate::tensorfile::folder_of(out);
    let name = out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let folder = OutDir::lock(dir)?;
    let stage = folder.stage()?;
    let t0 = Instant::now();
    let mut merged = write_set(&stage.dir, &shards, &rows, t0)?;
    merged["shards"] = json!(coverage.shards);
    merged["partial"] = json!(coverage.partial);
    merged["merged_from"] = json!(
        inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    );
    summary::write_json(&stage.dir.join("summary.json"), &merged)?;
    if name != "summary.json" {
        let (from, to) = (stage.dir.join("summary.json"), stage.dir.join(&name));
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
    }
    copy_companions(&stage.dir, &shards)?;
    let outputs = outputs(&name);
    let earlier = earlier(&folder, &outputs, &merged);
    stage.commit(&folder, &outputs, &name, earlier)?;
    Ok(merged)
}

/// The files of a merged result set, the summary named `name`.
fn outputs(name: &str) -> Vec<&str> {
    let mut v: Vec<&str> = crate::pipelines::eval::OUTPUTS
        .into_iter()
        .filter(|n| *n != "summary.json")
        .collect();
    v.insert(0, name);
    v
}

/// An earlier merge of the same set is replaced; any other result set in
/// the folder moves to `previous/`.
fn earlier(folder: &OutDir, outputs: &[&str], merged: &Value) -> Earlier {
    if !folder.holds_any(outputs) {
        return Earlier::Keep;
    }
    let before: Option<Value> = std::fs::read_to_string(folder.path.join(outputs[0]))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let key = |v: &Value| v["provenance"]["set_key"].clone();
    match before {
        Some(b) if b.get("merged_from").is_some() && key(&b) == key(merged) => Earlier::Replace,
        _ => Earlier::MoveTo(folder.previous_path()),
    }
}

fn read_shards<'a>(inputs: &[&'a Path]) -> Result<Vec<ShardResults<'a>>> {
    let mut shards: Vec<ShardResults> = Vec::new();
    for &path in inputs {
        let summary = read_summary(path)?;
        let names = method_names(&summary);
        if let Some(first) = shards.first()
            && names != method_names(&first.summary)
        {
            return Err(Error::file(
                path,
                format!(
                    "has the methods {names:?}, but {} has {:?}",
                    first.path.display(),
                    method_names(&first.summary)
                ),
            ));
        }
        let shard = parse_shard(path, &summary["provenance"]["shard"])?;
        shards.push(ShardResults {
            path,
            summary,
            shard,
        });
    }
    Ok(shards)
}

fn method_names(s: &Value) -> Vec<String> {
    s["methods"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn parts<'a>(shards: &[ShardResults<'a>]) -> Vec<Part<'a>> {
    shards
        .iter()
        .map(|s| Part {
            path: s.path,
            key: crate::report::provenance::key_of(&s.summary["provenance"])
                .unwrap_or("")
                .to_string(),
            shard: s.shard,
        })
        .collect()
}

/// A summary.json with provenance, or an error naming the file.
fn read_summary(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    let s: Value =
        serde_json::from_str(&text).map_err(|e| Error::file(p, format!("not JSON: {e}")))?;
    if !s["methods"].is_object() {
        return Err(Error::file(p, "not a dawin summary.json (no methods)"));
    }
    if crate::report::provenance::key_of(&s["provenance"]).is_none() {
        return Err(Error::file(
            p,
            "has no provenance (made by an older dawin?): rerun its eval",
        ));
    }
    Ok(s)
}

/// The shard's samples.csv rows, checked against its summary's counts.
fn read_rows(s: &ShardResults) -> Result<SampleTable> {
    let path = s.beside("samples.csv");
    if !path.exists() {
        return Err(Error::file(
            &path,
            format!(
                "is missing: the merged statistics are recomputed from each shard's samples.csv, kept beside its summary ({})",
                s.path.display()
            ),
        ));
    }
    let rows = samples_csv::read(&path)?;
    let count = s.summary["methods"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|m| m["count"].as_u64());
    if count != Some(rows.indices.len() as u64) {
        return Err(Error::file(
            &path,
            format!(
                "holds {} samples but {} counts {count:?}: the two are from different runs",
                rows.indices.len(),
                s.path.display()
            ),
        ));
    }
    Ok(rows)
}

/// Writes the merged summary.json, samples.csv and λ plots into `dir`.
fn write_set(
    dir: &Path,
    shards: &[ShardResults],
    rows: &SampleTable,
    t0: Instant,
) -> Result<Value> {
    let first = &shards[0].summary;
    let bmm = common_mixture(shards);
    let titles = titles(first, bmm.as_ref());
    let mut seconds = summed_seconds(shards);
    let (resamples, seed) = bootstrap_of(shards)?;
    summary::write_all(&Report {
        out_dir: dir,
        order: &rows.order,
        predictions: &rows.predictions,
        labels: &rows.labels,
        indices: &rows.indices,
        entropies: &rows.entropies,
        lambda: &rows.lambda,
        components: rows.components.as_deref(),
        paths: rows.paths.as_deref(),
        bmm: bmm.as_ref(),
        skipped: shards
            .iter()
            .map(|s| s.summary["skipped"].as_u64().unwrap_or(0) as usize)
            .sum(),
        device: &devices(shards),
        seconds: &mut seconds,
        extra: settings(shards),
        t0,
        titles: &titles,
        scores: &rows.scores,
        bootstrap: (resamples, seed),
        oracle_lambda: Some(&rows.oracle_lambda),
        model_correct: (&rows.model_correct.0, &rows.model_correct.1),
    })
}

/// The run settings of the shards' summaries, as one run's: the first
/// shard's, with the per-shard quantities added up and the shard cleared.
fn settings(shards: &[ShardResults]) -> Value {
    let computed = [
        "methods",
        "lambda",
        "paired",
        "statistics",
        "skipped",
        "device",
        "bmm",
        "seconds",
    ];
    let mut v = shards[0].summary.clone();
    if let Value::Object(o) = &mut v {
        o.retain(|k, _| !computed.contains(&k.as_str()));
    }
    let sum = |key: &str| -> u64 {
        shards
            .iter()
            .map(|s| s.summary[key].as_u64().unwrap_or(0))
            .sum()
    };
    for key in ["samples", "lerps", "lerps_skipped"] {
        if v.get(key).is_some() {
            v[key] = json!(sum(key));
        }
    }
    let all_hit = shards.iter().all(|s| s.summary["cache"] == "hit");
    v["cache"] = json!(if all_hit { "hit" } else { "computed" });
    v["shard"] = Value::Null;
    v["provenance"]["shard"] = Value::Null;
    v["previous"] = Value::Null;
    v
}

/// Each phase's seconds added up over the shards.
fn summed_seconds(shards: &[ShardResults]) -> BTreeMap<String, f64> {
    let mut secs = BTreeMap::new();
    for s in shards {
        for (k, v) in s.summary["seconds"].as_object().into_iter().flatten() {
            *secs.entry(k.clone()).or_insert(0.0) += v.as_f64().unwrap_or(0.0);
        }
    }
    secs
}

/// The executors the shards ran on, once each.
fn devices(shards: &[ShardResults]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for d in shards.iter().filter_map(|s| s.summary["device"].as_str()) {
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen.join(", ")
}

/// The bootstrap every shard's intervals used; shards that differ are refused.
fn bootstrap_of(shards: &[ShardResults]) -> Result<(usize, u64)> {
    let of = |s: &ShardResults| {
        let b = &s.summary["statistics"]["bootstrap"];
        (b["resamples"].as_u64(), b["seed"].as_u64())
    };
    let (Some(resamples), Some(seed)) = of(&shards[0]) else {
        return Err(Error::file(
            shards[0].path,
            "does not say how its intervals were bootstrapped (made by an older dawin): rerun its eval",
        ));
    };
    if let Some(other) = shards.iter().find(|s| of(s) != of(&shards[0])) {
        return Err(Error::file(
            other.path,
            format!(
                "was bootstrapped with other --bootstrap or --seed than {}",
                shards[0].path.display()
            ),
        ));
    }
    Ok((resamples as usize, seed))
}

/// The Beta mixture of the shards when they share one (their λs fit from
/// one `--expertise-from`); shards that fit their own are said, and the
/// merged set then has none.
fn common_mixture(shards: &[ShardResults]) -> Option<BetaMixture> {
    let first = &shards[0].summary["bmm"];
    if first.is_null() {
        return None;
    }
    if shards.iter().any(|s| &s.summary["bmm"] != first) {
        crate::reporter::warn(
            "the shards fit their own Beta mixtures (no --expertise-from), so their DaWin predictions differ from one whole run's; the merged summary has no bmm",
        );
        return None;
    }
    let list = |k: &str| -> Vec<f64> {
        first[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    Some(BetaMixture {
        weights: list("weights"),
        alpha: list("alpha"),
        beta: list("beta"),
        log_likelihood: f64::NAN,
        converged: first["converged"].as_bool().unwrap_or(false),
    })
}

/// The λ plots' titles, from the first shard's summary.
fn titles(first: &Value, bmm: Option<&BetaMixture>) -> plot::LambdaTitles {
    let input = |role: &str| {
        let path = first["provenance"]["inputs"][role]["path"].as_str();
        PathBuf::from(path.unwrap_or(""))
    };
    let text = |k: &str| first[k].as_str().unwrap_or("").to_string();
    let set = match first["set"].as_str() {
        Some(name) => name.to_string(),
        None => input("data")
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string(),
    };
    plot::lambda_titles(
        &set,
        &text("expertise"),
        &text("interp"),
        (&input("pretrained"), &input("finetuned")),
        bmm.map(|b| b.weights.len()),
    )
}

/// classes.txt (the same in every shard) and skipped.txt (the shards'
/// lines one after another), where the shards wrote them.
fn copy_companions(dir: &Path, shards: &[ShardResults]) -> Result<()> {
    let classes = shards[0].beside("classes.txt");
    if let Ok(text) = std::fs::read(&classes) {
        write_atomic(&dir.join("classes.txt"), &text)?;
    }
    let mut skipped = Vec::new();
    for s in shards {
        if let Ok(text) = std::fs::read(s.beside("skipped.txt")) {
            skipped.extend(text);
        }
    }
    if !skipped.is_empty() {
        write_atomic(&dir.join("skipped.txt"), &skipped)?;
    }
    Ok(())
}

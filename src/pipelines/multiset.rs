//! A multi-set run (`eval --data name=PATH,...`): the same models and
//! methods on several data sets, the first in distribution and the others
//! under shift, as the official scripts report ImageNet and its variants.
//! Each set is one ordinary `eval` run (its own expertise pass, cache,
//! summary.json and samples.csv in `OUT/<name>/`); this module adds the
//! per-set accuracy table with the mean over the shifted sets, `sets.json`
//! and, when the methods draw one, the WiSE-FT curve.
//!
//! A set named after a shipped label space (`imagenet-a`, `imagenet-r`,
//! `objectnet`, `imagenet-v2`) is read with it, so one command covers the
//! paper's ImageNet table; the other sets use the label-space flags given.

use crate::data::dataset::LabelOrder;
use crate::data::label_spaces;
use crate::data::projection::Projection;
use crate::exec::Executor;
use crate::pipelines::eval::{self, EvalOptions, EvalResult};
use crate::report::summary::{wise_curve_svg, write_json};
use crate::tensorfile::write_atomic;
use crate::{Error, Result};
use serde_json::{Map, Value, json};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One named data set of a multi-set run.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSet {
    pub name: String,
    pub path: PathBuf,
}

/// The sets a `--data` argument lists, or None when it is one path: an
/// existing file or folder is always a path, so paths holding `=` still
/// work.
pub fn parse_sets(arg: &Path) -> Result<Option<Vec<DataSet>>> {
    let text = arg.to_string_lossy();
    if arg.exists() || !text.contains('=') {
        return Ok(None);
    }
    let mut sets: Vec<DataSet> = Vec::new();
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let Some((name, path)) = item.split_once('=') else {
            return Err(crate::invalid!(
                "--data {text}: `{item}` is not name=PATH (a multi-set run lists name=PATH pairs separated by commas)"
            ));
        };
        let name = name.trim().to_string();
        check_name(&name)?;
        if sets.iter().any(|s| s.name == name) {
            return Err(crate::invalid!(
                "--data: the set name `{name}` is given twice"
            ));
        }
        sets.push(DataSet {
            name,
            path: PathBuf::from(path.trim()),
        });
    }
    if sets.is_empty() {
        return Err(crate::invalid!("--data {text}: lists no set"));
    }
    Ok(Some(sets))
}

/// A set's name becomes a folder name under `--out-dir`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(crate::invalid!(
            "--data: set name `{name}` must be letters, digits, `-`, `_` or `.` (it names the set's output folder)"
        ))
    }
}

/// The shipped label-space settings a set name selects, applied to `o`;
/// the preset's name, or None when the name selects none.
pub fn apply_preset(name: &str, o: &mut EvalOptions) -> Result<Option<&'static str>> {
    let path = Path::new(name);
    let shipped = |t: Option<&'static str>| {
        t.ok_or_else(|| crate::invalid!("the shipped label space {name} is missing"))
    };
    let what = match name {
        "imagenet-a" | "imagenet-r" => {
            o.projection =
                Projection::subset_text(path, shipped(label_spaces::shipped_subset(name))?)?;
            if name == "imagenet-a" {
                "class subset imagenet-a (200 classes)"
            } else {
                "class subset imagenet-r (200 classes)"
            }
        }
        "objectnet" => {
            o.projection = Projection::map_text(path, shipped(label_spaces::shipped_map(name))?)?;
            let folders = shipped(label_spaces::shipped_folders(name))?;
            o.keep_folders = Some(label_spaces::parse_folders(folders));
            o.crop_border = 2;
            "class map objectnet (113 classes), its 113 folders, crop border 2"
        }
        "imagenet-v2" => {
            o.label_order = LabelOrder::Numeric;
            "folders numbered by class index"
        }
        _ => return Ok(None),
    };
    Ok(Some(what))
}

/// Everything a multi-set run computed, also written under `OUT`.
pub struct MultiSetResult {
    /// Each set's name and its ordinary eval result.
    pub runs: Vec<(String, EvalResult)>,
    /// `sets.json`: the sets, and each method's accuracy per set with the
    /// mean over the shifted sets.
    pub summary: Value,
    /// The per-set accuracy table (also `table.txt`).
    pub table: String,
    /// The WiSE-FT curve, when the methods include one.
    pub wise_svg: Option<PathBuf>,
}

/// Runs `base` on every set into `base.out_dir/<name>/`, then the
/// combined reports. `--expertise-from` is one set's file, so it is
/// refused here; `--save-components DIR` gets a folder per set.
pub fn run(base: &EvalOptions, sets: &[DataSet], ex: &dyn Executor) -> Result<MultiSetResult> {
    if base.expertise_from.is_some() {
        return Err(crate::invalid!(
            "--expertise-from holds one data set's expertise: run a multi-set --data without it, or evaluate that set alone"
        ));
    }
    // Every set must be there before the first one's passes start.
    if let Some(set) = sets.iter().find(|s| !s.path.exists()) {
        return Err(Error::file(
            &set.path,
            format!(
                "does not exist (the data set `{}` of this multi-set run); nothing was evaluated",
                set.name
            ),
        ));
    }
    let mut runs = Vec::new();
    let mut described = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let mut o = set_options(base, set);
        let preset = apply_preset(&set.name, &mut o)?;
        if base.progress {
            crate::reporter::status(&format!(
                "[{}/{}] {} ({}){}",
                i + 1,
                sets.len(),
                set.name,
                set.path.display(),
                preset.map_or(String::new(), |p| format!(": {p}"))
            ));
        }
        let r = eval::run(&o, ex).map_err(|e| e.within(&format!("set {}", set.name)))?;
        described.push(json!({
            "name": set.name,
            "data": set.path.display().to_string(),
            "out_dir": o.out_dir.display().to_string(),
            "samples": r.indices.len(),
            "preset": preset,
            "role": if i == 0 { "in distribution" } else { "shifted" },
        }));
        runs.push((set.name.clone(), r));
    }
    let summary = combine(&runs, described);
    let table = accuracy_table(&summary);
    std::fs::create_dir_all(&base.out_dir).map_err(|e| Error::io(&base.out_dir, e))?;
    write_json(&base.out_dir.join("sets.json"), &summary)?;
    write_atomic(&base.out_dir.join("table.txt"), table.as_bytes())?;
    let wise_svg = wise_curve(base, &runs)?;
    Ok(MultiSetResult {
        runs,
        summary,
        table,
        wise_svg,
    })
}

/// One set's options: the run's, with its data, folders and a progress label.
fn set_options(base: &EvalOptions, set: &DataSet) -> EvalOptions {
    let mut o = base.clone();
    o.data = set.path.clone();
    o.out_dir = base.out_dir.join(&set.name);
    o.progress_label = format!("{}{}: ", base.progress_label, set.name);
    o.set_name = Some(set.name.clone());
    o.save_components = base.save_components.as_ref().map(|d| d.join(&set.name));
    o
}

/// `sets.json`: per method, the accuracy on each set (null where the
/// method did not run there) and the mean over the shifted sets.
fn combine(runs: &[(String, EvalResult)], described: Vec<Value>) -> Value {
    let mut methods = Map::new();
    for name in method_order(runs) {
        let acc: Vec<Option<f64>> = runs
            .iter()
            .map(|(_, r)| r.summary["methods"][&name]["accuracy"].as_f64())
            .collect();
        let mut per_set = Map::new();
        for ((set, _), a) in runs.iter().zip(&acc) {
            per_set.insert(set.clone(), json!(a));
        }
        let shifted: Option<Vec<f64>> = acc.iter().skip(1).copied().collect();
        let ood_mean = shifted
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<f64>() / v.len() as f64);
        methods.insert(
            name,
            json!({"accuracy": per_set, "in_distribution": acc[0], "ood_mean": ood_mean}),
        );
    }
    json!({
        "sets": described,
        "in_distribution": runs[0].0,
        "methods": methods,
    })
}

/// Methods in the order the first set reports them, then any only later
/// sets have (a method carried over from an earlier run of one folder).
fn method_order(runs: &[(String, EvalResult)]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for (_, r) in runs {
        if let Some(m) = r.summary["methods"].as_object() {
            for k in m.keys() {
                if !order.contains(k) {
                    order.push(k.clone());
                }
            }
        }
    }
    order
}

/// Accuracy in % per method and set, and the shifted sets' mean.
pub fn accuracy_table(summary: &Value) -> String {
    let sets: Vec<&str> = summary["sets"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    let width = sets.iter().map(|s| s.len()).max().unwrap_or(0).max(8);
    let mut t = format!("{:<22}", "accuracy %");
    for s in &sets {
        write!(t, " {s:>width$}").unwrap();
    }
    let with_mean = sets.len() > 1;
    if with_mean {
        write!(t, " {:>width$}", "OOD mean").unwrap();
    }
    t.push('\n');
    let Some(methods) = summary["methods"].as_object() else {
        return t;
    };
    let cell = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |a| format!("{:.2}", 100.0 * a))
    };
    for (name, m) in methods {
        write!(t, "{name:<22}").unwrap();
        for s in &sets {
            write!(t, " {:>width$}", cell(&m["accuracy"][*s])).unwrap();
        }
        if with_mean {
            write!(t, " {:>width$}", cell(&m["ood_mean"])).unwrap();
        }
        t.push('\n');
    }
    writeln!(
        t,
        "in distribution: {}; OOD mean over the other {} set(s)",
        sets.first().copied().unwrap_or("-"),
        sets.len().saturating_sub(1)
    )
    .unwrap();
    t
}

/// `OUT/wise-ft.svg` (first set against the mean of the others) when there
/// are shifted sets and the methods include the WiSE-FT curve.
fn wise_curve(base: &EvalOptions, runs: &[(String, EvalResult)]) -> Result<Option<PathBuf>> {
    if runs.len() < 2 {
        return Ok(None);
    }
    let ood: Vec<Value> = runs[1..].iter().map(|(_, r)| r.summary.clone()).collect();
    let title = format!(
        "WiSE-FT curve (ID: {}, OOD: mean of {} sets)",
        runs[0].0,
        ood.len()
    );
    let Ok(svg) = wise_curve_svg(&runs[0].1.summary, &ood, &title) else {
        return Ok(None);
    };
    let path = base.out_dir.join("wise-ft.svg");
    write_atomic(&path, svg.as_bytes())?;
    Ok(Some(path))
}

//! What `eval` and `expertise` open before any pass: the output folder
//! (locked), both models, the data with what is odd about it, the shard,
//! the label space, and the provenance of the run.

use crate::data::dataset::{Dataset, LabelOrder, SkippedFile};
use crate::data::pixel_cache::Opened;
use crate::error::{Error, Result};
use crate::method::engine::{Engine, load_pair};
use crate::model::Model;
use crate::pipelines::cache::{self, KeyInputs};
use crate::pipelines::expertise::{Samples, expertise_pass};
use crate::pipelines::options::EvalOptions;
use crate::pipelines::shard;
use crate::report::outdir::OutDir;
use crate::report::provenance::{self, Input, file_hash};
use serde_json::Value;
use std::ops::Range;
use std::path::Path;

/// Skipped files listed on the terminal; all of them go to skipped.txt.
const SHOWN: usize = 5;

pub struct Setup {
    pub out: OutDir,
    pub pt: Model,
    pub ft: Model,
    pub data: Dataset,
    /// Classes of the heads, and after the projection.
    pub classes_raw: usize,
    pub classes: usize,
    pub shard: Range<usize>,
    /// Content hashes of the models and the data.
    pub inputs: Vec<(&'static str, String)>,
    /// How the pixel cache opened, for image folders (when one is used).
    pixel_cache: Option<Opened>,
}

/// Every input path exists, named by its flag, before the output folder is
/// taken or any model loaded.
fn check_inputs_exist(o: &EvalOptions) -> Result<()> {
    let mut given = vec![
        ("--pretrained", &o.pretrained),
        ("--finetuned", &o.finetuned),
        ("--data", &o.data),
    ];
    if let Some(p) = &o.expertise_from {
        given.push(("--expertise-from", p));
    }
    for (flag, path) in given {
        if !path.exists() {
            return Err(crate::invalid!(
                "{flag} {}: no such file or folder",
                path.display()
            ));
        }
    }
    Ok(())
}

impl Setup {
    pub fn open(o: &EvalOptions) -> Result<Setup> {
        check_inputs_exist(o)?;
        let out = OutDir::lock(&o.out_dir)?;
        let (pt, ft) = load_pair(&o.pretrained, &o.finetuned, o.overrides)?;
        let classes_raw = pt.spec.classes.unwrap_or(0);
        o.projection.check(classes_raw)?;
        let classes = o.projection.out_classes(classes_raw);
        let mut data = Dataset::open_with(&o.data, pt.spec.image_size, &o.folder_options())?;
        check_class_count(&data, classes, o.folder_options().order)?;
        data.check_labels(classes)?;
        let shard = shard::range(o.shard, data.len())?;
        report_data(&data, &shard);
        let fingerprint = data.fingerprint();
        let pixel_cache = o.pixel_cache.as_deref().and_then(|dir| {
            let whole = shard == (0..data.len());
            data.attach_pixel_cache(dir, &fingerprint, whole)
        });
        let mut inputs = vec![
            ("pretrained", file_hash(&o.pretrained)?),
            ("finetuned", file_hash(&o.finetuned)?),
            ("data", fingerprint),
        ];
        if inputs[0].1 == inputs[1].1 {
            crate::reporter::warn(&format!(
                "--pretrained {} and --finetuned {} hold the same weights (one content hash): every λ merges a model with itself",
                o.pretrained.display(),
                o.finetuned.display()
            ));
        }
        if let Some(p) = &o.expertise_from {
            inputs.push(("expertise_from", file_hash(p)?));
        }
        Ok(Setup {
            out,
            pt,
            ft,
            data,
            classes_raw,
            classes,
            shard,
            inputs,
            pixel_cache,
        })
    }

    /// The inputs with their paths, for a provenance record (`with` the
    /// inputs to keep, by role).
    fn inputs<'a>(&'a self, o: &'a EvalOptions, with: &[&str]) -> Vec<Input<'a>> {
        self.inputs
            .iter()
            .filter(|(role, _)| with.contains(role))
            .map(|(role, hash)| Input {
                role,
                path: path_of(o, role),
                hash: hash.clone(),
            })
            .collect()
    }

    /// The provenance of this run's results: every input and setting.
    pub fn provenance(&self, o: &EvalOptions) -> Value {
        let all = ["pretrained", "finetuned", "data", "expertise_from"];
        let mut p = provenance::record(&self.inputs(o, &all), o.result_settings());
        p["shard"] = shard_value(o.shard);
        p["samples_total"] = self.data.len().into();
        // What reading the data assumed (a u8 file without dawin's mark,
        // empty class folders, ...), kept with the results it shaped.
        if !self.data.warnings.is_empty() {
            p["data_warnings"] = self.data.warnings.clone().into();
        }
        if let Some(c) = &self.pixel_cache {
            p["pixel_cache"] = c.record(self.data.pixel_cache_filled()).into();
        }
        p
    }

    /// The provenance of this run's entropies (an expertise file's): the
    /// models, the data and the settings that change entropies.
    pub fn expertise_provenance(&self, o: &EvalOptions) -> Value {
        let inputs = self.inputs(o, &["pretrained", "finetuned", "data"]);
        let mut p = provenance::record(&inputs, o.entropy_settings());
        p["shard"] = shard_value(o.shard);
        p["samples_total"] = self.data.len().into();
        p
    }

    /// The expertise pass for the WiSE-FT `alphas`, through the cache:
    /// whether the cache held it all, and the evaluated samples with their
    /// logits.
    pub fn expertise(
        &self,
        engine: &mut Engine,
        o: &EvalOptions,
        alphas: &[f32],
    ) -> Result<(bool, Samples)> {
        let key = cache::key(&KeyInputs {
            models: (&self.inputs[0].1, &self.inputs[1].1),
            data: &self.inputs[2].1,
            shard: self.shard.clone(),
            spec: &self.pt.spec,
            settings: o.logit_settings(),
        });
        let path = o
            .cache
            .clone()
            .unwrap_or_else(|| self.out.path.join("cache.safetensors"));
        let e = expertise_pass(
            engine,
            &self.data,
            self.shard.clone(),
            alphas,
            (key, &path),
            o.pass(),
        )?;
        report_failed(&self.data, &e.failed);
        let c = self.classes_raw;
        let smp = Samples::select(&e, &self.data, &self.shard, c, &o.projection, alphas)?;
        Ok((e.cache_hit, smp))
    }
}

fn shard_value(shard: Option<(usize, usize)>) -> Value {
    shard.map_or(Value::Null, |(i, n)| format!("{i}/{n}").into())
}

fn path_of<'a>(o: &'a EvalOptions, role: &str) -> &'a Path {
    match role {
        "pretrained" => &o.pretrained,
        "finetuned" => &o.finetuned,
        "data" => &o.data,
        _ => o.expertise_from.as_deref().unwrap_or(Path::new("")),
    }
}

/// Warns about what is odd in an image folder: empty class folders, a
/// class count other than the head's, files that are not images.
/// An image folder labelled by sorted folder name must have one folder per
/// class of the head (after any projection): otherwise label i, the i-th
/// folder, is not the head's class i, and every accuracy would be wrong.
/// Refused before any image is read; folders named by class number
/// (`--label-order numeric`) may hold a subset.
fn check_class_count(data: &Dataset, classes: usize, order: LabelOrder) -> Result<()> {
    if !data.is_folder() || order != LabelOrder::Sorted || data.classes.len() == classes {
        return Ok(());
    }
    Err(Error::file(
        &data.path,
        format!(
            "has {} class folders but the head has {classes} classes, so label i (the i-th folder) would not be the head's class i. \
             Project the head onto the folders' classes with --class-subset or --class-map, use a head with {} classes, \
             or, for folders named by class number, --label-order numeric",
            data.classes.len(),
            data.classes.len()
        ),
    ))
}

/// The folder's warnings (said by the first shard, or a whole run) and the
/// files that are not samples which this shard reaches: each file and
/// warning is said by one shard of a split.
fn report_data(data: &Dataset, shard: &Range<usize>) {
    if shard.start == 0 {
        for w in &data.warnings {
            crate::reporter::warn(&format!("{}: {w}", data.path.display()));
        }
    }
    let skipped: Vec<(String, String)> = shard_files(data, shard)
        .map(|f| (f.path.display().to_string(), f.why.clone()))
        .collect();
    report_skipped("files that are not readable images", &skipped);
}

/// The files of an image folder that are not samples and fall in `shard`.
fn shard_files<'a>(
    data: &'a Dataset,
    shard: &'a Range<usize>,
) -> impl Iterator<Item = &'a SkippedFile> {
    let n = data.len();
    data.skipped_files
        .iter()
        .filter(move |f| f.in_shard(shard, n))
}

/// Reports images that could not be read, once, with their reasons.
fn report_failed(data: &Dataset, failed: &[(usize, String)]) {
    let v: Vec<(String, String)> = failed
        .iter()
        .map(|(i, e)| {
            let path = data.describe(*i);
            let why = own_reason(&path, e).to_string();
            (path, why)
        })
        .collect();
    report_skipped("unreadable images", &v);
}

fn report_skipped(what: &str, v: &[(String, String)]) {
    if v.is_empty() {
        return;
    }
    let mut text = format!("skipped {} {what} (all listed in skipped.txt):", v.len());
    for (p, why) in v.iter().take(SHOWN) {
        text.push_str(&format!("\n  {p}: {why}"));
    }
    if v.len() > SHOWN {
        text.push_str(&format!("\n  … and {} more", v.len() - SHOWN));
    }
    crate::reporter::warn(&text);
}

/// The lines of skipped.txt: every file of `shard` not evaluated, one per
/// line, then a tab and its reason (control characters shown escaped, the
/// path not repeated in the reason).
pub fn skipped_lines(data: &Dataset, shard: &Range<usize>, failed: &[(usize, String)]) -> String {
    let mut lines: Vec<(String, String)> = shard_files(data, shard)
        .map(|f| (f.path.display().to_string(), f.why.clone()))
        .collect();
    lines.extend(failed.iter().map(|(i, e)| (data.describe(*i), e.clone())));
    let mut s = String::new();
    for (path, why) in lines {
        let why = own_reason(&path, &why);
        s.push_str(&format!("{}\t{}\n", one_line(&path), one_line(why)));
    }
    s
}

/// The reason for `path` without the path that an error message starts with.
fn own_reason<'a>(path: &str, why: &'a str) -> &'a str {
    why.strip_prefix(path)
        .and_then(|w| w.strip_prefix(": "))
        .unwrap_or(why)
}

/// `t` on one line: control characters (line breaks, tabs) as escapes.
fn one_line(t: &str) -> String {
    t.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// How many files of `shard` were not evaluated: its lines in skipped.txt.
pub fn skipped_count(data: &Dataset, shard: &Range<usize>, unreadable: usize) -> usize {
    shard_files(data, shard).count() + unreadable
}

/// Checks that a merged expertise file was made from this run's models,
/// data and entropy settings.
pub fn check_expertise_from(path: &Path, expected: &Value, found: Option<Value>) -> Result<()> {
    let found = found.ok_or_else(|| {
        Error::file(
            path,
            "has no provenance (made by an older dawin?): rerun `dawin expertise` and `dawin merge`",
        )
    })?;
    if provenance::key_of(&found) != provenance::key_of(expected) {
        return Err(Error::file(
            path,
            "was made from other models, data or settings (temperature, projection, precision) than this run",
        ));
    }
    Ok(())
}

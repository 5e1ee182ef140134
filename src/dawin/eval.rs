//! `dawin eval`: the expertise pass (both models' logits, cached), λ per
//! sample, DaWin's interpolated inference under one of three strategies, the
//! baselines, and the reports.

use super::bmm::BetaMixture;
use super::data::{Batch, Dataset};
use super::expertise::{self, Entropies, Expertise};
use super::report;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::model::{Model, Overrides};
use crate::tensorfile::{Tensor, TensorFile, write_f32};
use crate::vit::{BatchCap, DeviceModel, Interp, Precision, forward};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How DaWin's per-sample models are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// One batched pass through the dual-weight ops: each sample's own merged
    /// model, exactly, with no merged weights built.
    Exact,
    /// One working weight buffer lerped in place per sample (in λ order,
    /// skipping repeats), then a batch-1 forward.
    Materialize,
    /// K merged models from a Beta mixture fitted to λ.
    Bmm(usize),
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "exact" => Ok(Strategy::Exact),
            "materialize" => Ok(Strategy::Materialize),
            "bmm" => Ok(Strategy::Bmm(3)),
            _ => match s.strip_prefix("bmm:").map(|k| k.parse::<usize>()) {
                Some(Ok(k)) if k >= 1 => Ok(Strategy::Bmm(k)),
                _ => Err(format!(
                    "unknown strategy `{s}` (exact, materialize, bmm or bmm:K with K ≥ 1)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Exact => f.write_str("exact"),
            Strategy::Materialize => f.write_str("materialize"),
            Strategy::Bmm(k) => write!(f, "bmm:{k}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Zeroshot,
    Finetuned,
    WiseFt(f32),
    Ensemble,
    EnsembleDynamic,
    Dawin,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Zeroshot => "zeroshot".into(),
            Method::Finetuned => "finetuned".into(),
            Method::WiseFt(a) => format!("wise-ft:{a}"),
            Method::Ensemble => "ensemble".into(),
            Method::EnsembleDynamic => "ensemble-dynamic".into(),
            Method::Dawin => "dawin".into(),
        }
    }

    /// Parses `--methods`: a comma list; `wise-ft` alone means 0.1, …, 0.9.
    pub fn parse_list(s: &str) -> std::result::Result<Vec<Method>, String> {
        let mut out: Vec<Method> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let new: Vec<Method> = match item {
                "all" => {
                    let mut v = vec![Method::Zeroshot, Method::Finetuned];
                    v.extend((1..10).map(|i| Method::WiseFt(i as f32 / 10.0)));
                    v.extend([Method::Ensemble, Method::EnsembleDynamic, Method::Dawin]);
                    v
                }
                "zeroshot" => vec![Method::Zeroshot],
                "finetuned" => vec![Method::Finetuned],
                "wise-ft" => (1..10).map(|i| Method::WiseFt(i as f32 / 10.0)).collect(),
                "ensemble" => vec![Method::Ensemble],
                "ensemble-dynamic" => vec![Method::EnsembleDynamic],
                "dawin" => vec![Method::Dawin],
                other => match other.strip_prefix("wise-ft:").map(|a| a.parse::<f32>()) {
                    Some(Ok(a)) if (0.0..=1.0).contains(&a) => vec![Method::WiseFt(a)],
                    _ => {
                        return Err(format!(
                            "unknown method `{other}` (zeroshot, finetuned, wise-ft, wise-ft:α with α in [0,1], ensemble, ensemble-dynamic, dawin, all)"
                        ));
                    }
                },
            };
            for m in new {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        if out.is_empty() {
            return Err("no methods given".into());
        }
        Ok(out)
    }
}

/// Logit projection to the evaluated label space, applied before softmax.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    None,
    /// Keep these class indices (ImageNet-A/-R's 200 classes).
    Subset(Vec<usize>),
    /// Max-pool these groups of classes (ObjectNet's 113).
    Map(Vec<Vec<usize>>),
}

impl Projection {
    /// Reads a class-subset file: indices separated by commas or whitespace.
    pub fn subset_file(path: &Path) -> Result<Self> {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v = parse_indices(path, &t)?;
        if v.is_empty() {
            return Err(Error::file(path, "the class subset is empty"));
        }
        Ok(Projection::Subset(v))
    }

    /// Reads a class-map file: one output class per line, listing the model
    /// classes pooled into it (commas or spaces; `#` starts a comment).
    pub fn map_file(path: &Path) -> Result<Self> {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut groups = Vec::new();
        for (ln, line) in t.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let g = parse_indices(path, line)?;
            if g.is_empty() {
                return Err(Error::file(path, format!("line {}: empty group", ln + 1)));
            }
            groups.push(g);
        }
        if groups.is_empty() {
            return Err(Error::file(path, "the class map has no groups"));
        }
        Ok(Projection::Map(groups))
    }

    pub fn out_classes(&self, c: usize) -> usize {
        match self {
            Projection::None => c,
            Projection::Subset(v) => v.len(),
            Projection::Map(g) => g.len(),
        }
    }

    pub fn check(&self, c: usize) -> Result<()> {
        let bad = match self {
            Projection::None => None,
            Projection::Subset(v) => v.iter().find(|&&i| i >= c),
            Projection::Map(g) => g.iter().flatten().find(|&&i| i >= c),
        };
        match bad {
            Some(i) => Err(crate::invalid!(
                "class index {i} in the label projection is out of range for a {c}-class head"
            )),
            None => Ok(()),
        }
    }

    pub fn apply(&self, logits: &[f32], c: usize) -> Vec<f32> {
        match self {
            Projection::None => logits.to_vec(),
            Projection::Subset(v) => logits
                .chunks(c)
                .flat_map(|r| v.iter().map(move |&i| r[i]))
                .collect(),
            Projection::Map(g) => logits
                .chunks(c)
                .flat_map(|r| {
                    g.iter()
                        .map(move |grp| grp.iter().map(|&i| r[i]).fold(f32::NEG_INFINITY, f32::max))
                })
                .collect(),
        }
    }
}

fn parse_indices(path: &Path, t: &str) -> Result<Vec<usize>> {
    t.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| Error::file(path, format!("`{s}` is not a class index")))
        })
        .collect()
}

pub struct EvalOptions {
    pub pretrained: PathBuf,
    pub finetuned: PathBuf,
    pub data: PathBuf,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    pub expertise: Expertise,
    pub temperature: (f32, f32),
    pub strategy: Strategy,
    pub methods: Vec<Method>,
    pub projection: Projection,
    pub overrides: Overrides,
    /// (i, n): evaluate the i-th (0-based) of n contiguous slices.
    pub shard: Option<(usize, usize)>,
    /// Whole-set expertise from `dawin merge` (entropies of every sample).
    pub expertise_from: Option<PathBuf>,
    pub progress: bool,
    pub seed: u64,
    /// Arithmetic of the transformer blocks (bf16 needs emu or cuda).
    pub precision: Precision,
}

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
}

pub fn progress_bar(len: usize, what: &str, visible: bool) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if !visible || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} images {per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Loads both models and checks that DaWin can interpolate them.
pub fn load_pair(pt: &Path, ft: &Path, ov: Overrides) -> Result<(Model, Model)> {
    let a = Model::load(pt, ov)?;
    let b = Model::load(ft, ov)?;
    let diffs = a.shape_differences(&b);
    if !diffs.is_empty() {
        let shown: Vec<&String> = diffs.iter().take(10).collect();
        return Err(crate::invalid!(
            "{} and {} have different architectures ({} differences): {}{}",
            pt.display(),
            ft.display(),
            diffs.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            if diffs.len() > 10 { "; ..." } else { "" }
        ));
    }
    for (m, p) in [(&a, pt), (&b, ft)] {
        if m.spec.classes.is_none() {
            return Err(Error::file(
                p,
                "has no classification head (`classification_head.weight`); DaWin needs logits",
            ));
        }
    }
    if a.spec.classes != b.spec.classes {
        return Err(crate::invalid!(
            "the heads have different class counts: {:?} vs {:?}",
            a.spec.classes,
            b.spec.classes
        ));
    }
    Ok((a, b))
}

/// Both models and a working buffer resident on one executor.
pub struct Engine<'a> {
    pub ex: &'a dyn Executor,
    pub pt: DeviceModel,
    pub ft: DeviceModel,
    precision: Precision,
    work: Option<DeviceModel>,
    host: &'a Model,
    /// λ the working buffer holds now, to skip repeated lerps.
    work_lambda: Option<f32>,
    pub lerps: usize,
    pub lerps_skipped: usize,
    /// Batches are split further when the device runs out of memory.
    pub cap: BatchCap,
}

impl<'a> Engine<'a> {
    pub fn new(
        ex: &'a dyn Executor,
        pt: &'a Model,
        ft: &Model,
        precision: Precision,
    ) -> Result<Self> {
        let d_pt = DeviceModel::upload_as(ex, pt, precision)?;
        let d_ft = match DeviceModel::upload_as(ex, ft, precision) {
            Ok(d) => d,
            Err(e) => {
                d_pt.free(ex);
                return Err(e);
            }
        };
        Ok(Engine {
            ex,
            pt: d_pt,
            ft: d_ft,
            precision,
            work: None,
            host: pt,
            work_lambda: None,
            lerps: 0,
            lerps_skipped: 0,
            cap: BatchCap::new(usize::MAX),
        })
    }

    /// Makes the working model `(1−λ)·pt + λ·ft`, lerping in place only if
    /// λ changed since the last call.
    pub fn set_merged(&mut self, lambda: f32) -> Result<()> {
        if self.work.is_none() {
            self.work = Some(DeviceModel::alloc_like_as(
                self.ex,
                self.host,
                self.precision,
            )?);
        }
        let w = self.work.as_ref().unwrap();
        if self.work_lambda == Some(lambda) {
            self.lerps_skipped += 1;
        } else {
            self.ex.lerp(w.flat, self.pt.flat, self.ft.flat, lambda)?;
            w.lerp_bf16(self.ex, &self.pt, &self.ft, lambda)?;
            self.work_lambda = Some(lambda);
            self.lerps += 1;
        }
        Ok(())
    }

    /// Logits of the working (merged) model.
    pub fn merged_logits(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        let w = self.work.as_ref().expect("set_merged first");
        self.logits(w, pixels, n)
    }

    /// Logits of `n` images, in chunks that fit in device memory.
    fn chunked(
        &self,
        pixels: &[f32],
        n: usize,
        f: impl Fn(&[f32], usize, usize) -> Result<crate::vit::Output>,
    ) -> Result<Vec<f32>> {
        let img = pixels.len() / n.max(1);
        let mut out = Vec::new();
        self.cap.run(
            n,
            |start, k| f(&pixels[start * img..(start + k) * img], start, k),
            |_, o| out.extend(o.logits.expect("checked in load_pair")),
        )?;
        Ok(out)
    }

    pub fn logits(&self, m: &DeviceModel, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.chunked(pixels, n, |px, _, k| forward(self.ex, m, px, k, None))
    }

    pub fn dual_logits(&self, pixels: &[f32], n: usize, lambda: &[f32]) -> Result<Vec<f32>> {
        self.chunked(pixels, n, |px, start, k| {
            let ip = Interp {
                other: &self.ft,
                lambda: &lambda[start..start + k],
            };
            forward(self.ex, &self.pt, px, k, Some(ip))
        })
    }

    /// Device bytes held by both models and the working (merged) one.
    pub fn resident_bytes(&self) -> usize {
        [Some(&self.pt), Some(&self.ft), self.work.as_ref()]
            .into_iter()
            .flatten()
            .map(DeviceModel::resident_bytes)
            .sum()
    }

    pub fn free(self) {
        let ex = self.ex;
        self.pt.free(ex);
        self.ft.free(ex);
        if let Some(w) = self.work {
            w.free(ex);
        }
    }
}

/// How a pass over the data runs.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    pub batch_size: usize,
    pub progress: bool,
}

/// Raw (unprojected) logits of the samples at `indices` (dataset order),
/// from each model of DaWin's per-sample interpolation under `strategy`.
/// `lambda[j]` belongs to `indices[j]`; `groups` gives each sample's
/// component and the components' λ for `Bmm`.
pub fn dawin_logits(
    engine: &mut Engine,
    data: &Dataset,
    indices: &[usize],
    lambda: &[f32],
    strategy: Strategy,
    groups: Option<(&[usize], &[f32])>,
    pass: Pass,
) -> Result<Vec<f32>> {
    let Pass {
        batch_size,
        progress,
    } = pass;
    let c = engine.pt.spec.classes.expect("head");
    let mut out = vec![0f32; indices.len() * c];
    let pos: HashMap<usize, usize> = indices.iter().enumerate().map(|(j, &i)| (i, j)).collect();
    let pb = progress_bar(indices.len(), "dawin", progress);
    let mut place = |b: &Batch, logits: &[f32]| {
        for (k, i) in b.indices.iter().enumerate() {
            let j = pos[i];
            out[j * c..(j + 1) * c].copy_from_slice(&logits[k * c..(k + 1) * c]);
        }
        pb.inc(b.indices.len() as u64);
    };
    let lost = |b: &Batch| -> Result<()> {
        match b.failed.first() {
            Some((i, e)) => Err(crate::invalid!(
                "{} could not be read on a second pass: {e}",
                data.describe(*i)
            )),
            None => Ok(()),
        }
    };
    match strategy {
        Strategy::Exact => {
            data.for_each_batch(indices, batch_size, |b| {
                lost(&b)?;
                let l: Vec<f32> = b.indices.iter().map(|i| lambda[pos[i]]).collect();
                let logits = engine.dual_logits(&b.pixels, b.indices.len(), &l)?;
                place(&b, &logits);
                Ok(())
            })?;
        }
        Strategy::Materialize => {
            // λ order makes equal λs adjacent, so their lerps are skipped.
            let mut order: Vec<usize> = (0..indices.len()).collect();
            order.sort_by(|&a, &b| lambda[a].total_cmp(&lambda[b]));
            let ordered: Vec<usize> = order.iter().map(|&j| indices[j]).collect();
            data.for_each_batch(&ordered, 1, |b| {
                lost(&b)?;
                let l = lambda[pos[&b.indices[0]]];
                engine.set_merged(l)?;
                let logits = engine.merged_logits(&b.pixels, 1)?;
                place(&b, &logits);
                Ok(())
            })?;
        }
        Strategy::Bmm(_) => {
            let (comp, means) = groups.expect("bmm needs groups");
            for (k, &mean) in means.iter().enumerate() {
                let members: Vec<usize> = (0..indices.len())
                    .filter(|&j| comp[j] == k)
                    .map(|j| indices[j])
                    .collect();
                if members.is_empty() {
                    continue;
                }
                engine.set_merged(mean)?;
                data.for_each_batch(&members, batch_size, |b| {
                    lost(&b)?;
                    let logits = engine.merged_logits(&b.pixels, b.indices.len())?;
                    place(&b, &logits);
                    Ok(())
                })?;
            }
        }
    }
    pb.finish_and_clear();
    Ok(out)
}

fn file_hash(path: &Path) -> Result<String> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&b)))
}

/// Softmax of each row of `z/t`, in f64.
fn softmax_rows(z: &[f32], c: usize, t: f32) -> Vec<f64> {
    z.chunks(c)
        .flat_map(|r| {
            let s = crate::ops::softmax_entropy::row(r, t);
            r.iter()
                .map(move |&v| ((v as f64 / t as f64) - s.logsumexp as f64).exp())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn argmax_rows<T: Copy + PartialOrd>(v: &[T], c: usize) -> Vec<usize> {
    v.chunks(c)
        .map(|r| {
            let mut best = 0;
            for (i, x) in r.iter().enumerate() {
                if x > &r[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// Entropies of projected logits on the executor (`softmax_entropy`), with
/// NaN rows set to the maximum, ln C, and reported.
pub fn entropies(
    ex: &dyn Executor,
    logits: &[f32],
    c: usize,
    t: f32,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let n = logits.len() / c.max(1);
    let mut h = Vec::with_capacity(n);
    let mut nan = Vec::new();
    for start in (0..n).step_by(65536) {
        let rows = 65536.min(n - start);
        let inp = ex.upload(&logits[start * c..(start + rows) * c])?;
        let out = ex.alloc(rows * 4)?;
        ex.softmax_entropy(inp, out, rows, c, t)?;
        let stats = ex.download(out)?;
        ex.free(inp);
        ex.free(out);
        for (r, s) in stats.chunks(4).enumerate() {
            if s[0].is_nan() {
                nan.push(start + r);
                h.push((c as f64).ln());
            } else {
                h.push(s[0] as f64);
            }
        }
    }
    Ok((h, nan))
}

/// The cache of the expertise pass: raw logits per model, keyed by a hash
/// of both model files, the data, the shard and the model flags.
struct Cache {
    key: String,
    tensors: HashMap<String, Vec<f32>>,
}

impl Cache {
    fn load(path: &Path, key: &str) -> Option<Cache> {
        let f = TensorFile::open(path).ok()?;
        if f.metadata().get("key").map(String::as_str) != Some(key) {
            return None;
        }
        let tensors = f
            .names()
            .into_iter()
            .filter_map(|n| f.read_f32(&n).ok().map(|t| (n, t.data)))
            .collect();
        Some(Cache {
            key: key.to_string(),
            tensors,
        })
    }

    fn save(&self, path: &Path, n: usize) -> Result<()> {
        let owned: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, v)| {
                let cols = v.len() / n.max(1);
                (
                    k.clone(),
                    Tensor {
                        shape: if cols == 1 { vec![n] } else { vec![n, cols] },
                        data: v.clone(),
                    },
                )
            })
            .collect();
        let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let meta = HashMap::from([("key".to_string(), self.key.clone())]);
        write_f32(path, &refs, Some(meta))
    }
}

pub fn run(o: &EvalOptions, ex: &dyn Executor) -> Result<EvalResult> {
    let t_start = Instant::now();
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    let (pt, ft) = load_pair(&o.pretrained, &o.finetuned, o.overrides)?;
    let c_raw = pt.spec.classes.expect("checked");
    o.projection.check(c_raw)?;
    let c = o.projection.out_classes(c_raw);
    let data = Dataset::open(&o.data, pt.spec.image_size)?;
    if data.is_empty() {
        return Err(Error::file(&o.data, "the data set is empty"));
    }
    if let Some(i) = data.labels.iter().position(|&y| y < 0 || y as usize >= c) {
        return Err(Error::file(
            &o.data,
            format!(
                "label {} of {} is out of range for {c} classes",
                data.labels[i],
                data.describe(i)
            ),
        ));
    }
    let n_all = data.len();
    let shard_range = match o.shard {
        Some((i, n)) if n == 0 || i >= n => {
            return Err(crate::invalid!("--shard {i}/{n}: need 0 ≤ i < n"));
        }
        Some((i, n)) => (i * n_all / n)..((i + 1) * n_all / n),
        None => 0..n_all,
    };
    let shard: Vec<usize> = shard_range.clone().collect();
    if shard.is_empty() {
        return Err(crate::invalid!(
            "shard {:?} of {n_all} samples is empty",
            o.shard
        ));
    }
    std::fs::create_dir_all(&o.out_dir).map_err(|e| Error::io(&o.out_dir, e))?;
    seconds.insert("load".into(), t_start.elapsed().as_secs_f64());

    // 1. Expertise pass (cached): raw logits of both models and of WiSE-FT.
    let phase = crate::exec::range(ex, "expertise pass");
    let t = Instant::now();
    let alphas: Vec<f32> = o
        .methods
        .iter()
        .filter_map(|m| {
            if let Method::WiseFt(a) = m {
                Some(*a)
            } else {
                None
            }
        })
        .collect();
    let key = {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in [&o.pretrained, &o.finetuned] {
            h.update(file_hash(p)?.as_bytes());
        }
        h.update(data.fingerprint().as_bytes());
        h.update(
            format!(
                "{:?}|{}|{}|{}|{:?}",
                shard_range, pt.spec.heads, pt.spec.act, pt.spec.ln_eps, o.overrides
            )
            .as_bytes(),
        );
        // f32 keys stay as they were, so existing caches remain valid.
        if o.precision != Precision::F32 {
            h.update(format!("|{}", o.precision).as_bytes());
        }
        format!("{:032x}", h.digest128())
    };
    let cache_path = o.out_dir.join("cache.safetensors");
    let mut cache = Cache::load(&cache_path, &key).unwrap_or(Cache {
        key: key.clone(),
        tensors: HashMap::new(),
    });
    let want: Vec<String> = [
        "logits_pt".to_string(),
        "logits_ft".to_string(),
        "valid".to_string(),
    ]
    .into_iter()
    .chain(alphas.iter().map(|a| format!("logits_wise-ft:{a}")))
    .collect();
    let missing: Vec<String> = want
        .iter()
        .filter(|k| !cache.tensors.contains_key(*k))
        .cloned()
        .collect();
    let cache_hit = missing.is_empty();
    let mut engine = Engine::new(ex, &pt, &ft, o.precision)?;
    let mut failed: Vec<(usize, String)> = Vec::new();
    if !cache_hit {
        let need_static = missing
            .iter()
            .any(|k| k == "logits_pt" || k == "logits_ft" || k == "valid");
        let need_alpha: Vec<f32> = alphas
            .iter()
            .copied()
            .filter(|a| missing.contains(&format!("logits_wise-ft:{a}")))
            .collect();
        let ns = shard.len();
        let mut bufs: HashMap<String, Vec<f32>> = HashMap::new();
        let mut valid = vec![0f32; ns];
        let pb = progress_bar(ns, "expertise", o.progress);
        let base = shard_range.start;
        data.for_each_batch(&shard, o.batch_size, |b| {
            let n = b.indices.len();
            failed.extend(b.failed.iter().cloned());
            if n > 0 {
                let mut put = |name: String, logits: Vec<f32>| {
                    let v = bufs
                        .entry(name)
                        .or_insert_with(|| vec![f32::NAN; ns * c_raw]);
                    for (k, i) in b.indices.iter().enumerate() {
                        let j = i - base;
                        v[j * c_raw..(j + 1) * c_raw]
                            .copy_from_slice(&logits[k * c_raw..(k + 1) * c_raw]);
                    }
                };
                if need_static {
                    put("logits_pt".into(), engine.logits(&engine.pt, &b.pixels, n)?);
                    put("logits_ft".into(), engine.logits(&engine.ft, &b.pixels, n)?);
                }
                for &a in &need_alpha {
                    engine.set_merged(a)?;
                    let l = engine.merged_logits(&b.pixels, n)?;
                    put(format!("logits_wise-ft:{a}"), l);
                }
                for i in &b.indices {
                    valid[i - base] = 1.0;
                }
            }
            pb.inc((n + b.failed.len()) as u64);
            Ok(())
        })?;
        pb.finish_and_clear();
        if need_static {
            bufs.insert("valid".into(), valid);
        }
        cache.tensors.extend(bufs);
        cache.save(&cache_path, shard.len())?;
    }
    for (i, e) in &failed {
        eprintln!("warning: skipped {}: {e}", data.describe(*i));
    }
    drop(phase);
    seconds.insert("expertise".into(), t.elapsed().as_secs_f64());

    // Evaluated samples: the readable ones of the shard.
    let valid = &cache.tensors["valid"];
    let local: Vec<usize> = (0..shard.len()).filter(|&j| valid[j] > 0.5).collect();
    let skipped = shard.len() - local.len();
    if local.is_empty() {
        return Err(Error::file(&o.data, "no sample could be read"));
    }
    let indices: Vec<usize> = local.iter().map(|&j| shard[j]).collect();
    let rows = |name: &str| -> Vec<f32> {
        let v = &cache.tensors[name];
        let raw: Vec<f32> = local
            .iter()
            .flat_map(|&j| v[j * c_raw..(j + 1) * c_raw].iter().copied())
            .collect();
        o.projection.apply(&raw, c_raw)
    };
    let (lp, lf) = (rows("logits_pt"), rows("logits_ft"));
    let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();

    // 2. λ per sample.
    let phase = crate::exec::range(ex, "lambda");
    let t = Instant::now();
    let (hp, nan_p) = entropies(ex, &lp, c, o.temperature.0)?;
    let (hf, nan_f) = entropies(ex, &lf, c, o.temperature.1)?;
    for (which, nans) in [("pretrained", &nan_p), ("fine-tuned", &nan_f)] {
        for &j in nans.iter().take(5) {
            eprintln!(
                "warning: {} has a NaN logit from the {which} model; its entropy is taken as maximal",
                data.describe(indices[j])
            );
        }
        if nans.len() > 5 {
            eprintln!(
                "warning: ... {} samples in all with NaN logits from the {which} model",
                nans.len()
            );
        }
    }
    let ent = Entropies { pt: hp, ft: hf };
    let offset = match &o.expertise_from {
        Some(p) => {
            let full = read_expertise(p, n_all)?;
            expertise::offset_constants(&full)
        }
        None => expertise::offset_constants(&ent),
    };
    let inputs = expertise::Inputs {
        logits_pt: &lp,
        logits_ft: &lf,
        classes: c,
        labels: &labels,
        entropies: &ent,
        offset,
    };
    let lambda = expertise::lambdas(o.expertise, &inputs);
    drop(phase);
    seconds.insert("lambda".into(), t.elapsed().as_secs_f64());

    // 3. DaWin.
    let phase = crate::exec::range(ex, "dawin pass");
    let t = Instant::now();
    let mut bmm: Option<BetaMixture> = None;
    let mut components: Option<Vec<usize>> = None;
    let mut dawin: Option<Vec<f32>> = None;
    if o.methods.contains(&Method::Dawin) {
        let groups = if let Strategy::Bmm(k) = o.strategy {
            // Fit on the whole set when a shared expertise pass is given.
            let fit_on: Vec<f32> = match &o.expertise_from {
                Some(p) => {
                    let full = read_expertise(p, n_all)?;
                    let fi = expertise::Inputs {
                        logits_pt: &[],
                        logits_ft: &[],
                        classes: c,
                        labels: &vec![0; full.pt.len()],
                        entropies: &full,
                        offset,
                    };
                    lambdas_without_logits(o.expertise, &fi)?
                }
                None => lambda.clone(),
            };
            let m = BetaMixture::fit(&fit_on, k, o.seed)
                .ok_or_else(|| crate::invalid!("cannot fit a mixture to no λ values"))?;
            let comp = m.predict(&lambda);
            let means: Vec<f32> = m.means().iter().map(|&v| v as f32).collect();
            components = Some(comp);
            bmm = Some(m);
            Some(means)
        } else {
            None
        };
        let g = groups
            .as_ref()
            .map(|means| (components.as_deref().unwrap(), means.as_slice()));
        let raw = dawin_logits(
            &mut engine,
            &data,
            &indices,
            &lambda,
            o.strategy,
            g,
            Pass {
                batch_size: o.batch_size,
                progress: o.progress,
            },
        )?;
        dawin = Some(o.projection.apply(&raw, c_raw));
    }
    drop(phase);
    seconds.insert("dawin".into(), t.elapsed().as_secs_f64());
    let (lerps, lerps_skipped) = (engine.lerps, engine.lerps_skipped);
    let param_bytes = engine.resident_bytes();
    engine.free();

    // 4. Predictions and accuracy.
    let mut predictions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for m in &o.methods {
        let pred = match m {
            Method::Zeroshot => argmax_rows(&lp, c),
            Method::Finetuned => argmax_rows(&lf, c),
            Method::WiseFt(a) => argmax_rows(&rows(&format!("logits_wise-ft:{a}")), c),
            Method::Ensemble | Method::EnsembleDynamic => {
                let (pp, pf) = (
                    softmax_rows(&lp, c, o.temperature.0),
                    softmax_rows(&lf, c, o.temperature.1),
                );
                let mixed: Vec<f64> = (0..pp.len())
                    .map(|k| {
                        let l = if *m == Method::Ensemble {
                            0.5
                        } else {
                            lambda[k / c] as f64
                        };
                        (1.0 - l) * pp[k] + l * pf[k]
                    })
                    .collect();
                argmax_rows(&mixed, c)
            }
            Method::Dawin => argmax_rows(dawin.as_ref().unwrap(), c),
        };
        order.push(m.name());
        predictions.insert(m.name(), pred);
    }
    let t = Instant::now();
    let summary = report::write_all(&report::Report {
        out_dir: &o.out_dir,
        order: &order,
        predictions: &predictions,
        labels: &labels,
        indices: &indices,
        entropies: &ent,
        lambda: &lambda,
        components: components.as_deref(),
        bmm: bmm.as_ref(),
        skipped,
        device: &ex.name(),
        seconds: &mut seconds,
        extra: serde_json::json!({
            "expertise": format!("{:?}", o.expertise).to_lowercase(),
            "interp": o.strategy.to_string(),
            "precision": o.precision.to_string(),
            "temperature": [o.temperature.0, o.temperature.1],
            "samples": shard.len(),
            "shard": o.shard.map(|(i, n)| format!("{i}/{n}")),
            "cache": if cache_hit { "hit" } else { "computed" },
            "lerps": lerps,
            "lerps_skipped": lerps_skipped,
            "device_param_bytes": param_bytes,
            "offset": {"b": offset.0, "w": offset.1},
        }),
        t0: t,
    })?;
    let table = report::table(&order, &summary);
    Ok(EvalResult {
        summary,
        indices,
        lambdas: lambda,
        entropies: ent,
        dawin_logits: dawin,
        predictions,
        table,
    })
}

/// λ for rules that need only entropies (used to fit BMM on a merged pass).
fn lambdas_without_logits(rule: Expertise, x: &expertise::Inputs) -> Result<Vec<f32>> {
    match rule {
        Expertise::Entropy | Expertise::EntropyOffset | Expertise::Selective => {
            Ok(expertise::lambdas(rule, x))
        }
        _ => Err(crate::invalid!(
            "--expertise-from supports entropy, entropy-offset and selective"
        )),
    }
}

/// Reads a merged expertise file (`dawin merge` of `dawin expertise`
/// shards): the entropies of every readable sample of the whole set.
pub fn read_expertise(path: &Path, n: usize) -> Result<Entropies> {
    let f = TensorFile::open(path)?;
    let pt = f.read_f32("entropy_pt")?;
    let ft = f.read_f32("entropy_ft")?;
    if pt.data.len() != n || ft.data.len() != n {
        return Err(Error::file(
            path,
            format!(
                "holds {} entropies, but the data set has {n} samples",
                pt.data.len()
            ),
        ));
    }
    // Unreadable samples are NaN there; they take no part in the statistics.
    let (p, q): (Vec<f64>, Vec<f64>) = pt
        .data
        .iter()
        .zip(&ft.data)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (a as f64, b as f64))
        .unzip();
    if p.is_empty() {
        return Err(Error::file(path, "holds no finite entropies"));
    }
    Ok(Entropies { pt: p, ft: q })
}

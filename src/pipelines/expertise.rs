//! The expertise pass: the raw logits of both models (and of each WiSE-FT
//! α asked for) on every sample of a shard, from which the λ rules read
//! each model's expertise. Cached in the output folder ([`crate::pipelines::cache`]).

use crate::data::dataset::Dataset;
use crate::data::projection::Projection;
use crate::error::{Error, Result};
use crate::method::engine::Engine;
use crate::method::interp::Pass;
use crate::method::methods::Method;
use crate::model::batch::Lookahead;
use crate::pipelines::cache::Cache;
use crate::reporter;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// The cache entries the pass fills: `logits_pt`, `logits_ft`, `valid`
/// (1 where the sample was readable) and `logits_wise-ft:α`.
pub fn wise_key(alpha: f32) -> String {
    format!("logits_wise-ft:{alpha}")
}

/// The pass's result: the cache holding every entry asked for, and what
/// could not be read.
pub struct Endpoints {
    pub cache: Cache,
    /// The cache already held everything.
    pub cache_hit: bool,
    /// Samples that could not be read (dataset index, reason).
    pub failed: Vec<(usize, String)>,
}

/// Runs what the cache at `cache_path` (with `key`) lacks for `shard` and
/// the WiSE-FT `alphas`, retries the samples an earlier pass could not
/// read, and saves the cache.
pub fn expertise_pass(
    engine: &mut Engine,
    data: &Dataset,
    shard: Range<usize>,
    alphas: &[f32],
    (key, cache_path): (String, &Path),
    pass: Pass,
) -> Result<Endpoints> {
    let (n, c) = (shard.len(), engine.classes());
    let mut cache = match Cache::load(cache_path, &key, n, c) {
        Ok(Some(cache)) => cache,
        Ok(None) => Cache::new(key),
        Err(why) => {
            reporter::note(&format!("{}: {why}; recomputing it", cache_path.display()));
            Cache::new(key)
        }
    };
    let has = |k: &str| cache.tensors.contains_key(k);
    let statics = has("logits_pt") && has("logits_ft") && has("valid");
    let missing: Vec<f32> = alphas
        .iter()
        .copied()
        .filter(|&a| !has(&wise_key(a)))
        .collect();
    let all: Vec<usize> = shard.clone().collect();
    let mut failed = Vec::new();
    let mut ran = false;
    if !statics {
        let run = Needed {
            statics: true,
            alphas,
        };
        failed = compute(engine, data, &shard, &all, &run, pass, &mut cache)?;
        ran = true;
    } else {
        let valid = &cache.tensors["valid"];
        let (readable, unread): (Vec<usize>, Vec<usize>) =
            all.iter().partition(|&&i| valid[i - shard.start] > 0.5);
        if !missing.is_empty() {
            note_partial_reuse(cache_path, &missing);
            let run = Needed {
                statics: false,
                alphas: &missing,
            };
            let again = pass.clone();
            compute(engine, data, &shard, &readable, &run, again, &mut cache)?;
            ran = true;
        }
        if !unread.is_empty() {
            // Samples once unreadable are tried again: the user may have fixed them.
            let run = Needed {
                statics: true,
                alphas,
            };
            failed = compute(engine, data, &shard, &unread, &run, pass, &mut cache)?;
            ran = true;
        }
    }
    if ran {
        cache.save(cache_path, n)?;
    }
    Ok(Endpoints {
        cache,
        cache_hit: !ran,
        failed,
    })
}

/// Says in one line that a cache was reused only in part: it lacks the
/// logits of the WiSE-FT models at `missing`, which are computed now.
fn note_partial_reuse(cache_path: &Path, missing: &[f32]) {
    let list: Vec<String> = missing.iter().map(|a| a.to_string()).collect();
    reporter::note(&format!(
        "{}: reusing both models' logits; computing WiSE-FT α = {} it lacks \
         (give `dawin expertise` the same --methods to cache them)",
        cache_path.display(),
        list.join(", ")
    ));
}

/// What a pass computes.
struct Needed<'a> {
    /// Both models' logits and the readable mask.
    statics: bool,
    alphas: &'a [f32],
}

/// Runs `run` over the samples `indices` of `shard`, writing their rows
/// into the cache's tensors (created NaN-filled where absent); returns the
/// samples that could not be read.
/// One forward of the expertise pass.
enum Forward {
    Pretrained,
    Finetuned,
    /// The WiSE-FT model at this α.
    Wise(f32),
}

fn compute(
    engine: &mut Engine,
    data: &Dataset,
    shard: &Range<usize>,
    indices: &[usize],
    run: &Needed,
    pass: Pass,
    cache: &mut Cache,
) -> Result<Vec<(usize, String)>> {
    let (ns, c) = (shard.len(), engine.classes());
    let mut failed = Vec::new();
    let bufs = &mut cache.tensors;
    if run.statics {
        bufs.entry("valid".into()).or_insert_with(|| vec![0f32; ns]);
    }
    let pb = reporter::progress(
        indices.len(),
        &format!("{}expertise", pass.label),
        pass.progress,
    );
    let mut forwards = Vec::new();
    if run.statics {
        forwards.extend([Forward::Pretrained, Forward::Finetuned]);
    }
    forwards.extend(run.alphas.iter().map(|&a| Forward::Wise(a)));
    data.for_each_batch_ahead(indices, pass.batch_size, |b, upcoming| {
        let n = b.indices.len();
        failed.extend(b.failed.iter().cloned());
        let mut put = |name: String, logits: Vec<f32>| {
            let v = bufs.entry(name).or_insert_with(|| vec![f32::NAN; ns * c]);
            for (k, i) in b.indices.iter().enumerate() {
                let j = i - shard.start;
                v[j * c..(j + 1) * c].copy_from_slice(&logits[k * c..(k + 1) * c]);
            }
        };
        if n > 0 {
            for (k, f) in forwards.iter().enumerate() {
                // The batch's last forward stages the next batch's images.
                let next = (k + 1 == forwards.len()).then_some(upcoming as &mut dyn Lookahead);
                let images = b.images();
                let (name, logits) = match *f {
                    Forward::Pretrained => (
                        "logits_pt".into(),
                        engine.logits_ahead(&engine.pt, images, next)?,
                    ),
                    Forward::Finetuned => (
                        "logits_ft".into(),
                        engine.logits_ahead(&engine.ft, images, next)?,
                    ),
                    Forward::Wise(a) => {
                        engine.set_merged(a)?;
                        (wise_key(a), engine.merged_logits_ahead(images, next)?)
                    }
                };
                put(name, logits);
            }
            if run.statics {
                let valid = bufs.get_mut("valid").expect("created above");
                for i in &b.indices {
                    valid[i - shard.start] = 1.0;
                }
            }
        }
        pb.inc((n + b.failed.len()) as u64);
        Ok(())
    })?;
    pb.finish();
    Ok(failed)
}

/// The evaluated samples (the shard's readable ones) and their projected
/// logits from the expertise pass.
pub struct Samples {
    /// Dataset indices.
    pub indices: Vec<usize>,
    pub labels: Vec<i64>,
    pub pt: Vec<f32>,
    pub ft: Vec<f32>,
    /// Each asked-for `wise-ft:α`'s logits, by method name.
    pub wise: HashMap<String, Vec<f32>>,
    /// Per-sample maxima of the raw (unprojected) logits, (pt, ft).
    pub raw_max: (Vec<f32>, Vec<f32>),
    /// Unreadable samples of the shard.
    pub skipped: usize,
    /// Those that could not be read in this run (index, reason).
    pub failed: Vec<(usize, String)>,
}

impl Samples {
    /// The readable samples of `shard`, their logits from `e` (raw, of `c`
    /// classes) put through `projection`, and each WiSE-FT α's.
    pub fn select(
        e: &Endpoints,
        data: &Dataset,
        shard: &Range<usize>,
        c: usize,
        projection: &Projection,
        alphas: &[f32],
    ) -> Result<Samples> {
        let t = &e.cache.tensors;
        let local: Vec<usize> = (0..shard.len()).filter(|&j| t["valid"][j] > 0.5).collect();
        if local.is_empty() {
            return Err(Error::file(&data.path, "no sample could be read"));
        }
        let raw = |name: &str| -> Vec<f32> {
            let v = &t[name];
            local
                .iter()
                .flat_map(|&j| v[j * c..(j + 1) * c].iter().copied())
                .collect()
        };
        let rows = |name: &str| projection.apply(&raw(name), c);
        let maxima = |name: &str| -> Vec<f32> {
            let max = |r: &[f32]| r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            raw(name).chunks(c).map(max).collect()
        };
        let indices: Vec<usize> = local.iter().map(|&j| shard.start + j).collect();
        let wise = alphas
            .iter()
            .map(|&a| (Method::WiseFt(a).name(), rows(&wise_key(a))))
            .collect();
        Ok(Samples {
            labels: indices.iter().map(|&i| data.labels[i]).collect(),
            pt: rows("logits_pt"),
            ft: rows("logits_ft"),
            raw_max: (maxima("logits_pt"), maxima("logits_ft")),
            wise,
            skipped: shard.len() - local.len(),
            failed: e.failed.clone(),
            indices,
        })
    }
}

//! `dawin bench`: kernel benchmarks at the shapes DaWin runs, and images/s of
//! the whole pipeline under each interpolation strategy.
//!
//! Kernel times come from the executor's own timestamps (CUDA events on the
//! GPU), with caches flushed before every repeat; min and median over the
//! repeats are reported with % of the device's roofline.
//! `tools/bench_torch.py` prints the same rows for PyTorch on the same GPU.

use crate::buf::{DType, Element};
use crate::error::Result;
use crate::exec::{Executor, OwnedBuf};
use crate::method::bmm::BetaMixture;
use crate::method::engine::Engine;
use crate::method::multitask::merge_into;
use crate::model::batch::BatchCap;
use crate::model::placed::{PlacedModel, Precision};
use crate::model::stack::ModelStack;
use crate::model::vit::{forward, forward_stacked};
use crate::model::{Model, ModelSpec};
use crate::ops::attention::{Attention, AttentionShape};
use crate::ops::attention_bf16::AttentionBf16;
use crate::ops::gemm::{Gemm, GemmShape};
use crate::ops::gemm_bf16::{Epilogue, GemmBf16};
use crate::ops::gemm_dual::{DualGemm, GemmDual};
use crate::ops::gemm_dual_bf16::GemmDualBf16;
use crate::ops::layernorm::{LayerNorm, LayerNormShape};
use crate::ops::{Mix, Op, lerp::Lerp, quick_gelu::QuickGelu, softmax_entropy::SoftmaxEntropy};
use crate::profile::{Cost, Peak};
use crate::rng::SplitMix;
use std::fmt::Write;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Small shapes and a small model: for `cpu`/`emu` and smoke tests.
    pub quick: bool,
    pub repeats: usize,
    /// Images per batch for the ViT shapes.
    pub batch: usize,
    /// Images for the pipeline benchmark.
    pub images: usize,
    pub kernels: bool,
    pub pipeline: bool,
    /// Multi-task per-sample merges, batched against built per sample.
    pub mtl: bool,
    /// The image path (`super::bench_data`, which the caller runs: it
    /// needs no executor): decode, preprocessing, the pixel cache's reading.
    pub data: bool,
    /// Only benchmarks whose name contains this.
    pub filter: Option<String>,
    /// Arithmetic of the pipeline rows (named `… bf16` in bf16).
    pub precision: Precision,
    /// Report each row as it finishes (a status line; the table follows at
    /// the end).
    pub stream: bool,
}

impl BenchOptions {
    /// Reports a finished row, when streaming.
    pub(super) fn finished(&self, r: &Row) {
        if self.stream {
            crate::reporter::status(&format!(
                "  {:<44} min {:>9.3} ms  median {:>9.3} ms",
                r.name, r.min_ms, r.median_ms
            ));
        }
    }

    fn wanted(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }
}

/// One benchmark's result: milliseconds per call (kernels) or per pipeline
/// run, with the work done in that time.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub min_ms: f64,
    pub median_ms: f64,
    #[serde(flatten)]
    pub cost: Cost,
    /// Images per call, for pipeline rows.
    pub images: Option<usize>,
    /// Runs on tensor cores: %roof is against the bf16 tensor peak.
    pub tensor_core: bool,
}

impl Row {
    pub(super) fn from_times(
        name: String,
        mut ms: Vec<f64>,
        cost: Cost,
        images: Option<usize>,
    ) -> Row {
        ms.sort_by(f64::total_cmp);
        Row {
            name,
            min_ms: ms[0],
            median_ms: ms[ms.len() / 2],
            cost,
            images,
            tensor_core: false,
        }
    }
}

/// Every row asked for, kernels first.
pub fn run(ex: &dyn Executor, o: &BenchOptions) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if o.kernels {
        rows.extend(kernels(ex, o)?);
    }
    if o.pipeline {
        rows.extend(pipeline(ex, o)?);
    }
    if o.mtl {
        rows.extend(mtl(ex, o)?);
    }
    Ok(rows)
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix(seed);
    (0..n).map(|_| r.normal()).collect()
}

/// A buffer of `n` random values of `T`'s dtype.
fn random_on<T: Element>(ex: &dyn Executor, n: usize, seed: u64) -> Result<OwnedBuf<'_>> {
    let v = random(n, seed);
    match T::DTYPE {
        DType::Bf16 => ex.upload(
            &v.iter()
                .map(|&x| half::bf16::from_f32(x))
                .collect::<Vec<_>>(),
        ),
        _ => ex.upload(&v),
    }
}

/// Times `op` through the executor's profiler: each repeat starts with cold
/// caches; the first call is a warm-up (module load, allocation).
fn time_op(ex: &dyn Executor, o: &BenchOptions, name: String, op: Op) -> Result<Row> {
    ex.set_profiling(true);
    let mut times = Vec::with_capacity(o.repeats);
    for r in 0..=o.repeats {
        ex.timing().flush_caches()?;
        ex.take_profile()?;
        ex.run_op(&op)?;
        let ms: f64 = ex.take_profile()?.iter().map(|x| x.ms).sum();
        if r > 0 {
            times.push(ms);
        }
    }
    ex.set_profiling(false);
    let row = Row {
        tensor_core: op.tensor_core(),
        ..Row::from_times(name, times, op.cost(), None)
    };
    o.finished(&row);
    Ok(row)
}

/// A gemm row in f32 and on bf16 tensor cores (named `… bf16`).
fn gemm_rows(ex: &dyn Executor, o: &BenchOptions, name: &str, s: GemmShape) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for bf16 in [false, true] {
        let name = if bf16 {
            format!("{name} bf16")
        } else {
            name.to_string()
        };
        if !o.wanted(&name) {
            continue;
        }
        let (a, w) = if bf16 {
            (
                random_on::<half::bf16>(ex, s.m * s.k, 1)?,
                random_on::<half::bf16>(ex, s.n * s.k, 2)?,
            )
        } else {
            (
                random_on::<f32>(ex, s.m * s.k, 1)?,
                random_on::<f32>(ex, s.n * s.k, 2)?,
            )
        };
        let bias = random_on::<f32>(ex, s.n, 3)?;
        let bias = Some(*bias);
        let epilogue = Epilogue::PLAIN_BF16;
        let c = ex.alloc_as(if bf16 { DType::Bf16 } else { DType::F32 }, s.m * s.n)?;
        let (a, b, c, shape) = (*a, *w, *c, s);
        let op: Op = if bf16 {
            GemmBf16 {
                a,
                b,
                bias,
                c,
                shape,
                epilogue,
            }
            .into()
        } else {
            Gemm {
                a,
                b,
                bias,
                c,
                shape,
            }
            .into()
        };
        rows.push(time_op(ex, o, name, op)?);
    }
    Ok(rows)
}

/// The dual gemm of DaWin exact at `s`, `rpl` rows per λ, f32 and bf16.
fn dual_rows(ex: &dyn Executor, o: &BenchOptions, s: GemmShape, rpl: usize) -> Result<Vec<Row>> {
    let name = format!("gemm_dual B/32 fc1 {}x{}x{}", s.m, s.n, s.k);
    let mut rows = Vec::new();
    for bf16 in [false, true] {
        let name = if bf16 {
            format!("{name} bf16")
        } else {
            name.clone()
        };
        if !o.wanted(&name) {
            continue;
        }
        let weights = |seed| match bf16 {
            true => random_on::<half::bf16>(ex, s.n * s.k, seed),
            false => random_on::<f32>(ex, s.n * s.k, seed),
        };
        let a = if bf16 {
            random_on::<half::bf16>(ex, s.m * s.k, 1)?
        } else {
            random_on::<f32>(ex, s.m * s.k, 1)?
        };
        let (w0, w1) = (weights(2)?, weights(3)?);
        let (b0, b1) = (random_on::<f32>(ex, s.n, 4)?, random_on::<f32>(ex, s.n, 5)?);
        let lam = ex.upload(
            &(0..s.m / rpl)
                .map(|i| i as f32 / (s.m / rpl) as f32)
                .collect::<Vec<_>>(),
        )?;
        let c = ex.alloc_as(if bf16 { DType::Bf16 } else { DType::F32 }, s.m * s.n)?;
        let mix = Mix {
            lambda: *lam,
            rows_per_lambda: rpl,
        };
        let dual = DualGemm {
            b1: *w1,
            bias1: Some(*b1),
            mix,
        };
        let (a, b0, bias0, c, shape) = (*a, *w0, Some(*b0), *c, s);
        let op: Op = if bf16 {
            let epilogue = Epilogue::PLAIN_BF16;
            GemmDualBf16 {
                a,
                b0,
                bias0,
                dual,
                c,
                shape,
                epilogue,
            }
            .into()
        } else {
            GemmDual {
                a,
                b0,
                bias0,
                dual,
                c,
                shape,
            }
            .into()
        };
        rows.push(time_op(ex, o, name, op)?);
    }
    Ok(rows)
}

/// Attention at `tokens` tokens, f32 and on bf16 tensor cores.
fn attention_rows(ex: &dyn Executor, o: &BenchOptions, s: AttentionShape) -> Result<Vec<Row>> {
    let name = format!(
        "attention {} tokens {}x{}x{}",
        s.tokens, s.batch, s.heads, s.head_dim
    );
    let n = s.batch * s.tokens * s.width();
    let mut rows = Vec::new();
    if o.wanted(&name) {
        let (qkv, out) = (random_on::<f32>(ex, 3 * n, 1)?, ex.alloc(n)?);
        let op = Attention {
            qkv: *qkv,
            out: *out,
            shape: s,
        };
        rows.push(time_op(ex, o, name.clone(), op.into())?);
    }
    let name = format!("{name} bf16");
    if o.wanted(&name) {
        let (qkv, out) = (
            random_on::<half::bf16>(ex, 3 * n, 1)?,
            ex.alloc_as(DType::Bf16, n)?,
        );
        let op = AttentionBf16 {
            qkv: *qkv,
            out: *out,
            shape: s,
        };
        rows.push(time_op(ex, o, name, op.into())?);
    }
    Ok(rows)
}

/// The kernel suite. ViT-B/32 and B/16 linear layers at `batch` images, a
/// square gemm, the dual gemm DaWin runs, a whole-model lerp, attention at
/// the token counts of B/32 (50), B/16 (197) and L/14 (257), layernorm,
/// quick_gelu and softmax_entropy over 1000 classes; f32 and bf16 rows.
pub fn kernels(ex: &dyn Executor, o: &BenchOptions) -> Result<Vec<Row>> {
    let (q, b) = (o.quick, o.batch);
    let mut rows = Vec::new();
    let (width, mlp) = if q { (64, 256) } else { (768, 3072) };
    let linear = [
        ("qkv", 3 * width, width),
        ("attn_out", width, width),
        ("fc1", mlp, width),
        ("fc2", width, mlp),
    ];
    for (model, tokens) in [("B/32", 50), ("B/16", 197)] {
        let m = b * if q { tokens / 10 } else { tokens };
        for (layer, n, k) in linear {
            let name = format!("gemm {model} {layer} {m}x{n}x{k}");
            rows.extend(gemm_rows(ex, o, &name, GemmShape { m, n, k })?);
        }
    }
    let sq = if q { 128 } else { 4096 };
    rows.extend(gemm_rows(
        ex,
        o,
        &format!("gemm {sq}x{sq}x{sq}"),
        GemmShape {
            m: sq,
            n: sq,
            k: sq,
        },
    )?);
    let tokens = if q { 5 } else { 50 };
    rows.extend(dual_rows(
        ex,
        o,
        GemmShape {
            m: b * tokens,
            n: mlp,
            k: width,
        },
        tokens,
    )?);
    rows.extend(elementwise_rows(ex, o, width, mlp)?);
    let heads = if q { 2 } else { 12 };
    for tokens in [50, 197, 257] {
        let batch = if q { 1 } else { b };
        let s = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim: 64,
            causal: false,
        };
        rows.extend(attention_rows(ex, o, s)?);
    }
    Ok(rows)
}

/// lerp over a whole model's weights, layernorm, quick_gelu and
/// softmax_entropy at the ViT-B/32 shapes.
fn elementwise_rows(
    ex: &dyn Executor,
    o: &BenchOptions,
    width: usize,
    mlp: usize,
) -> Result<Vec<Row>> {
    let q = o.quick;
    let mut rows = Vec::new();
    let n = if q { 1 << 20 } else { 88_000_000 };
    let name = format!("lerp {n} weights");
    if o.wanted(&name) {
        let (w0, w1) = (random_on::<f32>(ex, n, 1)?, random_on::<f32>(ex, n, 2)?);
        let op = Lerp {
            out: *w0,
            w0: *w0,
            w1: *w1,
            lambda: 0.3,
        };
        rows.push(time_op(ex, o, name, op.into())?);
    }
    let m = o.batch * if q { 5 } else { 50 };
    let name = format!("layernorm {m}x{width}");
    if o.wanted(&name) {
        let shape = LayerNormShape::dense(m, width, 1e-5);
        let x = random_on::<f32>(ex, m * width, 1)?;
        let (g, be) = (
            random_on::<f32>(ex, width, 2)?,
            random_on::<f32>(ex, width, 3)?,
        );
        let y = ex.alloc(m * width)?;
        let op = LayerNorm {
            x: *x,
            y: *y,
            gamma: *g,
            beta: *be,
            dual: None,
            shape,
        };
        rows.push(time_op(ex, o, name, op.into())?);
    }
    let name = format!("quick_gelu {m}x{mlp}");
    if o.wanted(&name) {
        let x = random_on::<f32>(ex, m * mlp, 1)?;
        rows.push(time_op(ex, o, name, QuickGelu { x: *x }.into())?);
    }
    let rows_se = if q { 256 } else { 50_000 };
    let name = format!("softmax_entropy {rows_se}x1000");
    if o.wanted(&name) {
        let (l, out) = (
            random_on::<f32>(ex, rows_se * 1000, 1)?,
            ex.alloc(rows_se * 4)?,
        );
        let op = SoftmaxEntropy {
            logits: *l,
            out: *out,
            rows: rows_se,
            cols: 1000,
            temperature: 1.0,
        };
        rows.push(time_op(ex, o, name, op.into())?);
    }
    Ok(rows)
}

/// The model the pipeline benchmark runs: ViT-B/32 with a 1000-class head,
/// or a small tower for `--quick`.
pub fn pipeline_spec(quick: bool) -> ModelSpec {
    let mut s = ModelSpec::vit_b32(Some(1000));
    if quick {
        s.width = 64;
        s.layers = 2;
        s.heads = 2;
        s.mlp = 256;
        s.image_size = 32;
        s.patch = 8;
        s.embed_dim = 32;
        s.classes = Some(10);
    }
    s
}

/// Wall-clock images/s of DaWin end to end on a random pair (weights
/// resident, pixels in host memory): the expertise pass of both models,
/// then each strategy's interpolated pass. Also a single-model forward.
pub fn pipeline(ex: &dyn Executor, o: &BenchOptions) -> Result<Vec<Row>> {
    let spec = pipeline_spec(o.quick);
    let (pt, ft) = (
        Model::random(spec.clone(), 1),
        Model::random(spec.clone(), 2),
    );
    let n = o.images;
    let img = spec.channels * spec.image_size * spec.image_size;
    crate::limits::at_most("--images", n, crate::limits::MAX_SAMPLES)?;
    crate::limits::check_alloc("the pipeline's images", n, 4 * img)?;
    let pixels = random(n * img, 7);
    let c = spec.classes.unwrap_or(0);
    let mut engine = Engine::new(ex, &pt, &ft, o.precision)?;
    let suffix = match o.precision {
        Precision::F32 => "",
        Precision::Bf16 => " bf16",
    };
    let bs = o.batch.max(1);
    // The engine splits the images into batches itself, so that each next
    // batch is staged on the device during the current one's forward.
    engine.cap = BatchCap::new(bs);
    let batched = |e: &Engine, m: &PlacedModel| e.logits(m, &pixels, n);
    // λ from the expertise pass, as eval sets it (entropy rule, T = 1).
    let expertise = |e: &Engine| -> Result<Vec<f32>> {
        let lp = batched(e, &e.pt)?;
        let lf = batched(e, &e.ft)?;
        let (hp, _) = crate::method::entropy::entropies(ex, &lp, c, 1.0)?;
        let (hf, _) = crate::method::entropy::entropies(ex, &lf, c, 1.0)?;
        let rule = crate::method::lambda::lambda_from_entropies;
        Ok(hp.iter().zip(&hf).map(|(p, f)| rule(*p, *f)).collect())
    };
    let mut rows = Vec::new();
    let mut run = |name: &str, f: &mut dyn FnMut(&mut Engine) -> Result<()>| -> Result<()> {
        if !o.wanted(name) {
            return Ok(());
        }
        let mut times = Vec::new();
        for r in 0..=o.repeats {
            ex.timing().synchronize()?;
            let t = Instant::now();
            f(&mut engine)?;
            ex.timing().synchronize()?;
            if r > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let name = format!("pipeline {name}{suffix}");
        let row = Row::from_times(name, times, Cost::default(), Some(n));
        o.finished(&row);
        rows.push(row);
        Ok(())
    };
    // The host-to-device share of every row below (each uploads its images).
    run("upload (images to the device)", &mut |_| {
        for s in (0..n).step_by(bs) {
            let k = bs.min(n - s);
            drop(ex.upload(&pixels[s * img..(s + k) * img])?);
        }
        Ok(())
    })?;
    run("forward (one model)", &mut |e| batched(e, &e.pt).map(drop))?;
    run("expertise (both models)", &mut |e| expertise(e).map(drop))?;
    run("dawin exact", &mut |e| {
        let lam = expertise(e)?;
        e.dual_logits(&pixels, n, &lam).map(drop)
    })?;
    run("dawin bmm:3", &mut |e| {
        let lam = expertise(e)?;
        let Some(bmm) = BetaMixture::fit(&lam, 3, 1) else {
            return Err(crate::invalid!(
                "no λ to fit a Beta mixture to: --images must be positive"
            ));
        };
        let comp = bmm.predict(&lam);
        for (k, mean) in bmm.means().iter().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| comp[i] == k).collect();
            if members.is_empty() {
                continue;
            }
            e.set_merged(*mean as f32)?;
            let px: Vec<f32> = members
                .iter()
                .flat_map(|&i| pixels[i * img..(i + 1) * img].iter().copied())
                .collect();
            e.merged_logits(&px, members.len())?;
        }
        Ok(())
    })?;
    run("dawin materialize", &mut |e| {
        let lam = expertise(e)?;
        for (i, l) in lam.iter().enumerate() {
            e.set_merged(*l)?;
            e.merged_logits(&pixels[i * img..(i + 1) * img], 1)?;
        }
        Ok(())
    })?;
    Ok(rows)
}

/// Multi-task DaWin's per-sample merges of T random task models (3 quick,
/// 8 as in the paper otherwise) on the pipeline's model and images, given
/// the coefficients: `exact` through the stacked ops a batch at a time, and
/// `materialize`, each sample's model built and run at batch 1. f32 only.
pub fn mtl(ex: &dyn Executor, o: &BenchOptions) -> Result<Vec<Row>> {
    if o.precision != Precision::F32 {
        return Err(crate::invalid!(
            "the multi-task rows run in f32 only: drop --precision bf16"
        ));
    }
    let spec = pipeline_spec(o.quick);
    let base = &Model::random(spec.clone(), 1);
    let img = spec.channels * spec.image_size * spec.image_size;
    crate::limits::at_most("--images", o.images, crate::limits::MAX_SAMPLES)?;
    crate::limits::check_alloc("the pipeline's images", o.images, 4 * img)?;
    let pixels = &random(o.images * img, 7);
    let t_count = if o.quick { 3 } else { 8 };
    let (exact, built) = (
        format!("pipeline mtl exact (T={t_count})"),
        format!("pipeline mtl materialize (T={t_count})"),
    );
    if !o.wanted(&exact) && !o.wanted(&built) {
        return Ok(Vec::new());
    }
    let tasks: Vec<Model> = (0..t_count)
        .map(|t| Model::random(base.spec.clone(), 100 + t as u64))
        .collect();
    let models: Vec<&Model> = std::iter::once(base).chain(&tasks).collect();
    let stack = ModelStack::upload(ex, &models)?;
    let work = PlacedModel::alloc_like(ex, base, Precision::F32)?;
    let (n, bs) = (o.images, o.batch.max(1));
    // s·T·c_t with c a softmax-like split that differs per sample.
    let mut r = SplitMix(3);
    let coef: Vec<f32> = (0..n)
        .flat_map(|_| {
            let c: Vec<f32> = (0..t_count).map(|_| r.uniform() + 0.1).collect();
            let z: f32 = c.iter().sum();
            c.into_iter()
                .map(move |v| 0.3 * t_count as f32 * v / z)
                .collect::<Vec<_>>()
        })
        .collect();
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<Vec<f64>> {
        let mut times = Vec::new();
        for rep in 0..=o.repeats {
            ex.timing().synchronize()?;
            let t = Instant::now();
            f()?;
            ex.timing().synchronize()?;
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times)
    };
    let mut rows = Vec::new();
    if o.wanted(&exact) {
        let ms = time(&mut || {
            for s in (0..n).step_by(bs) {
                let k = bs.min(n - s);
                let c = &coef[s * t_count..(s + k) * t_count];
                forward_stacked(ex, &stack, &pixels[s * img..(s + k) * img], k, c)?;
            }
            Ok(())
        })?;
        rows.push(Row::from_times(exact, ms, Cost::default(), Some(n)));
    }
    if o.wanted(&built) {
        let ms = time(&mut || {
            for i in 0..n {
                merge_into(ex, &work, &stack, |t| coef[i * t_count + t])?;
                forward(ex, &work, &pixels[i * img..(i + 1) * img], 1, None)?;
            }
            Ok(())
        })?;
        rows.push(Row::from_times(built, ms, Cost::default(), Some(n)));
    }
    for r in &rows {
        o.finished(r);
    }
    Ok(rows)
}

/// The peak the %roof column divides by: the measured one, raised where a
/// row of this run went faster (a probe runs at another moment than the
/// rows, and a shared machine's bandwidth and clock move between
/// moments), with a note saying which row set each raised figure.
fn roof_of(rows: &[Row], peak: Option<&Peak>) -> Option<(Peak, Vec<String>)> {
    let mut p = peak?.clone();
    let mut notes = Vec::new();
    let timed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.images.is_none() && !r.tensor_core)
        .collect();
    // Each figure: what it is, its unit, that unit's scale, decimals shown.
    let mut raise = |limit: &mut f64, of: fn(&Cost) -> f64, figure: (&str, &str, f64, usize)| {
        let (what, unit, scale, dp) = figure;
        let rate = |r: &Row| of(&r.cost) / (r.min_ms / 1e3).max(1e-12);
        let Some(best) = timed.iter().max_by(|a, b| rate(a).total_cmp(&rate(b))) else {
            return;
        };
        if rate(best) > *limit {
            notes.push(format!(
                "{what} raised from the probe's {:.dp$} {unit} to {:.dp$} {unit}, the rate of `{}`",
                *limit / scale,
                rate(best) / scale,
                best.name
            ));
            *limit = rate(best);
        }
    };
    raise(&mut p.bytes, |c| c.bytes, ("bandwidth", "GB/s", 1e9, 0));
    raise(&mut p.flops, |c| c.flops, ("f32 peak", "TFLOP/s", 1e12, 3));
    Some((p, notes))
}

/// The bench table: min and median, throughput at the min, % of roofline.
pub fn table(rows: &[Row], peak: Option<&Peak>, device: &str) -> String {
    let roof = roof_of(rows, peak);
    let peak = roof.as_ref().map(|(p, _)| p);
    let mut s = String::new();
    let _ = writeln!(s, "dawin bench on {device}");
    let _ = writeln!(
        s,
        "{:<44} {:>10} {:>10} {:>9} {:>9} {:>7} {:>10}",
        "benchmark", "min ms", "median ms", "GB/s", "TFLOP/s", "%roof", "images/s"
    );
    for r in rows {
        let secs = r.min_ms / 1e3;
        let (gbs, tfs, roof) = if r.images.is_some() {
            ("-".into(), "-".into(), "-".into())
        } else {
            let roof = peak
                .and_then(|p| match r.tensor_core {
                    true => p.fraction_tensor(r.cost, r.min_ms),
                    false => p.fraction(r.cost, r.min_ms),
                })
                .map_or("-".into(), |f| format!("{:.1}", 100.0 * f));
            (
                format!("{:.1}", r.cost.bytes / secs.max(1e-12) / 1e9),
                format!("{:.3}", r.cost.flops / secs.max(1e-12) / 1e12),
                roof,
            )
        };
        let ips = r.images.map_or("-".into(), |n| {
            format!("{:.1}", n as f64 / (r.median_ms / 1e3).max(1e-12))
        });
        let _ = writeln!(
            s,
            "{:<44} {:>10.3} {:>10.3} {:>9} {:>9} {:>7} {:>10}",
            r.name, r.min_ms, r.median_ms, gbs, tfs, roof, ips
        );
    }
    if let Some(p) = peak {
        let tensor = p
            .tensor_flops
            .map_or("unknown".into(), |t| format!("{:.1} TFLOP/s", t / 1e12));
        let _ = writeln!(
            s,
            "peak: {:.3} TFLOP/s f32, {tensor} bf16 tensor, {:.0} GB/s ({}); images/s at the median",
            p.flops / 1e12,
            p.bytes / 1e9,
            p.source
        );
    }
    for note in roof.iter().flat_map(|(_, n)| n) {
        let _ = writeln!(s, "roof: {note}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ms: f64, flops: f64, bytes: f64) -> Row {
        Row {
            name: name.into(),
            min_ms: ms,
            median_ms: ms,
            cost: Cost { flops, bytes },
            images: None,
            tensor_core: false,
        }
    }

    /// A row faster than the probe raises the roof to its own rate (so no
    /// %roof passes 100) and the table says which row did; a slower one
    /// leaves the probe's figure alone.
    #[test]
    fn the_roof_is_the_best_rate_measured() {
        let peak = Peak {
            flops: 1e11,
            tensor_flops: None,
            bytes: 40e9,
            source: "probe".into(),
        };
        let rows = [row("lerp", 10.0, 1e6, 5e8), row("gemm", 10.0, 5e8, 1e6)];
        let t = table(&rows, Some(&peak), "cpu");
        assert!(t.contains("to 50 GB/s, the rate of `lerp`"), "{t}");
        assert!(!t.contains("f32 peak raised"), "{t}");
        let lerp = t.lines().find(|l| l.starts_with("lerp")).unwrap();
        assert!(lerp.contains("100.0"), "{lerp}");
        let slow = [row("lerp", 20.0, 1e6, 5e8)];
        assert!(!table(&slow, Some(&peak), "cpu").contains("raised"));
    }
}

//! `dawin bench`: kernel benchmarks at the shapes DaWin runs, and images/s of
//! the whole pipeline under each interpolation strategy.
//!
//! Kernel times come from the executor's own timestamps (CUDA events on the
//! GPU), with caches flushed before every repeat; min and median over the
//! repeats are reported with % of the device's roofline.
//! `tools/bench_torch.py` prints the same rows for PyTorch on the same GPU.

use crate::dawin::bmm::BetaMixture;
use crate::dawin::eval::Engine;
use crate::error::Result;
use crate::exec::{DualGemm, Executor, Mix};
use crate::gpu::Gpu;
use crate::model::{Model, ModelSpec, SplitMix};
use crate::ops::{self, attention::AttentionShape, gemm::GemmShape, layernorm::LayerNormShape};
use crate::profile::{Cost, Peak};
use crate::vit::Precision;
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
    /// Only benchmarks whose name contains this.
    pub filter: Option<String>,
    /// Arithmetic of the pipeline rows (named `… bf16` in bf16).
    pub precision: Precision,
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
    /// A row of a tensor-core kernel (its %roof is against the bf16 peak).
    fn tensor_core(name: String, ms: Vec<f64>, cost: Cost) -> Row {
        Row {
            tensor_core: true,
            ..Row::from_times(name, ms, cost, None)
        }
    }

    fn from_times(name: String, mut ms: Vec<f64>, cost: Cost, images: Option<usize>) -> Row {
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

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix(seed);
    (0..n).map(|_| r.normal()).collect()
}

/// Times `op` through the executor's profiler: each repeat starts with cold
/// caches; the first call is a warm-up (module load, allocation).
fn time_op(ex: &dyn Executor, repeats: usize, op: &dyn Fn() -> Result<()>) -> Result<Vec<f64>> {
    ex.set_profiling(true);
    let mut times = Vec::with_capacity(repeats);
    for r in 0..=repeats {
        ex.flush_caches()?;
        ex.take_profile()?;
        op()?;
        let ms: f64 = ex.take_profile()?.iter().map(|x| x.ms).sum();
        if r > 0 {
            times.push(ms);
        }
    }
    ex.set_profiling(false);
    Ok(times)
}

/// Device buffer of `n` random bf16 values (or f32 ones).
fn random_on(gpu: &dyn Gpu, n: usize, seed: u64, bf16: bool) -> Result<u64> {
    let v = random(n, seed);
    let bytes: Vec<u8> = if bf16 {
        let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
        bytemuck::cast_slice(&h).to_vec()
    } else {
        bytemuck::cast_slice(&v).to_vec()
    };
    let a = gpu.alloc(bytes.len())?;
    gpu.write(a, &bytes)?;
    Ok(a)
}

/// bf16 tensor-core gemms at the given shapes, and the dual gemm at `dual`
/// (rows per λ `rpl`). Named like `tools/bench_torch.py`'s bf16 rows.
fn tensor_core_gemms(
    ex: &dyn Executor,
    gpu: &dyn Gpu,
    o: &BenchOptions,
    shapes: &[(String, GemmShape)],
    dual: (String, GemmShape, usize),
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<Row>> {
    use ops::gemm_bf16::{Epilogue, launch};
    let mut rows = Vec::new();
    let ep = Epilogue::PLAIN_BF16;
    for (name, s) in shapes {
        let name = format!("{name} bf16");
        if !wanted(&name) {
            continue;
        }
        let (s, a) = (*s, random_on(gpu, s.m * s.k, 1, true)?);
        let w = random_on(gpu, s.n * s.k, 2, true)?;
        let bias = random_on(gpu, s.n, 3, false)?;
        let c = gpu.alloc(2 * s.m * s.n)?;
        let cost = ops::gemm_bf16::cost(s, ep);
        let t = time_op(ex, o.repeats, &|| {
            ex.device_op("gemm_bf16", cost, &|g| launch(g, a, w, bias, c, s, ep))
        })?;
        rows.push(Row::tensor_core(name, t, cost));
        for x in [a, w, bias, c] {
            gpu.free(x);
        }
    }
    let (name, s, rpl) = dual;
    let name = format!("{name} bf16");
    if wanted(&name) {
        let a = random_on(gpu, s.m * s.k, 1, true)?;
        let w0 = random_on(gpu, s.n * s.k, 2, true)?;
        let d = ops::gemm_dual_bf16::DualArgs {
            b1: random_on(gpu, s.n * s.k, 3, true)?,
            bias0: random_on(gpu, s.n, 4, false)?,
            bias1: random_on(gpu, s.n, 5, false)?,
            lambda: random_on(gpu, s.m / rpl, 6, false)?,
            rows_per_lambda: rpl,
        };
        let c = gpu.alloc(2 * s.m * s.n)?;
        let cost = ops::gemm_dual_bf16::cost(s, ep);
        let t = time_op(ex, o.repeats, &|| {
            ex.device_op("gemm_dual_bf16", cost, &|g| {
                ops::gemm_dual_bf16::launch(g, a, w0, d, c, s, ep)
            })
        })?;
        rows.push(Row::tensor_core(name, t, cost));
        for x in [a, w0, d.b1, d.bias0, d.bias1, d.lambda, c] {
            gpu.free(x);
        }
    }
    Ok(rows)
}

/// The kernel suite. ViT-B/32 and B/16 linear layers at `batch` images, a
/// square gemm, the dual gemm DaWin runs, a whole-model lerp, attention at
/// the token counts of B/32 (50), B/16 (197) and L/14 (257), and
/// softmax_entropy over 1000 classes.
pub fn kernels(ex: &dyn Executor, o: &BenchOptions) -> Result<Vec<Row>> {
    let q = o.quick;
    let b = o.batch;
    let mut rows = Vec::new();
    let wanted = |name: &str| o.filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    let mut bf16_shapes = Vec::new();
    let mut gemm = |name: String, s: GemmShape| -> Result<()> {
        bf16_shapes.push((name.clone(), s));
        if !wanted(&name) {
            return Ok(());
        }
        let a = ex.upload(&random(s.m * s.k, 1))?;
        let w = ex.upload(&random(s.n * s.k, 2))?;
        let bias = ex.upload(&random(s.n, 3))?;
        let c = ex.alloc(s.m * s.n)?;
        let t = time_op(ex, o.repeats, &|| ex.gemm(a, w, Some(bias), c, s))?;
        rows.push(Row::from_times(name, t, ops::gemm::cost(s), None));
        for x in [a, w, bias, c] {
            ex.free(x);
        }
        Ok(())
    };
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
            gemm(
                format!("gemm {model} {layer} {m}x{n}x{k}"),
                GemmShape { m, n, k },
            )?;
        }
    }
    let sq = if q { 128 } else { 4096 };
    gemm(
        format!("gemm {sq}x{sq}x{sq}"),
        GemmShape {
            m: sq,
            n: sq,
            k: sq,
        },
    )?;

    let s = GemmShape {
        m: b * if q { 5 } else { 50 },
        n: mlp,
        k: width,
    };
    let name = format!("gemm_dual B/32 fc1 {}x{}x{}", s.m, s.n, s.k);
    if let Some(gpu) = ex.device() {
        let dual = (name.clone(), s, s.m / b);
        rows.extend(tensor_core_gemms(ex, gpu, o, &bf16_shapes, dual, &wanted)?);
    }
    if wanted(&name) {
        let rpl = s.m / b;
        let a = ex.upload(&random(s.m * s.k, 1))?;
        let w0 = ex.upload(&random(s.n * s.k, 2))?;
        let w1 = ex.upload(&random(s.n * s.k, 3))?;
        let b0 = ex.upload(&random(s.n, 4))?;
        let b1 = ex.upload(&random(s.n, 5))?;
        let lam = ex.upload(&(0..b).map(|i| i as f32 / b as f32).collect::<Vec<_>>())?;
        let c = ex.alloc(s.m * s.n)?;
        let d = DualGemm {
            b1: w1,
            bias1: Some(b1),
            mix: Mix {
                lambda: lam,
                rows_per_lambda: rpl,
            },
        };
        let t = time_op(ex, o.repeats, &|| ex.gemm_dual(a, w0, Some(b0), d, c, s))?;
        rows.push(Row::from_times(name, t, ops::gemm_dual::cost(s, rpl), None));
        for x in [a, w0, w1, b0, b1, lam, c] {
            ex.free(x);
        }
    }

    let n = if q { 1 << 20 } else { 88_000_000 };
    let name = format!("lerp {n} weights");
    if wanted(&name) {
        let w0 = ex.upload(&random(n, 1))?;
        let w1 = ex.upload(&random(n, 2))?;
        let t = time_op(ex, o.repeats, &|| ex.lerp(w0, w0, w1, 0.3))?;
        rows.push(Row::from_times(name, t, ops::lerp::cost(n), None));
        ex.free(w0);
        ex.free(w1);
    }

    let heads = if q { 2 } else { 12 };
    for tokens in [50, 197, 257] {
        let s = AttentionShape {
            batch: if q { 1 } else { b },
            tokens,
            heads,
            head_dim: 64,
        };
        let name = format!("attention {tokens} tokens {}x{heads}x64", s.batch);
        if wanted(&name) {
            let qkv = ex.upload(&random(s.batch * tokens * 3 * s.width(), 1))?;
            let out = ex.alloc(s.batch * tokens * s.width())?;
            let t = time_op(ex, o.repeats, &|| ex.attention(qkv, out, s))?;
            rows.push(Row::from_times(
                name.clone(),
                t,
                ops::attention::cost(s),
                None,
            ));
            ex.free(qkv);
            ex.free(out);
        }
        let name = format!("{name} bf16");
        if let Some(gpu) = ex.device()
            && wanted(&name)
        {
            let n = s.batch * tokens * s.width();
            let qkv = random_on(gpu, 3 * n, 1, true)?;
            let out = gpu.alloc(2 * n)?;
            let cost = ops::attention_bf16::cost(s);
            let t = time_op(ex, o.repeats, &|| {
                ex.device_op("attention_bf16", cost, &|g| {
                    ops::attention_bf16::launch(g, qkv, out, s)
                })
            })?;
            rows.push(Row::tensor_core(name, t, cost));
            gpu.free(qkv);
            gpu.free(out);
        }
    }

    let m = b * if q { 5 } else { 50 };
    let name = format!("layernorm {m}x{width}");
    if wanted(&name) {
        let s = LayerNormShape {
            rows: m,
            width,
            x_stride: width,
            y_stride: width,
            eps: 1e-5,
        };
        let x = ex.upload(&random(m * width, 1))?;
        let g = ex.upload(&random(width, 2))?;
        let be = ex.upload(&random(width, 3))?;
        let y = ex.alloc(m * width)?;
        let t = time_op(ex, o.repeats, &|| ex.layernorm(x, y, g, be, None, s))?;
        rows.push(Row::from_times(
            name,
            t,
            ops::layernorm::cost(s, false),
            None,
        ));
        for v in [x, g, be, y] {
            ex.free(v);
        }
    }
    let name = format!("quick_gelu {m}x{mlp}");
    if wanted(&name) {
        let x = ex.upload(&random(m * mlp, 1))?;
        let t = time_op(ex, o.repeats, &|| ex.quick_gelu(x))?;
        rows.push(Row::from_times(
            name,
            t,
            ops::quick_gelu::cost(m * mlp),
            None,
        ));
        ex.free(x);
    }

    let rows_se = if q { 256 } else { 50_000 };
    let name = format!("softmax_entropy {rows_se}x1000");
    if wanted(&name) {
        let l = ex.upload(&random(rows_se * 1000, 1))?;
        let out = ex.alloc(rows_se * 4)?;
        let t = time_op(ex, o.repeats, &|| {
            ex.softmax_entropy(l, out, rows_se, 1000, 1.0)
        })?;
        rows.push(Row::from_times(
            name,
            t,
            ops::softmax_entropy::cost(rows_se, 1000),
            None,
        ));
        ex.free(l);
        ex.free(out);
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
    let pixels = random(n * img, 7);
    let c = spec.classes.expect("head");
    let mut engine = Engine::new(ex, &pt, &ft, o.precision)?;
    let suffix = match o.precision {
        Precision::F32 => "",
        Precision::Bf16 => " bf16",
    };
    let bs = o.batch.max(1);
    let wanted = |name: &str| o.filter.as_ref().is_none_or(|f| name.contains(f.as_str()));

    let batched = |e: &Engine, m: &crate::vit::DeviceModel| -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(n * c);
        for s in (0..n).step_by(bs) {
            let k = bs.min(n - s);
            out.extend(e.logits(m, &pixels[s * img..(s + k) * img], k)?);
        }
        Ok(out)
    };
    // λ from the expertise pass, as eval sets it (entropy rule, T = 1).
    let expertise = |e: &Engine| -> Result<Vec<f32>> {
        let lp = batched(e, &e.pt)?;
        let lf = batched(e, &e.ft)?;
        let (hp, _) = crate::dawin::eval::entropies(ex, &lp, c, 1.0)?;
        let (hf, _) = crate::dawin::eval::entropies(ex, &lf, c, 1.0)?;
        Ok(hp
            .iter()
            .zip(&hf)
            .map(|(p, f)| crate::dawin::expertise::lambda_from_entropies(*p, *f))
            .collect())
    };

    let mut rows = Vec::new();
    let mut run = |name: &str, f: &mut dyn FnMut(&mut Engine) -> Result<()>| -> Result<()> {
        if !wanted(name) {
            return Ok(());
        }
        let mut times = Vec::new();
        for r in 0..=o.repeats {
            ex.synchronize()?;
            let t = Instant::now();
            f(&mut engine)?;
            ex.synchronize()?;
            if r > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        rows.push(Row::from_times(
            format!("pipeline {name}{suffix}"),
            times,
            Cost::default(),
            Some(n),
        ));
        Ok(())
    };
    run("forward (one model)", &mut |e| batched(e, &e.pt).map(drop))?;
    run("expertise (both models)", &mut |e| expertise(e).map(drop))?;
    run("dawin exact", &mut |e| {
        let lam = expertise(e)?;
        for s in (0..n).step_by(bs) {
            let k = bs.min(n - s);
            e.dual_logits(&pixels[s * img..(s + k) * img], k, &lam[s..s + k])?;
        }
        Ok(())
    })?;
    run("dawin bmm:3", &mut |e| {
        let lam = expertise(e)?;
        let Some(bmm) = BetaMixture::fit(&lam, 3, 1) else {
            return Err(crate::invalid!("the Beta mixture did not fit"));
        };
        let comp = bmm.predict(&lam);
        for (k, mean) in bmm.means().iter().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| comp[i] == k).collect();
            if members.is_empty() {
                continue;
            }
            e.set_merged(*mean as f32)?;
            for chunk in members.chunks(bs) {
                let px: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| pixels[i * img..(i + 1) * img].iter().copied())
                    .collect();
                e.merged_logits(&px, chunk.len())?;
            }
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
    engine.free();
    Ok(rows)
}

/// The bench table: min and median, throughput at the min, % of roofline.
pub fn table(rows: &[Row], peak: Option<&Peak>, device: &str) -> String {
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
            (
                format!("{:.1}", r.cost.bytes / secs.max(1e-12) / 1e9),
                format!("{:.3}", r.cost.flops / secs.max(1e-12) / 1e12),
                peak.and_then(|p| {
                    if r.tensor_core {
                        p.fraction_tensor(r.cost, r.min_ms)
                    } else {
                        p.fraction(r.cost, r.min_ms)
                    }
                })
                .map_or("-".into(), |f| format!("{:.1}", 100.0 * f)),
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
        let _ = writeln!(
            s,
            "peak: {:.1} TFLOP/s f32, {} bf16 tensor, {:.0} GB/s ({}); images/s at the median",
            p.flops / 1e12,
            p.tensor_flops
                .map_or("unknown".into(), |t| format!("{:.1} TFLOP/s", t / 1e12)),
            p.bytes / 1e9,
            p.source
        );
    }
    s
}

//! The `dawin` command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dawin::dawin::eval::{self, EvalOptions, Method, Projection, Strategy};
use dawin::dawin::expertise::Expertise;
use dawin::exec::{self, DeviceKind};
use dawin::model::{Act, Model, Overrides};
use dawin::tensorfile::{Tensor, TensorFile, write_f32};
use dawin::vit::{DeviceModel, Precision, forward_batched};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "dawin",
    version,
    about = "Training-free dynamic weight interpolation (DaWin) for CLIP ViTs",
    long_about = "dawin runs CLIP ViT image towers on its own tensor engine (cpu reference, \
                  emu PTX interpreter, cuda) and evaluates DaWin: per-sample interpolation \
                  between a pretrained and a fine-tuned model, weighted by their entropies.\n\n\
                  Models are safetensors files in OpenAI/open_clip, model-soups (model.visual.* \
                  + classification_head) or HF transformers layout."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a model file's recognised layout, configuration and sizes.
    Inspect {
        /// A safetensors checkpoint.
        model: PathBuf,
        #[command(flatten)]
        arch: ArchFlags,
    },
    /// Run a model on preprocessed images and write its outputs.
    ///
    /// The input holds `pixel_values` f32 [N,3,H,W]. The output gets
    /// `image_embeds` f32 [N,D] (projected, before normalisation) and, when the
    /// model has a classification head, `logits` f32 [N,C].
    Forward {
        /// The model checkpoint (safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Input safetensors with `pixel_values` [N,3,H,W].
        #[arg(long)]
        input: PathBuf,
        /// Output safetensors file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        run: RunFlags,
        #[command(flatten)]
        arch: ArchFlags,
    },
    /// Evaluate DaWin and its baselines on a labelled data set.
    ///
    /// Runs both models over the data once (cached in OUT/cache.safetensors,
    /// reused when models and data are unchanged), sets each sample's λ from
    /// the two models' expertise, evaluates each sample with the model
    /// (1−λ)·pretrained + λ·fine-tuned, and writes summary.json, samples.csv
    /// and lambdas.svg to the output folder.
    Eval(Box<EvalArgs>),
    /// Multi-task DaWin: per-sample mixing of T task vectors.
    ///
    /// Coefficients c = softmax_t(−H_t(x)), H_t the entropy of task model t
    /// with the evaluated task's head; each sample runs through
    /// θ0 + Σ_t s·T·c_t·(θ_t − θ0). Baselines: task arithmetic (θ0 + s·Σ τ_t)
    /// and each task model alone. Writes summary.json and samples.csv.
    EvalMtl {
        /// The shared pretrained model θ0.
        #[arg(long)]
        base: PathBuf,
        /// Comma list of the task models θ_1..θ_T, each with its head.
        #[arg(long, value_delimiter = ',', required = true)]
        tasks: Vec<PathBuf>,
        /// Index (0-based) in --tasks of the task whose data and head are evaluated.
        #[arg(long)]
        task_index: usize,
        /// Labelled data of that task (safetensors or class folders).
        #[arg(long)]
        data: PathBuf,
        /// Output folder.
        #[arg(long)]
        out_dir: PathBuf,
        /// Task-vector scale s.
        #[arg(long, default_value_t = 0.3)]
        scale: f32,
        /// Hide progress bars.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        run: RunFlags,
        #[command(flatten)]
        arch: ArchFlags,
    },
    /// Show DaWin working: the whole evaluation on the built-in image set.
    ///
    /// Generates 10 classes of shapes (32×32) in distribution and under five
    /// shifts, evaluates the bundled pretrained/fine-tuned pair (embedded in
    /// the binary) with zero-shot, fine-tuned, WiSE-FT 0.5, ensemble and
    /// DaWin (exact and bmm), and prints accuracy per domain. Uses the GPU
    /// when built with `cuda` and one is present, else the CPU.
    Demo {
        /// Output folder (per-domain reports, lambdas.svg, table.txt).
        #[arg(long, default_value = "target/dawin-demo")]
        out_dir: PathBuf,
        /// Images per class and domain.
        #[arg(long, default_value_t = 100)]
        per_class: usize,
        /// Executor (default: cuda if available, else cpu).
        #[arg(long, value_enum)]
        device: Option<DeviceKind>,
        /// Hide progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Plot the WiSE-FT curve (accuracy in distribution vs mean under
    /// shift, per α) with DaWin and the ensembles, from eval summaries.
    PlotWise {
        /// summary.json of the in-distribution run.
        #[arg(long)]
        id: PathBuf,
        /// summary.json of each shifted run.
        #[arg(long, required = true, num_args = 1..)]
        ood: Vec<PathBuf>,
        /// Output SVG.
        #[arg(long)]
        out: PathBuf,
        /// Plot title.
        #[arg(long, default_value = "WiSE-FT curve")]
        title: String,
    },
    /// Write the demo's procedural image set (10 shape classes, 32×32) for
    /// training: OUT/<domain>.safetensors for the in-distribution domain `id`
    /// and the shifts noise, texture, colour, blur, occlusion, plus
    /// OUT/preview.png (one row per domain).
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Images per class and domain.
        #[arg(long, default_value_t = 100)]
        per_class: usize,
        /// Seed (the demo evaluates on seed 1000, so train on others).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Scale-out, step 1: the expertise pass of one shard.
    ///
    /// Writes OUT/expertise.safetensors (per-sample entropies at their data
    /// indices) and caches the logits in OUT, so a later `eval` on the same
    /// shard and OUT reuses them. Merge the shards with `dawin merge`.
    Expertise(Box<DataArgs>),
    /// Scale-out: merge shard outputs.
    ///
    /// Given expertise.safetensors files, writes one whole-set expertise file
    /// for `eval --expertise-from`. Given summary.json files, adds up the
    /// per-method counts into one summary.
    Merge {
        /// Shard outputs: all expertise.safetensors, or all summary.json.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Merged output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmark the kernels and the DaWin pipeline on one executor.
    ///
    /// Kernels (gemm at the ViT-B/32 and B/16 linear shapes and 4096³, the
    /// dual gemm, lerp over 88M weights, attention at 50/197/257 tokens,
    /// layernorm, quick_gelu, softmax_entropy over 1000 classes) are timed
    /// with the device's own timestamps (CUDA events on the GPU), caches
    /// flushed before each repeat; min, median, GB/s, TFLOP/s and % of the
    /// roofline. The pipeline rows time DaWin end to end on a random
    /// ViT-B/32 pair under each interpolation strategy, as images/s.
    /// tools/bench_torch.py prints the same rows for PyTorch.
    Bench {
        /// Executor to benchmark.
        #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
        device: DeviceKind,
        /// Small shapes and a small model (for cpu/emu or a smoke test).
        #[arg(long)]
        quick: bool,
        /// Timed repeats after one warm-up.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        repeats: u64,
        /// Images per batch at the ViT shapes (default 256, or 2 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        batch: Option<u64>,
        /// Images through the pipeline per repeat (default: the batch).
        #[arg(long)]
        images: Option<u64>,
        /// Which part to run.
        #[arg(long, value_enum, default_value_t = Suite::All)]
        suite: Suite,
        /// Only benchmarks whose name contains this (e.g. `gemm B/32`).
        #[arg(long)]
        filter: Option<String>,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Arithmetic of the pipeline rows (the kernel rows cover both).
        #[arg(long, value_enum, default_value_t = Precision::F32)]
        precision: Precision,
    },
    /// Decode and CLIP-preprocess images into a safetensors file.
    ///
    /// Each PATH is an image folder with one subfolder per class (labels are
    /// the sorted folder indices) or a single jpg/png (label −1). Writes
    /// `pixel_values` f32 [N,3,S,S] and `labels` i64 [N]. Unreadable images
    /// are reported and skipped.
    Preprocess {
        /// Class folders or image files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output side length (the model's input size, e.g. 224).
        #[arg(long)]
        size: usize,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    Kernels,
    Pipeline,
    All,
}

/// Models, data and output shared by `eval` and `expertise`.
#[derive(Args)]
struct DataArgs {
    /// The pretrained / zero-shot model (θ_pt), safetensors with a head.
    #[arg(long)]
    pretrained: PathBuf,
    /// The fine-tuned model (θ_ft), same architecture and head size.
    #[arg(long)]
    finetuned: PathBuf,
    /// Safetensors with `pixel_values` [N,3,S,S] and `labels` [N], or an
    /// image folder with one subfolder per class.
    #[arg(long)]
    data: PathBuf,
    /// Output folder (created if needed); also holds the logits cache.
    #[arg(long)]
    out_dir: PathBuf,
    /// Softmax temperatures `T_pt,T_ft` for entropies and the ensembles
    /// (the official ViT-B/32 values are 0.9576,0.9733).
    #[arg(long, default_value = "1,1", value_parser = parse_pair)]
    temperature: (f32, f32),
    /// File of class indices to keep (e.g. ImageNet-A/-R's 200); labels are
    /// indices into this list.
    #[arg(long, conflicts_with = "class_map")]
    class_subset: Option<PathBuf>,
    /// File with one line per output class listing the model classes to
    /// max-pool into it (e.g. ObjectNet's 113).
    #[arg(long)]
    class_map: Option<PathBuf>,
    /// Evaluate the i-th (0-based) of n contiguous slices, e.g. `3/8`.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    arch: ArchFlags,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    common: DataArgs,
    /// How λ is set per sample.
    #[arg(long, value_enum, default_value_t = Expertise::Entropy)]
    expertise: Expertise,
    /// Interpolated inference: `exact` (per-sample, batched, dual-weight ops),
    /// `materialize` (in-place lerp per sample, batch 1) or `bmm[:K]`
    /// (K merged models from a Beta mixture over λ; K = 3 by default).
    #[arg(long, default_value = "exact")]
    interp: Strategy,
    /// Comma list of: zeroshot, finetuned, wise-ft (= wise-ft:0.1..0.9),
    /// wise-ft:α, ensemble, ensemble-dynamic, dawin, all.
    #[arg(long, default_value = "all", value_parser = Method::parse_list)]
    methods: std::vec::Vec<Method>,
    /// Whole-set expertise (from `dawin merge` of `dawin expertise` shards)
    /// for the statistics entropy-offset and bmm need.
    #[arg(long)]
    expertise_from: Option<PathBuf>,
    /// Seed of the Beta-mixture k-means initialisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_pair(s: &str) -> std::result::Result<(f32, f32), String> {
    let v: Vec<&str> = s.split(',').collect();
    let p = |x: &str| {
        x.trim()
            .parse::<f32>()
            .ok()
            .filter(|t| *t > 0.0 && t.is_finite())
    };
    match v[..] {
        [a] => p(a).map(|a| (a, a)),
        [a, b] => p(a).zip(p(b)),
        _ => None,
    }
    .ok_or_else(|| format!("expected `T` or `T_pt,T_ft` with positive numbers, got `{s}`"))
}

fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("expected `i/n` with 0 ≤ i < n, got `{s}`");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.trim().parse::<usize>().map_err(|_| bad())?,
        n.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Values a checkpoint's tensor shapes cannot tell. The file's metadata
/// (`heads`, `act`, `ln_eps`) wins over these; OpenAI defaults fill the rest.
#[derive(Args, Clone, Copy)]
struct ArchFlags {
    /// Attention heads (default: the file's metadata, else width/64).
    #[arg(long)]
    heads: Option<usize>,
    /// MLP activation (default: the file's metadata, else quick_gelu).
    #[arg(long, value_enum)]
    act: Option<Act>,
}

impl ArchFlags {
    fn overrides(self) -> Overrides {
        Overrides {
            heads: self.heads,
            act: self.act,
        }
    }
}

#[derive(Args, Clone, Copy)]
struct RunFlags {
    /// Executor that runs the ops.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Time every kernel and print a per-op table at the end: calls, total
    /// ms, mean µs, GB/s, TFLOP/s and % of the device's roofline (CUDA
    /// events on the GPU, wall clock on cpu/emu).
    #[arg(long)]
    profile: bool,
    /// Arithmetic of the transformer blocks: f32, or bf16 on tensor cores
    /// (mma.sync gemms and flash attention with f32 accumulation; layernorm,
    /// residual stream and logits stay f32). bf16 needs --device emu or cuda.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

impl RunFlags {
    fn open(self) -> Result<Box<dyn exec::Executor>> {
        let ex = exec::open(self.device)?;
        ex.set_profiling(self.profile);
        Ok(ex)
    }

    /// Prints the `--profile` table (to stderr, so stdout stays the result).
    fn report(self, ex: &dyn exec::Executor) -> Result<()> {
        if self.profile {
            let records = ex.take_profile()?;
            eprint!(
                "{}",
                dawin::profile::table(&records, ex.peak().as_ref(), &ex.name())
            );
        }
        Ok(())
    }
}

fn load_model(path: &std::path::Path, arch: ArchFlags) -> Result<Model> {
    let m = Model::load(path, arch.overrides())?;
    for n in &m.notes {
        eprintln!("warning: {}: {n}", path.display());
    }
    Ok(m)
}

fn inspect(path: PathBuf, arch: ArchFlags) -> Result<()> {
    let m = load_model(&path, arch)?;
    let s = &m.spec;
    println!("file        {}", path.display());
    println!("layout      {}", m.layout);
    println!(
        "tower       width {}, {} layers, {} heads (head dim {}), mlp {}, act {}, ln eps {:e}",
        s.width,
        s.layers,
        s.heads,
        s.head_dim(),
        s.mlp,
        s.act,
        s.ln_eps
    );
    println!(
        "input       {}×{}×{}, patch {}, {} tokens",
        s.channels,
        s.image_size,
        s.image_size,
        s.patch,
        s.tokens()
    );
    println!(
        "embedding   {}{}",
        s.embed_dim,
        if s.has_proj {
            " (projected)"
        } else {
            " (no projection)"
        }
    );
    match s.classes {
        Some(c) => println!("head        {c} classes"),
        None => println!("head        none (forward writes image_embeds only)"),
    }
    println!(
        "parameters  {} ({:.1} MB as f32)",
        m.param_count(),
        m.param_count() as f64 * 4.0 / 1e6
    );
    Ok(())
}

fn forward(
    model: PathBuf,
    input: PathBuf,
    out: PathBuf,
    run: RunFlags,
    arch: ArchFlags,
) -> Result<()> {
    let m = load_model(&model, arch)?;
    let s = &m.spec;
    let file = TensorFile::open(&input)?;
    let px = file
        .read_f32("pixel_values")
        .with_context(|| format!("reading inputs from {}", input.display()))?;
    let [n, c, h, w] = px.shape[..] else {
        bail!(
            "{}: `pixel_values` has shape {:?}, expected [N, {}, {}, {}]",
            input.display(),
            px.shape,
            s.channels,
            s.image_size,
            s.image_size
        );
    };
    if c != s.channels || h != s.image_size || w != s.image_size {
        bail!(
            "{}: images are {c}×{h}×{w}, but {} expects {}×{}×{} (its positional embedding has {} tokens for patch {})",
            input.display(),
            model.display(),
            s.channels,
            s.image_size,
            s.image_size,
            s.tokens(),
            s.patch
        );
    }
    let bad = px.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        eprintln!(
            "warning: {}: {bad} NaN/Inf values in pixel_values; their images' outputs will not be finite",
            input.display()
        );
    }
    let ex = run.open()?;
    let t0 = Instant::now();
    let dm = DeviceModel::upload_as(ex.as_ref(), &m, run.precision)?;
    let o = forward_batched(
        ex.as_ref(),
        &dm,
        &px.data,
        n,
        run.batch_size as usize,
        |_| {},
    )?;
    dm.free(ex.as_ref());
    let secs = t0.elapsed().as_secs_f64();
    let embeds = Tensor {
        shape: vec![n, s.embed_dim],
        data: o.embeds,
    };
    let logits = o.logits.map(|l| Tensor {
        shape: vec![n, s.classes.unwrap_or(0)],
        data: l,
    });
    let mut tensors = vec![("image_embeds", &embeds)];
    if let Some(l) = &logits {
        tensors.push(("logits", l));
    }
    write_f32(&out, &tensors, None)?;
    eprintln!(
        "{n} images on {} in {secs:.3}s ({:.1} images/s) -> {}",
        ex.name(),
        n as f64 / secs.max(1e-9),
        out.display()
    );
    run.report(ex.as_ref())
}

fn eval_options(c: DataArgs, methods: Vec<Method>) -> Result<EvalOptions> {
    let projection = match (&c.class_subset, &c.class_map) {
        (Some(p), _) => Projection::subset_file(p)?,
        (_, Some(p)) => Projection::map_file(p)?,
        _ => Projection::None,
    };
    Ok(EvalOptions {
        pretrained: c.pretrained,
        finetuned: c.finetuned,
        data: c.data,
        out_dir: c.out_dir,
        batch_size: c.run.batch_size as usize,
        expertise: Expertise::Entropy,
        temperature: c.temperature,
        strategy: Strategy::Exact,
        methods,
        projection,
        overrides: c.arch.overrides(),
        shard: c.shard,
        expertise_from: None,
        progress: !c.quiet,
        seed: 1,
        precision: c.run.precision,
    })
}

fn run_eval(a: EvalArgs) -> Result<()> {
    let run = a.common.run;
    let mut opts = eval_options(a.common, a.methods)?;
    opts.expertise = a.expertise;
    opts.strategy = a.interp;
    opts.expertise_from = a.expertise_from;
    opts.seed = a.seed;
    let ex = run.open()?;
    let r = eval::run(&opts, ex.as_ref())?;
    print!("{}", r.table);
    println!(
        "{} samples on {}; outputs in {} (summary.json, samples.csv, lambdas.svg)",
        r.indices.len(),
        ex.name(),
        opts.out_dir.display()
    );
    run.report(ex.as_ref())
}

fn run_expertise(c: DataArgs) -> Result<()> {
    let run = c.run;
    let shard = c.shard;
    let opts = eval_options(c, vec![Method::Zeroshot, Method::Finetuned])?;
    let ex = run.open()?;
    let r = eval::run(&opts, ex.as_ref())?;
    let total = dawin::dawin::data::Dataset::open(&opts.data, r_size(&opts)?)?.len();
    let out = opts.out_dir.join("expertise.safetensors");
    dawin::dawin::shard::write_expertise(&out, &r, total, shard)?;
    println!(
        "entropies of {} samples -> {}",
        r.indices.len(),
        out.display()
    );
    run.report(ex.as_ref())
}

/// The model input size, to open the data set the same way `eval` did.
fn r_size(o: &EvalOptions) -> Result<usize> {
    Ok(Model::load(&o.pretrained, o.overrides)?.spec.image_size)
}

fn run_merge(inputs: Vec<PathBuf>, out: PathBuf) -> Result<()> {
    let refs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
    let json = inputs
        .iter()
        .all(|p| p.extension().is_some_and(|e| e == "json"));
    if json {
        let m = dawin::dawin::shard::merge_summaries(&refs, &out)?;
        let order: Vec<String> = m["methods"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        print!("{}", dawin::dawin::report::table(&order, &m));
    } else {
        let readable = dawin::dawin::shard::merge_expertise(&refs, &out)?;
        println!("merged expertise of {readable} readable samples");
    }
    println!("-> {}", out.display());
    Ok(())
}

fn preprocess(paths: Vec<PathBuf>, size: usize, out: PathBuf) -> Result<()> {
    use dawin::dawin::{data::Dataset, preprocess::load_image};
    if size == 0 {
        bail!("--size must be positive");
    }
    let mut pixels = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut skipped = 0;
    for p in &paths {
        if p.is_dir() {
            let d = Dataset::open(p, size)?;
            let all: Vec<usize> = (0..d.len()).collect();
            let pb = eval::progress_bar(all.len(), "preprocess", true);
            d.for_each_batch(&all, 64, |b| {
                for (i, e) in &b.failed {
                    eprintln!("warning: skipped {}: {e}", d.describe(*i));
                    skipped += 1;
                }
                labels.extend(b.indices.iter().map(|&i| d.labels[i]));
                pixels.extend_from_slice(&b.pixels);
                pb.inc((b.indices.len() + b.failed.len()) as u64);
                Ok(())
            })?;
            pb.finish_and_clear();
        } else {
            match load_image(p, size) {
                Ok(v) => {
                    pixels.extend(v);
                    labels.push(-1);
                }
                Err(e) => {
                    eprintln!("warning: skipped {e}");
                    skipped += 1;
                }
            }
        }
    }
    let n = labels.len();
    if n == 0 {
        bail!("no image could be read from {} path(s)", paths.len());
    }
    let px = Tensor {
        shape: vec![n, 3, size, size],
        data: pixels,
    };
    dawin::tensorfile::write_f32_with_labels(&out, &px, &labels)?;
    eprintln!("{n} images ({skipped} skipped) -> {}", out.display());
    Ok(())
}

fn run_bench(
    device: DeviceKind,
    o: &dawin::bench::BenchOptions,
    json: Option<PathBuf>,
) -> Result<()> {
    let ex = exec::open(device)?;
    eprintln!(
        "benchmarking {}{}",
        ex.name(),
        if o.quick { " (quick shapes)" } else { "" }
    );
    let mut rows = Vec::new();
    if o.kernels {
        rows.extend(dawin::bench::kernels(ex.as_ref(), o)?);
    }
    if o.pipeline {
        rows.extend(dawin::bench::pipeline(ex.as_ref(), o)?);
    }
    if rows.is_empty() {
        bail!("no benchmark matched the filter");
    }
    print!(
        "{}",
        dawin::bench::table(&rows, ex.peak().as_ref(), &ex.name())
    );
    if let Some(path) = json {
        let v = serde_json::json!({
            "device": ex.name(),
            "quick": o.quick,
            "repeats": o.repeats,
            "batch": o.batch,
            "rows": rows,
        });
        dawin::tensorfile::write_atomic(&path, serde_json::to_string_pretty(&v)?.as_bytes())?;
        eprintln!("-> {}", path.display());
    }
    Ok(())
}

fn run_demo(
    out: &std::path::Path,
    per_class: usize,
    device: Option<DeviceKind>,
    quiet: bool,
) -> Result<()> {
    if per_class == 0 {
        bail!("--per-class must be positive");
    }
    let ex = match device {
        Some(d) => exec::open(d)?,
        None => exec::open(DeviceKind::Cuda).or_else(|_| exec::open(DeviceKind::Cpu))?,
    };
    let t = Instant::now();
    eprintln!(
        "DaWin demo on {}: {} images per domain",
        ex.name(),
        per_class * 10
    );
    let r = dawin::dawin::demo::run(out, per_class, ex.as_ref(), !quiet)?;
    print!("{}", r.table);
    println!(
        "λ histograms: {} (in distribution), {} (colour shift); all outputs in {} ({:.1}s)",
        r.svgs[0].display(),
        r.svgs[3].display(),
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_synth(out: &std::path::Path, per_class: usize, seed: u64) -> Result<()> {
    use dawin::dawin::preprocess::{CLIP_MEAN, CLIP_STD};
    use dawin::dawin::synth::{DOMAINS, SIZE, generate};
    if per_class == 0 {
        bail!("--per-class must be positive");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cols = 10;
    let mut sheet = image::RgbImage::new(
        (cols * (SIZE + 2)) as u32,
        (DOMAINS.len() * (SIZE + 2)) as u32,
    );
    for (row, d) in DOMAINS.iter().enumerate() {
        let (px, labels) = generate(*d, per_class, seed);
        let n = labels.len();
        let path = out.join(format!("{}.safetensors", d.name()));
        let t = Tensor {
            shape: vec![n, 3, SIZE, SIZE],
            data: px,
        };
        dawin::tensorfile::write_f32_with_labels(&path, &t, &labels)?;
        for col in 0..cols.min(n) {
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let rgb: [u8; 3] = std::array::from_fn(|c| {
                        let v = t.data[((col * 3 + c) * SIZE + y) * SIZE + x] * CLIP_STD[c]
                            + CLIP_MEAN[c];
                        (v.clamp(0.0, 1.0) * 255.0).round() as u8
                    });
                    sheet.put_pixel(
                        (col * (SIZE + 2) + x) as u32,
                        (row * (SIZE + 2) + y) as u32,
                        image::Rgb(rgb),
                    );
                }
            }
        }
        eprintln!("{n} images -> {}", path.display());
    }
    sheet
        .save(out.join("preview.png"))
        .context("writing preview.png")?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Inspect { model, arch } => inspect(model, arch),
        Cmd::Forward {
            model,
            input,
            out,
            run,
            arch,
        } => forward(model, input, out, run, arch),
        Cmd::Eval(a) => run_eval(*a),
        Cmd::Expertise(c) => run_expertise(*c),
        Cmd::PlotWise {
            id,
            ood,
            out,
            title,
        } => (|| {
            let read = |p: &PathBuf| -> Result<serde_json::Value> {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&t).with_context(|| format!("{} is not JSON", p.display()))
            };
            let ood: Vec<serde_json::Value> = ood.iter().map(read).collect::<Result<_>>()?;
            let svg = dawin::dawin::report::wise_curve_svg(&read(&id)?, &ood, &title);
            dawin::tensorfile::write_atomic(&out, svg.as_bytes())?;
            println!("-> {}", out.display());
            Ok(())
        })(),
        Cmd::Synth {
            out,
            per_class,
            seed,
        } => run_synth(&out, per_class, seed),
        Cmd::Demo {
            out_dir,
            per_class,
            device,
            quiet,
        } => run_demo(&out_dir, per_class, device, quiet),
        Cmd::EvalMtl {
            base,
            tasks,
            task_index,
            data,
            out_dir,
            scale,
            quiet,
            run,
            arch,
        } => (|| {
            let o = dawin::dawin::mtl::MtlOptions {
                base,
                tasks,
                task_index,
                data,
                out_dir,
                scale,
                batch_size: run.batch_size as usize,
                overrides: arch.overrides(),
                progress: !quiet,
            };
            if run.precision != Precision::F32 {
                bail!(
                    "eval-mtl runs in f32 only for now (--precision {} is not supported)",
                    run.precision
                );
            }
            let ex = run.open()?;
            let r = dawin::dawin::mtl::run(&o, ex.as_ref())?;
            print!("{}", r.table);
            println!(
                "outputs in {} (summary.json, samples.csv)",
                o.out_dir.display()
            );
            run.report(ex.as_ref())
        })(),
        Cmd::Merge { inputs, out } => run_merge(inputs, out),
        Cmd::Preprocess { paths, size, out } => preprocess(paths, size, out),
        Cmd::Bench {
            device,
            quick,
            repeats,
            batch,
            images,
            suite,
            filter,
            json,
            precision,
        } => {
            let batch = batch.unwrap_or(if quick { 2 } else { 256 });
            let o = dawin::bench::BenchOptions {
                quick,
                repeats: repeats as usize,
                batch: batch as usize,
                images: images.unwrap_or(batch) as usize,
                kernels: suite != Suite::Pipeline,
                pipeline: suite != Suite::Kernels,
                filter,
                precision,
            };
            run_bench(device, &o, json)
        }
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

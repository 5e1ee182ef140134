//! One function per command: call the library, print what it did.

use super::Cmd;
use super::args::{ArchFlags, DataArgs, EvalArgs, ExpertiseArgs, RunFlags, TextFlags};
use anyhow::{Result, bail};
use dawin::data::pixel_file::PixelFile;
use dawin::data::{dataset, synth};
use dawin::exec::{self, ExecutorKind};
use dawin::model::Model;
use dawin::model::placed::Precision;
use dawin::pipelines::bench::BenchOptions;
use dawin::pipelines::{demo, eval, mtl, multiset, shard};
use dawin::report::summary;
use dawin::tensorfile::{Tensor, write_atomic};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Inspect { model, arch } => {
            crate::out!("{}", load_model(&model, arch)?.describe(&model));
            inspect_text_tower(&model, arch);
            Ok(())
        }
        Cmd::Completions { shell } => {
            let mut cmd = <super::Cli as clap::CommandFactory>::command();
            // Into memory first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "dawin", &mut script);
            crate::out!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
        Cmd::Convert {
            input,
            output,
            names,
            arch,
        } => convert(&input, &output, names, arch),
        Cmd::Forward {
            model,
            input,
            out,
            run,
            arch,
        } => forward(&model, &input, &out, run, arch),
        Cmd::Zeroshot {
            model,
            classes,
            templates,
            out,
            logit_scale,
            text,
            arch,
        } => {
            let o = dawin::pipelines::zeroshot::ZeroShotOptions {
                model,
                classes,
                templates,
                out,
                overrides: arch.overrides(),
                text_heads: text.text_heads,
                scale: logit_scale,
                batch: text.batch_size as usize,
                progress: !text.quiet,
            };
            run_zeroshot(&o, text)
        }
        Cmd::EncodeText {
            model,
            texts,
            out,
            text,
            arch,
        } => encode_text(&model, &texts, &out, text, arch),
        Cmd::Eval(a) => run_eval(&a),
        Cmd::Expertise(c) => run_expertise(&c),
        Cmd::Calibrate(c) => run_calibrate(&c),
        Cmd::EvalMtl(a) => match a.all_task_data() {
            Some(data) => run_mtl_tasks(&a.options(), &data, a.run),
            None => run_mtl(&a.options(), a.run),
        },
        Cmd::Demo {
            out_dir,
            per_class,
            device,
            quiet,
        } => run_demo(&out_dir, per_class as usize, device, quiet),
        Cmd::PlotWise {
            id,
            ood,
            out,
            title,
        } => {
            dawin::tensorfile::check_output(&out)?;
            summary::plot_wise(&id, &ood, &title, &out)?;
            crate::outln!("-> {}", out.display());
            Ok(())
        }
        Cmd::Synth {
            out,
            per_class,
            seed,
        } => {
            for p in synth::write_domains(&out, per_class as usize, seed)? {
                crate::errln!("{per_class} images per class -> {}", p.display());
            }
            Ok(())
        }
        Cmd::Merge {
            inputs,
            out,
            allow_partial,
        } => run_merge(&inputs, &out, allow_partial),
        Cmd::Preprocess {
            paths,
            size,
            out,
            label_order,
            dtype,
            folders,
        } => {
            let opt = folders.options(label_order)?;
            run_preprocess(&paths, size as usize, &out, &opt, dtype)
        }
        Cmd::Bench(a) => run_bench(a.device, &a.options(), a.json.clone()),
    }
}

fn convert(
    input: &Path,
    output: &Path,
    names: dawin::model::convert::Names,
    arch: ArchFlags,
) -> Result<()> {
    let c = dawin::model::convert::convert(input, output, arch.overrides(), names)?;
    for n in &c.model.notes {
        crate::errln!("warning: {}: {n}", input.display());
    }
    let mut meta: Vec<String> = c
        .metadata
        .iter()
        .filter(|(k, _)| *k != "converted_from")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    meta.sort();
    crate::outln!(
        "wrote {} ({} tensors; read as {}); metadata: {}",
        output.display(),
        c.tensors,
        c.model.origin,
        meta.join(", ")
    );
    Ok(())
}

/// The text tower's line of `inspect`, when the checkpoint has one (one
/// that cannot be read is said, not fatal: the image tower is the model).
fn inspect_text_tower(model: &Path, arch: ArchFlags) {
    use dawin::model::text::TextModel;
    match TextModel::load(model, arch.overrides(), None) {
        Ok(t) => {
            crate::out!("{}", t.describe());
            for n in &t.notes {
                crate::errln!("warning: {}: {n}", model.display());
            }
        }
        Err(e) if e.to_string().contains("no CLIP text tower") => {}
        Err(e) => crate::outln!("text tower  not usable: {e}"),
    }
}

/// Loads a model, printing what the loader noted (flags overridden by the
/// file's metadata, ...).
fn load_model(path: &Path, arch: ArchFlags) -> Result<Model> {
    Ok(Model::load_warn(path, arch.overrides())?)
}

fn forward(model: &Path, input: &Path, out: &Path, run: RunFlags, arch: ArchFlags) -> Result<()> {
    dawin::tensorfile::check_output(out)?;
    let m = load_model(model, arch)?;
    let ex = run.open()?;
    let batch = run.batch_size as usize;
    let paths = (model, input, out);
    let px = dataset::read_pixel_values(input)?;
    let how = (batch, run.precision);
    let r = dawin::model::batch::forward_file(ex.as_ref(), &m, paths, px, how)?;
    if r.non_finite_inputs > 0 {
        crate::errln!(
            "warning: {}: {} NaN/Inf values in pixel_values; their images' outputs will not be finite",
            input.display(),
            r.non_finite_inputs
        );
    }
    crate::errln!(
        "{} images on {} in {:.3}s ({:.1} images/s) -> {}",
        r.images,
        ex.name(),
        r.seconds,
        r.images as f64 / r.seconds.max(1e-9),
        out.display()
    );
    run.report(ex.as_ref())
}

fn run_zeroshot(o: &dawin::pipelines::zeroshot::ZeroShotOptions, text: TextFlags) -> Result<()> {
    let run = text.run_flags();
    let ex = run.open()?;
    let r = dawin::pipelines::zeroshot::run(o, ex.as_ref())?;
    for n in &r.notes {
        crate::errln!("warning: {}: {n}", o.model.display());
    }
    if r.truncated > 0 {
        crate::errln!(
            "warning: {} of {} prompts were longer than the context and cut to its first 76 tokens",
            r.truncated,
            r.classes * r.templates
        );
    }
    crate::outln!(
        "zero-shot head of {} classes × {} templates (scale {:.4}) on {} in {:.2}s -> {}",
        r.classes,
        r.templates,
        r.scale,
        ex.name(),
        r.seconds,
        o.out.display()
    );
    run.report(ex.as_ref())
}

fn encode_text(
    model: &Path,
    texts: &Path,
    out: &Path,
    text: TextFlags,
    arch: ArchFlags,
) -> Result<()> {
    dawin::tensorfile::check_output(out)?;
    let run = text.run_flags();
    let ex = run.open()?;
    let start = Instant::now();
    let (batch, visible) = (text.batch_size as usize, !text.quiet);
    let e = dawin::pipelines::zeroshot::encode_file(
        ex.as_ref(),
        model,
        texts,
        arch.overrides(),
        text.text_heads,
        batch,
        visible,
    )?;
    for n in &e.notes {
        crate::errln!("warning: {}: {n}", model.display());
    }
    if e.truncated > 0 {
        crate::errln!(
            "warning: {} of {} prompts were longer than the context and cut to its first 76 tokens",
            e.truncated,
            e.prompts
        );
    }
    let ids: Vec<i64> = e.ids.iter().map(|&t| t as i64).collect();
    let emb = Tensor {
        shape: vec![e.prompts, e.embed_dim],
        data: e.embeds,
    };
    dawin::tensorfile::write_i64_and_f32(
        out,
        ("input_ids", &[e.prompts, e.context], &ids),
        &[("text_embeds", &emb)],
        None,
    )?;
    crate::errln!(
        "{} prompts on {} in {:.3}s -> {}",
        e.prompts,
        ex.name(),
        start.elapsed().as_secs_f64(),
        out.display()
    );
    run.report(ex.as_ref())
}

fn run_eval(a: &EvalArgs) -> Result<()> {
    let run = a.common.run;
    let opts = a.options()?;
    if let Some(sets) = multiset::parse_sets(&opts.data)? {
        return run_eval_sets(&opts, &sets, run);
    }
    let ex = run.open()?;
    let r = eval::run(&opts, ex.as_ref())?;
    crate::out!("{}", r.table);
    crate::outln!("{}", eval_footer(&r, &ex.name(), &opts.out_dir));
    run.report(ex.as_ref())
}

/// The line under eval's table: how many samples, where, whether the
/// logits came from the cache, what was skipped and every file written.
fn eval_footer(r: &eval::EvalResult, device: &str, out: &Path) -> String {
    let cache = match r.summary["cache"].as_str() {
        Some("hit") => ", logits reused from the cache",
        _ => "",
    };
    let skipped = match r.summary["skipped"].as_u64() {
        Some(n) if n > 0 => format!("; {n} files skipped (listed in skipped.txt)"),
        _ => String::new(),
    };
    format!(
        "{} samples on {device}{cache}{skipped}; outputs in {}: {}",
        r.indices.len(),
        out.display(),
        r.written.join(", ")
    )
}

/// `eval --data name=PATH,...`: each set's table, then the per-set one.
fn run_eval_sets(
    opts: &eval::EvalOptions,
    sets: &[multiset::DataSet],
    run: RunFlags,
) -> Result<()> {
    let ex = run.open()?;
    let r = multiset::run(opts, sets, ex.as_ref())?;
    for (name, one) in &r.runs {
        crate::outln!("== {name}: {} samples ==", one.indices.len());
        crate::out!("{}", one.table);
    }
    crate::outln!();
    crate::out!("{}", r.table);
    let curve = r
        .wise_svg
        .as_ref()
        .map_or(String::new(), |p| format!(", {}", p.display()));
    crate::outln!(
        "{} sets on {}; outputs in {} (sets.json, table.txt{curve}; one folder per set)",
        r.runs.len(),
        ex.name(),
        opts.out_dir.display()
    );
    run.report(ex.as_ref())
}

/// `expertise` and `calibrate` read one data set.
fn one_set(c: &DataArgs, command: &str) -> Result<()> {
    if multiset::parse_sets(&c.data)?.is_some() {
        bail!(
            "--data {}: a list of name=PATH sets is for `dawin eval`; `dawin {command}` reads one data set",
            c.data.display()
        );
    }
    Ok(())
}

fn run_expertise(e: &ExpertiseArgs) -> Result<()> {
    let c = &e.common;
    one_set(c, "expertise")?;
    let opts = e.options()?;
    let ex = c.run.open()?;
    let r = eval::run_expertise(&opts, ex.as_ref())?;
    let out = opts.out_dir.join("expertise.safetensors");
    shard::write_expertise(&out, &r)?;
    crate::outln!(
        "entropies of {} samples -> {}",
        r.indices.len(),
        out.display()
    );
    c.run.report(ex.as_ref())
}

fn run_calibrate(c: &DataArgs) -> Result<()> {
    one_set(c, "calibrate")?;
    let opts = c.options()?;
    let ex = c.run.open()?;
    let r = dawin::pipelines::calibrate::run(&opts, ex.as_ref())?;
    let nll = |k: &str, i: usize| r.summary[k][i].as_f64().unwrap_or(f64::NAN);
    for (i, which) in ["pretrained", "fine-tuned"].iter().enumerate() {
        let t = [r.temperature.0, r.temperature.1][i];
        crate::outln!(
            "{which:<10} T = {t:.4}  (NLL {:.4} at T = 1, {:.4} at T)",
            nll("nll_at_t1", i),
            nll("nll_fitted", i)
        );
    }
    crate::outln!(
        "-> {} (use it with eval --temperature {0})",
        r.file.display()
    );
    c.run.report(ex.as_ref())
}

fn run_mtl(o: &mtl::MtlOptions, run: RunFlags) -> Result<()> {
    let ex = open_for_mtl(run)?;
    let r = mtl::run(o, ex.as_ref())?;
    crate::out!("{}", r.table);
    crate::outln!(
        "outputs in {} (summary.json, samples.csv)",
        o.out_dir.display()
    );
    run.report(ex.as_ref())
}

/// The executor of `eval-mtl`, which runs in f32 only.
fn open_for_mtl(run: RunFlags) -> Result<Box<dyn dawin::exec::Executor>> {
    if run.precision != Precision::F32 {
        bail!(
            "eval-mtl runs in f32 only for now (--precision {} is not supported)",
            run.precision
        );
    }
    run.open()
}

/// `eval-mtl` without `--task-index`: every task on its own data.
fn run_mtl_tasks(o: &mtl::MtlOptions, data: &[PathBuf], run: RunFlags) -> Result<()> {
    let ex = open_for_mtl(run)?;
    let r = dawin::pipelines::mtl_tasks::run(o, data, ex.as_ref())?;
    for (t, one) in r.runs.iter().enumerate() {
        crate::outln!("== task {t}: {} ==", data[t].display());
        crate::out!("{}", one.table);
    }
    crate::outln!();
    crate::out!("{}", r.table);
    crate::outln!(
        "outputs in {} (tasks.json, table.txt; task-t/ per task)",
        o.out_dir.display()
    );
    run.report(ex.as_ref())
}

fn run_merge(inputs: &[PathBuf], out: &Path, allow_partial: bool) -> Result<()> {
    let refs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    let is_json = |p: &PathBuf| p.extension().is_some_and(|e| e == "json");
    let json = inputs.iter().all(is_json);
    if !json && let Some(p) = inputs.iter().find(|p| is_json(p)) {
        anyhow::bail!(
            "{}: is a summary, but the other inputs are expertise files; merge summaries and expertise files separately",
            p.display()
        );
    }
    if json {
        let m = shard::merge_summaries(&refs, out, allow_partial)?;
        let order: Vec<String> = m["methods"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        crate::out!("{}", summary::table(&order, &m));
        let dir = dawin::tensorfile::folder_of(out);
        crate::outln!(
            "recomputed on the shards' samples.csv rows; samples.csv, lambdas.svg and lambda_oracle.svg (with classes.txt and skipped.txt when the shards had them) are in {}",
            dir.display()
        );
    } else {
        let readable = shard::merge_expertise(&refs, out, allow_partial)?;
        crate::outln!("merged expertise of {readable} readable samples");
    }
    crate::outln!("-> {}", out.display());
    Ok(())
}

fn run_preprocess(
    paths: &[PathBuf],
    size: usize,
    out: &Path,
    opt: &dataset::FolderOptions,
    dtype: dataset::PixelDtype,
) -> Result<()> {
    dawin::tensorfile::check_output(out)?;
    let set = dawin::data::image_set::ImageSet::open(paths, size, opt)?;
    let (st_dtype, meta) = match dtype {
        dataset::PixelDtype::U8 => {
            let meta = [(dataset::U8_PIXELS_KEY, dataset::U8_PIXELS_MEANING)];
            let meta = meta.map(|(k, v)| (k.to_string(), v.to_string())).into();
            (safetensors::Dtype::U8, Some(meta))
        }
        dataset::PixelDtype::F32 => (safetensors::Dtype::F32, None),
    };
    let mut file = PixelFile::create(out, (st_dtype, size), set.len(), meta)?;
    // Normalised image by image into one buffer (F32 only).
    let mut values = Vec::<f32>::new();
    let decoded = set.decode_each(true, |px, _| match dtype {
        dataset::PixelDtype::U8 => file.push(px),
        dataset::PixelDtype::F32 => {
            values.resize(px.len(), 0.0);
            dawin::data::preprocess::normalize(px, &mut values, size * size);
            file.push(bytemuck::cast_slice(&values))
        }
    })?;
    let n = decoded.labels.len();
    if n == 0 {
        let why = dawin::invalid!("no image could be read from {} path(s)", paths.len());
        return Err(why.into());
    }
    file.finish(&decoded.labels)?;
    crate::errln!(
        "{n} images ({} skipped) -> {}",
        decoded.skipped,
        out.display()
    );
    Ok(())
}

fn run_bench(device: ExecutorKind, o: &BenchOptions, json: Option<PathBuf>) -> Result<()> {
    if let Some(p) = &json {
        dawin::tensorfile::check_output(p)?;
    }
    let ex = exec::open(device)?;
    let quick = if o.quick { " (quick shapes)" } else { "" };
    crate::errln!("benchmarking {}{quick}", ex.name());
    let mut rows = dawin::pipelines::bench::run(ex.as_ref(), o)?;
    if o.data {
        rows.extend(dawin::pipelines::bench_data::rows(o)?);
    }
    if rows.is_empty() {
        bail!("no benchmark matched the filter");
    }
    crate::out!(
        "{}",
        dawin::pipelines::bench::table(&rows, ex.timing().peak().as_ref(), &ex.name())
    );
    if let Some(path) = json {
        let v = serde_json::json!({
            "device": ex.name(),
            "quick": o.quick,
            "repeats": o.repeats,
            "batch": o.batch,
            "rows": rows,
        });
        write_atomic(&path, serde_json::to_string_pretty(&v)?.as_bytes())?;
        crate::errln!("-> {}", path.display());
    }
    Ok(())
}

fn run_demo(out: &Path, per_class: usize, device: Option<ExecutorKind>, quiet: bool) -> Result<()> {
    if per_class == 0 {
        bail!("--per-class must be positive");
    }
    let ex = match device {
        Some(d) => exec::open(d)?,
        None => exec::open(ExecutorKind::Cuda).or_else(|_| exec::open(ExecutorKind::Cpu))?,
    };
    let t = Instant::now();
    crate::errln!(
        "DaWin demo on {}: {} images per domain",
        ex.name(),
        per_class * 10
    );
    let r = demo::run(out, per_class, ex.as_ref(), !quiet)?;
    crate::out!("{}", r.table);
    crate::outln!(
        "λ histograms: {} (in distribution), {} (colour shift); every domain's summary.json, samples.csv and plots, and table.txt, in {} ({:.1}s)",
        r.svgs[0].display(),
        r.svgs[3].display(),
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

//! The `dawin` command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dawin::exec::{self, DeviceKind};
use dawin::model::{Act, Model, Overrides};
use dawin::tensorfile::{Tensor, TensorFile, write_f32};
use dawin::vit::{DeviceModel, forward_batched};
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
    let ex = exec::open(run.device)?;
    let t0 = Instant::now();
    let dm = DeviceModel::upload(ex.as_ref(), &m)?;
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
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

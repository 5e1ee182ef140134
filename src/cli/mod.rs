//! The `dawin` command line: the commands and their flags. Each command
//! calls the library and prints (see `commands.rs`).

pub mod args;
pub mod choice;
pub mod commands;
pub mod output;
pub mod terminal;

use args::{ArchFlags, DataArgs, EvalArgs, ExpertiseArgs, RunFlags};
use choice::{choice, positive};
use clap::{Parser, Subcommand};
use dawin::data::dataset::{LabelOrder, PixelDtype};
use dawin::exec::ExecutorKind;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dawin",
    version,
    about = "Training-free dynamic weight interpolation (DaWin) for CLIP ViTs",
    long_about = "dawin runs CLIP ViT image towers on its own tensor engine (cpu reference, \
                  emu PTX interpreter, cuda) and evaluates DaWin: per-sample interpolation \
                  between a pretrained and a fine-tuned model, weighted by their entropies.\n\n\
                  A model is a .safetensors file, a PyTorch .pt/.pth/.bin checkpoint (read \
                  without running code), or a folder: an HF hub folder (config.json, sharded or \
                  not) or open_clip's (open_clip_config.json). Weight layouts: OpenAI/open_clip, \
                  model-soups/WiSE-FT/DaWin (model.visual.* + classification_head), HF transformers."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Worker threads of the cpu executor (and of decoding, packing and
    /// every other parallel step). Default: RAYON_NUM_THREADS if set, else
    /// one per logical CPU.
    #[arg(long, global = true, value_name = "N", value_parser = positive::<u16>(u16::MAX as u64), allow_hyphen_values = true)]
    pub threads: Option<u16>,
}

const EVAL_EXAMPLES: &str = "Examples:
  # a pair on an image folder, all methods, the official ViT-B/32 temperatures
  dawin eval --pretrained zs.safetensors --finetuned ft.pt --data imagenet-a/ \\
      --class-subset imagenet-a --temperature vit-b32 -o runs/imagenet-a
  # K = 3 merged models from a Beta mixture, on a GPU, in bf16
  dawin eval --pretrained zs/ --finetuned ft/ --data val.safetensors -o runs/val \\
      --interp bmm:3 --device cuda --precision bf16
  # ObjectNet: its 113 folders, the 2-pixel border crop, the pooled classes
  dawin eval --pretrained zs/ --finetuned ft/ --data objectnet-1.0/images -o runs/objectnet \\
      --folders objectnet --crop-border 2 --class-map objectnet
  # ImageNet and its shifts in one command: one run per set in runs/in1k/NAME/,
  # then the per-set table with the OOD mean (the named sets get their label spaces)
  dawin eval --pretrained zs/ --finetuned ft/ -o runs/in1k --temperature vit-b32 \\
      --data imagenet=val/,imagenet-v2=v2/,imagenet-r=r/,imagenet-a=a/,objectnet=objectnet-1.0/images";

const ZEROSHOT_EXAMPLES: &str = "Examples:
  # CLIP's ImageNet classifier from an HF folder, OpenAI's 80 templates
  dawin zeroshot --model clip-vit-base-patch32/ --classes imagenet -o zs.safetensors
  # your own classes and templates, then DaWin against a fine-tuned model
  dawin zeroshot --model open_clip_folder/ --classes classes.txt --templates templates.txt -o zs.safetensors
  dawin eval --pretrained zs.safetensors --finetuned ft.pt --data val/ -o runs/val
  # class names from the image folder itself, so labels and head rows cannot drift apart
  dawin zeroshot --model clip-vit-base-patch32/ --classes val/ -o zs.safetensors";

#[derive(Subcommand)]
pub enum Cmd {
    /// Print a model's recognised format, layout, configuration and sizes.
    #[command(
        after_help = "Examples:\n  dawin inspect model.safetensors\n  dawin inspect ~/.cache/huggingface/hub/models--openai--clip-vit-base-patch32/snapshots/<hash>/"
    )]
    Inspect {
        /// A model: .safetensors, .pt/.pth/.bin, or an HF / open_clip folder.
        model: PathBuf,
        #[command(flatten)]
        arch: ArchFlags,
    },
    /// Convert any readable model to a safetensors file that runs with no
    /// flags.
    ///
    /// The output's metadata records heads, act, ln_eps, the input's layout
    /// and, for CLIP checkpoints, logit_scale (the log of the softmax
    /// scale, as CLIP stores it). `--names canonical` (default) writes
    /// dawin's OpenAI layout, f32, image tower and head only; `--names keep`
    /// copies every tensor under its own name and dtype.
    ///
    /// Example: dawin convert open_clip_folder/ model.safetensors
    #[command(
        after_help = "Examples:\n  dawin convert open_clip_folder/ model.safetensors\n  dawin convert finetuned.pt ft.safetensors --heads 12 --act quick_gelu\n  dawin convert --names keep hf_clip_folder/ clip.safetensors"
    )]
    Convert {
        /// A model: .safetensors, .pt/.pth/.bin, or an HF / open_clip folder.
        input: PathBuf,
        /// The safetensors file to write (written atomically).
        output: PathBuf,
        /// Which tensor names the output keeps.
        #[arg(long, value_parser = choice::<dawin::model::convert::Names>(), default_value_t = dawin::model::convert::Names::Canonical)]
        names: dawin::model::convert::Names,
        #[command(flatten)]
        arch: ArchFlags,
    },
    /// Run a model on preprocessed images and write its outputs.
    ///
    /// The input holds `pixel_values` f32 [N,3,H,W]. The output gets
    /// `image_embeds` f32 [N,D] (projected, before normalisation) and, when the
    /// model has a classification head, `logits` f32 [N,C].
    #[command(
        after_help = "Examples:\n  dawin forward --model openai-clip-b32/ --input images.safetensors --out embeds.safetensors\n  dawin forward --model ft.pt --heads 12 --act quick_gelu --input x.safetensors --out y.safetensors --device cuda"
    )]
    Forward {
        /// The model: .safetensors, .pt/.pth/.bin, or an HF / open_clip folder.
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
    #[command(after_help = EVAL_EXAMPLES)]
    Eval(Box<EvalArgs>),
    /// Multi-task DaWin: per-sample mixing of T task vectors.
    ///
    /// Coefficients c = softmax_t(−H_t(x)), H_t the entropy of task model t
    /// with the evaluated task's head; each sample runs through
    /// θ0 + Σ_t s·T·c_t·(θ_t − θ0), batched through the stacked ops (or
    /// built per sample with --per-sample materialize). Also `dawin-domain`
    /// (one model at the mean coefficients, the official default). Baselines:
    /// task arithmetic (θ0 + s·Σ τ_t), weight averaging, TIES-merging and
    /// each task model alone. Writes summary.json and samples.csv.
    #[command(
        after_help = "Examples:\n  # one task: DTD's data and head\n  dawin eval-mtl --base zs.safetensors --tasks cars.pt,dtd.pt,eurosat.pt --task-index 1 --data dtd_test/ -o runs/dtd\n  # every task on its own data: a per-task table with the mean\n  dawin eval-mtl --base zs.safetensors --tasks cars.pt,dtd.pt,eurosat.pt --data cars_test/,dtd_test/,eurosat_test/ -o runs/mtl"
    )]
    EvalMtl(Box<args::EvalMtlArgs>),
    /// Build a zero-shot classifier from CLIP's text tower.
    ///
    /// For each class, every template (`{}` = the class name) is tokenized
    /// with OpenAI's CLIP tokenizer and encoded by the model's text tower;
    /// the embeddings are normalised, averaged over the templates,
    /// normalised again and scaled by exp(logit_scale) (WiSE-FT's recipe,
    /// which the official DaWin code uses). OUT is the image tower with that
    /// head [C,D] (bias 0), with heads, act, eps, logit_scale, the classes
    /// and the templates in its metadata: give it to `eval --pretrained`.
    #[command(after_help = ZEROSHOT_EXAMPLES)]
    Zeroshot {
        /// A full CLIP model (both towers): an HF CLIPModel folder, an
        /// open_clip folder, or an OpenAI/open_clip state dict.
        #[arg(long, help_heading = "Inputs")]
        model: PathBuf,
        /// Class names, one per line (`#` lines and blank lines skipped),
        /// in label order; `imagenet` (CLIP's 1000 ImageNet names); or an
        /// image folder, whose class folders name the classes in the order
        /// `eval` labels them (sorted, underscores read as spaces).
        #[arg(long, help_heading = "Inputs")]
        classes: PathBuf,
        /// Templates, one per line with `{}` for the class name, or a
        /// shipped set: `openai-imagenet` (OpenAI's 80) or `simple` ("a
        /// photo of a {}.").
        #[arg(long, default_value = "openai-imagenet", help_heading = "Inputs")]
        templates: PathBuf,
        /// The classifier to write (safetensors).
        #[arg(long, short = 'o', help_heading = "Output")]
        out: PathBuf,
        /// The softmax scale itself, e.g. 100 (default: exp of the model's
        /// stored logit_scale).
        #[arg(long, help_heading = "Model")]
        logit_scale: Option<f32>,
        #[command(flatten)]
        text: args::TextFlags,
        #[command(flatten)]
        arch: ArchFlags,
    },
    /// Encode prompts with CLIP's text tower.
    ///
    /// One prompt per line of TEXTS (UTF-8), taken as is: a tab stays a
    /// tab, an empty line is an empty prompt. Writes `input_ids` i64
    /// [P,77] (OpenAI's tokenizer, truncated to 76 tokens + end of text)
    /// and `text_embeds` f32 [P,D] (projected, not normalised).
    #[command(
        after_help = "Example:\n  dawin encode-text --model clip-vit-b32/ --texts prompts.txt --out text.safetensors"
    )]
    EncodeText {
        /// A CLIP model with a text tower (file or HF / open_clip folder).
        #[arg(long, help_heading = "Inputs")]
        model: PathBuf,
        /// Prompts, one per line.
        #[arg(long, help_heading = "Inputs")]
        texts: PathBuf,
        /// Output safetensors file.
        #[arg(long, short = 'o', help_heading = "Output")]
        out: PathBuf,
        #[command(flatten)]
        text: args::TextFlags,
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
        /// Output folder (per-domain reports, lambdas.svg, table.txt),
        /// created in the current folder by default.
        #[arg(long, short = 'o', default_value = "dawin-demo")]
        out_dir: PathBuf,
        /// Images per class and domain.
        #[arg(long, default_value_t = 100, value_parser = positive::<u32>(100_000), allow_hyphen_values = true)]
        per_class: u32,
        /// Executor (default: cuda if available, else cpu).
        #[arg(long, value_parser = choice::<ExecutorKind>())]
        device: Option<ExecutorKind>,
        /// Hide progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Plot the WiSE-FT curve with DaWin and the ensembles.
    ///
    /// Accuracy in distribution against the mean under shift, one point per
    /// α, read from `eval` summaries.
    #[command(
        after_help = "Example:\n  dawin plot-wise --id runs/id/summary.json --ood runs/sketch/summary.json runs/r/summary.json --out wise.svg"
    )]
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
    /// Print a shell completion script.
    ///
    /// Bash: `dawin completions bash > ~/.local/share/bash-completion/completions/dawin`;
    /// zsh: into a folder on $fpath as `_dawin`; fish:
    /// `~/.config/fish/completions/dawin.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the demo's procedural image set, for training.
    ///
    /// 10 shape classes at 32×32: OUT/<domain>.safetensors for the
    /// in-distribution domain `id` and the shifts noise, texture, colour,
    /// blur, occlusion, plus OUT/preview.png (one row per domain).
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Images per class and domain.
        #[arg(long, default_value_t = 100, value_parser = positive::<u32>(100_000), allow_hyphen_values = true)]
        per_class: u32,
        /// Seed (the demo evaluates on seed 1000, so train on others).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Scale-out, step 1: the expertise pass of one shard.
    ///
    /// Writes OUT/expertise.safetensors (per-sample entropies at their data
    /// indices) and caches the logits in OUT, so a later `eval` on the same
    /// shard and OUT reuses them: both models' logits and those of the
    /// WiSE-FT models that --methods names (by default all of eval's
    /// default methods). Merge the shards with `dawin merge`.
    Expertise(Box<ExpertiseArgs>),
    /// Fit each model's softmax temperature on held-out labelled data.
    ///
    /// Minimises the mean NLL of softmax(z/T) over the labelled samples of
    /// --data, for the pretrained and the fine-tuned model apart (T from
    /// 0.01 to 100), and writes OUT/temperature.json with the NLL at T = 1
    /// and at the fitted T; `eval --temperature OUT/temperature.json`
    /// reads it. A fit that lands on a bound is refused (the NLL still
    /// falls beyond it: a model right on every sample, or no better than
    /// chance). Use data held out from the evaluated sets. --temperature
    /// is not read here.
    Calibrate(Box<DataArgs>),
    /// Scale-out: merge shard outputs.
    ///
    /// Given expertise.safetensors files, writes one whole-set expertise file
    /// for `eval --expertise-from`. Given summary.json files (each with its
    /// samples.csv beside it), writes the result set of one whole run: the
    /// shards' samples.csv rows concatenated in shard order, every
    /// statistic (accuracy, ci95, NLL, ECE, Brier, McNemar, λ diagnostics)
    /// and plot recomputed on them, into the folder of --out.
    Merge {
        /// Shard outputs: all expertise.safetensors, or all summary.json.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Merged output file: the whole-set expertise file, or the merged
        /// summary (its samples.csv and plots are written beside it).
        #[arg(long)]
        out: PathBuf,
        /// Merge the shards given even when some of the split are missing
        /// (the merged file or summary then says it is partial and which
        /// shards it holds).
        #[arg(long)]
        allow_partial: bool,
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
    /// tools/bench_torch.py prints the same rows for PyTorch. `--suite mtl`
    /// times multi-task DaWin's per-sample merges of 8 task models, batched
    /// through the stacked ops against built per sample at batch 1.
    /// `--suite data` times the image path on the CPU (JPEG decode, CLIP's
    /// resize and crop, the u8 pixel cache's normalisation) as images/s;
    /// tools/bench_data.py races `dawin preprocess` against torchvision.
    Bench(Box<args::BenchArgs>),
    /// Decode and CLIP-preprocess images into a safetensors file.
    ///
    /// Each PATH is an image folder with one subfolder per class (labels are
    /// the sorted folder indices) or a single jpg/png (label −1). Writes
    /// `pixel_values` [N,3,S,S] (CLIP-normalised f32, or with `--dtype u8`
    /// the u8 pixels after resize and crop, which eval, forward and
    /// expertise normalise as they read) and `labels` i64 [N]. Unreadable
    /// images are reported and skipped.
    Preprocess {
        /// Class folders or image files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output side length (the model's input size, e.g. 224).
        #[arg(long, value_parser = positive::<u32>(8192), allow_hyphen_values = true)]
        size: u32,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// How class folders are numbered: by sorted name (torchvision's
        /// ImageFolder) or by the number each folder is named (ImageNetV2).
        #[arg(long, value_parser = choice::<LabelOrder>(), default_value_t = LabelOrder::Sorted)]
        label_order: LabelOrder,
        /// What `pixel_values` holds: normalised f32, or the u8 pixels
        /// (4× smaller; eval, forward and expertise normalise them as they
        /// read, to the same f32 values).
        #[arg(long, value_parser = choice::<PixelDtype>(), default_value_t = PixelDtype::F32)]
        dtype: PixelDtype,
        #[command(flatten)]
        folders: args::FolderFlags,
    },
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every command (unique flag
    /// names across flattened groups, valid defaults, conflicts that name
    /// real flags), which it otherwise runs only when a command is parsed.
    /// clap compiles them in debug builds only: `cargo test`, not
    /// `cargo test --release`.
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

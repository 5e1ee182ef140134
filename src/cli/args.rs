//! Flag groups shared by several commands, and the parsers of flag values.

use super::choice::{choice, positive};
use clap::Args;
use dawin::data::dataset::LabelOrder;
use dawin::data::projection::Projection;
use dawin::exec::{self, Executor, ExecutorKind};
use dawin::method::dirichlet::DomainFit;
use dawin::method::interp::Interp;
use dawin::method::interp::PerSample;
use dawin::method::lambda::{LambdaRule, T3Shape};
use dawin::method::merging::TiesMerge;
use dawin::method::methods::Method;
use dawin::model::placed::Precision;
use dawin::model::{Act, Overrides};
use dawin::pipelines::bench::BenchOptions;
use dawin::pipelines::eval::EvalOptions;
use dawin::pipelines::mtl::MtlOptions;
use std::path::PathBuf;

/// Models, data and output shared by `eval` and `expertise`.
#[derive(Args)]
pub struct DataArgs {
    /// The pretrained / zero-shot model (θ_pt), safetensors with a head.
    #[arg(long, help_heading = "Inputs")]
    pub pretrained: PathBuf,
    /// The fine-tuned model (θ_ft), same architecture and head size.
    #[arg(long, help_heading = "Inputs")]
    pub finetuned: PathBuf,
    /// Safetensors with `pixel_values` [N,3,S,S] and `labels` [N], or an
    /// image folder with one subfolder per class. `eval` also takes several
    /// sets, `name=PATH,name=PATH,...`: the first in distribution, the
    /// others shifted; one run per set into OUT/name/, then a per-set table
    /// with the OOD mean (OUT/sets.json, OUT/table.txt, OUT/wise-ft.svg).
    /// A set named imagenet-a, imagenet-r, objectnet or imagenet-v2 is read
    /// with that shipped label space (the label-space flags serve the rest).
    #[arg(long, help_heading = "Inputs")]
    pub data: PathBuf,
    /// Output folder (created if needed); also holds the logits cache.
    #[arg(long, help_heading = "Output", short = 'o')]
    pub out_dir: PathBuf,
    /// Softmax temperatures `T_pt,T_ft` for entropies and the ensembles, or
    /// a backbone's official values by name: vit-b32 (0.9576,0.9733),
    /// vit-b16 (0.96,1.0066), vit-l14 (1.0767,0.9545). summary.json records
    /// the numbers used. Or the temperature.json `dawin calibrate` wrote.
    #[arg(long, default_value = "1,1", value_parser = parse_pair, help_heading = "Method")]
    pub temperature: (f32, f32),
    /// Class indices to keep: a file (commas, spaces, `[..]`, `#` comments)
    /// or a shipped list, `imagenet-a` or `imagenet-r` (200 classes each);
    /// labels are indices into this list.
    #[arg(long, conflicts_with = "class_map", help_heading = "Label space")]
    pub class_subset: Option<PathBuf>,
    /// One line per output class listing the model classes to max-pool
    /// into it: a file, or the shipped `objectnet` (113 classes; use it
    /// with `--folders objectnet --crop-border 2`).
    #[arg(long, help_heading = "Label space")]
    pub class_map: Option<PathBuf>,
    /// Evaluate the i-th (0-based) of n contiguous slices, e.g. `3/8`.
    #[arg(long, value_parser = parse_shard, help_heading = "Performance")]
    pub shard: Option<(usize, usize)>,
    #[command(flatten)]
    pub pixel_cache: PixelCacheFlag,
    /// How the class folders of an image folder are numbered: by sorted
    /// name (torchvision's ImageFolder) or by the number each is named
    /// (ImageNetV2's 0…999).
    #[arg(long, value_parser = choice::<LabelOrder>(), default_value_t = LabelOrder::Sorted, help_heading = "Inputs")]
    pub label_order: LabelOrder,
    #[command(flatten)]
    pub folders: FolderFlags,
    /// Hide progress bars.
    #[arg(long, help_heading = "Output", short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub arch: ArchFlags,
}

impl DataArgs {
    /// The library's options for these flags (eval's own flags at their
    /// defaults).
    pub fn options(&self) -> anyhow::Result<EvalOptions> {
        let projection = match (&self.class_subset, &self.class_map) {
            (Some(p), _) => Projection::subset_file(p)?,
            (_, Some(p)) => Projection::map_file(p)?,
            _ => Projection::None,
        };
        Ok(EvalOptions {
            pretrained: self.pretrained.clone(),
            finetuned: self.finetuned.clone(),
            data: self.data.clone(),
            out_dir: self.out_dir.clone(),
            batch_size: self.run.batch_size as usize,
            temperature: self.temperature,
            projection,
            overrides: self.arch.overrides(),
            shard: self.shard,
            progress: !self.quiet,
            precision: self.run.precision,
            label_order: self.label_order,
            keep_folders: self.folders.keep()?,
            crop_border: self.folders.crop_border,
            pixel_cache: self.pixel_cache.dir(),
            ..EvalOptions::default()
        })
    }
}

/// `--pixel-cache`, shared by the commands that read image folders.
#[derive(Args, Clone, Debug)]
pub struct PixelCacheFlag {
    /// Where the decoded pixels of an image folder are kept (u8 after
    /// resize and crop, 3·S·S bytes an image, keyed by the files' content):
    /// a run that reads the whole folder fills an entry; later passes and
    /// runs on the same files read it instead of decoding, with the same
    /// results. `auto` is $DAWIN_CACHE_DIR/pixels, else
    /// $XDG_CACHE_HOME/dawin/pixels, else ~/.cache/dawin/pixels; `off`
    /// decodes every time. Entries may be deleted at any time.
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|off|DIR",
        help_heading = "Performance"
    )]
    pub pixel_cache: String,
}

impl PixelCacheFlag {
    /// The folder it names; `None` for `off`.
    pub fn dir(&self) -> Option<PathBuf> {
        match self.pixel_cache.as_str() {
            "auto" => dawin::data::pixel_cache::default_dir(),
            "off" => None,
            dir => Some(PathBuf::from(dir)),
        }
    }
}

/// `dawin expertise`: the data flags and the methods whose logits to cache.
#[derive(Args)]
pub struct ExpertiseArgs {
    #[command(flatten)]
    pub common: DataArgs,
    /// The methods the later `eval` will run (the same list as eval's
    /// --methods): the logits of each WiSE-FT model they name are cached
    /// with both models', so that eval reuses them all.
    #[arg(long, default_value = "all", value_parser = Method::parse_list, help_heading = "Method")]
    pub methods: std::vec::Vec<Method>,
}

impl ExpertiseArgs {
    pub fn options(&self) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            methods: self.methods.clone(),
            ..self.common.options()?
        })
    }
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: DataArgs,
    /// How λ is set per sample: DaWin's entropy rules, the official scripts'
    /// other expertise measures (losses against labels or pseudo-labels,
    /// confidences, max logits), or a random baseline; `--help` gives each
    /// formula.
    #[arg(long = "lambda-rule", visible_alias = "expertise", value_parser = choice::<LambdaRule>(), default_value_t = LambdaRule::Entropy, help_heading = "Method")]
    pub lambda_rule: LambdaRule,
    /// Scales every rule's λ by α (the random baselines' aside), and is the
    /// α of the merged model the pseudo-*-merged rules read (else 0.5), as
    /// the official `--wise-alpha`.
    #[arg(long, value_parser = parse_unit, help_heading = "Method")]
    pub wise_alpha: Option<f32>,
    /// `--expertise t3`'s slope γ on the Jensen–Shannon divergence
    /// (T³'s published default 0.5).
    #[arg(long, value_name = "GAMMA", value_parser = parse_finite, help_heading = "Method")]
    pub t3_gamma: Option<f64>,
    /// `--expertise t3`'s range `LO,HI` of the pretrained model's weight
    /// (0 ≤ LO ≤ HI ≤ 1; default 0,1).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, help_heading = "Method")]
    pub t3_range: Option<(f64, f64)>,
    /// Bootstrap resamples of each accuracy's 95 % interval (`ci95` in
    /// summary.json, ± in the table); seeded by --seed.
    #[arg(long, default_value_t = 1000, value_parser = positive::<u32>(u32::MAX as u64), allow_hyphen_values = true, help_heading = "Output")]
    pub bootstrap: u32,
    /// Interpolated inference: `exact` (per-sample, batched, dual-weight ops),
    /// `materialize` (in-place lerp per sample, batch 1) or `bmm[:K]`
    /// (K merged models from a Beta mixture over λ; K = 3 by default) or
    /// `bmm:auto` (K in 1..8 by the lowest BIC, each fit in summary.json),
    /// or `batchwise:B` (T³_B's batch-wise merging: one merged model per B
    /// consecutive samples, in the data's order, at the mean of their λs;
    /// any λ rule).
    #[arg(long, default_value = "exact", help_heading = "Method")]
    pub interp: Interp,
    /// Comma list of: zeroshot, finetuned, wise-ft (= wise-ft:0.1..0.9),
    /// wise-ft:α, wise-ft:auto (the α in [0,1] whose merged model has the
    /// lowest mean prediction entropy on the evaluated set, AdaWiSE-style:
    /// golden-section search, one pass of the merged model per step; the α
    /// found is summary.json's wise_ft_auto; not with --shard), ensemble
    /// (weight 0.5), ensemble:c (constant weight c on the fine-tuned
    /// model's probabilities), ensemble-dynamic (weight λ), dawin, all.
    #[arg(long, default_value = "all", value_parser = Method::parse_list, help_heading = "Method")]
    pub methods: std::vec::Vec<Method>,
    /// Whole-set expertise (from `dawin merge` of `dawin expertise` shards)
    /// for the statistics entropy-offset and bmm need.
    #[arg(long, help_heading = "Method")]
    pub expertise_from: Option<PathBuf>,
    /// Seed of the Beta-mixture k-means initialisation, the random-λ
    /// baselines and the bootstrap.
    #[arg(long, default_value_t = 1, help_heading = "Method")]
    pub seed: u64,
    /// Write the K merged models of a bmm run to DIR as checkpoints
    /// (component_k.safetensors, θ = (1−λ_k)·θ_pt + λ_k·θ_ft at each
    /// component's mean λ_k, f32) with components.json (λ, weight, Beta
    /// parameters, members, provenance), for serving without dawin.
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub save_components: Option<PathBuf>,
}

impl EvalArgs {
    pub fn options(&self) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            rule: self.lambda_rule,
            t3: self.t3_shape()?,
            interp: self.interp,
            methods: self.methods.clone(),
            expertise_from: self.expertise_from.clone(),
            seed: self.seed,
            wise_alpha: self.wise_alpha,
            bootstrap: self.bootstrap as usize,
            save_components: self.save_components.clone(),
            ..self.common.options()?
        })
    }
}

impl EvalArgs {
    /// The `t3` rule's constants; refused with another rule, where they
    /// would silently change nothing.
    fn t3_shape(&self) -> anyhow::Result<T3Shape> {
        let given = self.t3_gamma.is_some() || self.t3_range.is_some();
        if given && self.lambda_rule != LambdaRule::T3 {
            anyhow::bail!(
                "--t3-gamma and --t3-range set the t3 rule's constants, but the rule is {}: add --expertise t3",
                self.lambda_rule
            );
        }
        let d = T3Shape::default();
        let (lo, hi) = self.t3_range.unwrap_or((d.lo, d.hi));
        Ok(T3Shape::new(self.t3_gamma.unwrap_or(d.gamma), lo, hi)?)
    }
}

/// How an image folder is read beyond ImageFolder's rules.
#[derive(Args, Clone, Debug)]
pub struct FolderFlags {
    /// Keep only these class folders of an image folder: a file with one
    /// folder name per line (`#` comments), or the shipped `objectnet` (its
    /// 113 evaluated classes of 313). Kept folders are numbered in sorted
    /// order.
    #[arg(long, help_heading = "Inputs")]
    pub folders: Option<PathBuf>,
    /// Pixels trimmed from each side of every image before preprocessing
    /// (ObjectNet's evaluation trims 2, its 1-pixel red border and one more).
    #[arg(long, default_value_t = 0, help_heading = "Inputs")]
    pub crop_border: usize,
}

impl FolderFlags {
    pub fn keep(&self) -> anyhow::Result<Option<Vec<String>>> {
        use dawin::data::label_spaces::{self, Named};
        let Some(p) = &self.folders else {
            return Ok(None);
        };
        let text = match label_spaces::folders(p) {
            Named::File => std::fs::read_to_string(p).map_err(|e| dawin::Error::io(p, e))?,
            Named::Shipped(_, t) => t.to_string(),
            Named::Unknown(msg) => anyhow::bail!("--folders {msg}"),
        };
        let f = label_spaces::parse_folders(&text);
        if f.is_empty() {
            anyhow::bail!("--folders {}: lists no folder", p.display());
        }
        Ok(Some(f))
    }

    pub fn options(
        &self,
        order: dawin::data::dataset::LabelOrder,
    ) -> anyhow::Result<dawin::data::dataset::FolderOptions> {
        Ok(dawin::data::dataset::FolderOptions {
            order,
            keep: self.keep()?,
            crop_border: self.crop_border,
        })
    }
}

/// Values a checkpoint's tensor shapes cannot tell. The file's metadata
/// (`heads`, `act`, `ln_eps`) or its folder's `config.json` /
/// `open_clip_config.json` wins over these; OpenAI defaults fill the rest.
#[derive(Args, Clone, Copy)]
pub struct ArchFlags {
    /// Attention heads (default: the file's metadata or config, else
    /// width/64, with a warning).
    #[arg(long, help_heading = "Model", value_parser = positive::<usize>(4096), allow_hyphen_values = true)]
    pub heads: Option<usize>,
    /// MLP activation (default: the file's metadata or config, else
    /// quick_gelu, with a warning).
    #[arg(long, value_parser = choice::<Act>(), help_heading = "Model")]
    pub act: Option<Act>,
    /// Read PyTorch files that pickle a whole model object (WiSE-FT's and
    /// DaWin's `torch.save(model)`): its classes are kept as inert records
    /// and its tensors read by attribute path; nothing in the file is run.
    #[arg(long, help_heading = "Model")]
    pub pickled_modules: bool,
    /// Run checkpoints whose weights hold NaN or Inf (with a warning naming
    /// the tensors) instead of refusing them.
    #[arg(long, help_heading = "Model")]
    pub allow_non_finite: bool,
}

impl ArchFlags {
    pub fn overrides(self) -> Overrides {
        Overrides {
            heads: self.heads,
            act: self.act,
            allow_non_finite: self.allow_non_finite,
            pickled_modules: self.pickled_modules,
        }
    }
}

#[derive(Args, Clone, Copy)]
pub struct RunFlags {
    /// Executor that runs the ops.
    #[arg(long, value_parser = choice::<ExecutorKind>(), default_value_t = ExecutorKind::Cpu, help_heading = "Performance", short = 'd')]
    pub device: ExecutorKind,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = positive::<u64>(u64::MAX), allow_hyphen_values = true, help_heading = "Performance", short = 'b')]
    pub batch_size: u64,
    /// Time every kernel and print a per-op table at the end: calls, total
    /// ms, mean µs, GB/s, TFLOP/s and % of the device's roofline (CUDA
    /// events on the GPU, wall clock on cpu/emu).
    #[arg(long, help_heading = "Performance")]
    pub profile: bool,
    /// Arithmetic of the transformer blocks: f32, or bf16 operands for the
    /// linear layers and attention (tensor cores on a GPU, f32
    /// accumulation; layernorm, residual stream and logits stay f32).
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::F32, help_heading = "Performance")]
    pub precision: Precision,
}

impl RunFlags {
    pub fn open(self) -> anyhow::Result<Box<dyn Executor>> {
        let ex = exec::open(self.device)?;
        ex.set_profiling(self.profile);
        Ok(ex)
    }

    /// Prints the `--profile` table (to stderr, so stdout stays the result).
    pub fn report(self, ex: &dyn Executor) -> anyhow::Result<()> {
        if self.profile {
            let records = ex.take_profile()?;
            let table = dawin::profile::table(&records, ex.timing().peak().as_ref(), &ex.name());
            crate::err!("{table}");
        }
        Ok(())
    }
}

/// The text tower's flags, shared by `encode-text` and `zeroshot`.
#[derive(Args, Clone, Copy)]
pub struct TextFlags {
    /// Attention heads of the text tower (default: the config or metadata,
    /// else width/64, with a warning; CLIP's text towers often differ from
    /// the image tower's).
    #[arg(long, help_heading = "Model", value_parser = positive::<usize>(4096), allow_hyphen_values = true)]
    pub text_heads: Option<usize>,
    /// Executor that runs the text tower.
    #[arg(long, value_parser = choice::<ExecutorKind>(), default_value_t = ExecutorKind::Cpu, help_heading = "Performance", short = 'd')]
    pub device: ExecutorKind,
    /// Prompts per text forward pass.
    #[arg(long, default_value_t = 256, value_parser = positive::<u64>(u64::MAX), allow_hyphen_values = true, help_heading = "Performance", short = 'b')]
    pub batch_size: u64,
    /// Time every kernel and print the per-op table at the end.
    #[arg(long, help_heading = "Performance")]
    pub profile: bool,
    /// Hide the progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl TextFlags {
    pub fn run_flags(self) -> RunFlags {
        RunFlags {
            device: self.device,
            batch_size: self.batch_size,
            profile: self.profile,
            precision: Precision::F32,
        }
    }
}

pub fn parse_pair(s: &str) -> Result<(f32, f32), String> {
    if let Some(t) = dawin::data::label_spaces::temperature(s) {
        return Ok(t);
    }
    if s.ends_with(".json") || std::path::Path::new(s).is_file() {
        return dawin::pipelines::calibrate::read_temperature(std::path::Path::new(s));
    }
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
    .ok_or_else(|| {
        format!(
            "expected `T`, `T_pt,T_ft` with positive numbers, a preset ({}) or a temperature.json from `dawin calibrate`, got `{s}`",
            dawin::data::label_spaces::temperature_names()
        )
    })
}

/// A number in [0, 1].
pub fn parse_unit(s: &str) -> Result<f32, String> {
    s.trim()
        .parse::<f32>()
        .ok()
        .filter(|a| (0.0..=1.0).contains(a))
        .ok_or_else(|| format!("expected a number in [0, 1], got `{s}`"))
}

pub fn parse_finite(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("expected a finite number, got `{s}`"))
}

/// `LO,HI` with 0 ≤ LO ≤ HI ≤ 1.
pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("expected `LO,HI` with 0 ≤ LO ≤ HI ≤ 1, got `{s}`");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let unit = |v: &str| {
        let v = v.trim().parse::<f64>().map_err(|_| bad())?;
        (0.0..=1.0).contains(&v).then_some(v).ok_or_else(bad)
    };
    let (lo, hi) = (unit(lo)?, unit(hi)?);
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
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

#[derive(Args)]
pub struct EvalMtlArgs {
    /// The shared pretrained model θ0.
    #[arg(long, help_heading = "Inputs")]
    pub base: PathBuf,
    /// Comma list of the task models θ_1..θ_T, each with its head (or
    /// without one, when --head-files gives the heads).
    #[arg(long, value_delimiter = ',', required = true, help_heading = "Inputs")]
    pub tasks: Vec<PathBuf>,
    /// Index (0-based) in --tasks of the task whose data and head are
    /// evaluated. Without it every task is: --data then lists one data set
    /// per task, and the results are a per-task table with the mean.
    #[arg(long, help_heading = "Inputs")]
    pub task_index: Option<usize>,
    /// Each task's classification head as its own file, in --tasks order
    /// (safetensors, a state dict or a pickled head module with one 2-D
    /// `weight` [classes, embed_dim] and an optional `bias`; applied to the
    /// normalised embedding), for task models saved without heads, as the
    /// official multi-task checkpoints are. Replaces the models' own heads.
    #[arg(long, value_delimiter = ',', help_heading = "Inputs")]
    pub head_files: Vec<PathBuf>,
    /// Labelled data of that task (safetensors or class folders); without
    /// --task-index, a comma list of every task's data in --tasks order
    /// (task t into OUT/task-t/, then OUT/tasks.json and OUT/table.txt).
    #[arg(long, help_heading = "Inputs")]
    pub data: PathBuf,
    /// Output folder.
    #[arg(long, help_heading = "Output", short = 'o')]
    pub out_dir: PathBuf,
    /// Task-vector scale s.
    #[arg(long, default_value_t = 0.3, help_heading = "Method")]
    pub scale: f32,
    /// How each sample's own merged model θ0 + s·T·Σ c_t(x)·τ_t is
    /// evaluated: `exact` (batched: θ0 and the task models stacked on the
    /// device, every linear layer, layernorm and embedding merged per row,
    /// no model built) or `materialize` (each sample's model built and run
    /// at batch 1, as the official code does). Both give the same numbers
    /// up to f32 rounding.
    #[arg(long, value_parser = choice::<PerSample>(), default_value_t = PerSample::Exact, help_heading = "Method")]
    pub per_sample: PerSample,
    /// TIES baseline: the fraction of each task vector's entries kept (by
    /// magnitude) before the sign election. A task vector is the image
    /// tower's every tensor (projection included, classification head not)
    /// minus the base's, flattened, as the official code's
    /// state_dict_to_vector of the image encoder.
    #[arg(long, default_value_t = 0.2, value_parser = parse_keep, help_heading = "Method")]
    pub ties_keep: f64,
    /// TIES baseline: how the entries agreeing with the elected sign merge.
    #[arg(long, value_parser = choice::<TiesMerge>(), default_value_t = TiesMerge::Mean, help_heading = "Method")]
    pub ties_merge: TiesMerge,
    /// TIES baseline: scale of the merged task vector (the TIES paper uses
    /// 1 with mean; the official DaWin script uses 0.3 with sum).
    #[arg(long, default_value_t = 1.0, help_heading = "Method")]
    pub ties_scale: f32,
    /// Extra domain-wise rows from a mixture over the per-sample
    /// coefficient vectors, comma list of `dirichlet[:K]` (a K-component
    /// Dirichlet mixture by EM with the maximum-likelihood M-step, Minka's
    /// fixed point) and `moments[:K]` (the official multi-task code's
    /// estimator: EM whose M-step sets each component to its members'
    /// weighted mean; with K = 1 it is the plain mean, `dawin-domain`).
    /// k-means start, 5 restarts, at most 500 iterations, tolerance 1e-5
    /// (the official settings). Each sample is classified by the model at
    /// its most probable component's mean coefficients (K merged models);
    /// row `dawin-domain:FIT`, fits in summary.json's dawin_domain_fits.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FIT",
        help_heading = "Method"
    )]
    pub domain_fit: Vec<DomainFit>,
    #[command(flatten)]
    pub pixel_cache: PixelCacheFlag,
    /// Hide progress bars.
    #[arg(long, help_heading = "Output", short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub arch: ArchFlags,
}

impl EvalMtlArgs {
    /// Every task's data when no --task-index picks one.
    pub fn all_task_data(&self) -> Option<Vec<PathBuf>> {
        if self.task_index.is_some() {
            return None;
        }
        let text = self.data.to_string_lossy();
        Some(
            text.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| PathBuf::from(s.trim()))
                .collect(),
        )
    }

    pub fn options(&self) -> MtlOptions {
        MtlOptions {
            base: self.base.clone(),
            tasks: self.tasks.clone(),
            task_index: self.task_index.unwrap_or(0),
            data: self.data.clone(),
            out_dir: self.out_dir.clone(),
            scale: self.scale,
            batch_size: self.run.batch_size as usize,
            overrides: self.arch.overrides(),
            progress: !self.quiet,
            ties: (self.ties_keep, self.ties_merge, self.ties_scale),
            heads: self.head_files.clone(),
            per_sample: self.per_sample,
            domain_fits: self.domain_fit.clone(),
            pixel_cache: self.pixel_cache.dir(),
        }
    }
}

/// A fraction in (0, 1].
fn parse_keep(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|k| *k > 0.0 && *k <= 1.0)
        .ok_or_else(|| format!("expected a fraction in (0, 1], got `{s}`"))
}

/// Which part of `dawin bench` runs.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    Kernels,
    Pipeline,
    /// Kernels and pipeline.
    All,
    /// Multi-task DaWin's per-sample merges of T task models (8, or 3 with
    /// --quick): batched through the stacked ops against built per sample
    /// at batch 1 (not part of `all`: the batch-1 route takes long).
    Mtl,
    /// The image path on the CPU's threads: JPEG decode, CLIP's resize and
    /// crop, the u8 pixel cache's normalisation, as images/s (generated
    /// ImageNet-sized JPEGs; the executor plays no part).
    Data,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Executor to benchmark.
    #[arg(long, value_parser = choice::<ExecutorKind>(), default_value_t = ExecutorKind::Cpu)]
    pub device: ExecutorKind,
    /// Small shapes and a small model (for cpu/emu or a smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Timed repeats after one warm-up.
    #[arg(long, default_value_t = 10, value_parser = positive::<u64>(u64::MAX), allow_hyphen_values = true)]
    pub repeats: u64,
    /// Images per batch at the ViT shapes (default 256, or 2 with --quick).
    #[arg(long, value_parser = positive::<u64>(u64::MAX), allow_hyphen_values = true)]
    pub batch: Option<u64>,
    /// Images through the pipeline per repeat (default: the batch).
    #[arg(long, value_parser = positive::<u64>(u64::MAX), allow_hyphen_values = true)]
    pub images: Option<u64>,
    /// Which part to run.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Only benchmarks whose name contains this (e.g. `gemm B/32`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Arithmetic of the pipeline rows (the kernel rows cover both).
    #[arg(long, value_parser = choice::<Precision>(), default_value_t = Precision::F32)]
    pub precision: Precision,
}

impl BenchArgs {
    pub fn options(&self) -> BenchOptions {
        let batch = self.batch.unwrap_or(if self.quick { 2 } else { 256 });
        BenchOptions {
            quick: self.quick,
            repeats: self.repeats as usize,
            batch: batch as usize,
            images: self.images.unwrap_or(batch) as usize,
            kernels: matches!(self.suite, Suite::Kernels | Suite::All),
            pipeline: matches!(self.suite, Suite::Pipeline | Suite::All),
            mtl: self.suite == Suite::Mtl,
            data: self.suite == Suite::Data,
            filter: self.filter.clone(),
            precision: self.precision,
            stream: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

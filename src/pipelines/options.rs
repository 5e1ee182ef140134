//! The options of `dawin eval` and `dawin expertise`, and which of them
//! change which results (for the cache, the provenance and merges).

use crate::choice::Choice;
use crate::data::dataset::LabelOrder;
use crate::data::projection::Projection;
use crate::method::interp::{Interp, Pass, PerSample};
use crate::method::lambda::{LambdaRule, T3Shape};
use crate::method::methods::Method;
use crate::model::Overrides;
use crate::model::placed::Precision;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Clone)]
pub struct EvalOptions {
    pub pretrained: PathBuf,
    pub finetuned: PathBuf,
    pub data: PathBuf,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    /// How λ is set per sample (`--lambda-rule`).
    pub rule: LambdaRule,
    /// The `t3` rule's constants (`--t3-gamma`, `--t3-range`).
    pub t3: T3Shape,
    pub temperature: (f32, f32),
    /// How DaWin's per-sample models are evaluated (`--interp`).
    pub interp: Interp,
    pub methods: Vec<Method>,
    pub projection: Projection,
    pub overrides: Overrides,
    /// (i, n): evaluate the i-th (0-based) of n contiguous slices.
    pub shard: Option<(usize, usize)>,
    /// Whole-set expertise from `dawin merge` (entropies of every sample).
    pub expertise_from: Option<PathBuf>,
    pub progress: bool,
    /// Seed of the Beta-mixture initialisation and the random baselines.
    pub seed: u64,
    /// Scales every rule's λ by α (`--wise-alpha`), and sets the merged
    /// model the pseudo-label rules read (0.5 without it).
    pub wise_alpha: Option<f32>,
    /// Bootstrap resamples of each accuracy's `ci95`.
    pub bootstrap: usize,
    /// Arithmetic of the transformer blocks.
    pub precision: Precision,
    /// How the class folders of an image folder are numbered.
    pub label_order: LabelOrder,
    /// Keep only these class folders of an image folder (`--folders`).
    pub keep_folders: Option<Vec<String>>,
    /// Pixels trimmed from each side of each image (`--crop-border`).
    pub crop_border: usize,
    /// What progress bars say before their phase (e.g. a domain name).
    pub progress_label: String,
    /// The data set's name in plot titles (a multi-set run's set name, the
    /// demo's domain); else the data path's file name.
    pub set_name: Option<String>,
    /// Where the expertise pass's logits are cached (default
    /// `OUT/cache.safetensors`).
    pub cache: Option<PathBuf>,
    /// Where a bmm run writes its K merged models (`--save-components`).
    pub save_components: Option<PathBuf>,
    /// The pixel cache folder for image-folder data (`--pixel-cache`);
    /// `None` decodes every time.
    pub pixel_cache: Option<PathBuf>,
}

impl Default for EvalOptions {
    /// The command line's defaults, with empty paths.
    fn default() -> Self {
        EvalOptions {
            pretrained: PathBuf::new(),
            finetuned: PathBuf::new(),
            data: PathBuf::new(),
            out_dir: PathBuf::new(),
            batch_size: 64,
            rule: LambdaRule::Entropy,
            t3: T3Shape::default(),
            temperature: (1.0, 1.0),
            interp: Interp::PerSample(PerSample::Exact),
            methods: Method::parse_list("all").expect("a valid list"),
            projection: Projection::None,
            overrides: Overrides::default(),
            shard: None,
            expertise_from: None,
            progress: true,
            seed: 1,
            wise_alpha: None,
            save_components: None,
            bootstrap: crate::method::stats::BOOTSTRAP_RESAMPLES,
            precision: Precision::F32,
            label_order: LabelOrder::Sorted,
            keep_folders: None,
            crop_border: 0,
            progress_label: String::new(),
            set_name: None,
            cache: None,
            pixel_cache: crate::data::pixel_cache::default_dir(),
        }
    }
}

impl EvalOptions {
    /// The settings that change the logits of the expertise pass.
    pub fn logit_settings(&self) -> Value {
        json!({
            "precision": self.precision.to_string(),
            "heads": self.overrides.heads,
            "act": self.overrides.act.map(|a| a.to_string()),
            "allow_non_finite": self.overrides.allow_non_finite,
            "label_order": format!("{:?}", self.label_order).to_lowercase(),
            "folders": self.keep_folders.as_ref().map(|f| {
                let h = xxhash_rust::xxh3::xxh3_128(f.join("\n").as_bytes());
                json!({"count": f.len(), "hash": format!("{h:032x}")})
            }),
            "crop_border": self.crop_border,
        })
    }

    /// How an image folder given as `data` is read.
    pub fn folder_options(&self) -> crate::data::dataset::FolderOptions {
        crate::data::dataset::FolderOptions {
            order: self.label_order,
            keep: self.keep_folders.clone(),
            crop_border: self.crop_border,
        }
    }

    /// The settings that change the entropies (the expertise files).
    pub fn entropy_settings(&self) -> Value {
        let mut s = self.logit_settings();
        s["temperature"] = json!([self.temperature.0, self.temperature.1]);
        s["projection"] = self.projection.describe();
        s
    }

    /// Every setting that changes a result of `eval` (the methods aside).
    pub fn result_settings(&self) -> Value {
        let mut s = self.entropy_settings();
        s["expertise"] = json!(self.rule.name());
        if self.rule == LambdaRule::T3 {
            s["t3"] = self.t3_record();
        }
        s["wise_alpha"] = json!(self.wise_alpha);
        s["interp"] = json!(self.interp.to_string());
        s["seed"] = json!(self.seed);
        s
    }

    /// The `t3` rule's constants, as summary.json records them.
    pub fn t3_record(&self) -> Value {
        let t = self.t3;
        json!({"gamma": t.gamma, "range": [t.lo, t.hi], "weighs": "pretrained"})
    }

    /// The data set's name for titles: `set_name`, else the data path's
    /// file name.
    pub fn set_name(&self) -> String {
        self.set_name.clone().unwrap_or_else(|| {
            let name = self.data.file_name().unwrap_or(self.data.as_os_str());
            name.to_string_lossy().to_string()
        })
    }

    /// The α of the merged model the pseudo-label rules read.
    pub fn pseudo_alpha(&self) -> f32 {
        self.wise_alpha.unwrap_or(0.5)
    }

    /// The merged models the expertise pass runs: every `wise-ft:α` asked
    /// for, and the pseudo-label rules' one.
    pub fn expertise_alphas(&self) -> Vec<f32> {
        let mut a = Method::wise_alphas(&self.methods);
        if self.rule.needs_merged() && !a.contains(&self.pseudo_alpha()) {
            a.push(self.pseudo_alpha());
        }
        a
    }

    /// How the passes over the data run.
    pub(super) fn pass(&self) -> Pass {
        Pass {
            batch_size: self.batch_size,
            progress: self.progress,
            label: self.progress_label.clone(),
        }
    }
}

//! CLIP ViT image-tower weights: the model spec, the canonical parameter
//! table and one flat f32 parameter buffer per model (so a whole model lerps
//! in a single launch); [`load`] reads checkpoints, [`placed`] places a
//! model on an executor, [`vit`] runs it.

pub mod batch;
mod blocks;
pub mod convert;
pub mod head_file;
pub mod load;
pub mod pair;
pub mod pixels;
pub mod placed;
mod reader;
pub mod sources;
pub mod stack;
pub mod text;
pub mod text_tower;
pub mod vit;

pub use load::Layout;

use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::choice::{Choice, Named};
use crate::error::Result;
use crate::rng::SplitMix;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// Each value's meaning is its help in [`Act::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    QuickGelu,
    Gelu,
}

impl Choice for Act {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            Act::QuickGelu,
            "quick-gelu",
            "x·σ(1.702x): OpenAI CLIP and HF's default (also spelled quick_gelu)",
        )
        .alias(&["quick_gelu"]),
        Named::new(
            Act::Gelu,
            "gelu",
            "Exact erf gelu: most open_clip models trained by LAION/DataComp",
        ),
    ];
}

impl std::fmt::Display for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Act::QuickGelu => "quick_gelu",
            Act::Gelu => "gelu",
        })
    }
}

impl std::str::FromStr for Act {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "quick_gelu" | "quickgelu" => Ok(Act::QuickGelu),
            "gelu" => Ok(Act::Gelu),
            _ => Err(format!(
                "unknown activation `{s}` (expected quick_gelu or gelu)"
            )),
        }
    }
}

/// Values that shapes cannot tell, given on the command line, and how to
/// open the file. The file's metadata or its folder's config takes
/// precedence; OpenAI defaults fill the rest (with a note).
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub heads: Option<usize>,
    pub act: Option<Act>,
    /// Load weights that hold NaN or Inf (a warning) instead of refusing.
    pub allow_non_finite: bool,
    /// Read pickled whole modules (their classes kept as inert records).
    pub pickled_modules: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub patch: usize,
    pub channels: usize,
    pub image_size: usize,
    pub mlp: usize,
    /// Output width: the projection's, or `width` when there is none.
    pub embed_dim: usize,
    pub has_proj: bool,
    pub classes: Option<usize>,
    pub act: Act,
    pub ln_eps: f32,
}

impl ModelSpec {
    /// What shapes cannot tell, as the metadata dawin reads back.
    pub fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("heads".to_string(), self.heads.to_string()),
            ("act".to_string(), self.act.to_string()),
            ("ln_eps".to_string(), self.ln_eps.to_string()),
        ])
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    /// The geometry of the image tower's blocks.
    fn stack(&self) -> blocks::Stack {
        blocks::Stack {
            width: self.width,
            tokens: self.tokens(),
            heads: self.heads,
            mlp: self.mlp,
            act: self.act,
            ln_eps: self.ln_eps,
            causal: false,
        }
    }
}

/// Per-block parameters in the canonical (OpenAI, `[out, in]`) layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Block<T> {
    pub ln1_g: T,
    pub ln1_b: T,
    pub qkv_w: T,
    pub qkv_b: T,
    pub out_w: T,
    pub out_b: T,
    pub ln2_g: T,
    pub ln2_b: T,
    pub fc1_w: T,
    pub fc1_b: T,
    pub fc2_w: T,
    pub fc2_b: T,
}

impl<T> Block<T> {
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Block<U> {
        Block {
            ln1_g: f(&self.ln1_g),
            ln1_b: f(&self.ln1_b),
            qkv_w: f(&self.qkv_w),
            qkv_b: f(&self.qkv_b),
            out_w: f(&self.out_w),
            out_b: f(&self.out_b),
            ln2_g: f(&self.ln2_g),
            ln2_b: f(&self.ln2_b),
            fc1_w: f(&self.fc1_w),
            fc1_b: f(&self.fc1_b),
            fc2_w: f(&self.fc2_w),
            fc2_b: f(&self.fc2_b),
        }
    }
}

/// All parameters, generic over the handle: host ranges into the flat buffer,
/// or device buffers once uploaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Params<T> {
    /// Patch conv as `[width, channels·patch·patch]`.
    pub conv: T,
    pub class: T,
    pub pos: T,
    pub ln_pre_g: T,
    pub ln_pre_b: T,
    pub blocks: Vec<Block<T>>,
    pub ln_post_g: T,
    pub ln_post_b: T,
    /// Projection as `[embed_dim, width]` (OpenAI's `[width, embed_dim]` transposed).
    pub proj: Option<T>,
    /// Classifier `[classes, embed_dim]` and bias (zeros when the file has none).
    pub head_w: Option<T>,
    pub head_b: Option<T>,
}

impl<T> Params<T> {
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Params<U> {
        Params {
            conv: f(&self.conv),
            class: f(&self.class),
            pos: f(&self.pos),
            ln_pre_g: f(&self.ln_pre_g),
            ln_pre_b: f(&self.ln_pre_b),
            blocks: self.blocks.iter().map(|b| b.map(&f)).collect(),
            ln_post_g: f(&self.ln_post_g),
            ln_post_b: f(&self.ln_post_b),
            proj: self.proj.as_ref().map(&f),
            head_w: self.head_w.as_ref().map(&f),
            head_b: self.head_b.as_ref().map(&f),
        }
    }

    /// Every tensor with its canonical name, in flat-buffer order.
    pub fn named(&self) -> Vec<(String, &T)> {
        let mut v = vec![
            ("conv1.weight".to_string(), &self.conv),
            ("class_embedding".to_string(), &self.class),
            ("positional_embedding".to_string(), &self.pos),
            ("ln_pre.weight".to_string(), &self.ln_pre_g),
            ("ln_pre.bias".to_string(), &self.ln_pre_b),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("transformer.resblocks.{i}.");
            for (n, t) in [
                ("ln_1.weight", &b.ln1_g),
                ("ln_1.bias", &b.ln1_b),
                ("attn.in_proj_weight", &b.qkv_w),
                ("attn.in_proj_bias", &b.qkv_b),
                ("attn.out_proj.weight", &b.out_w),
                ("attn.out_proj.bias", &b.out_b),
                ("ln_2.weight", &b.ln2_g),
                ("ln_2.bias", &b.ln2_b),
                ("mlp.c_fc.weight", &b.fc1_w),
                ("mlp.c_fc.bias", &b.fc1_b),
                ("mlp.c_proj.weight", &b.fc2_w),
                ("mlp.c_proj.bias", &b.fc2_b),
            ] {
                v.push((format!("{p}{n}"), t));
            }
        }
        v.push(("ln_post.weight".into(), &self.ln_post_g));
        v.push(("ln_post.bias".into(), &self.ln_post_b));
        if let Some(p) = &self.proj {
            v.push(("proj".into(), p));
        }
        if let Some(h) = &self.head_w {
            v.push(("classification_head.weight".into(), h));
        }
        if let Some(h) = &self.head_b {
            v.push(("classification_head.bias".into(), h));
        }
        v
    }
}

/// A loaded model: spec, layout and every parameter in one flat f32 buffer.
#[derive(Clone, Debug)]
pub struct Model {
    pub layout: Layout,
    pub spec: ModelSpec,
    pub flat: Vec<f32>,
    pub params: Params<Range<usize>>,
    /// Things the user should know (a flag overridden by metadata, ...).
    pub notes: Vec<String>,
    /// What was read (format, nesting, shards); empty for a model made in
    /// memory.
    pub origin: String,
    /// Where heads, act and ln_eps came from.
    pub sources: sources::SettingSources,
    /// For a head `dawin zeroshot` built: its text heads and logit scale,
    /// each with its source ([`sources::zeroshot_record`]).
    pub zeroshot: Option<serde_json::Value>,
}

impl Model {
    pub fn param_count(&self) -> usize {
        self.flat.len()
    }

    /// A model with the given architecture and deterministic pseudo-random
    /// weights (benchmarks and tests; no file involved). Scales follow CLIP's
    /// init closely enough that activations stay in a realistic range.
    pub fn random(spec: ModelSpec, seed: u64) -> Model {
        let mut rng = SplitMix(seed);
        let (w, c, p, t, d) = (
            spec.width,
            spec.channels,
            spec.patch,
            spec.tokens(),
            spec.embed_dim,
        );
        let mut flat = Vec::new();
        let mut push = |n: usize, mean: f32, std: f32| {
            let r = flat.len()..flat.len() + n;
            flat.extend((0..n).map(|_| mean + std * rng.normal()));
            r
        };
        let lin = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let conv = push(w * c * p * p, 0.0, lin(c * p * p));
        let class = push(w, 0.0, 0.5);
        let pos = push(t * w, 0.0, 0.5);
        let ln_pre_g = push(w, 1.0, 0.2);
        let ln_pre_b = push(w, 0.0, 0.1);
        let blocks = (0..spec.layers)
            .map(|_| Block {
                ln1_g: push(w, 1.0, 0.2),
                ln1_b: push(w, 0.0, 0.1),
                qkv_w: push(3 * w * w, 0.0, lin(w)),
                qkv_b: push(3 * w, 0.0, 0.05),
                out_w: push(w * w, 0.0, lin(w)),
                out_b: push(w, 0.0, 0.05),
                ln2_g: push(w, 1.0, 0.2),
                ln2_b: push(w, 0.0, 0.1),
                fc1_w: push(spec.mlp * w, 0.0, lin(w)),
                fc1_b: push(spec.mlp, 0.0, 0.05),
                fc2_w: push(w * spec.mlp, 0.0, lin(spec.mlp)),
                fc2_b: push(w, 0.0, 0.05),
            })
            .collect();
        let ln_post_g = push(w, 1.0, 0.2);
        let ln_post_b = push(w, 0.0, 0.1);
        let proj = spec.has_proj.then(|| push(d * w, 0.0, lin(w)));
        let head_w = spec.classes.map(|k| push(k * d, 0.0, 30.0 * lin(d)));
        let head_b = spec.classes.map(|k| push(k, 0.0, 0.5));
        let params = Params {
            conv,
            class,
            pos,
            ln_pre_g,
            ln_pre_b,
            blocks,
            ln_post_g,
            ln_post_b,
            proj,
            head_w,
            head_b,
        };
        Model {
            layout: Layout::OpenAi,
            spec,
            flat,
            params,
            notes: vec![],
            origin: String::new(),
            sources: sources::SettingSources::given(),
            zeroshot: None,
        }
    }

    /// What `dawin inspect` prints: layout, configuration and sizes.
    pub fn describe(&self, path: &Path) -> String {
        let s = &self.spec;
        let projection = if s.has_proj {
            " (projected)"
        } else {
            " (no projection)"
        };
        let head = match s.classes {
            Some(c) => format!("{c} classes"),
            None => "none (forward writes image_embeds only)".into(),
        };
        [
            format!("file        {}", path.display()),
            format!("read as     {}", self.origin),
            format!("layout      {}", self.layout),
            format!(
                "tower       width {}, {} layers, {} heads (head dim {}), mlp {}, act {}, ln eps {:e}",
                s.width,
                s.layers,
                s.heads,
                s.head_dim(),
                s.mlp,
                s.act,
                s.ln_eps
            ),
            format!(
                "settings    heads {}, act {}, ln eps {}",
                self.sources.heads.describe(),
                self.sources.act.describe(),
                self.sources.ln_eps.describe()
            ),
            format!(
                "input       {}×{}×{}, patch {}, {} tokens",
                s.channels,
                s.image_size,
                s.image_size,
                s.patch,
                s.tokens()
            ),
            format!("embedding   {}{projection}", s.embed_dim),
            format!("head        {head}"),
            format!(
                "parameters  {} ({:.1} MB as f32)",
                self.param_count(),
                self.param_count() as f64 * 4.0 / 1e6
            ),
        ]
        .join("\n")
            + "\n"
    }

    pub fn tensor(&self, r: &Range<usize>) -> &[f32] {
        &self.flat[r.clone()]
    }

    /// Loads a checkpoint (safetensors, PyTorch zip, or a model folder) in
    /// any recognised layout. Its notes say what was assumed or ignored.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Model> {
        let opt = OpenOptions {
            pickled_modules: overrides.pickled_modules,
        };
        let file = Checkpoint::open(path, opt)?;
        load::Loader::new(&file, overrides.allow_non_finite)?.load(overrides)
    }

    /// [`Model::load`], printing the model's notes as warnings on stderr
    /// (what every command does, so no note is dropped), each once per
    /// process: a model loaded again (one run per data set) says nothing new.
    pub fn load_warn(path: &Path, overrides: Overrides) -> Result<Model> {
        let m = Model::load(path, overrides)?;
        m.say_notes(path);
        Ok(m)
    }

    /// Says this model's notes as warnings, each once per process.
    pub fn say_notes(&self, path: &Path) {
        static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
        for note in &self.notes {
            let text = format!("{}: {note}", path.display());
            if !said.contains(&text) {
                crate::reporter::warn(&text);
                said.push(text);
            }
        }
    }

    /// What summary.json records of the settings the shapes cannot tell:
    /// each value with its source.
    pub fn settings_record(&self) -> serde_json::Value {
        let s = &self.spec;
        serde_json::json!({
            "heads": self.sources.heads.record(s.heads.into()),
            "act": self.sources.act.record(s.act.to_string().into()),
            // The f32's own shortest decimal (1e-5, not 9.99999974e-6).
            "ln_eps": self.sources.ln_eps.record(
                s.ln_eps.to_string().parse::<f64>().unwrap_or(s.ln_eps as f64).into()
            ),
            "zeroshot_head": self.zeroshot,
        })
    }

    /// Writes the model as safetensors in the OpenAI layout (`visual.*` +
    /// `classification_head.*`), with `heads`, `act` and `ln_eps` metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, HashMap::new())
    }

    /// [`Model::save`] with more metadata (the spec's keys win).
    pub fn save_with(&self, path: &Path, extra: HashMap<String, String>) -> Result<()> {
        use crate::tensorfile::{Tensor, write_f32};
        let s = &self.spec;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, r) in self.params.named() {
            let data = self.flat[r.clone()].to_vec();
            let (key, shape, data) = match name.as_str() {
                "conv1.weight" => (
                    "visual.conv1.weight".to_string(),
                    vec![s.width, s.channels, s.patch, s.patch],
                    data,
                ),
                "positional_embedding" => (
                    "visual.positional_embedding".to_string(),
                    vec![s.tokens(), s.width],
                    data,
                ),
                "proj" => {
                    // Stored [embed, width] here; OpenAI keeps [width, embed].
                    let (d, w) = (s.embed_dim, s.width);
                    let t = (0..w * d).map(|k| data[(k % d) * w + k / d]).collect();
                    ("visual.proj".to_string(), vec![w, d], t)
                }
                n if n.starts_with("classification_head.weight") => (
                    n.to_string(),
                    vec![s.classes.unwrap_or(0), s.embed_dim],
                    data,
                ),
                n if n.starts_with("classification_head") => {
                    (n.to_string(), vec![data.len()], data)
                }
                n if n.ends_with("in_proj_weight") => {
                    (format!("visual.{n}"), vec![3 * s.width, s.width], data)
                }
                n if n.ends_with("out_proj.weight") => {
                    (format!("visual.{n}"), vec![s.width, s.width], data)
                }
                n if n.ends_with("c_fc.weight") => {
                    (format!("visual.{n}"), vec![s.mlp, s.width], data)
                }
                n if n.ends_with("c_proj.weight") => {
                    (format!("visual.{n}"), vec![s.width, s.mlp], data)
                }
                n => (format!("visual.{n}"), vec![data.len()], data),
            };
            tensors.push((key, Tensor { shape, data }));
        }
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut meta = extra;
        meta.extend(self.spec.metadata());
        let sources = sources::with_image_sources(meta.get(sources::META_KEY), &self.sources);
        meta.insert(sources::META_KEY.into(), sources);
        write_f32(path, &refs, Some(meta))
    }

    /// This model's image tower with `other`'s classification head (multi-task
    /// merging evaluates every task model with the evaluated task's head).
    /// The head stays last in the flat buffer, so task vectors of models that
    /// share a head are zero there.
    pub fn with_head_of(&self, other: &Model) -> Model {
        let part = |r: &Option<Range<usize>>| r.as_ref().map(|r| other.flat[r.clone()].to_vec());
        let head = part(&other.params.head_w).zip(part(&other.params.head_b));
        self.with_head(head, other.spec.classes)
    }

    /// This model's image tower with the head `(W [classes, D], b)` (none:
    /// without a head); the head goes last in the flat buffer.
    pub fn with_head(&self, head: Option<(Vec<f32>, Vec<f32>)>, classes: Option<usize>) -> Model {
        let mut m = self.clone();
        let start = [&self.params.head_w, &self.params.head_b]
            .iter()
            .filter_map(|r| r.as_ref().map(|r| r.start))
            .min()
            .unwrap_or(self.flat.len());
        m.flat.truncate(start);
        let mut push = |v: Vec<f32>| {
            let s = m.flat.len();
            m.flat.extend(v);
            s..m.flat.len()
        };
        let (w, b) = match head {
            Some((w, b)) => (Some(push(w)), Some(push(b))),
            None => (None, None),
        };
        m.params.head_w = w;
        m.params.head_b = b;
        m.spec.classes = classes;
        m
    }

    /// The tensor names and shapes in which two models differ, empty if they
    /// share an architecture (DaWin needs that).
    pub fn shape_differences(&self, other: &Model) -> Vec<String> {
        let a = self.params.named();
        let b = other.params.named();
        let mut diffs = Vec::new();
        let bm: HashMap<&String, usize> = b.iter().map(|(n, r)| (n, r.len())).collect();
        for (n, r) in &a {
            match bm.get(n) {
                Some(&l) if l == r.len() => {}
                Some(&l) => diffs.push(format!("{n}: {} vs {} elements", r.len(), l)),
                None => diffs.push(format!("{n}: only in the first model")),
            }
        }
        let am: HashMap<&String, ()> = a.iter().map(|(n, _)| (n, ())).collect();
        for (n, _) in &b {
            if !am.contains_key(n) {
                diffs.push(format!("{n}: only in the second model"));
            }
        }
        if self.spec.heads != other.spec.heads || self.spec.act != other.spec.act {
            diffs.push(format!(
                "heads/act: {}/{} vs {}/{}",
                self.spec.heads, self.spec.act, other.spec.heads, other.spec.act
            ));
        }
        diffs
    }
}

impl ModelSpec {
    /// OpenAI CLIP ViT-B/32's image tower with a head of `classes`.
    pub fn vit_b32(classes: Option<usize>) -> Self {
        ModelSpec {
            width: 768,
            layers: 12,
            heads: 12,
            patch: 32,
            channels: 3,
            image_size: 224,
            mlp: 3072,
            embed_dim: 512,
            has_proj: true,
            classes,
            act: Act::QuickGelu,
            ln_eps: 1e-5,
        }
    }
}

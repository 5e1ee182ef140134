//! CLIP ViT image-tower weights: layout recognition, the model spec, and one
//! flat f32 parameter buffer (so a whole model lerps in a single launch).

use crate::error::{Error, Result};
use crate::tensorfile::TensorFile;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// The key conventions recognised (GUIDE.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// OpenAI CLIP / open_clip: `visual.conv1.weight`, ...
    OpenAi,
    /// model-soups, WiSE-FT and DaWin checkpoints: `model.visual.…` + `classification_head.*`.
    ModelSoups,
    /// HF transformers `vision_model.embeddings.…` (+ `visual_projection`).
    Hf,
    /// HF transformers bare `CLIPVisionModel`: `embeddings.…` without `vision_model.`.
    HfBare,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::OpenAi => "openai (OpenAI CLIP / open_clip)",
            Layout::ModelSoups => "model-soups (model.visual.* + classification_head)",
            Layout::Hf => "hf (transformers, vision_model.*)",
            Layout::HfBare => "hf-bare (transformers CLIPVisionModel without prefix)",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Act {
    /// `x·σ(1.702x)`: OpenAI CLIP and HF's default.
    QuickGelu,
    /// Exact erf gelu: most open_clip models trained by LAION/DataComp.
    Gelu,
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

/// Values that shapes cannot tell, given on the command line. The file's
/// `__metadata__` takes precedence; OpenAI defaults fill the rest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub heads: Option<usize>,
    pub act: Option<Act>,
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
    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
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
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    ln1_g: f(&b.ln1_g),
                    ln1_b: f(&b.ln1_b),
                    qkv_w: f(&b.qkv_w),
                    qkv_b: f(&b.qkv_b),
                    out_w: f(&b.out_w),
                    out_b: f(&b.out_b),
                    ln2_g: f(&b.ln2_g),
                    ln2_b: f(&b.ln2_b),
                    fc1_w: f(&b.fc1_w),
                    fc1_b: f(&b.fc1_b),
                    fc2_w: f(&b.fc2_w),
                    fc2_b: f(&b.fc2_b),
                })
                .collect(),
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
        }
    }

    pub fn tensor(&self, r: &Range<usize>) -> &[f32] {
        &self.flat[r.clone()]
    }

    /// Loads a safetensors checkpoint in any recognised layout.
    pub fn load(path: &Path, overrides: Overrides) -> Result<Model> {
        let file = TensorFile::open(path)?;
        Loader::new(&file)?.load(overrides)
    }

    /// Writes the model as safetensors in the OpenAI layout (`visual.*` +
    /// `classification_head.*`), with `heads`, `act` and `ln_eps` metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
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
        let meta = HashMap::from([
            ("heads".to_string(), s.heads.to_string()),
            ("act".to_string(), s.act.to_string()),
            ("ln_eps".to_string(), s.ln_eps.to_string()),
        ]);
        write_f32(path, &refs, Some(meta))
    }

    /// This model's image tower with `other`'s classification head (multi-task
    /// merging evaluates every task model with the evaluated task's head).
    /// The head stays last in the flat buffer, so task vectors of models that
    /// share a head are zero there.
    pub fn with_head_of(&self, other: &Model) -> Model {
        let mut m = self.clone();
        let start = [&self.params.head_w, &self.params.head_b]
            .iter()
            .filter_map(|r| r.as_ref().map(|r| r.start))
            .min()
            .unwrap_or(self.flat.len());
        m.flat.truncate(start);
        let mut push = |r: &Option<Range<usize>>| {
            r.as_ref().map(|r| {
                let s = m.flat.len();
                m.flat.extend_from_slice(&other.flat[r.clone()]);
                s..m.flat.len()
            })
        };
        m.params.head_w = push(&other.params.head_w);
        m.params.head_b = push(&other.params.head_b);
        m.spec.classes = other.spec.classes;
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

/// Key names of one layout, relative to the detected prefix.
struct Keys {
    layout: Layout,
    /// Prefix of the vision tower keys (e.g. `model.visual.`, `vision_model.`).
    tower: String,
    proj: Option<String>,
    head: Option<String>,
}

struct Loader<'a> {
    file: &'a TensorFile,
    names: Vec<String>,
    keys: Keys,
}

const ANCHORS: [(&str, &str); 3] = [
    ("visual.conv1.weight", "OpenAI/open_clip"),
    ("model.visual.conv1.weight", "model-soups/DaWin"),
    (
        "vision_model.embeddings.patch_embedding.weight",
        "HF transformers",
    ),
];

impl<'a> Loader<'a> {
    fn new(file: &'a TensorFile) -> Result<Self> {
        let names = file.names();
        let keys = detect(&names).ok_or_else(|| unknown_layout(file.path(), &names))?;
        Ok(Loader { file, names, keys })
    }

    fn err(&self, msg: String) -> Error {
        Error::file(self.file.path(), msg)
    }

    fn has(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.file.shape(name).ok_or_else(|| {
            self.err(format!(
                "missing tensor `{name}` (layout {}); closest present: `{}`",
                self.keys.layout,
                closest(name, &self.names)
            ))
        })
    }

    /// Reads a tensor and checks its shape.
    fn read(&self, name: &str, expect: &[usize]) -> Result<Vec<f32>> {
        let shape = self.shape(name)?;
        if shape != expect {
            return Err(self.err(format!(
                "tensor `{name}` has shape {shape:?}, expected {expect:?}"
            )));
        }
        Ok(self.file.read_f32(name)?.data)
    }

    fn dims<const N: usize>(&self, name: &str) -> Result<[usize; N]> {
        let s = self.shape(name)?;
        s.as_slice().try_into().map_err(|_| {
            self.err(format!(
                "tensor `{name}` has shape {s:?}, expected {N} dimensions"
            ))
        })
    }

    fn load(&self, ov: Overrides) -> Result<Model> {
        let hf = matches!(self.keys.layout, Layout::Hf | Layout::HfBare);
        let t = &self.keys.tower;
        let k = |s: &str| format!("{t}{s}");
        let (conv_key, class_key, pos_key, pre, post) = if hf {
            (
                k("embeddings.patch_embedding.weight"),
                k("embeddings.class_embedding"),
                k("embeddings.position_embedding.weight"),
                k("pre_layrnorm."),
                k("post_layernorm."),
            )
        } else {
            (
                k("conv1.weight"),
                k("class_embedding"),
                k("positional_embedding"),
                k("ln_pre."),
                k("ln_post."),
            )
        };
        let [width, channels, patch, patch2] = self.dims::<4>(&conv_key)?;
        if width == 0 || channels == 0 || patch == 0 {
            return Err(self.err(format!(
                "`{conv_key}` has an empty dimension: {:?}",
                [width, channels, patch, patch2]
            )));
        }
        if patch != patch2 {
            return Err(self.err(format!(
                "`{conv_key}` has a non-square {patch}×{patch2} patch"
            )));
        }
        let [tokens, pos_w] = self.dims::<2>(&pos_key)?;
        if pos_w != width {
            return Err(self.err(format!(
                "`{pos_key}` has width {pos_w}, but the patch conv has {width}"
            )));
        }
        let grid = (((tokens.max(1) - 1) as f64).sqrt().round()) as usize;
        if tokens < 2 || grid * grid + 1 != tokens {
            return Err(self.err(format!(
                "`{pos_key}` has {tokens} positions, which is not a square grid plus a class token"
            )));
        }
        let block_key = |i: usize| {
            if hf {
                k(&format!("encoder.layers.{i}.layer_norm1.weight"))
            } else {
                k(&format!("transformer.resblocks.{i}.ln_1.weight"))
            }
        };
        let layers = (0..).take_while(|&i| self.has(&block_key(i))).count();
        if layers == 0 {
            return Err(self.err(format!("no transformer blocks: missing `{}`", block_key(0))));
        }
        let mlp_key = if hf {
            k("encoder.layers.0.mlp.fc1.weight")
        } else {
            k("transformer.resblocks.0.mlp.c_fc.weight")
        };
        let [mlp, _] = self.dims::<2>(&mlp_key)?;
        if mlp == 0 {
            return Err(self.err(format!("`{mlp_key}` has no rows")));
        }

        let (embed_dim, proj_t) = match &self.keys.proj {
            Some(p) => {
                let s = self.dims::<2>(p)?;
                // OpenAI stores [width, embed]; HF stores [embed, width].
                let (e, w) = if hf { (s[0], s[1]) } else { (s[1], s[0]) };
                if w != width || e == 0 {
                    return Err(self.err(format!(
                        "projection `{p}` has shape {s:?}, which does not fit width {width}"
                    )));
                }
                (e, true)
            }
            None => (width, false),
        };
        let classes = match &self.keys.head {
            Some(h) => {
                let [c, d] = self.dims::<2>(h)?;
                if d != embed_dim {
                    return Err(self.err(format!(
                        "classification head `{h}` is [{c}, {d}] but the image embedding has width {embed_dim}"
                    )));
                }
                Some(c)
            }
            None => None,
        };

        // What shapes can't tell: metadata, then flags, then OpenAI defaults.
        let meta = self.file.metadata();
        let mut notes = Vec::new();
        let heads = match meta.get("heads") {
            Some(v) => {
                let h: usize = v
                    .trim()
                    .parse()
                    .map_err(|_| self.err(format!("metadata `heads` = {v:?} is not a number")))?;
                if let Some(f) = ov.heads.filter(|&f| f != h) {
                    notes.push(format!(
                        "--heads {f} ignored: the file's metadata says heads={h}"
                    ));
                }
                h
            }
            None => ov.heads.unwrap_or((width / 64).max(1)),
        };
        if heads == 0 || width % heads != 0 {
            return Err(self.err(format!(
                "{heads} attention heads do not divide width {width} (set --heads, or `heads` in the metadata)"
            )));
        }
        let act = match meta.get("act").or(meta.get("hidden_act")) {
            Some(v) => {
                let a: Act = v
                    .parse()
                    .map_err(|e: String| self.err(format!("metadata: {e}")))?;
                if let Some(f) = ov.act.filter(|&f| f != a) {
                    notes.push(format!(
                        "--act {f} ignored: the file's metadata says act={a}"
                    ));
                }
                a
            }
            None => ov.act.unwrap_or(Act::QuickGelu),
        };
        let ln_eps = match meta.get("ln_eps").or(meta.get("layer_norm_eps")) {
            Some(v) => v
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|e| *e > 0.0 && e.is_finite())
                .ok_or_else(|| {
                    self.err(format!(
                        "metadata `ln_eps` = {v:?} is not a positive number"
                    ))
                })?,
            None => 1e-5,
        };
        let spec = ModelSpec {
            width,
            layers,
            heads,
            patch,
            channels,
            image_size: grid * patch,
            mlp,
            embed_dim,
            has_proj: proj_t,
            classes,
            act,
            ln_eps,
        };

        let mut flat = Vec::new();
        let mut push = |v: Vec<f32>| {
            let r = flat.len()..flat.len() + v.len();
            flat.extend_from_slice(&v);
            r
        };
        let w = width;
        let ln = |p: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                self.read(&format!("{p}weight"), &[w])?,
                self.read(&format!("{p}bias"), &[w])?,
            ))
        };
        let conv = push(self.read(&conv_key, &[w, channels, patch, patch])?);
        let class = push(self.read(&class_key, &[w])?);
        let pos = push(self.read(&pos_key, &[tokens, w])?);
        let (g, b) = ln(&pre)?;
        let (ln_pre_g, ln_pre_b) = (push(g), push(b));
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let blk = if hf {
                let p = k(&format!("encoder.layers.{i}."));
                let (l1g, l1b) = ln(&format!("{p}layer_norm1."))?;
                let mut qkv_w = Vec::with_capacity(3 * w * w);
                let mut qkv_b = Vec::with_capacity(3 * w);
                for n in ["q_proj", "k_proj", "v_proj"] {
                    qkv_w.extend(self.read(&format!("{p}self_attn.{n}.weight"), &[w, w])?);
                    qkv_b.extend(self.read(&format!("{p}self_attn.{n}.bias"), &[w])?);
                }
                let (l2g, l2b) = ln(&format!("{p}layer_norm2."))?;
                Block {
                    ln1_g: push(l1g),
                    ln1_b: push(l1b),
                    qkv_w: push(qkv_w),
                    qkv_b: push(qkv_b),
                    out_w: push(self.read(&format!("{p}self_attn.out_proj.weight"), &[w, w])?),
                    out_b: push(self.read(&format!("{p}self_attn.out_proj.bias"), &[w])?),
                    ln2_g: push(l2g),
                    ln2_b: push(l2b),
                    fc1_w: push(self.read(&format!("{p}mlp.fc1.weight"), &[mlp, w])?),
                    fc1_b: push(self.read(&format!("{p}mlp.fc1.bias"), &[mlp])?),
                    fc2_w: push(self.read(&format!("{p}mlp.fc2.weight"), &[w, mlp])?),
                    fc2_b: push(self.read(&format!("{p}mlp.fc2.bias"), &[w])?),
                }
            } else {
                let p = k(&format!("transformer.resblocks.{i}."));
                let (l1g, l1b) = ln(&format!("{p}ln_1."))?;
                let (l2g, l2b) = ln(&format!("{p}ln_2."))?;
                Block {
                    ln1_g: push(l1g),
                    ln1_b: push(l1b),
                    qkv_w: push(self.read(&format!("{p}attn.in_proj_weight"), &[3 * w, w])?),
                    qkv_b: push(self.read(&format!("{p}attn.in_proj_bias"), &[3 * w])?),
                    out_w: push(self.read(&format!("{p}attn.out_proj.weight"), &[w, w])?),
                    out_b: push(self.read(&format!("{p}attn.out_proj.bias"), &[w])?),
                    ln2_g: push(l2g),
                    ln2_b: push(l2b),
                    fc1_w: push(self.read(&format!("{p}mlp.c_fc.weight"), &[mlp, w])?),
                    fc1_b: push(self.read(&format!("{p}mlp.c_fc.bias"), &[mlp])?),
                    fc2_w: push(self.read(&format!("{p}mlp.c_proj.weight"), &[w, mlp])?),
                    fc2_b: push(self.read(&format!("{p}mlp.c_proj.bias"), &[w])?),
                }
            };
            blocks.push(blk);
        }
        let (g, b) = ln(&post)?;
        let (ln_post_g, ln_post_b) = (push(g), push(b));
        let proj = match &self.keys.proj {
            Some(p) if hf => Some(push(self.read(p, &[embed_dim, w])?)),
            Some(p) => {
                let v = self.read(p, &[w, embed_dim])?;
                let mut t = vec![0f32; v.len()];
                for i in 0..w {
                    for j in 0..embed_dim {
                        t[j * w + i] = v[i * embed_dim + j];
                    }
                }
                Some(push(t))
            }
            None => None,
        };
        let (head_w, head_b) = match (&self.keys.head, classes) {
            (Some(h), Some(c)) => {
                let hw = push(self.read(h, &[c, embed_dim])?);
                let bias_key = format!("{}bias", h.strip_suffix("weight").unwrap_or(h));
                let hb = if self.has(&bias_key) {
                    self.read(&bias_key, &[c])?
                } else {
                    vec![0.0; c]
                };
                (Some(hw), Some(push(hb)))
            }
            _ => (None, None),
        };
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
        Ok(Model {
            layout: self.keys.layout,
            spec,
            flat,
            params,
            notes,
        })
    }
}

/// Finds the layout by its anchor keys, wherever the prefix puts them.
fn detect(names: &[String]) -> Option<Keys> {
    let has = |n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).is_ok();
    let find_suffix = |suffix: &str, prefer: &str| -> Option<String> {
        let preferred = format!("{prefer}{suffix}");
        if has(&preferred) {
            return Some(preferred);
        }
        names.iter().find(|n| n.ends_with(suffix)).cloned()
    };
    for n in names {
        if let Some(tower) = n.strip_suffix("conv1.weight")
            && has(&format!("{tower}class_embedding"))
            && has(&format!("{tower}ln_pre.weight"))
        {
            {
                let outer = tower.strip_suffix("visual.").unwrap_or("");
                let layout = if outer.starts_with("model.") || outer == "model." {
                    Layout::ModelSoups
                } else {
                    Layout::OpenAi
                };
                let proj = Some(format!("{tower}proj")).filter(|p| has(p));
                return Some(Keys {
                    layout,
                    tower: tower.to_string(),
                    proj,
                    head: find_suffix("classification_head.weight", ""),
                });
            }
        }
        if let Some(tower) = n.strip_suffix("embeddings.patch_embedding.weight")
            && has(&format!("{tower}pre_layrnorm.weight"))
        {
            {
                let outer = tower.strip_suffix("vision_model.");
                let layout = if outer.is_some() {
                    Layout::Hf
                } else {
                    Layout::HfBare
                };
                let outer = outer.unwrap_or(tower);
                return Some(Keys {
                    layout,
                    tower: tower.to_string(),
                    proj: find_suffix("visual_projection.weight", outer),
                    head: find_suffix("classification_head.weight", outer),
                });
            }
        }
    }
    None
}

fn closest(want: &str, names: &[String]) -> String {
    names
        .iter()
        .max_by(|a, b| {
            strsim::normalized_levenshtein(want, a)
                .total_cmp(&strsim::normalized_levenshtein(want, b))
        })
        .cloned()
        .unwrap_or_else(|| "(the file has no tensors)".into())
}

fn unknown_layout(path: &Path, names: &[String]) -> Error {
    let expected: Vec<String> = ANCHORS
        .iter()
        .map(|(k, who)| format!("`{k}` ({who})"))
        .collect();
    let best = ANCHORS
        .iter()
        .map(|(k, _)| closest(k, names))
        .max_by(|a, b| {
            let s = |x: &str| {
                ANCHORS
                    .iter()
                    .map(|(k, _)| strsim::normalized_levenshtein(k, x))
                    .fold(0.0, f64::max)
            };
            s(a).total_cmp(&s(b))
        })
        .unwrap_or_else(|| "(the file has no tensors)".into());
    Error::file(
        path,
        format!(
            "unknown weight layout: expected one of {} (with `class_embedding`/`ln_pre` or `pre_layrnorm` beside it); closest key found: `{best}` ({} tensors in the file)",
            expected.join(", "),
            names.len()
        ),
    )
}

/// A tiny deterministic generator (SplitMix64) so that random models need no
/// extra dependency and are identical everywhere.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
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

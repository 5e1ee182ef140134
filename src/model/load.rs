//! Reading a checkpoint: the weight layout recognised by its anchor keys
//! (docs/design.md §3), the spec from tensor shapes and metadata, and every
//! tensor copied into the canonical flat f32 buffer.

use super::{Act, Block, Model, ModelSpec, Overrides, Params};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use std::path::Path;

/// The key conventions recognised (docs/design.md §3).
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

/// Key names of one layout, relative to the detected prefix.
struct Keys {
    layout: Layout,
    /// Prefix of the vision tower keys (e.g. `model.visual.`, `vision_model.`).
    tower: String,
    proj: Option<String>,
    head: Option<String>,
}

pub(super) struct Loader<'a> {
    file: &'a Checkpoint,
    names: Vec<String>,
    keys: Keys,
    /// Run a checkpoint with NaN/Inf weights (noting them) instead of
    /// refusing it.
    allow_non_finite: bool,
    non_finite: std::cell::RefCell<Vec<String>>,
    /// Tensors read so far: any other tensor of the image tower is a part
    /// dawin does not compute.
    used: std::cell::RefCell<std::collections::HashSet<String>>,
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
    pub(super) fn new(file: &'a Checkpoint, allow_non_finite: bool) -> Result<Self> {
        let names = file.names();
        let keys = detect(&names).ok_or_else(|| unknown_layout(file.path(), &names))?;
        Ok(Loader {
            file,
            names,
            keys,
            allow_non_finite,
            non_finite: Default::default(),
            used: Default::default(),
        })
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
    /// Reads a tensor, checking its shape and that every value is finite
    /// (unless allowed: then the count is noted).
    fn read(&self, name: &str, expect: &[usize]) -> Result<Vec<f32>> {
        let shape = self.shape(name)?;
        if shape != expect {
            return Err(self.err(format!(
                "tensor `{name}` has shape {shape:?}, expected {expect:?}"
            )));
        }
        let data = self.file.read_f32(name)?;
        self.used.borrow_mut().insert(name.to_string());
        let bad = data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            let first = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
            let what = format!(
                "tensor `{name}` holds {bad} NaN/Inf value{} (the first at element {first})",
                if bad == 1 { "" } else { "s" }
            );
            if !self.allow_non_finite {
                return Err(self.err(format!(
                    "{what}: the checkpoint is damaged or overflowed; --allow-non-finite runs it anyway"
                )));
            }
            self.non_finite.borrow_mut().push(what);
        }
        Ok(data)
    }

    fn dims<const N: usize>(&self, name: &str) -> Result<[usize; N]> {
        let s = self.shape(name)?;
        s.as_slice().try_into().map_err(|_| {
            self.err(format!(
                "tensor `{name}` has shape {s:?}, expected {N} dimensions"
            ))
        })
    }

    /// A hint as a number, or an error naming where it came from.
    fn hint_num<'k, T: std::str::FromStr>(&self, keys: &[&'k str]) -> Result<Option<(T, &'k str)>> {
        let Some((key, v)) = keys.iter().find_map(|k| self.file.hint(k).map(|v| (*k, v))) else {
            return Ok(None);
        };
        match v.trim().parse::<T>() {
            Ok(x) => Ok(Some((x, key))),
            Err(_) => Err(self.err(format!(
                "{} says {key} = {v:?}, which is not a number",
                self.hint_source()
            ))),
        }
    }

    fn hint_source(&self) -> &str {
        self.file
            .hint_source
            .as_deref()
            .unwrap_or("the file's metadata")
    }

    /// Heads, activation and layernorm eps: the file's metadata or config,
    /// then flags, then OpenAI's defaults (said in a note). A flag that
    /// contradicts the file is noted.
    fn settings(
        &self,
        ov: Overrides,
        width: usize,
        notes: &mut Vec<String>,
    ) -> Result<(usize, Act, f32)> {
        let src = self.hint_source().to_string();
        if let Some((w, _)) = self.hint_num::<usize>(&["width"])?
            && w != width
        {
            return Err(self.err(format!(
                "{src} describes an image tower of width {w}, but the weights have width {width}: the config belongs to another model"
            )));
        }
        let mut assumed = Vec::new();
        let heads = match self.hint_num::<usize>(&["heads"])? {
            Some((h, _)) => {
                if let Some(f) = ov.heads.filter(|&f| f != h) {
                    notes.push(format!("--heads {f} ignored: {src} says heads={h}"));
                }
                h
            }
            None => ov.heads.unwrap_or_else(|| {
                let h = (width / 64).max(1);
                assumed.push(format!("{h} heads (width/64)"));
                h
            }),
        };
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(self.err(format!(
                "{heads} attention heads do not divide width {width} (set --heads, or `heads` in the metadata)"
            )));
        }
        let act = match ["act", "hidden_act"].iter().find_map(|k| self.file.hint(k)) {
            Some(v) => {
                let a: Act = v
                    .parse()
                    .map_err(|e: String| self.err(format!("{src}: {e}")))?;
                if let Some(f) = ov.act.filter(|&f| f != a) {
                    notes.push(format!("--act {f} ignored: {src} says act={a}"));
                }
                a
            }
            None => ov.act.unwrap_or_else(|| {
                assumed.push("quick_gelu".into());
                Act::QuickGelu
            }),
        };
        if !assumed.is_empty() {
            let why = match self.keys.layout {
                Layout::OpenAi | Layout::ModelSoups => {
                    " (an OpenAI/open_clip state dict's tensor names cannot tell quick_gelu from gelu)"
                }
                _ => "",
            };
            notes.push(format!(
                "assuming {}: no metadata or config.json says{why}; pass --heads/--act to be sure",
                assumed.join(" and ")
            ));
        }
        let ln_eps = match self.hint_num::<f32>(&["ln_eps", "layer_norm_eps"])? {
            Some((e, _)) if e > 0.0 && e.is_finite() => e,
            Some((e, key)) => {
                return Err(self.err(format!(
                    "{src} says {key} = {e}, which is not a positive number"
                )));
            }
            None => 1e-5,
        };
        Ok((heads, act, ln_eps))
    }

    /// Every tensor under the image tower's prefix was read: one that was
    /// not (layer scale, attention pooling, extra norms) would be silently
    /// dropped from the computation.
    fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let t = self.keys.tower.as_str();
        // A bare HF tower has no prefix: its own top-level modules then.
        let bare = [
            "embeddings.",
            "encoder.",
            "pre_layrnorm.",
            "post_layernorm.",
        ];
        let in_tower = |n: &str| match t {
            "" => bare.iter().any(|b| n.starts_with(b)),
            _ => n.starts_with(t),
        };
        let extra: Vec<&String> = self
            .names
            .iter()
            .filter(|n| in_tower(n) && !used.contains(*n))
            .filter(|n| !n.ends_with("position_ids"))
            .collect();
        match extra.first() {
            None => Ok(()),
            Some(first) => Err(self.err(format!(
                "the image tower has {} tensor(s) dawin's CLIP ViT does not use, e.g. `{first}` (layer scale, attention pooling or extra norms?); running without them would give wrong results",
                extra.len()
            ))),
        }
    }

    /// The config's image and patch size agree with the weights' shapes.
    fn check_geometry(&self, image: usize, patch: usize) -> Result<()> {
        for (key, have) in [("image_size", image), ("patch_size", patch)] {
            if let Some((want, _)) = self.hint_num::<usize>(&[key])?
                && want != have
            {
                return Err(self.err(format!(
                    "{} says {key} = {want}, but the weights imply {have} (patch {patch}, image {image})",
                    self.hint_source()
                )));
            }
        }
        Ok(())
    }

    pub(super) fn load(&self, ov: Overrides) -> Result<Model> {
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

        let mut notes = self.file.notes.clone();
        let (heads, act, ln_eps) = self.settings(ov, width, &mut notes)?;
        self.check_geometry(grid * patch, patch)?;
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
        self.check_all_used()?;
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
        let settings_from = match &self.file.hint_source {
            Some(s) if self.file.hint("heads").is_some() => format!("; heads/act from {s}"),
            _ => "; heads/act not in the file (flags or defaults)".into(),
        };
        Ok(Model {
            origin: format!("{}{settings_from}", self.file.description),
            layout: self.keys.layout,
            spec,
            flat,
            params,
            notes: notes
                .into_iter()
                .chain(
                    self.non_finite
                        .take()
                        .into_iter()
                        .map(|w| format!("{w}; running it as --allow-non-finite asks")),
                )
                .collect(),
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

//! Reading a checkpoint: the weight layout recognised by its anchor keys
//! (docs/design.md §3), the spec from tensor shapes and metadata, and every
//! tensor copied into the canonical flat f32 buffer.

use super::reader::{Flat, Reader, closest, transpose};
use super::sources::{SettingSources, Source};
use super::{Act, Model, ModelSpec, Overrides, Params};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use std::ops::Range;
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

/// What a model's settings assumed, as the warning that says so, or
/// `None` when nothing was guessed.
pub(super) fn assumption_note(layout: Layout, heads: usize, s: &SettingSources) -> Option<String> {
    let mut assumed = Vec::new();
    if s.heads == Source::Assumed {
        assumed.push(format!("{heads} heads (width/64)"));
    }
    if s.act == Source::Assumed {
        assumed.push("quick_gelu".to_string());
    }
    if assumed.is_empty() {
        return None;
    }
    let why = match layout {
        Layout::OpenAi | Layout::ModelSoups => {
            " (an OpenAI/open_clip state dict's tensor names cannot tell quick_gelu from gelu)"
        }
        _ => "",
    };
    Some(format!(
        "{ASSUMING}{}: no metadata or config.json says{why}; pass --heads/--act to be sure",
        assumed.join(" and ")
    ))
}

/// How the note of [`assumption_note`] starts.
pub(super) const ASSUMING: &str = "assuming ";

/// Key names of one layout, relative to the detected prefix.
struct Keys {
    layout: Layout,
    /// Prefix of the vision tower keys (e.g. `model.visual.`, `vision_model.`).
    tower: String,
    proj: Option<String>,
    head: Option<String>,
}

pub(super) struct Loader<'a> {
    r: Reader<'a>,
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
    pub(super) fn new(file: &'a Checkpoint, allow_non_finite: bool) -> Result<Self> {
        let mut r = Reader::new(file, allow_non_finite);
        let keys = detect(&r.names).ok_or_else(|| unknown_layout(file.path(), &r.names))?;
        r.what = format!("layout {}", keys.layout);
        Ok(Loader { r, keys })
    }

    /// Heads, activation and layernorm eps, each with its source: the
    /// file's metadata or config, then flags, then OpenAI's defaults (heads
    /// and act said in a note, as guesses). A flag that contradicts the
    /// file is noted.
    fn settings(
        &self,
        ov: Overrides,
        width: usize,
        notes: &mut Vec<String>,
    ) -> Result<((usize, Act, f32), SettingSources)> {
        let origin = |key: &str| {
            self.r
                .file
                .hint_origin(key)
                .map_or(Source::Metadata, Source::from)
        };
        let flag_or_assumed = |flag: bool| if flag { Source::Flag } else { Source::Assumed };
        let src = self.r.hint_source().to_string();
        if let Some((w, _)) = self.r.hint_num::<usize>(&["width"])?
            && w != width
        {
            return Err(self.r.err(format!(
                "{src} describes an image tower of width {w}, but the weights have width {width}: the config belongs to another model"
            )));
        }
        let from_file = self.r.hint_num::<usize>(&["heads"])?.is_some();
        let heads_source = match self.r.hint_num::<usize>(&["heads"])? {
            Some((_, key)) => origin(key),
            None => flag_or_assumed(ov.heads.is_some()),
        };
        let heads = match self.r.hint_num::<usize>(&["heads"])? {
            Some((h, _)) => {
                if let Some(f) = ov.heads.filter(|&f| f != h) {
                    notes.push(format!("--heads {f} ignored: {src} says heads={h}"));
                }
                h
            }
            None => ov.heads.unwrap_or((width / 64).max(1)),
        };
        if heads == 0 || !width.is_multiple_of(heads) {
            let why = if !from_file {
                "set --heads, or `heads` in the metadata".to_string()
            } else if src == "`config.json`" {
                format!(
                    "{src} sets num_attention_heads = {heads}; --heads cannot override a config, so fix the config or give the weights alone"
                )
            } else {
                format!(
                    "{src} sets heads = {heads}; --heads cannot override it, so fix the metadata"
                )
            };
            return Err(self.r.err(format!(
                "{heads} attention heads do not divide width {width} ({why})"
            )));
        }
        let act_key = ["act", "hidden_act"]
            .into_iter()
            .find(|k| self.r.file.hint(k).is_some());
        let act_source = act_key.map_or(flag_or_assumed(ov.act.is_some()), origin);
        let act = match act_key.and_then(|k| self.r.file.hint(k)) {
            Some(v) => {
                let a: Act = v
                    .parse()
                    .map_err(|e: String| self.r.err(format!("{src}: {e}")))?;
                if let Some(f) = ov.act.filter(|&f| f != a) {
                    notes.push(format!("--act {f} ignored: {src} says act={a}"));
                }
                a
            }
            None => ov.act.unwrap_or(Act::QuickGelu),
        };
        let (ln_eps, eps_source) = match self.r.hint_num::<f32>(&["ln_eps", "layer_norm_eps"])? {
            Some((e, key)) if e > 0.0 && e.is_finite() => (e, origin(key)),
            Some((e, key)) => {
                return Err(self.r.err(format!(
                    "{src} says {key} = {e}, which is not a positive number"
                )));
            }
            None => (1e-5, Source::Default),
        };
        let sources = SettingSources {
            heads: heads_source,
            act: act_source,
            ln_eps: eps_source,
        };
        Ok(((heads, act, ln_eps), sources))
    }

    /// Every tensor under the image tower's prefix was read: one that was
    /// not (layer scale, attention pooling, extra norms) would be silently
    /// dropped from the computation.
    fn check_all_used(&self) -> Result<()> {
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
        let extra = self.r.unread(in_tower);
        match extra.first() {
            None => Ok(()),
            Some(first) => Err(self.r.err(format!(
                "the image tower has {} tensor(s) dawin's CLIP ViT does not use, e.g. `{first}` (layer scale, attention pooling or extra norms?); running without them would give wrong results",
                extra.len()
            ))),
        }
    }

    /// The config's image and patch size agree with the weights' shapes.
    fn check_geometry(&self, image: usize, patch: usize) -> Result<()> {
        for (key, have) in [("image_size", image), ("patch_size", patch)] {
            if let Some((want, _)) = self.r.hint_num::<usize>(&[key])?
                && want != have
            {
                return Err(self.r.err(format!(
                    "{} says {key} = {want}, but the weights imply {have} (patch {patch}, image {image})",
                    self.r.hint_source()
                )));
            }
        }
        Ok(())
    }

    pub(super) fn load(&self, ov: Overrides) -> Result<Model> {
        let names = self.tower_names();
        let g = self.geometry(&names)?;
        let (embed_dim, classes) = self.head_dims(g.width)?;
        let mut notes = self.r.file.notes.clone();
        let ((heads, act, ln_eps), sources) = self.settings(ov, g.width, &mut notes)?;
        notes.extend(assumption_note(self.keys.layout, heads, &sources));
        self.check_geometry(g.grid * g.patch, g.patch)?;
        let spec = ModelSpec {
            width: g.width,
            layers: g.layers,
            heads,
            patch: g.patch,
            channels: g.channels,
            image_size: g.grid * g.patch,
            mlp: g.mlp,
            embed_dim,
            has_proj: self.keys.proj.is_some(),
            classes,
            act,
            ln_eps,
        };
        let (flat, params) = self.read_params(&names, &g, embed_dim, classes)?;
        self.check_all_used()?;
        Ok(Model {
            origin: self.r.file.description.clone(),
            zeroshot: super::sources::zeroshot_record(&self.r.file.metadata),
            sources,
            layout: self.keys.layout,
            spec,
            flat: flat.0,
            params,
            notes: notes.into_iter().chain(self.r.non_finite_notes()).collect(),
        })
    }

    /// The image tower's tensor names in this layout.
    fn tower_names(&self) -> TowerNames {
        let hf = matches!(self.keys.layout, Layout::Hf | Layout::HfBare);
        let t = &self.keys.tower;
        let k = |s: &str| format!("{t}{s}");
        let (conv, class, pos, pre, post, blocks) = if hf {
            (
                "embeddings.patch_embedding.weight",
                "embeddings.class_embedding",
                "embeddings.position_embedding.weight",
                "pre_layrnorm.",
                "post_layernorm.",
                "encoder.layers.",
            )
        } else {
            (
                "conv1.weight",
                "class_embedding",
                "positional_embedding",
                "ln_pre.",
                "ln_post.",
                "transformer.resblocks.",
            )
        };
        TowerNames {
            hf,
            conv: k(conv),
            class: k(class),
            pos: k(pos),
            pre: k(pre),
            post: k(post),
            blocks: k(blocks),
        }
    }

    /// The tower's sizes from its tensors' shapes, each checked.
    fn geometry(&self, n: &TowerNames) -> Result<Geometry> {
        let conv_key = &n.conv;
        let [width, channels, patch, patch2] = self.r.dims::<4>(conv_key)?;
        if width == 0 || channels == 0 || patch == 0 {
            return Err(self.r.err(format!(
                "`{conv_key}` has an empty dimension: {:?}",
                [width, channels, patch, patch2]
            )));
        }
        if patch != patch2 {
            return Err(self.r.err(format!(
                "`{conv_key}` has a non-square {patch}×{patch2} patch"
            )));
        }
        let pos_key = &n.pos;
        let [tokens, pos_w] = self.r.dims::<2>(pos_key)?;
        if pos_w != width {
            return Err(self.r.err(format!(
                "`{pos_key}` has width {pos_w}, but the patch conv has {width}"
            )));
        }
        let grid = (((tokens.max(1) - 1) as f64).sqrt().round()) as usize;
        if tokens < 2 || grid * grid + 1 != tokens {
            return Err(self.r.err(format!(
                "`{pos_key}` has {tokens} positions, which is not a square grid plus a class token"
            )));
        }
        let (layers, mlp) = self.r.blocks(&n.blocks, n.hf)?;
        Ok(Geometry {
            width,
            channels,
            patch,
            tokens,
            grid,
            layers,
            mlp,
        })
    }

    /// The embedding width after the projection (if any) and the head's
    /// class count (if any), checked against the tower's width.
    fn head_dims(&self, width: usize) -> Result<(usize, Option<usize>)> {
        let hf = matches!(self.keys.layout, Layout::Hf | Layout::HfBare);
        let embed_dim = match &self.keys.proj {
            Some(p) => {
                let s = self.r.dims::<2>(p)?;
                // OpenAI stores [width, embed]; HF stores [embed, width].
                let (e, w) = if hf { (s[0], s[1]) } else { (s[1], s[0]) };
                if w != width || e == 0 {
                    return Err(self.r.err(format!(
                        "projection `{p}` has shape {s:?}, which does not fit width {width}"
                    )));
                }
                e
            }
            None => width,
        };
        let classes = match &self.keys.head {
            Some(h) => {
                let [c, d] = self.r.dims::<2>(h)?;
                if d != embed_dim {
                    return Err(self.r.err(format!(
                        "classification head `{h}` is [{c}, {d}] but the image embedding has width {embed_dim}"
                    )));
                }
                Some(c)
            }
            None => None,
        };
        Ok((embed_dim, classes))
    }

    /// Every parameter, read into one flat buffer in the canonical layout.
    fn read_params(
        &self,
        n: &TowerNames,
        g: &Geometry,
        embed_dim: usize,
        classes: Option<usize>,
    ) -> Result<(Flat, Params<Range<usize>>)> {
        let mut flat = Flat::default();
        let w = g.width;
        let conv = flat.push(self.r.read(&n.conv, &[w, g.channels, g.patch, g.patch])?);
        let class = flat.push(self.r.read(&n.class, &[w])?);
        let pos = flat.push(self.r.read(&n.pos, &[g.tokens, w])?);
        let (gm, b) = self.r.ln(&n.pre, w)?;
        let (ln_pre_g, ln_pre_b) = (flat.push(gm), flat.push(b));
        let mut blocks = Vec::with_capacity(g.layers);
        for i in 0..g.layers {
            let prefix = format!("{}{i}.", n.blocks);
            blocks.push(self.r.block(&mut flat, n.hf, &prefix, w, g.mlp)?);
        }
        let (gm, b) = self.r.ln(&n.post, w)?;
        let (ln_post_g, ln_post_b) = (flat.push(gm), flat.push(b));
        let proj = match &self.keys.proj {
            Some(p) if n.hf => Some(flat.push(self.r.read(p, &[embed_dim, w])?)),
            Some(p) => {
                let v = self.r.read(p, &[w, embed_dim])?;
                Some(flat.push(transpose(&v, w, embed_dim)))
            }
            None => None,
        };
        let (head_w, head_b) = match (&self.keys.head, classes) {
            (Some(h), Some(c)) => {
                let hw = flat.push(self.r.read(h, &[c, embed_dim])?);
                let bias_key = format!("{}bias", h.strip_suffix("weight").unwrap_or(h));
                let hb = if self.r.has(&bias_key) {
                    self.r.read(&bias_key, &[c])?
                } else {
                    vec![0.0; c]
                };
                (Some(hw), Some(flat.push(hb)))
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
        Ok((flat, params))
    }
}

/// The image tower's tensor names in one layout (with its prefix);
/// `blocks` is the prefix of block `i`'s names before `i`.
struct TowerNames {
    hf: bool,
    conv: String,
    class: String,
    pos: String,
    pre: String,
    post: String,
    blocks: String,
}

/// The image tower's sizes, read from its tensors' shapes.
struct Geometry {
    width: usize,
    channels: usize,
    patch: usize,
    /// Positions: the grid's patches plus the class token.
    tokens: usize,
    /// Patches per side.
    grid: usize,
    layers: usize,
    mlp: usize,
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

//! CLIP's text tower: its spec, its parameters in one flat f32 buffer, and
//! its loader for the OpenAI/open_clip layout (`token_embedding`,
//! `positional_embedding`, `transformer.resblocks.*`, `ln_final`,
//! `text_projection` `[W,D]`) and HF's (`text_model.*`,
//! `text_projection.weight` `[D,W]`). [`super::text_tower`] runs it.

use super::reader::{Flat, Reader, transpose};
use super::{Act, Block, Overrides};
use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::error::Result;
use std::ops::Range;
use std::path::Path;

/// OpenAI's CLIP vocabulary: 256 bytes, their end-of-word forms, 48,894
/// merges, `<|startoftext|>` and `<|endoftext|>`.
pub const VOCAB: usize = 49_408;
/// `<|endoftext|>`, the last id: the tower pools at its first position.
pub const EOT: i32 = 49_407;

#[derive(Clone, Debug, PartialEq)]
pub struct TextSpec {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp: usize,
    /// Positions (77 for every CLIP).
    pub context: usize,
    pub vocab: usize,
    /// Output width: the projection's, or `width` when there is none.
    pub embed_dim: usize,
    pub act: Act,
    pub ln_eps: f32,
}

/// The text tower's tensors, generic over the handle as [`super::Params`].
#[derive(Clone, Debug, PartialEq)]
pub struct TextParams<T> {
    /// `[vocab, width]`.
    pub token: T,
    /// `[context, width]`.
    pub pos: T,
    pub blocks: Vec<Block<T>>,
    pub ln_final_g: T,
    pub ln_final_b: T,
    /// `[embed_dim, width]` (OpenAI's `[width, embed_dim]` transposed).
    pub proj: Option<T>,
}

impl<T> TextParams<T> {
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> TextParams<U> {
        TextParams {
            token: f(&self.token),
            pos: f(&self.pos),
            blocks: self.blocks.iter().map(|b| b.map(&f)).collect(),
            ln_final_g: f(&self.ln_final_g),
            ln_final_b: f(&self.ln_final_b),
            proj: self.proj.as_ref().map(&f),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TextModel {
    pub spec: TextSpec,
    pub flat: Vec<f32>,
    pub params: TextParams<Range<usize>>,
    /// CLIP's stored log scale of the image-text logits, when the file has it.
    pub logit_scale: Option<f32>,
    /// "openai" or "hf", with the prefix found.
    pub layout: String,
    /// What was assumed (heads, act) or noticed.
    pub notes: Vec<String>,
    /// Where the text tower's heads came from.
    pub heads_source: crate::model::sources::Source,
}

/// The text tower's names in one checkpoint.
struct TextKeys {
    hf: bool,
    /// Prefix of the tower's own tensors (`text_model.`, `text.`, ``).
    tower: String,
    proj: Option<String>,
    /// OpenAI's projection is a `[W, D]` parameter; HF's (and open_clip's
    /// linear one) a `[D, W]` weight.
    proj_transposed: bool,
    logit_scale: Option<String>,
}

impl TextModel {
    /// The text tower of a full CLIP checkpoint (file or folder).
    pub fn load(path: &Path, ov: Overrides, text_heads: Option<usize>) -> Result<TextModel> {
        let opt = OpenOptions {
            pickled_modules: ov.pickled_modules,
        };
        let file = Checkpoint::open(path, opt)?;
        Self::from_checkpoint(&file, ov, text_heads)
    }

    pub fn from_checkpoint(
        file: &Checkpoint,
        ov: Overrides,
        text_heads: Option<usize>,
    ) -> Result<TextModel> {
        let mut r = Reader::new(file, ov.allow_non_finite);
        let keys = detect(&r).ok_or_else(|| no_text_tower(&r))?;
        r.what = format!("{} text tower", if keys.hf { "HF" } else { "OpenAI" });
        if let Some(why) = file.hint("text_unsupported") {
            return Err(r.err(format!(
                "the text tower uses {why}, which dawin's CLIP text tower does not compute; its embeddings would be wrong, so it is refused"
            )));
        }
        let t = |s: &str| format!("{}{s}", keys.tower);
        let (tok, pos, fin) = if keys.hf {
            (
                t("embeddings.token_embedding.weight"),
                t("embeddings.position_embedding.weight"),
                t("final_layer_norm."),
            )
        } else {
            (
                t("token_embedding.weight"),
                t("positional_embedding"),
                t("ln_final."),
            )
        };
        let [vocab, width] = r.dims::<2>(&tok)?;
        let [context, pw] = r.dims::<2>(&pos)?;
        if pw != width || width == 0 || context == 0 {
            return Err(r.err(format!(
                "`{pos}` is [{context}, {pw}] but the token embedding has width {width}"
            )));
        }
        let blocks_prefix = t(if keys.hf {
            "encoder.layers."
        } else {
            "transformer.resblocks."
        });
        let (layers, mlp) = r.blocks(&blocks_prefix, keys.hf)?;
        let embed_dim = projected_width(&r, &keys, width)?;
        let mut notes = Vec::new();
        let (heads, act, ln_eps) = settings(&r, ov, text_heads, width, &mut notes)?;
        let heads_source = match r.file.hint_origin("text_heads") {
            Some(o) => o.into(),
            None if text_heads.is_some() => crate::model::sources::Source::Flag,
            None => crate::model::sources::Source::Assumed,
        };
        let spec = TextSpec {
            width,
            layers,
            heads,
            mlp,
            context,
            vocab,
            embed_dim,
            act,
            ln_eps,
        };
        let names = (
            tok.as_str(),
            pos.as_str(),
            fin.as_str(),
            blocks_prefix.as_str(),
        );
        let (flat, params) = read_params(&r, &keys, names, &spec)?;
        let logit_scale = match &keys.logit_scale {
            Some(k) => Some(read_scalar(&r, k)?),
            None => None,
        };
        check_all_read(&r, &keys)?;
        notes.extend(r.non_finite_notes());
        let layout = match keys.hf {
            true => format!("hf ({}*)", keys.tower),
            false => format!("openai ({}token_embedding, transformer.*)", keys.tower),
        };
        Ok(TextModel {
            spec,
            flat: flat.0,
            params,
            logit_scale,
            layout,
            notes,
            heads_source,
        })
    }
}

/// The text embedding's width: the projection's output, or the tower's
/// width without one.
fn projected_width(r: &Reader, keys: &TextKeys, width: usize) -> Result<usize> {
    let Some(p) = &keys.proj else {
        return Ok(width);
    };
    let s = r.dims::<2>(p)?;
    let (d, w) = if keys.proj_transposed {
        (s[0], s[1])
    } else {
        (s[1], s[0])
    };
    if w != width || d == 0 {
        return Err(r.err(format!(
            "text projection `{p}` has shape {s:?}, which does not fit width {width}"
        )));
    }
    Ok(d)
}

/// Every text parameter, read into one flat buffer in the canonical layout;
/// `names` are the token and position embeddings, the final layernorm's
/// prefix and the blocks' prefix.
fn read_params(
    r: &Reader,
    keys: &TextKeys,
    (tok, pos, fin, blocks_prefix): (&str, &str, &str, &str),
    spec: &TextSpec,
) -> Result<(Flat, TextParams<Range<usize>>)> {
    let (width, embed_dim) = (spec.width, spec.embed_dim);
    let mut flat = Flat::default();
    let token = flat.push(r.read(tok, &[spec.vocab, width])?);
    let pos = flat.push(r.read(pos, &[spec.context, width])?);
    let blocks = (0..spec.layers)
        .map(|i| {
            let prefix = format!("{blocks_prefix}{i}.");
            r.block(&mut flat, keys.hf, &prefix, width, spec.mlp)
        })
        .collect::<Result<Vec<_>>>()?;
    let (g, b) = r.ln(fin, width)?;
    let (ln_final_g, ln_final_b) = (flat.push(g), flat.push(b));
    let proj = match &keys.proj {
        Some(p) if keys.proj_transposed => Some(flat.push(r.read(p, &[embed_dim, width])?)),
        Some(p) => {
            let v = r.read(p, &[width, embed_dim])?;
            Some(flat.push(transpose(&v, width, embed_dim)))
        }
        None => None,
    };
    let params = TextParams {
        token,
        pos,
        blocks,
        ln_final_g,
        ln_final_b,
        proj,
    };
    Ok((flat, params))
}

impl TextModel {
    /// The line `dawin inspect` prints for a checkpoint with a text tower.
    pub fn describe(&self) -> String {
        let s = &self.spec;
        let scale = match self.logit_scale {
            Some(l) => format!(", logit scale {:.4} (exp {:.2})", l, l.exp()),
            None => ", no logit_scale".into(),
        };
        format!(
            "text tower  {}: width {}, {} layers, {} heads ({}; head dim {}), mlp {}, act {}, vocab {}, context {}, embedding {}{scale}\n",
            self.layout,
            s.width,
            s.layers,
            s.heads,
            self.heads_source.describe(),
            s.width / s.heads,
            s.mlp,
            s.act,
            s.vocab,
            s.context,
            s.embed_dim
        )
    }
}

/// A one-element tensor (`logit_scale` is `[]` or `[1]`).
fn read_scalar(r: &Reader, name: &str) -> Result<f32> {
    let shape = r.shape(name)?;
    if shape.iter().product::<usize>() != 1 {
        return Err(r.err(format!("`{name}` has shape {shape:?}, expected one value")));
    }
    Ok(r.read(name, &shape)?[0])
}

/// Heads, activation and eps of the text tower: its own hints (`text_*`),
/// then the image tower's act/eps (CLIP uses one for both), then flags,
/// then OpenAI's defaults, said in a note.
fn settings(
    r: &Reader,
    ov: Overrides,
    flag_heads: Option<usize>,
    width: usize,
    notes: &mut Vec<String>,
) -> Result<(usize, Act, f32)> {
    let src = r.hint_source().to_string();
    let mut assumed = Vec::new();
    let heads = match r.hint_num::<usize>(&["text_heads"])? {
        Some((h, _)) => {
            if let Some(f) = flag_heads.filter(|&f| f != h) {
                notes.push(format!(
                    "--text-heads {f} ignored: {src} says text_heads={h}"
                ));
            }
            h
        }
        None => flag_heads.unwrap_or_else(|| {
            let h = (width / 64).max(1);
            assumed.push(format!("{h} text heads (width/64)"));
            h
        }),
    };
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(r.err(format!(
            "{heads} text attention heads do not divide the text width {width} (set --text-heads)"
        )));
    }
    let act = match ["text_act", "act", "hidden_act"]
        .iter()
        .find_map(|k| r.file.hint(k))
    {
        Some(v) => v
            .parse()
            .map_err(|e: String| r.err(format!("{src}: {e}")))?,
        None => ov.act.unwrap_or_else(|| {
            assumed.push("quick_gelu".into());
            Act::QuickGelu
        }),
    };
    if !assumed.is_empty() {
        notes.push(format!(
            "assuming {} for the text tower: no metadata or config says; pass --text-heads/--act to be sure",
            assumed.join(" and ")
        ));
    }
    let ln_eps = match r.hint_num::<f32>(&["text_ln_eps", "ln_eps", "layer_norm_eps"])? {
        Some((e, _)) if e > 0.0 && e.is_finite() => e,
        Some((e, key)) => {
            return Err(r.err(format!(
                "{src} says {key} = {e}, which is not a positive number"
            )));
        }
        None => 1e-5,
    };
    Ok((heads, act, ln_eps))
}

/// Finds the text tower by its token embedding, wherever the prefix puts it.
fn detect(r: &Reader) -> Option<TextKeys> {
    let present = |n: String| r.has(&n).then_some(n);
    for n in &r.names {
        if let Some(tower) = n.strip_suffix("embeddings.token_embedding.weight")
            && r.has(&format!("{tower}embeddings.position_embedding.weight"))
        {
            let outer = tower.strip_suffix("text_model.").unwrap_or(tower);
            return Some(TextKeys {
                hf: true,
                tower: tower.to_string(),
                proj: present(format!("{outer}text_projection.weight")),
                proj_transposed: true,
                logit_scale: present(format!("{outer}logit_scale")),
            });
        }
        if let Some(tower) = n.strip_suffix("token_embedding.weight")
            && r.has(&format!("{tower}positional_embedding"))
            && r.has(&format!("{tower}ln_final.weight"))
        {
            // open_clip's CustomTextCLIP keeps the tower under `text.` and
            // the scale beside it.
            let outer = tower.strip_suffix("text.").unwrap_or(tower);
            let linear = present(format!("{tower}text_projection.weight"));
            let param = present(format!("{tower}text_projection"));
            return Some(TextKeys {
                hf: false,
                tower: tower.to_string(),
                proj_transposed: linear.is_some(),
                proj: linear.or(param),
                logit_scale: present(format!("{tower}logit_scale"))
                    .or_else(|| present(format!("{outer}logit_scale"))),
            });
        }
    }
    None
}

/// Every tensor of the text tower was read: a projection bias, layer
/// scales or extra norms would otherwise be dropped silently.
fn check_all_read(r: &Reader, keys: &TextKeys) -> Result<()> {
    let t = keys.tower.as_str();
    let openai_parts = [
        "token_embedding.",
        "positional_embedding",
        "transformer.",
        "ln_final.",
        "text_projection",
    ];
    let in_text = |n: &str| match (keys.hf, t) {
        (true, _) => n.starts_with(t) || n.starts_with("text_projection."),
        (false, "") => openai_parts.iter().any(|p| n.starts_with(p)),
        (false, _) => n.starts_with(t) && !n.ends_with("logit_scale"),
    };
    let extra = r.unread(in_text);
    match extra.first() {
        None => Ok(()),
        Some(first) => Err(r.err(format!(
            "the text tower has {} tensor(s) dawin's CLIP text tower does not use, e.g. `{first}`; its embeddings would be wrong without them",
            extra.len()
        ))),
    }
}

fn no_text_tower(r: &Reader) -> crate::error::Error {
    r.err(format!(
        "no CLIP text tower in this checkpoint (no `token_embedding.weight` with `positional_embedding` and `ln_final`, nor `text_model.embeddings.token_embedding.weight`; {} tensors): zero-shot heads need a full CLIP model (an HF CLIPModel folder, an open_clip or OpenAI state dict), not an image tower or a fine-tuned classifier",
        r.names.len()
    ))
}

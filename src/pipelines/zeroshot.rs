//! Zero-shot classifiers from CLIP's text tower, as WiSE-FT and the
//! official DaWin code build them: for each class, every template filled
//! with the class name is tokenized and encoded; the embeddings are
//! normalised, averaged, normalised again and scaled by `exp(logit_scale)`.
//! The result is the image tower with that head (`[C, D]`, bias zero), a
//! classifier every dawin command takes as the pretrained model.

use crate::data::label_spaces::{self, Named};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::model::sources::{self, Source};
use crate::model::text::TextModel;
use crate::model::text_tower::{DeviceText, encode};
use crate::model::{Model, Overrides};
use crate::reporter::{self, Unit};
use crate::tokenizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const PROMPTS: Unit = Unit {
    plural: "prompts",
    rate: "prompts/s",
};
const CLASSES: Unit = Unit {
    plural: "classes",
    rate: "classes/s",
};

/// The lines of a UTF-8 text file (`\n` or `\r\n` ends a line, nothing
/// else is touched); an invalid byte is an error naming its line.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::file(
            path,
            format!("is not UTF-8 text (an invalid byte on line {line}, byte {at})"),
        )
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

/// A list file's entries: lines without surrounding whitespace, blank
/// lines and lines starting with `#` skipped.
fn entries(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A named list (`imagenet`, `openai-imagenet`, ...) or a file's lines.
fn named_lines(arg: &Path, named: Named, flag: &str) -> Result<(String, Vec<String>)> {
    match named {
        Named::File => Ok((arg.display().to_string(), read_lines(arg)?)),
        Named::Shipped(name, text) => Ok((name.into(), text.lines().map(str::to_string).collect())),
        Named::Unknown(msg) => Err(crate::invalid!("{flag} {msg}")),
    }
}

/// Class names, one per line, from a file or by name (`imagenet`), or an
/// image folder's class folders in `ImageFolder`'s order, underscores read
/// as spaces (`golden_retriever` → "golden retriever"): the head's row i
/// is then the class `eval` labels i on that folder.
pub fn classes(arg: &Path) -> Result<(String, Vec<String>)> {
    if arg.is_dir() {
        let names: Vec<String> = crate::data::dataset::class_folders(arg)?
            .into_iter()
            .map(|(n, _)| n.replace('_', " "))
            .collect();
        if names.is_empty() {
            return Err(crate::invalid!(
                "--classes {}: a folder without class subfolders",
                arg.display()
            ));
        }
        return Ok((format!("the class folders of {}", arg.display()), names));
    }
    let (name, lines) = named_lines(arg, label_spaces::classes(arg), "--classes")?;
    let c = entries(&lines);
    if c.is_empty() {
        return Err(crate::invalid!("--classes {name}: no class names in it"));
    }
    Ok((name, c))
}

/// Names listed more than once: their classes get identical head rows, so
/// the first always wins a tie (CLIP's own ImageNet list has two: `missile`
/// and `sunglasses`, kept as the official head has them).
pub fn repeated(classes: &[String]) -> Vec<String> {
    let mut first = HashMap::new();
    let mut out = Vec::new();
    for (i, n) in classes.iter().enumerate() {
        if let Some(j) = first.insert(n.as_str(), i) {
            out.push(format!("`{n}` names classes {j} and {i}"));
        }
    }
    out
}

/// Prompt templates with `{}` for the class name, from a file or by name
/// (`openai-imagenet`, `simple`).
pub fn templates(arg: &Path) -> Result<(String, Vec<String>)> {
    let (name, lines) = named_lines(arg, label_spaces::templates(arg), "--templates")?;
    let t = entries(&lines);
    if t.is_empty() {
        return Err(crate::invalid!("--templates {name}: no templates in it"));
    }
    if let Some(bad) = t.iter().find(|t| !t.contains("{}")) {
        return Err(crate::invalid!(
            "--templates {name}: the template `{bad}` has no `{{}}` where the class name goes"
        ));
    }
    Ok((name, t))
}

/// Tokenizes prompts for `text`, refusing a model whose vocabulary or
/// context is not CLIP's; returns the ids and how many prompts were cut.
pub fn tokenize_for(text: &TextModel, prompts: &[String]) -> Result<(Vec<i32>, usize)> {
    let s = &text.spec;
    if s.vocab != crate::model::text::VOCAB {
        return Err(crate::invalid!(
            "the text tower's vocabulary has {} tokens; dawin's tokenizer is OpenAI CLIP's {}",
            s.vocab,
            crate::model::text::VOCAB
        ));
    }
    if s.context < 2 {
        return Err(crate::invalid!("a context of {} positions", s.context));
    }
    let mut ids = Vec::with_capacity(prompts.len() * s.context);
    let mut cut = 0;
    for p in prompts {
        let (t, was_cut) = tokenizer::tokenize_noting_cuts(p, s.context);
        ids.extend(t);
        cut += was_cut as usize;
    }
    Ok((ids, cut))
}

/// Embeddings `[P, D]` of `ids` in batches of `batch` prompts, `tick`ed
/// after each batch with the prompts done. Prompts are batched by length
/// (a batch runs only the positions its longest prompt needs) and their
/// embeddings put back in order.
pub fn encode_batched(
    ex: &dyn Executor,
    text: &DeviceText,
    ids: &[i32],
    batch: usize,
    mut tick: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let (c, d) = (text.spec.context, text.spec.embed_dim);
    let prompts: Vec<&[i32]> = ids.chunks(c).collect();
    let length = |p: &[i32]| {
        p.iter()
            .position(|&t| t == crate::model::text::EOT)
            .unwrap_or(c)
    };
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| length(prompts[i]));
    let mut out = vec![0f32; prompts.len() * d];
    for group in order.chunks(batch.max(1)) {
        let chunk: Vec<i32> = group.iter().flat_map(|&i| prompts[i]).copied().collect();
        let emb = encode(ex, text, &chunk, group.len())?;
        for (&i, e) in group.iter().zip(emb.chunks(d)) {
            out[i * d..(i + 1) * d].copy_from_slice(e);
        }
        tick(group.len());
    }
    Ok(out)
}

/// One row normalised, by the `l2_normalize` op's cpu implementation.
fn normalize(v: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    crate::ops::l2_normalize::cpu(v, &mut out, 1, v.len());
    out
}

/// The head `[C, D]`: per class, the mean of its templates' normalised
/// embeddings (`emb[c·T + t]`), normalised, times `scale`.
pub fn head_from(emb: &[f32], classes: usize, templates: usize, d: usize, scale: f32) -> Vec<f32> {
    let mut head = vec![0f32; classes * d];
    for (c, row) in head.chunks_mut(d).enumerate() {
        let mut mean = vec![0f64; d];
        for t in 0..templates {
            let e = normalize(&emb[(c * templates + t) * d..][..d]);
            mean.iter_mut().zip(&e).for_each(|(m, x)| *m += *x as f64);
        }
        let r: Vec<f32> = mean.iter().map(|m| (m / templates as f64) as f32).collect();
        let r = normalize(&r);
        row.iter_mut().zip(&r).for_each(|(o, x)| *o = x * scale);
    }
    head
}

pub struct ZeroShotOptions {
    pub model: PathBuf,
    pub classes: PathBuf,
    pub templates: PathBuf,
    pub out: PathBuf,
    pub overrides: Overrides,
    pub text_heads: Option<usize>,
    /// The softmax scale itself (CLIP's `exp(logit_scale)`), when the file
    /// has none or the user wants another.
    pub scale: Option<f32>,
    /// Prompts per text forward.
    pub batch: usize,
    pub progress: bool,
}

/// What `dawin zeroshot` wrote.
pub struct ZeroShot {
    pub classes: usize,
    pub templates: usize,
    pub scale: f32,
    pub truncated: usize,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// The softmax scale: the flag, else `exp` of the file's `logit_scale`.
fn scale(o: &ZeroShotOptions, text: &TextModel) -> Result<f32> {
    let s = match (o.scale, text.logit_scale) {
        (Some(s), _) => s,
        (None, Some(l)) => l.exp(),
        (None, None) => {
            return Err(crate::invalid!(
                "{} has no `logit_scale`: pass --logit-scale (CLIP's trained value is 100)",
                o.model.display()
            ));
        }
    };
    if !(s.is_finite() && s > 0.0) {
        return Err(crate::invalid!(
            "the logit scale {s} is not a positive number"
        ));
    }
    Ok(s)
}

/// Builds the zero-shot classifier of `o.model` and writes it to `o.out`.
pub fn run(o: &ZeroShotOptions, ex: &dyn Executor) -> Result<ZeroShot> {
    crate::tensorfile::check_output(&o.out)?;
    let (class_src, names) = classes(&o.classes)?;
    let (template_src, temps) = templates(&o.templates)?;
    let text = TextModel::load(&o.model, o.overrides, o.text_heads)?;
    let image = Model::load(&o.model, o.overrides)?;
    let (d, s) = (image.spec.embed_dim, &text.spec);
    if s.embed_dim != d {
        return Err(crate::invalid!(
            "the text tower embeds into {} dimensions but the image tower into {d}: not one CLIP model",
            s.embed_dim
        ));
    }
    let scale = scale(o, &text)?;
    let start = std::time::Instant::now();
    let prompts: Vec<String> = names
        .iter()
        .flat_map(|c| temps.iter().map(move |t| t.replace("{}", c)))
        .collect();
    let (ids, truncated) = tokenize_for(&text, &prompts)?;
    let dev = DeviceText::upload(ex, &text)?;
    let pb = reporter::progress_of(names.len(), "zero-shot head", CLASSES, o.progress);
    let mut done = 0;
    let emb = encode_batched(ex, &dev, &ids, o.batch, |n| {
        done += n;
        pb.set_position((done / temps.len()) as u64);
    })?;
    pb.finish();
    let head = head_from(&emb, names.len(), temps.len(), d, scale);
    let mut meta = HashMap::from([
        ("logit_scale".to_string(), scale.ln().to_string()),
        ("zeroshot_classes".to_string(), json(&names)),
        ("zeroshot_templates".to_string(), json(&temps)),
        (
            "zeroshot_from".to_string(),
            format!(
                "{} (classes {class_src}, templates {template_src})",
                o.model.display()
            ),
        ),
    ]);
    meta.insert("text_heads".into(), s.heads.to_string());
    let scale_source = match o.scale {
        Some(_) => Source::Flag,
        None => Source::Tensor,
    };
    let sources = serde_json::json!({
        "text_heads": text.heads_source.key(),
        "logit_scale": scale_source.key(),
    });
    meta.insert(sources::META_KEY.into(), sources.to_string());
    let c = names.len();
    image
        .with_head(Some((head, vec![0.0; c])), Some(c))
        .save_with(&o.out, meta)?;
    let mut notes = image.notes;
    notes.extend(text.notes);
    let twice = repeated(&names);
    if !twice.is_empty() {
        notes.push(format!(
            "{class_src}: {} (identical head rows: such classes can only tie)",
            twice.join(", ")
        ));
    }
    Ok(ZeroShot {
        classes: names.len(),
        templates: temps.len(),
        scale,
        truncated,
        seconds: start.elapsed().as_secs_f64(),
        notes,
    })
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings serialise")
}

/// `dawin encode-text`: the prompts of `texts` (one per line, as is).
pub struct EncodedText {
    pub ids: Vec<i32>,
    pub embeds: Vec<f32>,
    pub prompts: usize,
    pub context: usize,
    pub embed_dim: usize,
    pub truncated: usize,
    pub notes: Vec<String>,
}

pub fn encode_file(
    ex: &dyn Executor,
    model: &Path,
    texts: &Path,
    ov: Overrides,
    text_heads: Option<usize>,
    batch: usize,
    visible: bool,
) -> Result<EncodedText> {
    let prompts = read_lines(texts)?;
    let text = TextModel::load(model, ov, text_heads)?;
    let (ids, truncated) = tokenize_for(&text, &prompts)?;
    let dev = DeviceText::upload(ex, &text)?;
    let pb = reporter::progress_of(prompts.len(), "text embeddings", PROMPTS, visible);
    let embeds = encode_batched(ex, &dev, &ids, batch, |n| pb.inc(n as u64))?;
    pb.finish();
    Ok(EncodedText {
        ids,
        embeds,
        prompts: prompts.len(),
        context: text.spec.context,
        embed_dim: text.spec.embed_dim,
        truncated,
        notes: text.notes,
    })
}

//! Both models and a working (merged) model resident on one executor, and
//! the forwards DaWin runs on them.

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::model::batch::{BatchCap, ChunkForward, Images, Lookahead, Stager};
use crate::model::placed::{PlacedModel, Precision};
use crate::model::vit::{DualWeights, forward_with};
use crate::model::{Model, Overrides};
use std::path::Path;

/// A model's configuration in one line, for comparing two.
fn outline(m: &Model) -> String {
    let s = &m.spec;
    let classes = s
        .classes
        .map_or("no head".to_string(), |c| format!("{c} classes"));
    format!(
        "width {}, {} layers, patch {}, image {}, {classes}",
        s.width, s.layers, s.patch, s.image_size
    )
}

/// Loads both models and checks that DaWin can interpolate them.
pub fn load_pair(pt: &Path, ft: &Path, ov: Overrides) -> Result<(Model, Model)> {
    let (a, b) = crate::model::pair::load_pair((pt, ft), ov)?;
    let diffs = a.shape_differences(&b);
    // Same tensors, other settings: said with where each file's came from.
    if diffs.iter().all(|d| d.starts_with("heads/act")) {
        crate::model::pair::check_agree((&a, &b), (pt, ft))?;
    }
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(10).map(String::as_str).collect();
        return Err(crate::invalid!(
            "the models have different architectures, so they cannot be interpolated:\n  pretrained {}: {}\n  fine-tuned {}: {}\n  first differing tensors ({} in all): {}{}",
            pt.display(),
            outline(&a),
            ft.display(),
            outline(&b),
            diffs.len(),
            shown.join("; "),
            if diffs.len() > 10 { "; ..." } else { "" }
        ));
    }
    crate::model::pair::check_agree((&a, &b), (pt, ft))?;
    for (m, p) in [(&a, pt), (&b, ft)] {
        if m.spec.classes.is_none() {
            return Err(Error::file(
                p,
                format!(
                    "has no classification head (`classification_head.weight`), and DaWin needs logits. If it is a CLIP checkpoint with its text tower, give it one from your class names: `dawin zeroshot --model {} --classes classes.txt -o zeroshot.safetensors`, then pass zeroshot.safetensors in its place",
                    p.display()
                ),
            ));
        }
    }
    if a.spec.classes != b.spec.classes {
        return Err(crate::invalid!(
            "the heads have different class counts: {:?} vs {:?}",
            a.spec.classes,
            b.spec.classes
        ));
    }
    Ok((a, b))
}

/// Both models and a working buffer resident on one executor; device
/// memory is freed when the engine drops.
pub struct Engine<'a> {
    pub ex: &'a dyn Executor,
    pub pt: PlacedModel<'a>,
    pub ft: PlacedModel<'a>,
    precision: Precision,
    work: Option<PlacedModel<'a>>,
    host: &'a Model,
    /// λ the working buffer holds now, to skip repeated lerps.
    work_lambda: Option<f32>,
    pub lerps: usize,
    pub lerps_skipped: usize,
    /// Batches are split further when the device runs out of memory.
    pub cap: BatchCap,
    /// Stages each next chunk of images during the current forward.
    stager: Stager<'a>,
}

impl<'a> Engine<'a> {
    pub fn new(
        ex: &'a dyn Executor,
        pt: &'a Model,
        ft: &Model,
        precision: Precision,
    ) -> Result<Self> {
        Ok(Engine {
            ex,
            pt: PlacedModel::upload_as(ex, pt, precision)?,
            ft: PlacedModel::upload_as(ex, ft, precision)?,
            precision,
            work: None,
            host: pt,
            work_lambda: None,
            lerps: 0,
            lerps_skipped: 0,
            cap: BatchCap::new(usize::MAX),
            stager: Stager::new(ex),
        })
    }

    /// The heads' class count (both models have one; see [`load_pair`]).
    pub fn classes(&self) -> usize {
        self.pt.spec.classes.unwrap_or(0)
    }

    /// Makes the working model `(1−λ)·pt + λ·ft`, lerping in place only if
    /// λ changed since the last call.
    pub fn set_merged(&mut self, lambda: f32) -> Result<()> {
        if self.work_lambda == Some(lambda) {
            self.lerps_skipped += 1;
            return Ok(());
        }
        let work = match self.work.take() {
            Some(w) => w,
            None => PlacedModel::alloc_like(self.ex, self.host, self.precision)?,
        };
        let done = work.lerp(&self.pt, &self.ft, lambda);
        self.work = Some(work);
        done?;
        self.work_lambda = Some(lambda);
        self.lerps += 1;
        Ok(())
    }

    /// Logits of the working (merged) model.
    pub fn merged_logits(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.merged_logits_ahead(Images::host(pixels, n), None)
    }

    /// [`Engine::merged_logits`], staging the next call's images during
    /// the last forward.
    pub fn merged_logits_ahead(
        &self,
        images: Images,
        next: Option<&mut dyn Lookahead>,
    ) -> Result<Vec<f32>> {
        let w = self
            .work
            .as_ref()
            .ok_or_else(|| crate::invalid!("no merged model yet: set_merged first"))?;
        self.logits_ahead(w, images, next)
    }

    pub fn logits(&self, m: &PlacedModel, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.logits_ahead(m, Images::host(pixels, n), None)
    }

    /// [`Engine::logits`], staging the next call's images during the last
    /// forward.
    pub fn logits_ahead(
        &self,
        m: &PlacedModel,
        images: Images,
        next: Option<&mut dyn Lookahead>,
    ) -> Result<Vec<f32>> {
        self.chunked(images, next, &|px, _, k, between| {
            forward_with(self.ex, m, px, k, None, between)
        })
    }

    /// Each sample's own merged model, exactly, through the dual-weight ops.
    pub fn dual_logits(&self, pixels: &[f32], n: usize, lambda: &[f32]) -> Result<Vec<f32>> {
        self.dual_logits_ahead(Images::host(pixels, n), lambda, None)
    }

    /// [`Engine::dual_logits`], staging the next call's images during the
    /// last forward.
    pub fn dual_logits_ahead(
        &self,
        images: Images,
        lambda: &[f32],
        next: Option<&mut dyn Lookahead>,
    ) -> Result<Vec<f32>> {
        self.chunked(images, next, &|px, start, k, between| {
            let dual = DualWeights {
                other: &self.ft,
                lambda: &lambda[start..start + k],
            };
            forward_with(self.ex, &self.pt, px, k, Some(dual), between)
        })
    }

    /// Logits of `n` images, in chunks that fit in device memory, each
    /// next chunk staged during the current one's forward.
    fn chunked(
        &self,
        images: Images,
        next: Option<&mut dyn Lookahead>,
        f: &ChunkForward<'_, 'a>,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.stager.run(&self.cap, images, next, f, |_, o| {
            out.extend(o.logits.unwrap_or_default())
        })?;
        Ok(out)
    }

    /// Device bytes held by both models and the working (merged) one.
    pub fn resident_bytes(&self) -> usize {
        [Some(&self.pt), Some(&self.ft), self.work.as_ref()]
            .into_iter()
            .flatten()
            .map(PlacedModel::resident_bytes)
            .sum()
    }
}

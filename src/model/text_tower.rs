//! The text tower's forward on an executor: token + positional embedding
//! (`gather_rows`), the pre-LN blocks with causal attention, `ln_final` on
//! each prompt's end-of-text row, and the projection. f32 only: the text
//! tower runs once per class and template to build a head, not per image.
//!
//! Attention is causal, so no position after a prompt's end-of-text token
//! reaches the row it pools at: a batch runs only as many positions as its
//! longest prompt needs (about 10–20 of 77 for class-name prompts), with
//! the same result.

use super::blocks::{self, Stack};
use super::text::{EOT, TextModel, TextParams, TextSpec};
use crate::buf::Buf;
use crate::error::Result;
use crate::exec::{Executor, OwnedBuf};
use crate::ops::gather_rows::{GatherRows, GatherShape};
use crate::ops::gemm::GemmShape;
use crate::ops::layernorm::LayerNormShape;

/// A text tower resident on an executor.
pub struct DeviceText<'a> {
    pub spec: TextSpec,
    pub flat: OwnedBuf<'a>,
    pub params: TextParams<Buf>,
}

impl<'a> DeviceText<'a> {
    pub fn upload(ex: &'a dyn Executor, m: &TextModel) -> Result<Self> {
        let flat = ex.upload(&m.flat)?;
        let params = m.params.map(|r| flat.slice(r.start, r.len()));
        Ok(DeviceText {
            spec: m.spec.clone(),
            flat,
            params,
        })
    }
}

/// Where each prompt pools: the first position holding `<|endoftext|>`
/// (OpenAI's `argmax`, as the end-of-text id is the largest). A prompt
/// without one is refused.
pub fn eot_positions(ids: &[i32], context: usize) -> Result<Vec<usize>> {
    ids.chunks(context)
        .enumerate()
        .map(|(b, row)| {
            row.iter().position(|&t| t == EOT).ok_or_else(|| {
                crate::invalid!(
                    "prompt {b} has no end-of-text token ({EOT}): token ids must come from CLIP's tokenizer"
                )
            })
        })
        .collect()
}

/// Projected (not normalised) embeddings `[n, embed_dim]` of `n` prompts
/// of token ids `ids[n, context]`.
pub fn encode(ex: &dyn Executor, m: &DeviceText, ids: &[i32], n: usize) -> Result<Vec<f32>> {
    let s = &m.spec;
    let (c, w) = (s.context, s.width);
    if ids.len() != n * c {
        return Err(crate::invalid!(
            "{} token ids for {n} prompts of {c} positions",
            ids.len()
        ));
    }
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t as usize >= s.vocab) {
        return Err(crate::invalid!(
            "token id {bad} is outside the model's vocabulary of {}",
            s.vocab
        ));
    }
    if n == 0 {
        return Ok(vec![]);
    }
    // Positions a batch needs: up to its last end-of-text token.
    let eot = eot_positions(ids, c)?;
    let used = eot.iter().max().map_or(1, |p| p + 1);
    let ids: Vec<i32> = ids.chunks(c).flat_map(|p| &p[..used]).copied().collect();
    let pool: Vec<i32> = eot
        .iter()
        .enumerate()
        .map(|(b, p)| (b * used + p) as i32)
        .collect();
    let x = ex.alloc(n * used * w)?;
    let tokens = ex.upload(&ids)?;
    ex.run(GatherRows {
        table: m.params.token,
        ids: *tokens,
        add: Some(m.params.pos),
        out: *x,
        shape: GatherShape {
            rows: n * used,
            width: w,
            table_rows: s.vocab,
            add_rows: used,
        },
    })?;
    let stack = Stack {
        width: w,
        tokens: used,
        heads: s.heads,
        mlp: s.mlp,
        act: s.act,
        ln_eps: s.ln_eps,
        causal: true,
    };
    blocks::run_f32(ex, stack, &m.params.blocks, blocks::Others::Alone, *x, n)?;
    let rows = ex.upload(&pool)?;
    let pooled = ex.alloc(n * w)?;
    ex.run(GatherRows {
        table: *x,
        ids: *rows,
        add: None,
        out: *pooled,
        shape: GatherShape {
            rows: n,
            width: w,
            table_rows: n * used,
            add_rows: 1,
        },
    })?;
    let p = &m.params;
    let ln = LayerNormShape::dense(n, w, s.ln_eps);
    let alone = blocks::With::Alone;
    blocks::norm(
        ex,
        *pooled,
        *pooled,
        (p.ln_final_g, p.ln_final_b),
        alone,
        ln,
    )?;
    let out = match p.proj {
        Some(proj) => {
            let e = ex.alloc(n * s.embed_dim)?;
            let shape = GemmShape {
                m: n,
                n: s.embed_dim,
                k: w,
            };
            blocks::linear(ex, *pooled, (proj, None), blocks::With::Alone, *e, shape)?;
            ex.download(*e)?
        }
        None => ex.download(*pooled)?,
    };
    ex.timing().synchronize()?;
    Ok(out)
}

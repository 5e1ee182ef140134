//! embed_add: assembles the token sequence. Token 0 of each sample is
//! `class + pos[0]`, token `t ≥ 1` is `patches[t−1] + pos[t]`; with a mix, the
//! class and position embeddings are lerped per sample.

use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedShape {
    pub batch: usize,
    pub tokens: usize,
    pub width: usize,
}

pub struct DualRef<'a> {
    pub class1: &'a [f32],
    pub pos1: &'a [f32],
    pub lambda: &'a [f32],
    pub rows_per_lambda: usize,
}

pub fn cpu(
    patches: &[f32],
    class: &[f32],
    pos: &[f32],
    dual: Option<&DualRef>,
    out: &mut [f32],
    s: EmbedShape,
) {
    let (t, w) = (s.tokens, s.width);
    if w == 0 {
        return;
    }
    out[..s.batch * t * w]
        .par_chunks_mut(w)
        .enumerate()
        .for_each(|(r, row)| {
            let (n, tok) = (r / t, r % t);
            let src: &[f32] = if tok == 0 {
                class
            } else {
                &patches[(n * (t - 1) + tok - 1) * w..(n * (t - 1) + tok) * w]
            };
            for i in 0..w {
                let mut e = pos[tok * w + i];
                let mut c = if tok == 0 { class[i] } else { 0.0 };
                if let Some(d) = dual {
                    let l = super::row_lambda(d.lambda, d.rows_per_lambda, r);
                    e = l.mul_add(d.pos1[tok * w + i] - e, e);
                    if tok == 0 {
                        c = l.mul_add(d.class1[i] - c, c);
                    }
                }
                row[i] = if tok == 0 { c + e } else { src[i] + e };
            }
        });
}

use crate::emu::Arg;
use crate::error::Result;
use crate::gpu::{Gpu, grid_1d};

/// Device addresses of the second embeddings and the λ per sample.
pub struct DualArgs {
    pub class1: u64,
    pub pos1: u64,
    pub lambda: u64,
    pub rows_per_lambda: usize,
}

/// Launches `ptx/embed_add.ptx`: one thread per output element; null
/// `class1/pos1/lambda` pointers mean no interpolation.
pub fn launch(
    gpu: &dyn Gpu,
    patches: u64,
    class: u64,
    pos: u64,
    dual: Option<DualArgs>,
    out: u64,
    s: EmbedShape,
) -> Result<()> {
    let total = s.batch * s.tokens * s.width;
    let d = dual.unwrap_or(DualArgs {
        class1: 0,
        pos1: 0,
        lambda: 0,
        rows_per_lambda: 1,
    });
    let args = [
        Arg::U64(patches),
        Arg::U64(class),
        Arg::U64(pos),
        Arg::U64(d.class1),
        Arg::U64(d.pos1),
        Arg::U64(d.lambda),
        Arg::U64(out),
        super::u32_arg("tokens", s.tokens)?,
        super::u32_arg("width", s.width)?,
        super::u32_arg("rows per λ", d.rows_per_lambda.max(1))?,
        super::u32_arg("elements", total)?,
    ];
    gpu.launch("embed_add", grid_1d(total, 256), [256, 1, 1], 0, &args)
}

/// Work of one call: reads patches, class and positions (twice with a
/// dual weight set), writes every token.
pub fn cost(s: EmbedShape, dual: bool) -> crate::profile::Cost {
    let (b, t, w) = (s.batch as f64, s.tokens as f64, s.width as f64);
    let sets = if dual { 2.0 } else { 1.0 };
    crate::profile::Cost {
        flops: b * t * w * if dual { 4.0 } else { 1.0 },
        bytes: 4.0 * (b * (t - 1.0) * w + b * t * w + sets * t * w),
    }
}

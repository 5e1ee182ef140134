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

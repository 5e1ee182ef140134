//! embed_add: assembles the token sequence. Token 0 of each sample is
//! `class + pos[0]`, token `t ≥ 1` is `patches[t−1] + pos[t]`; with a mix, the
//! class and position embeddings are lerped per sample.

use super::{Addr, Host, Mix, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedShape {
    pub batch: usize,
    pub tokens: usize,
    pub width: usize,
}

/// Second class/position embedding for a per-sample lerped embed_add.
#[derive(Clone, Copy, Debug)]
pub struct DualEmbed {
    pub class1: Buf,
    pub pos1: Buf,
    pub mix: Mix,
}

/// `out[n,t,w]`: token 0 = `class + pos[0]`, token t = `patches[t−1] + pos[t]`.
#[derive(Clone, Copy, Debug)]
pub struct EmbedAdd {
    pub patches: Buf,
    pub class: Buf,
    pub pos: Buf,
    pub dual: Option<DualEmbed>,
    pub out: Buf,
    pub shape: EmbedShape,
}

/// [`DualEmbed`] on the host: the second embeddings and λ as slices, for
/// the cpu implementation.
pub struct DualEmbedRef<'a> {
    pub class1: &'a [f32],
    pub pos1: &'a [f32],
    pub lambda: &'a [f32],
    pub rows_per_lambda: usize,
}

pub fn cpu(
    patches: &[f32],
    class: &[f32],
    pos: &[f32],
    dual: Option<&DualEmbedRef>,
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

impl OpDef for EmbedAdd {
    fn check(&self) -> Result<()> {
        let (op, s) = ("embed_add", self.shape);
        if s.tokens == 0 {
            return Err(crate::invalid!("{op}: needs at least the class token"));
        }
        let f = DType::F32;
        need(
            op,
            "patches",
            self.patches,
            f,
            elems(op, &[s.batch, s.tokens - 1, s.width])?,
        )?;
        need(op, "class", self.class, f, s.width)?;
        need(op, "pos", self.pos, f, elems(op, &[s.tokens, s.width])?)?;
        need(
            op,
            "out",
            self.out,
            f,
            elems(op, &[s.batch, s.tokens, s.width])?,
        )?;
        let mut ins = vec![
            ("patches", Some(self.patches)),
            ("class", Some(self.class)),
            ("pos", Some(self.pos)),
        ];
        if let Some(d) = self.dual {
            need(op, "class1", d.class1, f, s.width)?;
            need(op, "pos1", d.pos1, f, s.tokens * s.width)?;
            d.mix.check(op, s.batch * s.tokens)?;
            ins.extend([("class1", Some(d.class1)), ("pos1", Some(d.pos1))]);
            ins.push(("lambda", Some(d.mix.lambda)));
        }
        disjoint(op, ("out", self.out), &ins)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.dual.is_some())
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let mut ins = vec![Some(self.patches), Some(self.class), Some(self.pos)];
        if let Some(d) = self.dual {
            ins.extend([Some(d.class1), Some(d.pos1), Some(d.mix.lambda)]);
        }
        on_host(host, self.out, &ins, |i, o| {
            let d = self.dual.map(|d| DualEmbedRef {
                class1: i.f32(3),
                pos1: i.f32(4),
                lambda: i.f32(5),
                rows_per_lambda: d.mix.rows_per_lambda,
            });
            cpu(
                i.f32(0),
                i.f32(1),
                i.f32(2),
                d.as_ref(),
                o.f32(),
                self.shape,
            )
        })
    }

    /// One thread per output element; null `class1/pos1/lambda` pointers
    /// mean no interpolation.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        let total = s.batch * s.tokens * s.width;
        let (c1, p1, lam, rpl) = match self.dual {
            Some(d) => (
                at(d.class1)?,
                at(d.pos1)?,
                at(d.mix.lambda)?,
                d.mix.rows_per_lambda,
            ),
            None => (0, 0, 0, 1),
        };
        let args = [
            Arg::U64(at(self.patches)?),
            Arg::U64(at(self.class)?),
            Arg::U64(at(self.pos)?),
            Arg::U64(c1),
            Arg::U64(p1),
            Arg::U64(lam),
            Arg::U64(at(self.out)?),
            u32_arg("tokens", s.tokens)?,
            u32_arg("width", s.width)?,
            u32_arg("rows per λ", rpl)?,
            u32_arg("elements", total)?,
        ];
        gpu.launch("embed_add", Dims::grid_stride(total, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for EmbedAdd {
    const TOLERANCE: f64 = 1e-6;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = EmbedShape {
            batch: 3,
            tokens: 10,
            width: 24,
        };
        let patches = i.f32(3 * 9 * 24, 1, 1.0);
        let (class, pos) = (i.f32(24, 2, 1.0), i.f32(240, 3, 1.0));
        let mix = i.mix(3, 10);
        let dual = Some(DualEmbed {
            class1: i.f32(24, 4, 1.0),
            pos1: i.f32(240, 5, 1.0),
            mix,
        });
        let out = i.zeros(DType::F32, 720);
        (
            EmbedAdd {
                patches,
                class,
                pos,
                dual,
                out,
                shape,
            },
            out,
        )
    }
}

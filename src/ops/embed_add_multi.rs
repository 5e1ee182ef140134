//! embed_add_multi: embed_add with each sample's class and position
//! embeddings merged over T stacked sets, `e0 + Σ_t k_t·(e_t − e0)`: the
//! token assembly of multi-task DaWin's batched per-sample merging.

use super::embed_add::EmbedShape;
use super::{Addr, Host, MultiMix, MultiRef, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

/// `out[n,t,w]`: token 0 = `class + pos[0]`, token t = `patches[t−1] + pos[t]`,
/// class and pos merged per sample.
#[derive(Clone, Copy, Debug)]
pub struct EmbedAddMulti {
    pub patches: Buf,
    /// Every set of the class embedding, stacked (see [`MultiMix::widen`]).
    pub class: Buf,
    /// Every set of the position embedding, stacked like `class`.
    pub pos: Buf,
    pub mix: MultiMix,
    pub out: Buf,
    pub shape: EmbedShape,
}

/// cpu implementation: per token row, the merged position row (and class) plus
/// the patch row.
pub fn cpu(
    patches: &[f32],
    (class, pos): (&[f32], &[f32]),
    mix: &MultiRef,
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
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(e, c), (r, row)| {
                let (n, tok) = (r / t, r % t);
                let pos_row = &pos[tok * w..];
                mix.merge(pos_row, w, r, e);
                if tok == 0 {
                    mix.merge(class, w, r, c);
                } else {
                    let p = (n * (t - 1) + tok - 1) * w;
                    c.clear();
                    c.extend_from_slice(&patches[p..p + w]);
                }
                for ((o, &ci), &ei) in row.iter_mut().zip(c.iter()).zip(e.iter()) {
                    *o = ci + ei;
                }
            },
        );
}

/// Work of one call: the merge of every position value (and class) per
/// token; reads patches and every set of class and pos, writes every token.
pub fn cost(s: EmbedShape, sets: usize) -> crate::profile::Cost {
    let (b, t, w, k) = (s.batch as f64, s.tokens as f64, s.width as f64, sets as f64);
    crate::profile::Cost {
        flops: b * t * w * (1.0 + 2.0 * k),
        bytes: 4.0 * (b * (t - 1.0) * w + b * t * w + (k + 1.0) * (t + 1.0) * w),
    }
}

impl OpDef for EmbedAddMulti {
    fn check(&self) -> Result<()> {
        let (op, s, x, f) = ("embed_add_multi", self.shape, self.mix, DType::F32);
        if s.tokens == 0 {
            return Err(crate::invalid!("{op}: needs at least the class token"));
        }
        let patch_len = elems(op, &[s.batch, s.tokens - 1, s.width])?;
        need(op, "patches", self.patches, f, patch_len)?;
        x.check_stacked(op, "class", self.class, s.width)?;
        x.check_stacked(op, "pos", self.pos, elems(op, &[s.tokens, s.width])?)?;
        let out_len = elems(op, &[s.batch, s.tokens, s.width])?;
        need(op, "out", self.out, f, out_len)?;
        x.check(op, s.batch * s.tokens)?;
        let ins = [
            ("patches", Some(self.patches)),
            ("class", Some(self.class)),
            ("pos", Some(self.pos)),
            ("coef", Some(x.coef)),
        ];
        disjoint(op, ("out", self.out), &ins)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape, self.mix.sets)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let ins = [
            Some(self.patches),
            Some(self.class),
            Some(self.pos),
            Some(self.mix.coef),
        ];
        on_host(host, self.out, &ins, |i, o| {
            let mix = MultiRef::new(i.f32(3), &self.mix);
            cpu(i.f32(0), (i.f32(1), i.f32(2)), &mix, o.f32(), self.shape)
        })
    }

    /// One thread per output element, grid-stride.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let (s, x) = (self.shape, self.mix);
        let total = s.batch * s.tokens * s.width;
        let args = [
            Arg::U64(at(self.patches)?),
            Arg::U64(at(self.class)?),
            Arg::U64(at(self.pos)?),
            Arg::U64(at(x.coef)?),
            Arg::U64(at(self.out)?),
            u32_arg("tokens", s.tokens)?,
            u32_arg("width", s.width)?,
            u32_arg("sets", x.sets)?,
            u32_arg("set stride", x.stride)?,
            u32_arg("rows per sample", x.rows_per_sample)?,
            u32_arg("elements", total)?,
        ];
        gpu.launch("embed_add_multi", Dims::grid_stride(total, 256), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for EmbedAddMulti {
    const TOLERANCE: f64 = 1e-6;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = EmbedShape {
            batch: 3,
            tokens: 10,
            width: 24,
        };
        let patches = i.f32(3 * 9 * 24, 1, 1.0);
        // Three task sets 250 elements apart behind the base.
        let (class, pos) = (i.f32(3 * 250 + 24, 2, 1.0), i.f32(3 * 250 + 240, 3, 1.0));
        let (mix, out) = (i.multi(3, 250, 10), i.zeros(DType::F32, 720));
        (
            EmbedAddMulti {
                patches,
                class,
                pos,
                mix,
                out,
                shape,
            },
            out,
        )
    }
}

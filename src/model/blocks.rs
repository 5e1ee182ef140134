//! A stack of pre-LN transformer blocks in f32, shared by both CLIP towers
//! (the image tower's full attention, the text tower's causal one), and the
//! single-or-dual dispatch of the parameterised ops: with a second weight
//! set and a λ per sample each linear layer and layernorm runs in its dual
//! form (docs/design.md §1).

use super::{Act, Block};
use crate::buf::Buf;
use crate::error::Result;
use crate::exec::Executor;
use crate::ops::attention::{Attention, AttentionShape};
use crate::ops::gemm::{Gemm, GemmShape};
use crate::ops::gemm_dual::{DualGemm, GemmDual};
use crate::ops::layernorm::{DualNorm, LayerNorm, LayerNormShape};
use crate::ops::{Mix, add::Add, gelu::Gelu, quick_gelu::QuickGelu};

/// A weight and its optional bias.
pub(super) type Linear = (Buf, Option<Buf>);

/// `c = a · bᵀ + bias`, or with `other = (weights, mix)` each row's
/// interpolation of the two linear layers.
pub(super) fn linear(
    ex: &dyn Executor,
    a: Buf,
    (b, bias): Linear,
    other: Option<(Linear, Mix)>,
    c: Buf,
    shape: GemmShape,
) -> Result<()> {
    match other {
        Some(((b1, bias1), mix)) => {
            let dual = DualGemm { b1, bias1, mix };
            let (b0, bias0) = (b, bias);
            ex.run(GemmDual {
                a,
                b0,
                bias0,
                dual,
                c,
                shape,
            })
        }
        None => ex.run(Gemm {
            a,
            b,
            bias,
            c,
            shape,
        }),
    }
}

/// Layernorm of `x` into `y` with (γ, β), or per row their interpolation.
pub(super) fn norm(
    ex: &dyn Executor,
    x: Buf,
    y: Buf,
    (gamma, beta): (Buf, Buf),
    other: Option<((Buf, Buf), Mix)>,
    shape: LayerNormShape,
) -> Result<()> {
    let dual = other.map(|((gamma1, beta1), mix)| DualNorm { gamma1, beta1, mix });
    ex.run(LayerNorm {
        x,
        y,
        gamma,
        beta,
        dual,
        shape,
    })
}

/// The geometry of a block stack.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stack {
    pub width: usize,
    /// Token rows per sample.
    pub tokens: usize,
    pub heads: usize,
    pub mlp: usize,
    pub act: Act,
    pub ln_eps: f32,
    pub causal: bool,
}

/// Runs `blocks` on the residual stream `x[n·tokens, width]`; with `dual`,
/// sample `i` runs `(1−λ_i)·blocks + λ_i·other` (`lambda` on the device).
pub(super) fn run_f32(
    ex: &dyn Executor,
    s: Stack,
    blocks: &[Block<Buf>],
    dual: Option<(&[Block<Buf>], Buf)>,
    x: Buf,
    n: usize,
) -> Result<()> {
    let (w, t) = (s.width, s.tokens);
    let rows = n * t;
    let [h, att, o] = [0; 3].map(|_| ex.alloc(rows * w));
    let (h, att, o) = (h?, att?, o?);
    let qkv = ex.alloc(rows * 3 * w)?;
    let f = ex.alloc(rows * s.mlp)?;
    let shape = |n, k| GemmShape { m: rows, n, k };
    let attention = AttentionShape {
        batch: n,
        tokens: t,
        heads: s.heads,
        head_dim: w / s.heads,
        causal: s.causal,
    };
    let ln = LayerNormShape::dense(rows, w, s.ln_eps);
    let mix = dual.map(|(_, lambda)| Mix {
        lambda,
        rows_per_lambda: t,
    });
    for (i, b) in blocks.iter().enumerate() {
        let q = dual.map(|(q, _)| &q[i]);
        let lin =
            |pick: fn(&Block<Buf>) -> Linear| (pick(b), q.zip(mix).map(|(q, m)| (pick(q), m)));
        let ln_of =
            |pick: fn(&Block<Buf>) -> (Buf, Buf)| (pick(b), q.zip(mix).map(|(q, m)| (pick(q), m)));
        let (p, d) = ln_of(|b| (b.ln1_g, b.ln1_b));
        norm(ex, x, *h, p, d, ln)?;
        let (p, d) = lin(|b| (b.qkv_w, Some(b.qkv_b)));
        linear(ex, *h, p, d, *qkv, shape(3 * w, w))?;
        ex.run(Attention {
            qkv: *qkv,
            out: *att,
            shape: attention,
        })?;
        let (p, d) = lin(|b| (b.out_w, Some(b.out_b)));
        linear(ex, *att, p, d, *o, shape(w, w))?;
        ex.run(Add { x: *o, y: x })?;
        let (p, d) = ln_of(|b| (b.ln2_g, b.ln2_b));
        norm(ex, x, *h, p, d, ln)?;
        let (p, d) = lin(|b| (b.fc1_w, Some(b.fc1_b)));
        linear(ex, *h, p, d, *f, shape(s.mlp, w))?;
        match s.act {
            Act::QuickGelu => ex.run(QuickGelu { x: *f })?,
            Act::Gelu => ex.run(Gelu { x: *f })?,
        }
        let (p, d) = lin(|b| (b.fc2_w, Some(b.fc2_b)));
        linear(ex, *f, p, d, *o, shape(w, s.mlp))?;
        ex.run(Add { x: *o, y: x })?;
    }
    Ok(())
}

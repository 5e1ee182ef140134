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
use crate::ops::gemm_multi::GemmMulti;
use crate::ops::layernorm::{DualNorm, LayerNorm, LayerNormShape};
use crate::ops::layernorm_multi::LayerNormMulti;
use crate::ops::{Mix, MultiMix, add::Add, gelu::Gelu, quick_gelu::QuickGelu};

/// A weight and its optional bias.
pub(super) type Linear = (Buf, Option<Buf>);

/// What a parameterised op combines with its own (base) tensor `T`, per
/// sample: nothing, a second model's tensor and λ, or the tensor's stacked
/// task sets and their coefficients.
#[derive(Clone, Copy)]
pub(super) enum With<T> {
    Alone,
    Dual(T, Mix),
    Stacked(MultiMix),
}

/// The per-sample combination of a whole forward, before the rows per
/// sample of each op are known: nothing, a second parameter set `P` and
/// λ (on the device), or stacked task sets.
pub(super) enum Others<'p, P: ?Sized> {
    Alone,
    Dual(&'p P, Buf),
    Stacked(Stacked),
}

/// Task sets stacked after the base's parameters (a
/// [`crate::model::stack::ModelStack`]) and each sample's coefficients
/// `[n, sets]` on the device.
#[derive(Clone, Copy)]
pub struct Stacked {
    pub coef: Buf,
    pub sets: usize,
    pub stride: usize,
}

// By hand: a derive would ask `P: Copy`, and only the reference is copied.
impl<P: ?Sized> Clone for Others<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: ?Sized> Copy for Others<'_, P> {}

impl<'p, P: ?Sized> Others<'p, P> {
    /// The combination of the tensor `pick` selects, for an op whose rows
    /// come `rows_per_sample` to a sample.
    pub(super) fn with<T>(&self, pick: impl Fn(&P) -> T, rows_per_sample: usize) -> With<T> {
        match *self {
            Others::Alone => With::Alone,
            Others::Dual(q, lambda) => With::Dual(
                pick(q),
                Mix {
                    lambda,
                    rows_per_lambda: rows_per_sample,
                },
            ),
            Others::Stacked(s) => With::Stacked(MultiMix {
                coef: s.coef,
                sets: s.sets,
                stride: s.stride,
                rows_per_sample,
            }),
        }
    }

    /// The same combination over a part of `P` (the blocks of a model).
    pub(super) fn map<Q: ?Sized>(self, part: impl Fn(&'p P) -> &'p Q) -> Others<'p, Q> {
        match self {
            Others::Alone => Others::Alone,
            Others::Dual(q, lambda) => Others::Dual(part(q), lambda),
            Others::Stacked(s) => Others::Stacked(s),
        }
    }
}

/// `c = a · bᵀ + bias`, or per row its interpolation with a second linear
/// layer, or its merge with the stacked task sets.
pub(super) fn linear(
    ex: &dyn Executor,
    a: Buf,
    (b, bias): Linear,
    with: With<Linear>,
    c: Buf,
    shape: GemmShape,
) -> Result<()> {
    match with {
        With::Dual((b1, bias1), mix) => {
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
        With::Stacked(mix) => ex.run(GemmMulti {
            a,
            b: mix.widen(b),
            bias: bias.map(|x| mix.widen(x)),
            mix,
            c,
            shape,
        }),
        With::Alone => ex.run(Gemm {
            a,
            b,
            bias,
            c,
            shape,
        }),
    }
}

/// Layernorm of `x` into `y` with (γ, β), or per row their interpolation
/// or merge.
pub(super) fn norm(
    ex: &dyn Executor,
    x: Buf,
    y: Buf,
    (gamma, beta): (Buf, Buf),
    with: With<(Buf, Buf)>,
    shape: LayerNormShape,
) -> Result<()> {
    let dual = match with {
        With::Alone => None,
        With::Dual((gamma1, beta1), mix) => Some(DualNorm { gamma1, beta1, mix }),
        With::Stacked(mix) => {
            return ex.run(LayerNormMulti {
                x,
                y,
                gamma: mix.widen(gamma),
                beta: mix.widen(beta),
                mix,
                shape,
            });
        }
    };
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

/// Runs `blocks` on the residual stream `x[n·tokens, width]`; with a dual
/// `others`, sample `i` runs `(1−λ_i)·blocks + λ_i·other`, with stacked
/// ones its merge of the task sets.
pub(super) fn run_f32(
    ex: &dyn Executor,
    s: Stack,
    blocks: &[Block<Buf>],
    others: Others<[Block<Buf>]>,
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
    for (i, b) in blocks.iter().enumerate() {
        let lin = |pick: fn(&Block<Buf>) -> Linear| (pick(b), others.with(|q| pick(&q[i]), t));
        let ln_of =
            |pick: fn(&Block<Buf>) -> (Buf, Buf)| (pick(b), others.with(|q| pick(&q[i]), t));
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

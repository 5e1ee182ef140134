//! The CLIP ViT image tower and linear head, written once against
//! [`Executor`]. With a second weight set and a λ per sample, every
//! parameterised op runs in its dual form: DaWin's exact per-sample
//! interpolation in one batched pass (docs/design.md §1).

use super::blocks::{self, Others, Stacked, With};
use super::pixels::{HostPixels, Normalization};
use super::placed::{Bf16Linears, BlockLinears, PlacedModel};
use super::stack::ModelStack;
use super::{Act, Block, ModelSpec, Params};
use crate::buf::{Buf, DType};
use crate::error::Result;
use crate::exec::{Executor, OwnedBuf};
use crate::ops::attention::{Attention, AttentionShape};
use crate::ops::attention_bf16::{self, AttentionBf16};
use crate::ops::cast_bf16::CastBf16;
use crate::ops::embed_add::{DualEmbed, EmbedAdd, EmbedShape};
use crate::ops::embed_add_multi::EmbedAddMulti;
use crate::ops::gemm::GemmShape;
use crate::ops::gemm_bf16::{Activation, Epilogue, GemmBf16};
use crate::ops::gemm_dual::DualGemm;
use crate::ops::gemm_dual_bf16::GemmDualBf16;
use crate::ops::layernorm::LayerNormShape;
use crate::ops::patch_embed::{PatchEmbed, PatchShape};
use crate::ops::patch_embed_u8::PatchEmbedU8;
use crate::ops::{Mix, l2_normalize::L2Normalize};

/// The second weight set of an exact per-sample interpolation and each
/// sample's λ (the weight on `other`).
#[derive(Clone, Copy)]
pub struct DualWeights<'m, 'a> {
    pub other: &'m PlacedModel<'a>,
    pub lambda: &'m [f32],
}

/// Host copies of a forward's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// `[n, embed_dim]`, projected, before normalisation.
    pub embeds: Vec<f32>,
    /// `[n, classes]` when the model has a head.
    pub logits: Option<Vec<f32>>,
}

/// Picks one weight (and its optional bias) out of a parameter set, so the
/// same selection applies to both models of a dual op.
type PickLinear<'a> = &'a dyn Fn(&Params<Buf>) -> (Buf, Option<Buf>);
type PickNorm<'a> = &'a dyn Fn(&Params<Buf>) -> (Buf, Buf);

/// The parameterised ops of one forward: single, dual or stacked.
struct Layers<'e> {
    ex: &'e dyn Executor,
    p: &'e Params<Buf>,
    /// What each op combines `p` with per sample.
    others: Others<'e, Params<Buf>>,
    spec: &'e ModelSpec,
}

impl Layers<'_> {
    /// A linear layer; `pick` selects the same tensor in every set.
    fn linear(&self, a: Buf, pick: PickLinear, c: Buf, shape: GemmShape, rpl: usize) -> Result<()> {
        let with = self.others.with(pick, rpl);
        blocks::linear(self.ex, a, pick(self.p), with, c, shape)
    }

    fn norm(
        &self,
        x: Buf,
        y: Buf,
        pick: PickNorm,
        shape: LayerNormShape,
        rpl: usize,
    ) -> Result<()> {
        let with = self.others.with(pick, rpl);
        blocks::norm(self.ex, x, y, pick(self.p), with, shape)
    }

    /// A dense layernorm over the `rows` token rows.
    fn norm_tokens(&self, x: Buf, y: Buf, pick: PickNorm) -> Result<()> {
        let s = self.spec;
        let rows = x.len / s.width;
        let shape = LayerNormShape::dense(rows, s.width, s.ln_eps);
        self.norm(x, y, pick, shape, s.tokens())
    }
}

/// A forward's images `[n, c, s, s]` (already preprocessed): on the host,
/// or staged on the device ([`stage`]) while an earlier forward ran.
pub enum Pixels<'p, 'e> {
    Host(HostPixels<'p>),
    /// Normalised on the device when the staged values are bytes.
    Staged(OwnedBuf<'e>, Option<Normalization>),
}

impl Pixels<'_, '_> {
    fn len(&self) -> usize {
        match self {
            Pixels::Host(p) => p.len(),
            Pixels::Staged(b, _) => b.len,
        }
    }
}

/// Copies images to the device while the work queued so far runs (on
/// `cuda`, on a second stream), for a later [`forward_with`].
pub fn stage<'e>(
    ex: &'e dyn Executor,
    pixels: HostPixels,
) -> Result<(OwnedBuf<'e>, Option<Normalization>)> {
    match pixels {
        HostPixels::F32(p) => Ok((ex.upload_ahead(p)?, None)),
        HostPixels::U8(b, norm) => Ok((ex.upload_ahead(b)?, Some(norm))),
    }
}

/// Forward of `n` images `pixels[n, c, s, s]` (already preprocessed).
///
/// With `dual`, sample `i` is evaluated exactly as the merged model
/// `(1−λ_i)·m + λ_i·other`, without building it.
pub fn forward(
    ex: &dyn Executor,
    m: &PlacedModel,
    pixels: &[f32],
    n: usize,
    dual: Option<DualWeights>,
) -> Result<Output> {
    forward_images(ex, m, pixels.into(), n, dual)
}

/// [`forward`] of f32 or u8 images.
pub fn forward_images(
    ex: &dyn Executor,
    m: &PlacedModel,
    pixels: HostPixels,
    n: usize,
    dual: Option<DualWeights>,
) -> Result<Output> {
    forward_with(ex, m, Pixels::Host(pixels), n, dual, &mut || {})
}

/// [`forward`] of host or staged images; `between` runs once every kernel
/// is queued and before the results are read, so that what it queues (the
/// next batch's [`stage`]) overlaps this forward on an asynchronous device.
pub fn forward_with(
    ex: &dyn Executor,
    m: &PlacedModel,
    pixels: Pixels,
    n: usize,
    dual: Option<DualWeights>,
    between: &mut dyn FnMut(),
) -> Result<Output> {
    check_inputs(m, pixels.len(), n, dual)?;
    if n == 0 {
        return Ok(no_output(&m.spec));
    }
    let lambda = dual.map(|d| ex.upload(d.lambda)).transpose()?;
    let others = match (dual, &lambda) {
        (Some(d), Some(l)) => Others::Dual(&d.other.params, **l),
        _ => Others::Alone,
    };
    let other_bf16 = dual.and_then(|d| d.other.bf16.as_ref());
    let out = run(ex, m, pixels, n, others, other_bf16)?;
    between();
    let out = out.read(ex)?;
    ex.timing().synchronize()?;
    Ok(out)
}

/// Forward of `n` images where sample `i` is evaluated exactly as the
/// multi-task merge `θ0 + Σ_t coef[i, t]·(θ_t − θ0)` of the stack's base and
/// task sets, without building it: every parameterised op runs in its
/// stacked form (gemm_multi, layernorm_multi, embed_add_multi).
pub fn forward_stacked(
    ex: &dyn Executor,
    stack: &ModelStack,
    pixels: &[f32],
    n: usize,
    coef: &[f32],
) -> Result<Output> {
    forward_stacked_images(ex, stack, pixels.into(), n, coef)
}

/// [`forward_stacked`] of f32 or u8 images.
pub fn forward_stacked_images(
    ex: &dyn Executor,
    stack: &ModelStack,
    pixels: HostPixels,
    n: usize,
    coef: &[f32],
) -> Result<Output> {
    let base = stack.model(0);
    check_inputs(&base, pixels.len(), n, None)?;
    let sets = stack.sets() - 1;
    if coef.len() != n * sets {
        return Err(crate::invalid!(
            "{} task coefficients for {n} samples of {sets} tasks",
            coef.len()
        ));
    }
    if n == 0 {
        return Ok(no_output(&base.spec));
    }
    let coef = ex.upload(coef)?;
    let others = Others::Stacked(Stacked {
        coef: *coef,
        sets,
        stride: stack.stride(),
    });
    let out = run(ex, &base, Pixels::Host(pixels), n, others, None)?.read(ex)?;
    ex.timing().synchronize()?;
    Ok(out)
}

/// The output of no images: nothing to upload or run.
fn no_output(s: &ModelSpec) -> Output {
    Output {
        embeds: vec![],
        logits: s.classes.map(|_| vec![]),
    }
}

/// The forward itself, for any combination of weight sets, on n ≥ 1 images:
/// every kernel queued, the results still on the device.
fn run<'e>(
    ex: &'e dyn Executor,
    m: &PlacedModel,
    pixels: Pixels<'_, 'e>,
    n: usize,
    others: Others<Params<Buf>>,
    other_bf16: Option<&Bf16Linears>,
) -> Result<Results<'e>> {
    let s = &m.spec;
    let layers = Layers {
        ex,
        p: &m.params,
        others,
        spec: s,
    };
    let x = embed(&layers, pixels, n)?;
    match &m.bf16 {
        Some(lin) => Bf16Blocks::new(&layers, lin, other_bf16, n).run(*x)?,
        None => f32_blocks(&layers, *x, n)?,
    }
    head(ex, &layers, *x, n)
}

/// The requests `forward` refuses: pixel counts that do not match, a second
/// model of another architecture or precision, λ of the wrong length.
fn check_inputs(
    m: &PlacedModel,
    pixel_count: usize,
    n: usize,
    dual: Option<DualWeights>,
) -> Result<()> {
    let s = &m.spec;
    let img = s.channels * s.image_size * s.image_size;
    if pixel_count != n * img {
        return Err(crate::invalid!(
            "forward got {pixel_count} pixel values for {n} images of {}×{}×{}",
            s.channels,
            s.image_size,
            s.image_size
        ));
    }
    let Some(d) = dual else { return Ok(()) };
    if d.other.spec != *s {
        return Err(crate::invalid!(
            "cannot interpolate models of different architectures: {:?} vs {:?}",
            s,
            d.other.spec
        ));
    }
    if d.lambda.len() != n {
        return Err(crate::invalid!(
            "{} λ values for {n} samples",
            d.lambda.len()
        ));
    }
    if d.other.precision() != m.precision() {
        return Err(crate::invalid!(
            "cannot interpolate a {} model with a {} one: upload both in the same precision",
            m.precision(),
            d.other.precision()
        ));
    }
    Ok(())
}

/// Patch conv as im2col + gemm, then class/position embeddings, ln_pre:
/// the token rows `x[n·tokens, width]`.
fn embed<'e>(l: &Layers<'e>, pixels: Pixels<'_, 'e>, n: usize) -> Result<OwnedBuf<'e>> {
    let (ex, s) = (l.ex, l.spec);
    let (w, t, g2) = (s.width, s.tokens(), s.grid() * s.grid());
    let ps = PatchShape {
        batch: n,
        channels: s.channels,
        image: s.image_size,
        patch: s.patch,
    };
    let (px, norm) = match pixels {
        Pixels::Host(HostPixels::F32(p)) => (ex.upload(p)?, None),
        Pixels::Host(HostPixels::U8(b, norm)) => (ex.upload(b)?, Some(norm)),
        Pixels::Staged(b, norm) => (b, norm),
    };
    let cols = ex.alloc(ps.rows() * ps.cols())?;
    let (pixels, out, shape) = (*px, *cols, ps);
    match norm {
        None => ex.run(PatchEmbed { pixels, out, shape })?,
        Some(Normalization { mean, std }) => ex.run(PatchEmbedU8 {
            pixels,
            out,
            shape,
            mean,
            std,
        })?,
    }
    let pe = ex.alloc(n * g2 * w)?;
    let conv = GemmShape {
        m: n * g2,
        n: w,
        k: ps.cols(),
    };
    l.linear(*cols, &|p| (p.conv, None), *pe, conv, g2)?;
    let x = ex.alloc(n * t * w)?;
    let shape = EmbedShape {
        batch: n,
        tokens: t,
        width: w,
    };
    let (class, pos) = (l.p.class, l.p.pos);
    let (patches, out) = (*pe, *x);
    let dual = match l.others.with(|q| (q.class, q.pos), t) {
        With::Alone => None,
        With::Dual((class1, pos1), mix) => Some(DualEmbed { class1, pos1, mix }),
        With::Stacked(mix) => {
            ex.run(EmbedAddMulti {
                patches,
                class: mix.widen(class),
                pos: mix.widen(pos),
                mix,
                out,
                shape,
            })?;
            return norm_pre(l, x);
        }
    };
    ex.run(EmbedAdd {
        patches,
        class,
        pos,
        dual,
        out,
        shape,
    })?;
    norm_pre(l, x)
}

/// ln_pre over the token rows, in place.
fn norm_pre<'e>(l: &Layers<'e>, x: OwnedBuf<'e>) -> Result<OwnedBuf<'e>> {
    l.norm_tokens(*x, *x, &|p| (p.ln_pre_g, p.ln_pre_b))?;
    Ok(x)
}

/// The transformer blocks in f32, on the residual stream `x` of `n` images.
fn f32_blocks(l: &Layers, x: Buf, n: usize) -> Result<()> {
    let others = l.others.map(|q| &q.blocks[..]);
    blocks::run_f32(l.ex, l.spec.stack(), &l.p.blocks, others, x, n)
}

/// ln_post on each sample's class token, the projection, and the
/// classifier `normalize(embedding) · Wᵀ + b`.
fn head<'e>(ex: &'e dyn Executor, l: &Layers, x: Buf, n: usize) -> Result<Results<'e>> {
    let s = l.spec;
    let (w, d) = (s.width, s.embed_dim);
    // ln_post reads only each sample's class token (stride tokens·width).
    let cls = ex.alloc(n * w)?;
    let post = LayerNormShape {
        rows: n,
        width: w,
        x_stride: s.tokens() * w,
        y_stride: w,
        eps: s.ln_eps,
    };
    l.norm(x, *cls, &|p| (p.ln_post_g, p.ln_post_b), post, 1)?;
    let embeds = match l.p.proj {
        Some(_) => {
            let e = ex.alloc(n * d)?;
            let sh = GemmShape { m: n, n: d, k: w };
            l.linear(*cls, &|p| (p.proj.expect("has_proj"), None), *e, sh, 1)?;
            e
        }
        None => cls,
    };
    let logits = match s.classes {
        Some(c) => {
            let en = ex.alloc(n * d)?;
            ex.run(L2Normalize {
                x: *embeds,
                y: *en,
                rows: n,
                width: d,
            })?;
            let lg = ex.alloc(n * c)?;
            let sh = GemmShape { m: n, n: c, k: d };
            l.linear(*en, &|p| (p.head_w.expect("head"), p.head_b), *lg, sh, 1)?;
            Some(lg)
        }
        None => None,
    };
    Ok(Results { embeds, logits })
}

/// A forward's results while still on the device.
struct Results<'e> {
    embeds: OwnedBuf<'e>,
    logits: Option<OwnedBuf<'e>>,
}

impl Results<'_> {
    fn read(&self, ex: &dyn Executor) -> Result<Output> {
        let logits = self.logits.as_ref().map(|l| ex.download(**l)).transpose()?;
        let embeds = ex.download(*self.embeds)?;
        Ok(Output { embeds, logits })
    }
}

/// The transformer blocks in bf16: f32 residual stream `x`, layernorm in
/// f32 then cast to bf16, bf16 gemms (dual when interpolating) and flash
/// attention; the out-projection and fc2 add into `x` in their epilogue.
struct Bf16Blocks<'l, 'e> {
    layers: &'l Layers<'e>,
    lin: &'l Bf16Linears<'e>,
    other: Option<&'l Bf16Linears<'e>>,
    rows: usize,
    attention: AttentionShape,
}

/// The linear layers of a block, as (bf16 weight, f32 bias) selectors.
#[derive(Clone, Copy)]
enum Layer {
    Qkv,
    Out,
    Fc1,
    Fc2,
}

impl Layer {
    fn weight(self, l: &BlockLinears) -> Buf {
        match self {
            Layer::Qkv => l.qkv,
            Layer::Out => l.out,
            Layer::Fc1 => l.fc1,
            Layer::Fc2 => l.fc2,
        }
    }

    fn bias(self, b: &Block<Buf>) -> Buf {
        match self {
            Layer::Qkv => b.qkv_b,
            Layer::Out => b.out_b,
            Layer::Fc1 => b.fc1_b,
            Layer::Fc2 => b.fc2_b,
        }
    }
}

impl<'l, 'e> Bf16Blocks<'l, 'e> {
    fn new(
        layers: &'l Layers<'e>,
        lin: &'l Bf16Linears<'e>,
        other: Option<&'l Bf16Linears<'e>>,
        n: usize,
    ) -> Self {
        let s = layers.spec;
        let attention = AttentionShape {
            batch: n,
            tokens: s.tokens(),
            heads: s.heads,
            head_dim: s.head_dim(),
            causal: false,
        };
        let rows = n * s.tokens();
        Bf16Blocks {
            layers,
            lin,
            other,
            rows,
            attention,
        }
    }

    /// `c = epilogue(a · Wᵀ + bias)` for `layer` of block `i`.
    fn linear(
        &self,
        a: Buf,
        layer: Layer,
        i: usize,
        c: Buf,
        shape: GemmShape,
        ep: Epilogue,
    ) -> Result<()> {
        let l = self.layers;
        let bias = Some(layer.bias(&l.p.blocks[i]));
        let b = layer.weight(&self.lin.blocks[i]);
        let rows_per_lambda = self.attention.tokens;
        match (self.other, l.others) {
            (Some(other), Others::Dual(q, lambda)) => {
                let b1 = layer.weight(&other.blocks[i]);
                let bias1 = Some(layer.bias(&q.blocks[i]));
                let mix = Mix {
                    lambda,
                    rows_per_lambda,
                };
                let dual = DualGemm { b1, bias1, mix };
                let (b0, bias0, epilogue) = (b, bias, ep);
                l.ex.run(GemmDualBf16 {
                    a,
                    b0,
                    bias0,
                    dual,
                    c,
                    shape,
                    epilogue,
                })
            }
            (None, Others::Alone) => l.ex.run(GemmBf16 {
                a,
                b,
                bias,
                c,
                shape,
                epilogue: ep,
            }),
            // Neither is built by a caller today; refused, never run as
            // the single model.
            (_, Others::Stacked(_)) => Err(crate::invalid!(
                "stacked (multi-task) weights have no bf16 forward: use f32"
            )),
            (Some(_), Others::Alone) | (None, Others::Dual(..)) => Err(crate::invalid!(
                "a dual bf16 forward needs the second model's bf16 weights and λ together"
            )),
        }
    }

    /// Runs every block on the residual stream `x`.
    fn run(&self, x: Buf) -> Result<()> {
        let (ex, s) = (self.layers.ex, self.layers.spec);
        let (rows, w, mlp) = (self.rows, s.width, s.mlp);
        let bf16 = |len| ex.alloc_as(DType::Bf16, len);
        let h = ex.alloc(rows * w)?;
        let (hb, att, f) = (bf16(rows * w)?, bf16(rows * w)?, bf16(rows * mlp)?);
        let qkv = QkvScratch::new(ex, self.attention, rows * w)?;
        let plain = Epilogue::PLAIN_BF16;
        let residual = Epilogue {
            activation: Activation::None,
            f32_out: true,
            accumulate: true,
        };
        let activation = match s.act {
            Act::QuickGelu => Activation::QuickGelu,
            Act::Gelu => Activation::Gelu,
        };
        let act = Epilogue {
            activation,
            ..plain
        };
        let shape = |n, k| GemmShape { m: rows, n, k };
        let norm = |i: usize, second: bool| {
            let pick = move |p: &Params<Buf>| {
                let b = &p.blocks[i];
                if second {
                    (b.ln2_g, b.ln2_b)
                } else {
                    (b.ln1_g, b.ln1_b)
                }
            };
            self.layers.norm_tokens(x, *h, &pick)?;
            ex.run(CastBf16 { x: *h, y: *hb })
        };
        for i in 0..s.layers {
            norm(i, false)?;
            self.attention_block(*hb, i, &qkv, *att)?;
            self.linear(*att, Layer::Out, i, x, shape(w, w), residual)?;
            norm(i, true)?;
            self.linear(*hb, Layer::Fc1, i, *f, shape(mlp, w), act)?;
            self.linear(*f, Layer::Fc2, i, x, shape(w, mlp), residual)?;
        }
        Ok(())
    }

    /// qkv projection and attention of block `i`, bf16 `hb` into bf16 `att`.
    fn attention_block(&self, hb: Buf, i: usize, scratch: &QkvScratch, att: Buf) -> Result<()> {
        let ex = self.layers.ex;
        let (rows, w, a) = (self.rows, self.layers.spec.width, self.attention);
        let shape = GemmShape {
            m: rows,
            n: 3 * w,
            k: w,
        };
        match scratch {
            QkvScratch::Flash(qkv) => {
                self.linear(hb, Layer::Qkv, i, **qkv, shape, Epilogue::PLAIN_BF16)?;
                ex.run(AttentionBf16 {
                    qkv: **qkv,
                    out: att,
                    shape: a,
                })
            }
            QkvScratch::F32 { qkv, out } => {
                let f32_out = Epilogue {
                    f32_out: true,
                    ..Epilogue::PLAIN_BF16
                };
                self.linear(hb, Layer::Qkv, i, **qkv, shape, f32_out)?;
                ex.run(Attention {
                    qkv: **qkv,
                    out: **out,
                    shape: a,
                })?;
                ex.run(CastBf16 { x: **out, y: att })
            }
        }
    }
}

/// Where the bf16 blocks keep q, k, v: bf16 for the flash kernel, or, for
/// head dims it does not cover, f32 for the f32 attention (then cast).
enum QkvScratch<'e> {
    Flash(OwnedBuf<'e>),
    F32 {
        qkv: OwnedBuf<'e>,
        out: OwnedBuf<'e>,
    },
}

impl<'e> QkvScratch<'e> {
    /// Scratch for `a`, whose output has `out_len` values.
    fn new(ex: &'e dyn Executor, a: AttentionShape, out_len: usize) -> Result<Self> {
        Ok(if attention_bf16::supports(a.head_dim) {
            QkvScratch::Flash(ex.alloc_as(DType::Bf16, 3 * out_len)?)
        } else {
            QkvScratch::F32 {
                qkv: ex.alloc(3 * out_len)?,
                out: ex.alloc(out_len)?,
            }
        })
    }
}

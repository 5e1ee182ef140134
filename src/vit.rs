//! The CLIP ViT image tower and linear head, written once against
//! [`Executor`]. With a second weight set and a λ per sample, every
//! parameterised op runs in its dual form: DaWin's exact per-sample
//! interpolation in one batched pass (GUIDE.md §2).

use crate::error::{Error, Result};
use crate::exec::{Buf, DualEmbed, DualGemm, DualNorm, Executor, Mix};
use crate::model::{Act, Block, Model, ModelSpec, Params};
use crate::ops::gemm_bf16::{Activation, Epilogue};
use crate::ops::{
    self, attention::AttentionShape, embed_add::EmbedShape, gemm::GemmShape,
    layernorm::LayerNormShape, patch_embed::PatchShape,
};
use std::cell::Cell;
use std::collections::HashSet;
use std::ops::Range;

/// Arithmetic of the transformer blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// f32 everywhere (the reference).
    #[default]
    F32,
    /// bf16 tensor cores for the blocks' linear layers and attention (f32
    /// accumulation); layernorm, residual stream, patch embedding, head and
    /// logits stay f32. Needs a PTX device (emu or cuda).
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Device addresses of one block's bf16 linear weights.
#[derive(Clone, Copy, Debug)]
pub struct BlockLinears {
    pub qkv: u64,
    pub out: u64,
    pub fc1: u64,
    pub fc2: u64,
}

/// The blocks' linear weights in bf16, in one allocation.
pub struct Bf16Linears {
    pub flat: Buf,
    pub blocks: Vec<BlockLinears>,
}

/// A model's parameters resident on an executor: one flat f32 buffer,
/// sliced, plus in bf16 precision the blocks' linear weights in bf16.
pub struct DeviceModel {
    pub spec: ModelSpec,
    /// In bf16 precision this holds every tensor but the blocks' linear
    /// weights, which live only in `bf16` (their views in `params` are
    /// empty): the weights are not kept twice.
    pub flat: Buf,
    pub params: Params<Buf>,
    /// Present in bf16 precision.
    pub bf16: Option<Bf16Linears>,
}

/// The layout of a [`DeviceModel`]'s f32 buffer and its length: the
/// model's own, or, `without_linears`, the same tensors packed with the
/// blocks' linear weights left out (as empty ranges).
fn f32_layout(model: &Model, without_linears: bool) -> (Params<Range<usize>>, usize) {
    if !without_linears {
        return (model.params.clone(), model.flat.len());
    }
    let linears: HashSet<(usize, usize)> = model
        .params
        .blocks
        .iter()
        .flat_map(|b| [&b.qkv_w, &b.out_w, &b.fc1_w, &b.fc2_w])
        .map(|r| (r.start, r.end))
        .collect();
    let next = Cell::new(0);
    let layout = model.params.map(|r| {
        if linears.contains(&(r.start, r.end)) {
            return 0..0;
        }
        let at = next.get();
        next.set(at + r.len());
        at..at + r.len()
    });
    (layout, next.get())
}

/// `model`'s values in the packed `layout` of length `len`.
fn packed(model: &Model, layout: &Params<Range<usize>>, len: usize) -> Vec<f32> {
    let mut host = vec![0f32; len];
    let pairs = model.params.named().into_iter().zip(layout.named());
    for ((_, from), (_, to)) in pairs.filter(|(_, (_, to))| !to.is_empty()) {
        host[to.clone()].copy_from_slice(&model.flat[from.clone()]);
    }
    host
}

impl DeviceModel {
    /// Uploads the flat parameter buffer once; views are slices of it.
    pub fn upload(exec: &dyn Executor, model: &Model) -> Result<Self> {
        Self::upload_as(exec, model, Precision::F32)
    }

    /// Uploads in the given precision: in bf16 the blocks' linear weights
    /// are rounded to bf16 (each 16-byte aligned for the tensor-core
    /// kernels' cp.async rows) and only the other tensors stay f32.
    pub fn upload_as(exec: &dyn Executor, model: &Model, precision: Precision) -> Result<Self> {
        Self::place(exec, model, precision, true)
    }

    /// A zero-filled working parameter buffer with `model`'s layout, to be
    /// filled by `lerp` (the `materialize` and `bmm` strategies).
    pub fn alloc_like(exec: &dyn Executor, model: &Model) -> Result<Self> {
        Self::alloc_like_as(exec, model, Precision::F32)
    }

    /// [`DeviceModel::alloc_like`] in the given precision (the bf16 part
    /// is filled by [`DeviceModel::lerp_bf16`]).
    pub fn alloc_like_as(exec: &dyn Executor, model: &Model, precision: Precision) -> Result<Self> {
        Self::place(exec, model, precision, false)
    }

    /// Allocates in `p`, copying `model`'s values when `fill`; frees
    /// everything on failure.
    fn place(exec: &dyn Executor, model: &Model, p: Precision, fill: bool) -> Result<Self> {
        let bf16 = match p {
            Precision::Bf16 => Some(Self::bf16_linears(exec, model, fill)?),
            Precision::F32 => None,
        };
        let (layout, len) = f32_layout(model, bf16.is_some());
        let flat = match (fill, &bf16) {
            (false, _) => exec.alloc(len),
            (true, None) => exec.upload(&model.flat),
            (true, Some(_)) => exec.upload(&packed(model, &layout, len)),
        };
        let flat = flat.inspect_err(|_| {
            if let Some(b) = &bf16 {
                exec.free(b.flat);
            }
        })?;
        Ok(DeviceModel {
            spec: model.spec.clone(),
            flat,
            params: layout.map(|r| flat.slice(r.start, r.len())),
            bf16,
        })
    }

    pub fn precision(&self) -> Precision {
        match self.bf16 {
            Some(_) => Precision::Bf16,
            None => Precision::F32,
        }
    }

    /// Device bytes the parameters take.
    pub fn resident_bytes(&self) -> usize {
        4 * (self.flat.len + self.bf16.as_ref().map_or(0, |b| b.flat.len))
    }

    fn bf16_linears(exec: &dyn Executor, model: &Model, fill: bool) -> Result<Bf16Linears> {
        let Some(gpu) = exec.device() else {
            return Err(crate::invalid!(
                "--precision bf16 runs on the tensor-core kernels: use --device emu or cuda, not {}",
                exec.name()
            ));
        };
        let s = &model.spec;
        if !s.width.is_multiple_of(8) || !s.mlp.is_multiple_of(8) {
            return Err(crate::invalid!(
                "--precision bf16 needs the width ({}) and MLP width ({}) to be multiples of 8 \
                 (16-byte rows for the tensor-core gemms); use --precision f32",
                s.width,
                s.mlp
            ));
        }
        // Each weight starts 16-byte aligned (a multiple of 8 elements).
        let mut total = 0;
        let mut offsets = Vec::new();
        for b in &model.params.blocks {
            offsets.push([&b.qkv_w, &b.out_w, &b.fc1_w, &b.fc2_w].map(|r| {
                let at = total;
                total += r.len().next_multiple_of(8);
                (at, r.clone())
            }));
        }
        let flat = exec.alloc(total.div_ceil(2).max(1))?;
        let base = exec.address(flat).expect("a PTX executor has addresses");
        if fill {
            let mut host = vec![half::bf16::ZERO; total];
            for (at, r) in offsets.iter().flatten() {
                for (d, &v) in host[*at..].iter_mut().zip(&model.flat[r.clone()]) {
                    *d = half::bf16::from_f32(v);
                }
            }
            if let Err(e) = gpu.write(base, bytemuck::cast_slice(&host)) {
                exec.free(flat);
                return Err(e);
            }
        }
        let at = |o: &(usize, _)| base + 2 * o.0 as u64;
        let blocks = offsets
            .iter()
            .map(|f| BlockLinears {
                qkv: at(&f[0]),
                out: at(&f[1]),
                fc1: at(&f[2]),
                fc2: at(&f[3]),
            })
            .collect();
        Ok(Bf16Linears { flat, blocks })
    }

    /// `self.bf16 = lerp(w0.bf16, w1.bf16, λ)`, bf16 in and out (the bf16
    /// weights of `materialize`/`bmm`); nothing in f32 precision.
    pub fn lerp_bf16(
        &self,
        exec: &dyn Executor,
        w0: &DeviceModel,
        w1: &DeviceModel,
        lambda: f32,
    ) -> Result<()> {
        let (Some(o), Some(a), Some(b)) = (&self.bf16, &w0.bf16, &w1.bf16) else {
            return Ok(());
        };
        let at = |x: &Bf16Linears| exec.address(x.flat).expect("bf16 runs on a PTX executor");
        let (po, pa, pb) = (at(o), at(a), at(b));
        let n = 2 * o.flat.len;
        exec.device_op("lerp_bf16", ops::lerp_bf16::cost(n), &|g| {
            ops::lerp_bf16::launch(g, po, pa, pb, n, lambda)
        })
    }

    pub fn free(self, exec: &dyn Executor) {
        exec.free(self.flat);
        if let Some(b) = self.bf16 {
            exec.free(b.flat);
        }
    }
}

/// Picks one weight (and its optional bias) out of a parameter set, so the
/// same selection applies to both models of a dual op.
type PickLinear<'a> = &'a dyn Fn(&Params<Buf>) -> (Buf, Option<Buf>);
type PickNorm<'a> = &'a dyn Fn(&Params<Buf>) -> (Buf, Buf);

/// Host copies of a forward's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// `[n, embed_dim]`, projected, before normalisation.
    pub embeds: Vec<f32>,
    /// `[n, classes]` when the model has a head.
    pub logits: Option<Vec<f32>>,
}

/// Frees scratch buffers however the forward ends.
struct Scratch<'a> {
    exec: &'a dyn Executor,
    bufs: Vec<Buf>,
}

impl Scratch<'_> {
    fn alloc(&mut self, len: usize) -> Result<Buf> {
        let b = self.exec.alloc(len)?;
        self.bufs.push(b);
        Ok(b)
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        for b in self.bufs.drain(..) {
            self.exec.free(b);
        }
    }
}

/// The second model and each sample's λ (weight on that second model).
pub struct Interp<'a> {
    pub other: &'a DeviceModel,
    pub lambda: &'a [f32],
}

/// Forward of `n` images `pixels[n, c, s, s]` (already preprocessed).
///
/// With `interp`, sample `i` is evaluated exactly as the merged model
/// `(1−λ_i)·m + λ_i·other`, without building it.
pub fn forward(
    exec: &dyn Executor,
    m: &DeviceModel,
    pixels: &[f32],
    n: usize,
    interp: Option<Interp>,
) -> Result<Output> {
    let s = &m.spec;
    let (w, t, g2) = (s.width, s.tokens(), s.grid() * s.grid());
    let img = s.channels * s.image_size * s.image_size;
    if pixels.len() != n * img {
        return Err(crate::invalid!(
            "forward got {} pixel values for {n} images of {}×{}×{}",
            pixels.len(),
            s.channels,
            s.image_size,
            s.image_size
        ));
    }
    if let Some(ip) = &interp {
        if ip.other.spec != *s {
            return Err(crate::invalid!(
                "cannot interpolate models of different architectures: {:?} vs {:?}",
                s,
                ip.other.spec
            ));
        }
        if ip.lambda.len() != n {
            return Err(crate::invalid!(
                "{} λ values for {n} samples",
                ip.lambda.len()
            ));
        }
    }
    if let Some(ip) = &interp
        && ip.other.precision() != m.precision()
    {
        return Err(crate::invalid!(
            "cannot interpolate a {} model with a {} one: upload both in the same precision",
            m.precision(),
            ip.other.precision()
        ));
    }
    if n == 0 {
        return Ok(Output {
            embeds: vec![],
            logits: s.classes.map(|_| vec![]),
        });
    }
    let mut sc = Scratch { exec, bufs: vec![] };
    let lambda = match &interp {
        Some(ip) => {
            let l = sc.alloc(n)?;
            exec.write(l, ip.lambda)?;
            Some(l)
        }
        None => None,
    };
    let p = &m.params;
    let q = interp.as_ref().map(|ip| &ip.other.params);
    let mix = |rows_per_lambda| {
        lambda.map(|l| Mix {
            lambda: l,
            rows_per_lambda,
        })
    };

    // A linear layer, dual when interpolating. `pick` selects the same tensor
    // in both parameter sets.
    let linear =
        |a: Buf, wt: PickLinear, c: Buf, shape: GemmShape, rows_per_lambda: usize| -> Result<()> {
            let (b, bias) = wt(p);
            match (q, mix(rows_per_lambda)) {
                (Some(q), Some(mx)) => {
                    let (b1, bias1) = wt(q);
                    exec.gemm_dual(a, b, bias, DualGemm { b1, bias1, mix: mx }, c, shape)
                }
                _ => exec.gemm(a, b, bias, c, shape),
            }
        };
    let norm = |x: Buf,
                y: Buf,
                gb: PickNorm,
                shape: LayerNormShape,
                rows_per_lambda: usize|
     -> Result<()> {
        let (g, b) = gb(p);
        let dual = match (q, mix(rows_per_lambda)) {
            (Some(q), Some(mx)) => {
                let (gamma1, beta1) = gb(q);
                Some(DualNorm {
                    gamma1,
                    beta1,
                    mix: mx,
                })
            }
            _ => None,
        };
        exec.layernorm(x, y, g, b, dual, shape)
    };

    // Patch conv as im2col + gemm, then class/position embeddings, ln_pre.
    let ps = PatchShape {
        batch: n,
        channels: s.channels,
        image: s.image_size,
        patch: s.patch,
    };
    let px = sc.alloc(pixels.len())?;
    exec.write(px, pixels)?;
    let cols = sc.alloc(ps.rows() * ps.cols())?;
    exec.patch_embed(px, cols, ps)?;
    let pe = sc.alloc(n * g2 * w)?;
    let conv_shape = GemmShape {
        m: n * g2,
        n: w,
        k: ps.cols(),
    };
    linear(cols, &|p| (p.conv, None), pe, conv_shape, g2)?;
    let x = sc.alloc(n * t * w)?;
    let dual_embed = match (q, mix(t)) {
        (Some(q), Some(mx)) => Some(DualEmbed {
            class1: q.class,
            pos1: q.pos,
            mix: mx,
        }),
        _ => None,
    };
    let es = EmbedShape {
        batch: n,
        tokens: t,
        width: w,
    };
    exec.embed_add(pe, p.class, p.pos, dual_embed, x, es)?;
    let rows = n * t;
    let dense = LayerNormShape::dense(rows, w, s.ln_eps);
    norm(x, x, &|p| (p.ln_pre_g, p.ln_pre_b), dense, t)?;

    let h = sc.alloc(rows * w)?;
    let ash = AttentionShape {
        batch: n,
        tokens: t,
        heads: s.heads,
        head_dim: s.head_dim(),
    };
    if let Some(b16) = &m.bf16 {
        let blocks = Bf16Blocks {
            exec,
            p,
            lin: b16,
            other: interp.as_ref().map(|ip| {
                (
                    &ip.other.params,
                    ip.other.bf16.as_ref().expect("checked above"),
                )
            }),
            lambda,
            rows,
            tokens: t,
            ash,
            spec: s,
        };
        blocks.run(&mut sc, x, h, &|x, y, gb| norm(x, y, gb, dense, t))?;
    } else {
        let qkv = sc.alloc(rows * 3 * w)?;
        let att = sc.alloc(rows * w)?;
        let o = sc.alloc(rows * w)?;
        let f = sc.alloc(rows * s.mlp)?;
        for i in 0..s.layers {
            norm(x, h, &|p| (p.blocks[i].ln1_g, p.blocks[i].ln1_b), dense, t)?;
            let sh = GemmShape {
                m: rows,
                n: 3 * w,
                k: w,
            };
            linear(
                h,
                &|p| (p.blocks[i].qkv_w, Some(p.blocks[i].qkv_b)),
                qkv,
                sh,
                t,
            )?;
            exec.attention(qkv, att, ash)?;
            let sh = GemmShape {
                m: rows,
                n: w,
                k: w,
            };
            linear(
                att,
                &|p| (p.blocks[i].out_w, Some(p.blocks[i].out_b)),
                o,
                sh,
                t,
            )?;
            exec.add(o, x)?;
            norm(x, h, &|p| (p.blocks[i].ln2_g, p.blocks[i].ln2_b), dense, t)?;
            let sh = GemmShape {
                m: rows,
                n: s.mlp,
                k: w,
            };
            linear(
                h,
                &|p| (p.blocks[i].fc1_w, Some(p.blocks[i].fc1_b)),
                f,
                sh,
                t,
            )?;
            match s.act {
                Act::QuickGelu => exec.quick_gelu(f)?,
                Act::Gelu => exec.gelu(f)?,
            }
            let sh = GemmShape {
                m: rows,
                n: w,
                k: s.mlp,
            };
            linear(
                f,
                &|p| (p.blocks[i].fc2_w, Some(p.blocks[i].fc2_b)),
                o,
                sh,
                t,
            )?;
            exec.add(o, x)?;
        }
    }

    // ln_post reads only each sample's class token (stride tokens·width).
    let cls = sc.alloc(n * w)?;
    let post = LayerNormShape {
        rows: n,
        width: w,
        x_stride: t * w,
        y_stride: w,
        eps: s.ln_eps,
    };
    norm(x, cls, &|p| (p.ln_post_g, p.ln_post_b), post, 1)?;
    let d = s.embed_dim;
    let emb = if s.has_proj {
        let e = sc.alloc(n * d)?;
        let sh = GemmShape { m: n, n: d, k: w };
        linear(cls, &|p| (p.proj.expect("has_proj"), None), e, sh, 1)?;
        e
    } else {
        cls
    };
    let logits = match s.classes {
        Some(c) => {
            let en = sc.alloc(n * d)?;
            exec.l2_normalize(emb, en, n, d)?;
            let lg = sc.alloc(n * c)?;
            let sh = GemmShape { m: n, n: c, k: d };
            linear(en, &|p| (p.head_w.expect("head"), p.head_b), lg, sh, 1)?;
            Some(exec.download(lg)?)
        }
        None => None,
    };
    let embeds = exec.download(emb)?;
    exec.synchronize()?;
    Ok(Output { embeds, logits })
}

/// The transformer blocks on bf16 tensor cores: f32 residual stream `x`,
/// layernorm in f32 then cast to bf16, bf16 gemms (dual when
/// interpolating) and flash attention; the out-projection and fc2 add into
/// `x` in their epilogue.
struct Bf16Blocks<'a> {
    exec: &'a dyn Executor,
    p: &'a Params<Buf>,
    lin: &'a Bf16Linears,
    other: Option<(&'a Params<Buf>, &'a Bf16Linears)>,
    lambda: Option<Buf>,
    rows: usize,
    tokens: usize,
    ash: AttentionShape,
    spec: &'a ModelSpec,
}

/// The linear layers of a block, as (bf16 weight, f32 bias) selectors.
#[derive(Clone, Copy)]
enum Layer {
    Qkv,
    Out,
    Fc1,
    Fc2,
}

type WeightOf = fn(&BlockLinears) -> u64;
type BiasOf = fn(&Block<Buf>) -> Buf;

impl Layer {
    fn select(self) -> (WeightOf, BiasOf) {
        match self {
            Layer::Qkv => (|l: &BlockLinears| l.qkv, |b: &Block<Buf>| b.qkv_b),
            Layer::Out => (|l: &BlockLinears| l.out, |b: &Block<Buf>| b.out_b),
            Layer::Fc1 => (|l: &BlockLinears| l.fc1, |b: &Block<Buf>| b.fc1_b),
            Layer::Fc2 => (|l: &BlockLinears| l.fc2, |b: &Block<Buf>| b.fc2_b),
        }
    }
}

/// Applies a (maybe dual) layernorm: `(x, y, pick)`.
type NormFn<'a> = &'a dyn Fn(Buf, Buf, PickNorm) -> Result<()>;

impl Bf16Blocks<'_> {
    /// Address of a view; the executor is a PTX one (checked at upload).
    fn at(&self, b: Buf) -> u64 {
        self.exec.address(b).expect("bf16 runs on a PTX executor")
    }

    /// A bf16 scratch buffer of `len` values, as an address.
    fn alloc(&self, sc: &mut Scratch, len: usize) -> Result<u64> {
        Ok(self.at(sc.alloc(len.div_ceil(2))?))
    }

    /// `c = epilogue(a · Wᵀ + bias)` for `layer` of block `i`.
    fn linear(
        &self,
        a: u64,
        layer: Layer,
        i: usize,
        c: u64,
        s: GemmShape,
        ep: Epilogue,
    ) -> Result<()> {
        let (pick, bias) = layer.select();
        let (w0, b0) = (pick(&self.lin.blocks[i]), self.at(bias(&self.p.blocks[i])));
        match (self.other, self.lambda) {
            (Some((q, ql)), Some(l)) => {
                let dual = ops::gemm_dual_bf16::DualArgs {
                    b1: pick(&ql.blocks[i]),
                    bias0: b0,
                    bias1: self.at(bias(&q.blocks[i])),
                    lambda: self.at(l),
                    rows_per_lambda: self.tokens,
                };
                let cost = ops::gemm_dual_bf16::cost(s, ep);
                self.exec.device_op("gemm_dual_bf16", cost, &|g| {
                    ops::gemm_dual_bf16::launch(g, a, w0, dual, c, s, ep)
                })
            }
            _ => self
                .exec
                .device_op("gemm_bf16", ops::gemm_bf16::cost(s, ep), &|g| {
                    ops::gemm_bf16::launch(g, a, w0, b0, c, s, ep)
                }),
        }
    }

    fn run(&self, sc: &mut Scratch, x: Buf, h: Buf, norm: NormFn) -> Result<()> {
        let (rows, w, mlp) = (self.rows, self.spec.width, self.spec.mlp);
        let hb = self.alloc(sc, rows * w)?;
        let qkv = self.alloc(sc, rows * 3 * w)?;
        let att = self.alloc(sc, rows * w)?;
        // Head dims the flash kernel does not cover (multiples of 8 up to
        // 80) run the f32 attention kernel between the bf16 gemms.
        let hd = self.ash.head_dim;
        let f32_attention = if hd.is_multiple_of(8) && hd <= 80 {
            None
        } else {
            Some((sc.alloc(rows * 3 * w)?, sc.alloc(rows * w)?))
        };
        let f = self.alloc(sc, rows * mlp)?;
        let (xa, ha) = (self.at(x), self.at(h));
        let bf16_out = Epilogue::PLAIN_BF16;
        let residual = Epilogue {
            activation: Activation::None,
            f32_out: true,
            accumulate: true,
        };
        let act = Epilogue {
            activation: match self.spec.act {
                Act::QuickGelu => Activation::QuickGelu,
                Act::Gelu => Activation::Gelu,
            },
            ..bf16_out
        };
        let cast = |n: usize| {
            self.exec
                .device_op("cast_bf16", ops::cast_bf16::cost(n), &|g| {
                    ops::cast_bf16::launch(g, ha, hb, n)
                })
        };
        let shape = |n, k| GemmShape { m: rows, n, k };
        for i in 0..self.spec.layers {
            norm(x, h, &|p| (p.blocks[i].ln1_g, p.blocks[i].ln1_b))?;
            cast(rows * w)?;
            let ash = self.ash;
            if let Some((qkv32, att32)) = f32_attention {
                let f32_out = Epilogue {
                    f32_out: true,
                    ..bf16_out
                };
                self.linear(hb, Layer::Qkv, i, self.at(qkv32), shape(3 * w, w), f32_out)?;
                self.exec.attention(qkv32, att32, ash)?;
                let (src, n) = (self.at(att32), rows * w);
                self.exec
                    .device_op("cast_bf16", ops::cast_bf16::cost(n), &|g| {
                        ops::cast_bf16::launch(g, src, att, n)
                    })?;
            } else {
                self.linear(hb, Layer::Qkv, i, qkv, shape(3 * w, w), bf16_out)?;
                let cost = ops::attention_bf16::cost(ash);
                self.exec.device_op("attention_bf16", cost, &|g| {
                    ops::attention_bf16::launch(g, qkv, att, ash)
                })?;
            }
            self.linear(att, Layer::Out, i, xa, shape(w, w), residual)?;
            norm(x, h, &|p| (p.blocks[i].ln2_g, p.blocks[i].ln2_b))?;
            cast(rows * w)?;
            self.linear(hb, Layer::Fc1, i, f, shape(mlp, w), act)?;
            self.linear(f, Layer::Fc2, i, xa, shape(w, mlp), residual)?;
        }
        Ok(())
    }
}

/// The largest batch to try on the device. When a forward runs out of
/// device memory, the batch is halved and the work goes on (and says so);
/// the smaller size is kept for the batches after it.
pub struct BatchCap(Cell<usize>);

impl BatchCap {
    pub fn new(batch_size: usize) -> Self {
        BatchCap(Cell::new(batch_size.max(1)))
    }

    pub fn get(&self) -> usize {
        self.0.get()
    }

    /// Runs `f(start, count)` over `0..n` in chunks of at most the cap,
    /// halving it on out-of-memory; `sink` gets each chunk's result in order.
    pub fn run<T>(
        &self,
        n: usize,
        mut f: impl FnMut(usize, usize) -> Result<T>,
        mut sink: impl FnMut(usize, T),
    ) -> Result<()> {
        let mut start = 0;
        while start < n {
            let k = self.get().min(n - start);
            match f(start, k) {
                Ok(t) => {
                    sink(k, t);
                    start += k;
                }
                Err(Error::OutOfMemory(msg)) if k > 1 => {
                    let half = k / 2;
                    eprintln!(
                        "warning: out of device memory with a batch of {k} ({msg}); \
                         going on with batches of {half}"
                    );
                    self.0.set(half);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs `forward` in batches of at most `batch_size` images, concatenating;
/// batches that do not fit in device memory are halved.
pub fn forward_batched(
    exec: &dyn Executor,
    m: &DeviceModel,
    pixels: &[f32],
    n: usize,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Output> {
    let img = m.spec.channels * m.spec.image_size * m.spec.image_size;
    let mut out = Output {
        embeds: Vec::with_capacity(n * m.spec.embed_dim),
        logits: m.spec.classes.map(|c| Vec::with_capacity(n * c)),
    };
    BatchCap::new(batch_size).run(
        n,
        |start, cnt| {
            forward(
                exec,
                m,
                &pixels[start * img..(start + cnt) * img],
                cnt,
                None,
            )
        },
        |cnt, o| {
            out.embeds.extend(o.embeds);
            if let (Some(all), Some(l)) = (out.logits.as_mut(), o.logits) {
                all.extend(l);
            }
            on_batch(cnt);
        },
    )?;
    Ok(out)
}

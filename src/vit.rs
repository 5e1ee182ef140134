//! The CLIP ViT image tower and linear head, written once against
//! [`Executor`]. With a second weight set and a λ per sample, every
//! parameterised op runs in its dual form: DaWin's exact per-sample
//! interpolation in one batched pass (GUIDE.md §2).

use crate::error::{Error, Result};
use crate::exec::{Buf, DualEmbed, DualGemm, DualNorm, Executor, Mix};
use crate::model::{Act, Model, ModelSpec, Params};
use crate::ops::{
    attention::AttentionShape, embed_add::EmbedShape, gemm::GemmShape, layernorm::LayerNormShape,
    patch_embed::PatchShape,
};
use std::cell::Cell;

/// A model's parameters resident on an executor: one flat buffer, sliced.
pub struct DeviceModel {
    pub spec: ModelSpec,
    pub flat: Buf,
    pub params: Params<Buf>,
}

impl DeviceModel {
    /// Uploads the flat parameter buffer once; views are slices of it.
    pub fn upload(exec: &dyn Executor, model: &Model) -> Result<Self> {
        let flat = exec.upload(&model.flat)?;
        Ok(DeviceModel {
            spec: model.spec.clone(),
            flat,
            params: model.params.map(|r| flat.slice(r.start, r.len())),
        })
    }

    /// A zero-filled working parameter buffer with `model`'s layout, to be
    /// filled by `lerp` (the `materialize` and `bmm` strategies).
    pub fn alloc_like(exec: &dyn Executor, model: &Model) -> Result<Self> {
        let flat = exec.alloc(model.flat.len())?;
        Ok(DeviceModel {
            spec: model.spec.clone(),
            flat,
            params: model.params.map(|r| flat.slice(r.start, r.len())),
        })
    }

    pub fn free(self, exec: &dyn Executor) {
        exec.free(self.flat);
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
    let qkv = sc.alloc(rows * 3 * w)?;
    let att = sc.alloc(rows * w)?;
    let o = sc.alloc(rows * w)?;
    let f = sc.alloc(rows * s.mlp)?;
    let ash = AttentionShape {
        batch: n,
        tokens: t,
        heads: s.heads,
        head_dim: s.head_dim(),
    };
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

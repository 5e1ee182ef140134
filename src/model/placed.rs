//! A model's parameters resident on an executor: one flat f32 buffer,
//! sliced into the canonical parameter table, plus in bf16 precision the
//! blocks' linear weights in bf16. Memory is freed when the model drops.

use super::{Model, ModelSpec, Params};
use crate::buf::{Buf, DType};
use crate::error::Result;
use crate::exec::{Executor, OwnedBuf};
use crate::ops::{lerp::Lerp, lerp_bf16::LerpBf16};
use half::bf16;
use std::cell::Cell;
use std::collections::HashSet;
use std::ops::Range;

/// Arithmetic of the transformer blocks.
/// Each value's meaning is its help in [`Precision::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl crate::choice::Choice for Precision {
    const ALL: &'static [crate::choice::Named<Self>] = &[
        crate::choice::Named::new(Precision::F32, "f32", "f32 everywhere (the reference)"),
        crate::choice::Named::new(
            Precision::Bf16,
            "bf16",
            "bf16 operands for the blocks' linear layers and attention (tensor cores on a GPU, f32 accumulation); layernorm, residual stream, patch embedding, head and logits stay f32",
        ),
    ];
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// One block's bf16 linear weights (views of [`Bf16Linears::flat`]).
#[derive(Clone, Copy, Debug)]
pub struct BlockLinears {
    pub qkv: Buf,
    pub out: Buf,
    pub fc1: Buf,
    pub fc2: Buf,
}

/// The blocks' linear weights in bf16, in one allocation.
pub struct Bf16Linears<'a> {
    pub flat: OwnedBuf<'a>,
    pub blocks: Vec<BlockLinears>,
}

pub struct PlacedModel<'a> {
    pub spec: ModelSpec,
    /// In bf16 precision this holds every tensor but the blocks' linear
    /// weights, which live only in `bf16` (their views in `params` are
    /// empty): the weights are not kept twice.
    pub flat: Flat<'a>,
    pub params: Params<Buf>,
    /// Present in bf16 precision.
    pub bf16: Option<Bf16Linears<'a>>,
}

/// A model's f32 parameters: its own allocation, or a part of one it
/// shares with other models (a [`super::stack::ModelStack`]'s set).
pub enum Flat<'a> {
    Owned(OwnedBuf<'a>),
    /// A view of an allocation the model does not free.
    Shared(Buf, &'a dyn Executor),
}

impl<'a> Flat<'a> {
    /// The executor that holds the memory.
    pub fn executor(&self) -> &'a dyn Executor {
        match self {
            Flat::Owned(b) => b.executor(),
            Flat::Shared(_, ex) => *ex,
        }
    }
}

impl std::ops::Deref for Flat<'_> {
    type Target = Buf;
    fn deref(&self) -> &Buf {
        match self {
            Flat::Owned(b) => b,
            Flat::Shared(b, _) => b,
        }
    }
}

/// The layout of a [`PlacedModel`]'s f32 buffer and its length: the
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

impl<'a> PlacedModel<'a> {
    /// Uploads the flat parameter buffer once; views are slices of it.
    pub fn upload(exec: &'a dyn Executor, model: &Model) -> Result<Self> {
        Self::upload_as(exec, model, Precision::F32)
    }

    /// Uploads in the given precision: in bf16 the blocks' linear weights
    /// are rounded to bf16 (each starting at a multiple of 8 elements, 16
    /// bytes, for the tensor-core kernels' cp.async rows) and only the
    /// other tensors stay f32.
    pub fn upload_as(exec: &'a dyn Executor, model: &Model, precision: Precision) -> Result<Self> {
        Self::place(exec, model, precision, true)
    }

    /// A zero-filled working parameter buffer with `model`'s layout, to be
    /// filled by [`PlacedModel::lerp`] (the `materialize` and `bmm`
    /// strategies, multi-task merges).
    pub fn alloc_like(exec: &'a dyn Executor, model: &Model, precision: Precision) -> Result<Self> {
        Self::place(exec, model, precision, false)
    }

    /// Allocates in `p`, copying `model`'s values when `fill`.
    fn place(exec: &'a dyn Executor, model: &Model, p: Precision, fill: bool) -> Result<Self> {
        let bf16 = match p {
            Precision::Bf16 => Some(Self::bf16_linears(exec, model, fill)?),
            Precision::F32 => None,
        };
        let (layout, len) = f32_layout(model, bf16.is_some());
        let flat = match (fill, &bf16) {
            (false, _) => exec.alloc(len)?,
            (true, None) => exec.upload(&model.flat)?,
            (true, Some(_)) => exec.upload(&packed(model, &layout, len))?,
        };
        let params = layout.map(|r| flat.slice(r.start, r.len()));
        Ok(PlacedModel {
            spec: model.spec.clone(),
            flat: Flat::Owned(flat),
            params,
            bf16,
        })
    }

    pub fn precision(&self) -> Precision {
        match self.bf16 {
            Some(_) => Precision::Bf16,
            None => Precision::F32,
        }
    }

    /// Device bytes the parameters take (none for a shared set: its stack
    /// holds them).
    pub fn resident_bytes(&self) -> usize {
        let own = match &self.flat {
            Flat::Owned(b) => b.bytes(),
            Flat::Shared(..) => 0,
        };
        own + self.bf16.as_ref().map_or(0, |b| b.flat.bytes())
    }

    fn bf16_linears(exec: &'a dyn Executor, model: &Model, fill: bool) -> Result<Bf16Linears<'a>> {
        let s = &model.spec;
        if !s.width.is_multiple_of(8) || !s.mlp.is_multiple_of(8) {
            return Err(crate::invalid!(
                "--precision bf16 needs the width ({}) and MLP width ({}) to be multiples of 8 \
                 (16-byte rows for the bf16 gemms); use --precision f32",
                s.width,
                s.mlp
            ));
        }
        // Each weight starts at a multiple of 8 elements.
        let mut total = 0;
        let mut offsets = Vec::new();
        for b in &model.params.blocks {
            offsets.push([&b.qkv_w, &b.out_w, &b.fc1_w, &b.fc2_w].map(|r| {
                let at = total;
                total += r.len().next_multiple_of(8);
                (at, r.clone())
            }));
        }
        let flat = exec.alloc_as(DType::Bf16, total)?;
        if fill {
            let mut host = vec![bf16::ZERO; total];
            for (at, r) in offsets.iter().flatten() {
                for (d, &v) in host[*at..].iter_mut().zip(&model.flat[r.clone()]) {
                    *d = bf16::from_f32(v);
                }
            }
            exec.write(*flat, &host)?;
        }
        let view = |(at, r): &(usize, Range<usize>)| flat.slice(*at, r.len());
        let blocks = offsets
            .iter()
            .map(|f| BlockLinears {
                qkv: view(&f[0]),
                out: view(&f[1]),
                fc1: view(&f[2]),
                fc2: view(&f[3]),
            })
            .collect();
        Ok(Bf16Linears { flat, blocks })
    }

    /// `self = w0 + λ·(w1 − w0)`, every tensor: the f32 buffer by `lerp`,
    /// the bf16 linear weights (bf16 in and out) by `lerp_bf16`.
    pub fn lerp(&self, w0: &PlacedModel, w1: &PlacedModel, lambda: f32) -> Result<()> {
        let p = self.precision();
        if w0.precision() != p || w1.precision() != p {
            return Err(crate::invalid!(
                "cannot lerp {} and {} models into a {p} one: use one precision",
                w0.precision(),
                w1.precision()
            ));
        }
        let ex = self.flat.executor();
        ex.run(Lerp {
            out: *self.flat,
            w0: *w0.flat,
            w1: *w1.flat,
            lambda,
        })?;
        if let (Some(o), Some(a), Some(b)) = (&self.bf16, &w0.bf16, &w1.bf16) {
            ex.run(LerpBf16 {
                out: *o.flat,
                w0: *a.flat,
                w1: *b.flat,
                lambda,
            })?;
        }
        Ok(())
    }
}

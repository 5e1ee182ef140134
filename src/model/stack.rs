//! Models of one architecture uploaded one after another into a single f32
//! allocation, each in the base's layout: every tensor of set `t` lies
//! `t·stride` elements after the base's. The stacked ops (gemm_multi,
//! layernorm_multi, embed_add_multi) read all sets of a tensor from one
//! view, so multi-task DaWin merges per sample for a whole batch.

use super::placed::{Flat, PlacedModel};
use super::{Model, ModelSpec, Params};
use crate::buf::Buf;
use crate::error::Result;
use crate::exec::{Executor, OwnedBuf};
use std::collections::HashMap;

pub struct ModelStack<'a> {
    spec: ModelSpec,
    flat: OwnedBuf<'a>,
    stride: usize,
    /// The base's parameter views (set 0); set t is these plus t·stride.
    params: Params<Buf>,
    sets: usize,
}

impl<'a> ModelStack<'a> {
    /// Uploads `models` (the base first) into one allocation, each tensor
    /// at the base's offset plus the model's index times the stride.
    /// Refuses models whose tensors differ from the base's in name or size.
    pub fn upload(ex: &'a dyn Executor, models: &[&Model]) -> Result<Self> {
        let Some(base) = models.first() else {
            return Err(crate::invalid!("a model stack needs at least the base"));
        };
        let stride = base.flat.len();
        let named = base.params.named();
        let total = stride
            .checked_mul(models.len())
            .ok_or_else(|| crate::invalid!("a stack of {} models overflows", models.len()))?;
        let flat = ex.alloc(total)?;
        for (t, m) in models.iter().enumerate() {
            let diffs = base.shape_differences(m);
            if !diffs.is_empty() || m.spec != base.spec {
                let shown: Vec<String> = diffs.into_iter().take(10).collect();
                return Err(crate::invalid!(
                    "model {t} of the stack differs from the base: {}",
                    if shown.is_empty() {
                        format!("{:?} vs {:?}", m.spec, base.spec)
                    } else {
                        shown.join("; ")
                    }
                ));
            }
            let theirs: HashMap<String, &std::ops::Range<usize>> =
                m.params.named().into_iter().collect();
            let mut host = vec![0f32; stride];
            for (name, to) in &named {
                let from = theirs[name];
                host[(*to).clone()].copy_from_slice(&m.flat[from.clone()]);
            }
            ex.write(flat.slice(t * stride, stride), &host)?;
        }
        let params = base.params.map(|r| flat.slice(r.start, r.len()));
        Ok(ModelStack {
            spec: base.spec.clone(),
            flat,
            stride,
            params,
            sets: models.len(),
        })
    }

    /// How many models the stack holds (the base and the tasks).
    pub fn sets(&self) -> usize {
        self.sets
    }

    /// Elements between a tensor of one set and the same tensor of the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Set `t` as a model of its own (0 = the base), sharing the stack's
    /// memory.
    pub fn model(&self, t: usize) -> PlacedModel<'_> {
        assert!(t < self.sets, "set {t} of a stack of {}", self.sets);
        let shift = |b: &Buf| Buf {
            offset: b.offset + t * self.stride,
            ..*b
        };
        let flat = self.flat.slice(t * self.stride, self.stride);
        PlacedModel {
            spec: self.spec.clone(),
            flat: Flat::Shared(flat, self.flat.executor()),
            params: self.params.map(shift),
            bf16: None,
        }
    }

    /// Device bytes the stack holds.
    pub fn resident_bytes(&self) -> usize {
        self.flat.bytes()
    }
}

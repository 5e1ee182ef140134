//! The profiling layer every executor from [`super::open`] wears: each op is
//! an NVTX range (on `cuda`) and, while profiling is on, is bracketed by two
//! device timestamps (CUDA events on the GPU, so queued launches keep
//! overlapping with the host). Timestamps are turned into milliseconds in
//! batches, when many are pending or when the profile is taken.

use super::{Buf, DualEmbed, DualGemm, DualNorm, Executor};
use crate::error::Result;
use crate::ops::{self, attention::AttentionShape, embed_add::EmbedShape, gemm::GemmShape};
use crate::ops::{layernorm::LayerNormShape, patch_embed::PatchShape};
use crate::profile::{Cost, Peak, Record};
use std::cell::{Cell, RefCell};

/// Timestamps resolved at once: bounds the events held on the device.
const RESOLVE_EVERY: usize = 2048;

/// An op timed but not yet resolved: name, start and end marks, cost, and
/// the bank conflicts it caused where the device counts them.
type Pending = (&'static str, usize, usize, Cost, Option<u64>);

pub struct Profiled {
    inner: Box<dyn Executor>,
    on: Cell<bool>,
    pending: RefCell<Vec<Pending>>,
    records: RefCell<Vec<Record>>,
}

impl Profiled {
    pub fn new(inner: Box<dyn Executor>) -> Self {
        Profiled {
            inner,
            on: Cell::new(false),
            pending: RefCell::new(Vec::new()),
            records: RefCell::new(Vec::new()),
        }
    }

    fn op(&self, name: &'static str, cost: Cost, f: impl FnOnce() -> Result<()>) -> Result<()> {
        self.inner.range_push(name);
        let r = if self.on.get() {
            let conflicts = || self.inner.device().and_then(|g| g.bank_conflicts());
            let before = conflicts();
            let start = self.inner.mark()?;
            let r = f();
            let end = self.inner.mark()?;
            // Counting devices run synchronously: the op is done here.
            let bank = conflicts().zip(before).map(|(a, b)| a - b);
            let full = {
                let mut p = self.pending.borrow_mut();
                p.push((name, start, end, cost, bank));
                p.len() >= RESOLVE_EVERY
            };
            if full {
                self.resolve()?;
            }
            r
        } else {
            f()
        };
        self.inner.range_pop();
        r
    }

    fn resolve(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let mut records = self.records.borrow_mut();
        for (op, start, end, cost, bank_conflicts) in pending {
            let ms = self.inner.elapsed_ms(start, end)?;
            records.push(Record {
                op,
                ms,
                cost,
                bank_conflicts,
            });
        }
        self.inner.reset_marks();
        Ok(())
    }
}

impl Executor for Profiled {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn alloc(&self, len: usize) -> Result<Buf> {
        self.inner.alloc(len)
    }
    fn write(&self, dst: Buf, data: &[f32]) -> Result<()> {
        self.inner.write(dst, data)
    }
    fn download(&self, src: Buf) -> Result<Vec<f32>> {
        self.inner.download(src)
    }
    fn free(&self, buf: Buf) {
        self.inner.free(buf)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn mark(&self) -> Result<usize> {
        self.inner.mark()
    }
    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64> {
        self.inner.elapsed_ms(start, end)
    }
    fn reset_marks(&self) {
        // Pending op timestamps would be lost: turn them into records first.
        let _ = self.resolve();
    }
    fn range_push(&self, name: &str) {
        self.inner.range_push(name)
    }
    fn range_pop(&self) {
        self.inner.range_pop()
    }
    fn flush_caches(&self) -> Result<()> {
        self.inner.flush_caches()
    }
    fn peak(&self) -> Option<Peak> {
        self.inner.peak()
    }
    fn device(&self) -> Option<&dyn crate::gpu::Gpu> {
        self.inner.device()
    }
    fn address(&self, b: Buf) -> Option<u64> {
        self.inner.address(b)
    }
    fn device_op(
        &self,
        name: &'static str,
        cost: Cost,
        f: &dyn Fn(&dyn crate::gpu::Gpu) -> Result<()>,
    ) -> Result<()> {
        self.op(name, cost, || self.inner.device_op(name, cost, f))
    }
    fn set_profiling(&self, on: bool) {
        self.on.set(on);
    }
    fn take_profile(&self) -> Result<Vec<Record>> {
        self.resolve()?;
        Ok(std::mem::take(&mut *self.records.borrow_mut()))
    }

    fn gemm(&self, a: Buf, b: Buf, bias: Option<Buf>, c: Buf, s: GemmShape) -> Result<()> {
        self.op("gemm", ops::gemm::cost(s), || {
            self.inner.gemm(a, b, bias, c, s)
        })
    }
    fn gemm_dual(
        &self,
        a: Buf,
        b: Buf,
        bias: Option<Buf>,
        d: DualGemm,
        c: Buf,
        s: GemmShape,
    ) -> Result<()> {
        let cost = ops::gemm_dual::cost(s, d.mix.rows_per_lambda);
        self.op("gemm_dual", cost, || {
            self.inner.gemm_dual(a, b, bias, d, c, s)
        })
    }
    fn attention(&self, qkv: Buf, out: Buf, s: AttentionShape) -> Result<()> {
        self.op("attention", ops::attention::cost(s), || {
            self.inner.attention(qkv, out, s)
        })
    }
    fn layernorm(
        &self,
        x: Buf,
        y: Buf,
        gamma: Buf,
        beta: Buf,
        d: Option<DualNorm>,
        s: LayerNormShape,
    ) -> Result<()> {
        self.op("layernorm", ops::layernorm::cost(s, d.is_some()), || {
            self.inner.layernorm(x, y, gamma, beta, d, s)
        })
    }
    fn gelu(&self, x: Buf) -> Result<()> {
        self.op("gelu", ops::gelu::cost(x.len), || self.inner.gelu(x))
    }
    fn quick_gelu(&self, x: Buf) -> Result<()> {
        self.op("quick_gelu", ops::quick_gelu::cost(x.len), || {
            self.inner.quick_gelu(x)
        })
    }
    fn add(&self, x: Buf, y: Buf) -> Result<()> {
        self.op("add", ops::add::cost(y.len), || self.inner.add(x, y))
    }
    fn patch_embed(&self, pixels: Buf, out: Buf, s: PatchShape) -> Result<()> {
        self.op("patch_embed", ops::patch_embed::cost(s), || {
            self.inner.patch_embed(pixels, out, s)
        })
    }
    fn embed_add(
        &self,
        patches: Buf,
        class: Buf,
        pos: Buf,
        d: Option<DualEmbed>,
        out: Buf,
        s: EmbedShape,
    ) -> Result<()> {
        self.op("embed_add", ops::embed_add::cost(s, d.is_some()), || {
            self.inner.embed_add(patches, class, pos, d, out, s)
        })
    }
    fn softmax_entropy(
        &self,
        logits: Buf,
        out: Buf,
        rows: usize,
        cols: usize,
        t: f32,
    ) -> Result<()> {
        let cost = ops::softmax_entropy::cost(rows, cols);
        self.op("softmax_entropy", cost, || {
            self.inner.softmax_entropy(logits, out, rows, cols, t)
        })
    }
    fn lerp(&self, out: Buf, w0: Buf, w1: Buf, lambda: f32) -> Result<()> {
        self.op("lerp", ops::lerp::cost(out.len), || {
            self.inner.lerp(out, w0, w1, lambda)
        })
    }
    fn add_scaled_diff(&self, out: Buf, w0: Buf, w1: Buf, k: f32) -> Result<()> {
        self.op(
            "add_scaled_diff",
            ops::add_scaled_diff::cost(out.len),
            || self.inner.add_scaled_diff(out, w0, w1, k),
        )
    }
    fn l2_normalize(&self, x: Buf, y: Buf, rows: usize, width: usize) -> Result<()> {
        self.op("l2_normalize", ops::l2_normalize::cost(rows, width), || {
            self.inner.l2_normalize(x, y, rows, width)
        })
    }
}

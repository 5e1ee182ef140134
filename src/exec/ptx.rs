//! The PTX executor: every op is a launch of `ptx/<op>.ptx` through the
//! op's launcher in `crate::ops`, on any [`Gpu`] (`emu` or `cuda`).

use super::{Buf, DualEmbed, DualGemm, DualNorm, Executor};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::{self, attention::AttentionShape, embed_add::EmbedShape, gemm::GemmShape};
use crate::ops::{layernorm::LayerNormShape, patch_embed::PatchShape};
use std::cell::RefCell;

pub struct PtxExec<G: Gpu> {
    pub gpu: G,
    /// Allocation id → (device address, f32 length).
    bufs: RefCell<Vec<Option<(u64, usize)>>>,
}

impl<G: Gpu> PtxExec<G> {
    pub fn new(gpu: G) -> Self {
        PtxExec {
            gpu,
            bufs: RefCell::new(Vec::new()),
        }
    }

    /// Device address of a view.
    fn addr(&self, b: Buf) -> u64 {
        let bufs = self.bufs.borrow();
        let (base, len) = bufs[b.id as usize].expect("use of a freed buffer");
        assert!(b.offset + b.len <= len, "view outside its allocation");
        base + 4 * b.offset as u64
    }

    fn opt(&self, b: Option<Buf>) -> u64 {
        b.map_or(0, |b| self.addr(b))
    }
}

impl<G: Gpu> Executor for PtxExec<G> {
    fn name(&self) -> String {
        self.gpu.name()
    }

    fn alloc(&self, len: usize) -> Result<Buf> {
        let addr = self.gpu.alloc(len * 4)?;
        let mut bufs = self.bufs.borrow_mut();
        bufs.push(Some((addr, len)));
        Ok(Buf {
            id: (bufs.len() - 1) as u32,
            offset: 0,
            len,
        })
    }

    fn write(&self, dst: Buf, data: &[f32]) -> Result<()> {
        if data.len() != dst.len {
            return Err(Error::Invalid(format!(
                "write of {} values into a view of {}",
                data.len(),
                dst.len
            )));
        }
        self.gpu.write(self.addr(dst), bytemuck::cast_slice(data))
    }

    fn download(&self, src: Buf) -> Result<Vec<f32>> {
        let mut out = vec![0f32; src.len];
        self.gpu
            .read(self.addr(src), bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    fn free(&self, buf: Buf) {
        if let Some((addr, _)) = self.bufs.borrow_mut()[buf.id as usize].take() {
            self.gpu.free(addr);
        }
    }

    fn device(&self) -> Option<&dyn Gpu> {
        Some(&self.gpu)
    }

    fn address(&self, b: Buf) -> Option<u64> {
        Some(self.addr(b))
    }

    fn synchronize(&self) -> Result<()> {
        self.gpu.synchronize()
    }

    fn mark(&self) -> Result<usize> {
        self.gpu.mark()
    }

    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64> {
        self.gpu.elapsed_ms(start, end)
    }

    fn reset_marks(&self) {
        self.gpu.reset_marks()
    }

    fn range_push(&self, name: &str) {
        self.gpu.range_push(name)
    }

    fn range_pop(&self) {
        self.gpu.range_pop()
    }

    fn flush_caches(&self) -> Result<()> {
        self.gpu.flush_caches()
    }

    fn peak(&self) -> Option<crate::profile::Peak> {
        self.gpu.peak()
    }

    fn gemm(&self, a: Buf, b: Buf, bias: Option<Buf>, c: Buf, s: GemmShape) -> Result<()> {
        ops::gemm::launch(
            &self.gpu,
            self.addr(a),
            self.addr(b),
            self.opt(bias),
            self.addr(c),
            s,
        )
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
        let args = ops::gemm_dual::DualArgs {
            b1: self.addr(d.b1),
            bias1: self.opt(d.bias1),
            lambda: self.addr(d.mix.lambda),
            rows_per_lambda: d.mix.rows_per_lambda,
        };
        ops::gemm_dual::launch(
            &self.gpu,
            self.addr(a),
            self.addr(b),
            self.opt(bias),
            &args,
            self.addr(c),
            s,
        )
    }

    fn attention(&self, qkv: Buf, out: Buf, s: AttentionShape) -> Result<()> {
        ops::attention::launch(&self.gpu, self.addr(qkv), self.addr(out), s)
    }

    fn layernorm(
        &self,
        x: Buf,
        y: Buf,
        gamma: Buf,
        beta: Buf,
        dual: Option<DualNorm>,
        s: LayerNormShape,
    ) -> Result<()> {
        let d = dual.map(|d| ops::layernorm::DualArgs {
            gamma1: self.addr(d.gamma1),
            beta1: self.addr(d.beta1),
            lambda: self.addr(d.mix.lambda),
            rows_per_lambda: d.mix.rows_per_lambda,
        });
        ops::layernorm::launch(
            &self.gpu,
            self.addr(x),
            self.addr(y),
            self.addr(gamma),
            self.addr(beta),
            d,
            s,
        )
    }

    fn gelu(&self, x: Buf) -> Result<()> {
        ops::gelu::launch(&self.gpu, self.addr(x), x.len)
    }

    fn quick_gelu(&self, x: Buf) -> Result<()> {
        ops::quick_gelu::launch(&self.gpu, self.addr(x), x.len)
    }

    fn add(&self, x: Buf, y: Buf) -> Result<()> {
        ops::add::launch(&self.gpu, self.addr(x), self.addr(y), y.len)
    }

    fn patch_embed(&self, pixels: Buf, out: Buf, s: PatchShape) -> Result<()> {
        ops::patch_embed::launch(&self.gpu, self.addr(pixels), self.addr(out), s)
    }

    fn embed_add(
        &self,
        patches: Buf,
        class: Buf,
        pos: Buf,
        dual: Option<DualEmbed>,
        out: Buf,
        s: EmbedShape,
    ) -> Result<()> {
        let d = dual.map(|d| ops::embed_add::DualArgs {
            class1: self.addr(d.class1),
            pos1: self.addr(d.pos1),
            lambda: self.addr(d.mix.lambda),
            rows_per_lambda: d.mix.rows_per_lambda,
        });
        ops::embed_add::launch(
            &self.gpu,
            self.addr(patches),
            self.addr(class),
            self.addr(pos),
            d,
            self.addr(out),
            s,
        )
    }

    fn softmax_entropy(
        &self,
        logits: Buf,
        out: Buf,
        rows: usize,
        cols: usize,
        t: f32,
    ) -> Result<()> {
        ops::softmax_entropy::launch(&self.gpu, self.addr(logits), self.addr(out), rows, cols, t)
    }

    fn lerp(&self, out: Buf, w0: Buf, w1: Buf, lambda: f32) -> Result<()> {
        ops::lerp::launch(
            &self.gpu,
            self.addr(out),
            self.addr(w0),
            self.addr(w1),
            out.len,
            lambda,
        )
    }

    fn add_scaled_diff(&self, out: Buf, w0: Buf, w1: Buf, k: f32) -> Result<()> {
        ops::add_scaled_diff::launch(
            &self.gpu,
            self.addr(out),
            self.addr(w0),
            self.addr(w1),
            out.len,
            k,
        )
    }

    fn l2_normalize(&self, x: Buf, y: Buf, rows: usize, width: usize) -> Result<()> {
        ops::l2_normalize::launch(&self.gpu, self.addr(x), self.addr(y), rows, width)
    }
}

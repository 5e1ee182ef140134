//! attention_bf16: fused `softmax(Q·Kᵀ/√d)·V` per (sample, head) on bf16
//! tensor cores, flash-attention style (online softmax in f32). Same packed
//! layout as [`super::attention`], with bf16 `qkv` and output.

use super::attention::{AttentionShape, args_and_grid, check_buffers};
use super::{Addr, Host, OpDef, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Dims, Gpu};
use crate::error::Result;
use crate::simd::Simd;
use half::bf16;

/// Query rows per block: 4 warps of 16.
pub const ROWS_PER_BLOCK: usize = 64;

/// Attention over a bf16 `qkv` into a bf16 `out`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBf16 {
    pub qkv: Buf,
    pub out: Buf,
    pub shape: AttentionShape,
}

/// Head dims the kernel covers: multiples of 8 up to 80 (ViT-B/L 64,
/// ViT-H 80); callers run the f32 attention for the others.
pub fn supports(head_dim: usize) -> bool {
    head_dim > 0 && head_dim <= 80 && head_dim.is_multiple_of(8)
}

/// The reference: the f32 attention of the widened inputs, rounded to
/// bf16. The executor runs [`cpu_at`].
pub fn cpu(qkv: &[bf16], out: &mut [bf16], s: AttentionShape) {
    let wide: Vec<f32> = qkv.iter().map(|x| x.to_f32()).collect();
    let mut o = vec![0f32; s.batch * s.tokens * s.width()];
    super::attention::cpu(&wide, &mut o, s);
    for (d, v) in out.iter_mut().zip(o) {
        *d = bf16::from_f32(v);
    }
}

/// cpu implementation: the flash-style kernel of `crate::simd::attention`
/// reading bf16 `qkv` directly (each head's K and V widened as they are
/// packed, Q per query block) and writing bf16; f32 arithmetic throughout.
pub fn cpu_at(level: Simd, qkv: &[bf16], out: &mut [bf16], s: AttentionShape) {
    crate::simd::attention::attention(level, qkv, out, s)
}

/// Work of one call: as the f32 kernel, with 2-byte elements.
pub fn cost(s: AttentionShape) -> crate::profile::Cost {
    let f = super::attention::cost(s);
    crate::profile::Cost {
        flops: f.flops,
        bytes: f.bytes / 2.0,
    }
}

impl OpDef for AttentionBf16 {
    fn check(&self) -> Result<()> {
        let s = self.shape;
        if !supports(s.head_dim) {
            return Err(crate::invalid!(
                "attention_bf16 supports head dims that are multiples of 8 up to 80, got {}",
                s.head_dim
            ));
        }
        check_buffers("attention_bf16", self.qkv, self.out, s, DType::Bf16)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape)
    }

    fn tensor_core(&self) -> bool {
        true
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.out, &[Some(self.qkv)], |i, o| {
            cpu_at(crate::simd::active(), i.bf16(0), o.bf16(), self.shape)
        })
    }

    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        let (qkv, out) = (at(self.qkv)?, at(self.out)?);
        if !qkv.is_multiple_of(16) || !out.is_multiple_of(4) {
            return Err(crate::invalid!(
                "attention_bf16 needs a 16-byte aligned qkv and a 4-byte aligned output"
            ));
        }
        if s.batch == 0 || s.tokens == 0 || s.heads == 0 {
            return Ok(());
        }
        let (args, grid) = args_and_grid(qkv, out, s, ROWS_PER_BLOCK)?;
        gpu.launch("attention_bf16", Dims::new(grid, [128, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for AttentionBf16 {
    const TOLERANCE: f64 = 1e-2;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = super::attention::EXAMPLE_SHAPE;
        let qkv = i.bf16(2 * 37 * 3 * 128, 1, 2.0);
        let out = i.zeros(DType::Bf16, 2 * 37 * 128);
        (AttentionBf16 { qkv, out, shape }, out)
    }
}

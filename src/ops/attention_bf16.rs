//! attention_bf16: fused `softmax(Q·Kᵀ/√d)·V` per (sample, head) on bf16
//! tensor cores, flash-attention style (online softmax in f32). Same packed
//! layout as [`super::attention`], with bf16 `qkv` and output.

use super::attention::AttentionShape;
use half::bf16;

/// CPU reference: the f32 attention of the bf16 inputs, rounded to bf16.
pub fn cpu(qkv: &[bf16], out: &mut [bf16], s: AttentionShape) {
    let wide: Vec<f32> = qkv.iter().map(|x| x.to_f32()).collect();
    let mut o = vec![0f32; s.batch * s.tokens * s.width()];
    super::attention::cpu(&wide, &mut o, s);
    for (d, v) in out.iter_mut().zip(o) {
        *d = bf16::from_f32(v);
    }
}

use crate::gpu::Gpu;

/// Query rows per block: 4 warps of 16.
pub const ROWS_PER_BLOCK: usize = 64;

/// Launches `ptx/attention_bf16.ptx`.
pub fn launch(gpu: &dyn Gpu, qkv: u64, out: u64, s: AttentionShape) -> crate::Result<()> {
    if s.head_dim == 0 || s.head_dim > 80 || !s.head_dim.is_multiple_of(8) {
        return Err(crate::invalid!(
            "attention_bf16 supports head dims that are multiples of 8 up to 80, got {}",
            s.head_dim
        ));
    }
    if !qkv.is_multiple_of(16) || !out.is_multiple_of(4) {
        return Err(crate::invalid!(
            "attention_bf16 needs a 16-byte aligned qkv and a 4-byte aligned output"
        ));
    }
    if s.batch == 0 || s.tokens == 0 || s.heads == 0 {
        return Ok(());
    }
    let (args, grid) = super::attention::args_and_grid(qkv, out, s, ROWS_PER_BLOCK)?;
    gpu.launch("attention_bf16", grid, [128, 1, 1], 0, &args)
}

/// Work of one call: as the f32 kernel, with 2-byte elements.
pub fn cost(s: AttentionShape) -> crate::profile::Cost {
    let f = super::attention::cost(s);
    crate::profile::Cost {
        flops: f.flops,
        bytes: f.bytes / 2.0,
    }
}

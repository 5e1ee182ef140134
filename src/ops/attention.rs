//! attention: fused `softmax(Q·Kᵀ/√d)·V` for every (sample, head).
//!
//! Input `qkv[batch·tokens, 3·heads·head_dim]` is the fused in_proj output:
//! columns `[q | k | v]`, head `h` at `h·head_dim..(h+1)·head_dim` of each.
//! Output `out[batch·tokens, heads·head_dim]`, heads concatenated.
//! With `causal`, query row `i` attends to keys `0..=i` only (CLIP's text
//! tower: OpenAI's additive mask of −inf above the diagonal).

use super::{Addr, Host, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;

// Defined with the CPU kernel that also reads it, so that simd, a floor
// below ops, imports nothing from ops.
pub use crate::simd::attention::AttentionShape;

/// cpu implementation: the flash-style kernel of `crate::simd::attention` at
/// the machine's SIMD level.
pub fn cpu(qkv: &[f32], out: &mut [f32], s: AttentionShape) {
    crate::simd::attention::attention(crate::simd::active(), qkv, out, s)
}

/// Query rows per block: one warp each.
pub const ROWS_PER_BLOCK: usize = 4;

/// Fused attention over a packed `qkv[batch·tokens, 3·heads·head_dim]`
/// into `out[batch·tokens, heads·head_dim]`.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub qkv: Buf,
    pub out: Buf,
    pub shape: AttentionShape,
}

/// The buffer checks both attention ops share.
pub(super) fn check_buffers(
    op: &str,
    qkv: Buf,
    out: Buf,
    s: AttentionShape,
    dtype: DType,
) -> Result<()> {
    let rows = elems(op, &[s.batch, s.tokens])?;
    need(
        op,
        "qkv",
        qkv,
        dtype,
        elems(op, &[rows, 3, s.heads, s.head_dim])?,
    )?;
    need(
        op,
        "out",
        out,
        dtype,
        elems(op, &[rows, s.heads, s.head_dim])?,
    )?;
    disjoint(op, ("out", out), &[("qkv", Some(qkv))])
}

/// The parameters both attention kernels take, and their grid of
/// `rows`-query blocks per (head, sample).
pub(super) fn args_and_grid(
    qkv: u64,
    out: u64,
    s: AttentionShape,
    rows: usize,
) -> Result<([Arg; 7], [u32; 3])> {
    let args = [
        Arg::U64(qkv),
        Arg::U64(out),
        u32_arg("tokens", s.tokens)?,
        u32_arg("heads", s.heads)?,
        u32_arg("head dim", s.head_dim)?,
        Arg::F32(1.0 / (s.head_dim as f32).sqrt()),
        Arg::U32(s.causal as u32),
    ];
    let grid = [
        s.tokens.div_ceil(rows) as u32,
        s.heads as u32,
        s.batch as u32,
    ];
    Ok((args, grid))
}

/// Work of one call: Q·Kᵀ and P·V (2·t²·d FLOPs each per head, about half
/// when causal) plus the softmax; reads packed qkv, writes the output.
pub fn cost(s: AttentionShape) -> crate::profile::Cost {
    let (b, t, h, d) = (
        s.batch as f64,
        s.tokens as f64,
        s.heads as f64,
        s.head_dim as f64,
    );
    let pairs = if s.causal { t * (t + 1.0) / 2.0 } else { t * t };
    crate::profile::Cost {
        flops: b * h * pairs * (4.0 * d + 5.0),
        bytes: 4.0 * b * t * h * d * 4.0,
    }
}

impl OpDef for Attention {
    fn check(&self) -> Result<()> {
        let s = self.shape;
        if s.head_dim > 128 || s.head_dim == 0 {
            return Err(crate::invalid!(
                "attention supports head dims 1..=128, got {}",
                s.head_dim
            ));
        }
        check_buffers("attention", self.qkv, self.out, s, DType::F32)
    }

    fn cost(&self) -> crate::profile::Cost {
        cost(self.shape)
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.out, &[Some(self.qkv)], |i, o| {
            cpu(i.f32(0), o.f32(), self.shape)
        })
    }

    /// Grid (query blocks, heads, batch), one warp per query row with an
    /// online softmax over the keys.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        if s.batch == 0 || s.tokens == 0 || s.heads == 0 {
            return Ok(());
        }
        let (args, grid) = args_and_grid(at(self.qkv)?, at(self.out)?, s, ROWS_PER_BLOCK)?;
        let block = [32 * ROWS_PER_BLOCK as u32, 1, 1];
        gpu.launch("attention", Dims::new(grid, block), &args)
    }
}

/// The attention ops' example shape: 37 tokens, not a block multiple.
#[cfg(feature = "op-examples")]
pub(super) const EXAMPLE_SHAPE: AttentionShape = AttentionShape {
    batch: 2,
    tokens: 37,
    heads: 2,
    head_dim: 64,
    causal: false,
};

#[cfg(feature = "op-examples")]
impl super::example::OpExample for Attention {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = EXAMPLE_SHAPE;
        let qkv = i.f32(2 * 37 * 3 * 128, 1, 2.0);
        let out = i.zeros(DType::F32, 2 * 37 * 128);
        (Attention { qkv, out, shape }, out)
    }
}

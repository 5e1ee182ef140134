//! One op, one file. Each file holds the op's shape type, its CPU reference
//! (`cpu`, the numerical ground truth for every executor) and the argument
//! checks shared by all executors. The matching PTX is `ptx/<name>.ptx`.

pub mod add;
pub mod add_scaled_diff;
pub mod attention;
pub mod attention_bf16;
pub mod cast_bf16;
pub mod embed_add;
pub mod gelu;
pub mod gemm;
pub mod gemm_bf16;
pub mod gemm_dual;
pub mod gemm_dual_bf16;
pub mod l2_normalize;
pub mod layernorm;
pub mod lerp;
pub mod lerp_bf16;
pub mod patch_embed;
pub mod quick_gelu;
pub mod softmax_entropy;

/// λ of row `r` under a per-sample mix.
#[inline]
pub fn row_lambda(lambda: &[f32], rows_per_lambda: usize, r: usize) -> f32 {
    lambda[r / rows_per_lambda]
}

use crate::emu::Arg;
use crate::error::Result;

/// A size as a kernel's `.u32` parameter, or a clear error.
pub(crate) fn u32_arg(what: &str, v: usize) -> Result<Arg> {
    u32::try_from(v)
        .map(Arg::U32)
        .map_err(|_| crate::invalid!("{what} = {v} exceeds the kernels' 32-bit sizes"))
}

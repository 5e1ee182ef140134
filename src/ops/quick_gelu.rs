//! quick_gelu, OpenAI CLIP's activation: `x·σ(1.702·x)`, in place.

use rayon::prelude::*;

/// In f32: relative error a few ulp, well inside every tolerance we state.
pub fn scalar(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

pub fn cpu(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|c| c.iter_mut().for_each(|v| *v = scalar(*v)));
}

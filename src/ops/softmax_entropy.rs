//! softmax_entropy: per row of `logits/T`, the softmax entropy (nats), argmax,
//! max probability and logsumexp, written as `out[row] = [H, argmax, p_max, lse]`.
//!
//! Stable for huge logits (shifted by the row max) and for `−inf` entries
//! (they get probability 0 and contribute nothing to H). A row that is all
//! `−inf` has no distribution: H and p_max are NaN, lse is −inf, argmax 0.
//! A NaN anywhere in a row makes H NaN (callers decide what that means).

use rayon::prelude::*;

pub const OUT_COLS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowStats {
    pub entropy: f32,
    pub argmax: usize,
    pub max_prob: f32,
    pub logsumexp: f32,
}

/// Reference for one row, in f64.
pub fn row(logits: &[f32], temperature: f32) -> RowStats {
    let inv_t = 1.0 / temperature as f64;
    let mut argmax = 0;
    let mut mx = f64::NEG_INFINITY;
    let mut nan = false;
    for (i, &z) in logits.iter().enumerate() {
        let z = z as f64 * inv_t;
        nan |= z.is_nan();
        if z > mx {
            mx = z;
            argmax = i;
        }
    }
    if mx == f64::NEG_INFINITY || nan {
        let lse = if nan { f32::NAN } else { f32::NEG_INFINITY };
        return RowStats {
            entropy: f32::NAN,
            argmax,
            max_prob: f32::NAN,
            logsumexp: lse,
        };
    }
    // With s = Σ e^(z−m): H = log s − Σ e^(z−m)(z−m) / s.
    let (mut s, mut sz) = (0f64, 0f64);
    for &z in logits {
        let d = z as f64 * inv_t - mx;
        if d > f64::NEG_INFINITY {
            let e = d.exp();
            s += e;
            sz += e * d;
        }
    }
    let entropy = s.ln() - sz / s;
    RowStats {
        entropy: entropy.max(0.0) as f32,
        argmax,
        max_prob: (1.0 / s) as f32,
        logsumexp: (mx + s.ln()) as f32,
    }
}

pub fn cpu(logits: &[f32], out: &mut [f32], rows: usize, cols: usize, temperature: f32) {
    out[..rows * OUT_COLS]
        .par_chunks_mut(OUT_COLS)
        .enumerate()
        .for_each(|(r, o)| {
            let st = row(&logits[r * cols..(r + 1) * cols], temperature);
            o.copy_from_slice(&[st.entropy, st.argmax as f32, st.max_prob, st.logsumexp]);
        });
}

/// Unpacks an `out[rows,4]` buffer.
pub fn unpack(out: &[f32]) -> Vec<RowStats> {
    out.chunks_exact(OUT_COLS)
        .map(|o| RowStats {
            entropy: o[0],
            argmax: o[1] as usize,
            max_prob: o[2],
            logsumexp: o[3],
        })
        .collect()
}

use crate::emu::Arg;
use crate::gpu::Gpu;

/// Launches `ptx/softmax_entropy.ptx`: one warp per row, 8 rows per block.
pub fn launch(
    gpu: &dyn Gpu,
    logits: u64,
    out: u64,
    rows: usize,
    cols: usize,
    temperature: f32,
) -> crate::Result<()> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(crate::invalid!(
            "softmax temperature must be positive and finite, got {temperature}"
        ));
    }
    if rows == 0 {
        return Ok(());
    }
    let args = [
        Arg::U64(logits),
        Arg::U64(out),
        super::u32_arg("rows", rows)?,
        super::u32_arg("cols", cols)?,
        Arg::F32(1.0 / temperature),
    ];
    gpu.launch(
        "softmax_entropy",
        [rows.div_ceil(8) as u32, 1, 1],
        [256, 1, 1],
        0,
        &args,
    )
}

/// Work of one call: exp and sums over every logit; writes 4 stats a row.
pub fn cost(rows: usize, cols: usize) -> crate::profile::Cost {
    crate::profile::Cost {
        flops: 8.0 * (rows * cols) as f64,
        bytes: 4.0 * (rows * cols + 4 * rows) as f64,
    }
}

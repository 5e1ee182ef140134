//! softmax_entropy: per row of `logits/T`, the softmax entropy (nats), argmax,
//! max probability and logsumexp, written as `out[row] = [H, argmax, p_max, lse]`.
//!
//! Stable for huge logits (shifted by the row max) and for `−inf` entries
//! (they get probability 0 and contribute nothing to H). A row that is all
//! `−inf` has no distribution: H and p_max are NaN, lse is −inf, argmax 0.
//! A NaN anywhere in a row makes H NaN (callers decide what that means).

use super::{Addr, Host, OpDef, disjoint, elems, need, on_host};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
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

/// Per row of `logits[rows, cols] / temperature`: `out[rows, 4]` =
/// (entropy in nats, argmax, max probability, logsumexp).
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxEntropy {
    pub logits: Buf,
    pub out: Buf,
    pub rows: usize,
    pub cols: usize,
    pub temperature: f32,
}

impl OpDef for SoftmaxEntropy {
    fn check(&self) -> Result<()> {
        let op = "softmax_entropy";
        let t = self.temperature;
        if !(t > 0.0 && t.is_finite()) {
            return Err(crate::invalid!(
                "softmax temperature must be positive and finite, got {t}"
            ));
        }
        need(
            op,
            "logits",
            self.logits,
            DType::F32,
            elems(op, &[self.rows, self.cols])?,
        )?;
        need(
            op,
            "out",
            self.out,
            DType::F32,
            elems(op, &[self.rows, OUT_COLS])?,
        )?;
        disjoint(op, ("out", self.out), &[("logits", Some(self.logits))])
    }

    /// exp and sums over every logit; writes 4 stats a row.
    fn cost(&self) -> crate::profile::Cost {
        let (r, c) = (self.rows, self.cols);
        crate::profile::Cost {
            flops: 8.0 * (r * c) as f64,
            bytes: 4.0 * (r * c + 4 * r) as f64,
        }
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        on_host(host, self.out, &[Some(self.logits)], |i, o| {
            cpu(i.f32(0), o.f32(), self.rows, self.cols, self.temperature)
        })
    }

    /// One warp per row, 8 rows per block.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let args = [
            Arg::U64(at(self.logits)?),
            Arg::U64(at(self.out)?),
            u32_arg("rows", self.rows)?,
            u32_arg("cols", self.cols)?,
            Arg::F32(1.0 / self.temperature),
        ];
        let grid = [self.rows.div_ceil(8) as u32, 1, 1];
        gpu.launch("softmax_entropy", Dims::new(grid, [256, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for SoftmaxEntropy {
    const TOLERANCE: f64 = 1e-5;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let (logits, out) = (i.f32(11 * 1000, 1, 30.0), i.zeros(DType::F32, 44));
        (
            SoftmaxEntropy {
                logits,
                out,
                rows: 11,
                cols: 1000,
                temperature: 0.9,
            },
            out,
        )
    }
}

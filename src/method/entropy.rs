//! Softmax entropies of logits on the executor (`softmax_entropy`), with NaN
//! rows reported and taken as maximal.

use crate::data::dataset::Dataset;
use crate::error::Result;
use crate::exec::Executor;
use crate::ops::softmax_entropy::{OUT_COLS, SoftmaxEntropy};

/// Rows per launch, bounding the device memory one call takes.
const CHUNK_ROWS: usize = 65536;

/// Entropy (nats) of each row of `logits[rows, c] / t`, and the rows that
/// held a NaN, whose entropy is set to the maximum, ln C.
pub fn entropies(
    ex: &dyn Executor,
    logits: &[f32],
    c: usize,
    t: f32,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let n = logits.len() / c.max(1);
    let mut h = Vec::with_capacity(n);
    let mut nan = Vec::new();
    for start in (0..n).step_by(CHUNK_ROWS) {
        let rows = CHUNK_ROWS.min(n - start);
        let inp = ex.upload(&logits[start * c..(start + rows) * c])?;
        let out = ex.alloc(rows * OUT_COLS)?;
        ex.run(SoftmaxEntropy {
            logits: *inp,
            out: *out,
            rows,
            cols: c,
            temperature: t,
        })?;
        for (r, s) in ex.download(*out)?.chunks(OUT_COLS).enumerate() {
            if s[0].is_nan() {
                nan.push(start + r);
                h.push((c as f64).ln());
            } else {
                h.push(s[0] as f64);
            }
        }
    }
    Ok((h, nan))
}

/// Warns about the first few samples (positions into `indices`) whose
/// logits from the `which` model held a NaN.
pub fn warn_nan(data: &Dataset, indices: &[usize], which: &str, nans: &[usize]) {
    for &j in nans.iter().take(5) {
        crate::reporter::warn(&format!(
            "{} has a NaN logit from the {which} model; its entropy is taken as maximal",
            data.describe(indices[j])
        ));
    }
    if nans.len() > 5 {
        crate::reporter::warn(&format!(
            "... {} samples in all with NaN logits from the {which} model",
            nans.len()
        ));
    }
}

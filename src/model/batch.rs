//! Forwards over more images than fit on the device at once: batches are
//! halved when the device runs out of memory, and the work goes on.

use super::device::DeviceModel;
use super::vit::{Output, forward};
use crate::error::{Error, Result};
use crate::exec::Executor;
use std::cell::Cell;

/// The largest batch to try on the device. When a forward runs out of
/// device memory, the batch is halved and the work goes on (and says so);
/// the smaller size is kept for the batches after it.
pub struct BatchCap(Cell<usize>);

impl BatchCap {
    pub fn new(batch_size: usize) -> Self {
        BatchCap(Cell::new(batch_size.max(1)))
    }

    pub fn get(&self) -> usize {
        self.0.get()
    }

    /// Runs `f(start, count)` over `0..n` in chunks of at most the cap,
    /// halving it on out-of-memory; `sink` gets each chunk's result in order.
    pub fn run<T>(
        &self,
        n: usize,
        mut f: impl FnMut(usize, usize) -> Result<T>,
        mut sink: impl FnMut(usize, T),
    ) -> Result<()> {
        let mut start = 0;
        while start < n {
            let k = self.get().min(n - start);
            match f(start, k) {
                Ok(t) => {
                    sink(k, t);
                    start += k;
                }
                Err(Error::OutOfMemory(msg)) if k > 1 => {
                    let half = k / 2;
                    eprintln!(
                        "warning: out of device memory with a batch of {k} ({msg}); \
                         going on with batches of {half}"
                    );
                    self.0.set(half);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs `forward` in batches of at most `batch_size` images, concatenating;
/// batches that do not fit in device memory are halved.
pub fn forward_batched(
    exec: &dyn Executor,
    m: &DeviceModel,
    pixels: &[f32],
    n: usize,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Output> {
    let img = m.spec.channels * m.spec.image_size * m.spec.image_size;
    let mut out = Output {
        embeds: Vec::with_capacity(n * m.spec.embed_dim),
        logits: m.spec.classes.map(|c| Vec::with_capacity(n * c)),
    };
    BatchCap::new(batch_size).run(
        n,
        |start, cnt| {
            forward(
                exec,
                m,
                &pixels[start * img..(start + cnt) * img],
                cnt,
                None,
            )
        },
        |cnt, o| {
            out.embeds.extend(o.embeds);
            if let (Some(all), Some(l)) = (out.logits.as_mut(), o.logits) {
                all.extend(l);
            }
            on_batch(cnt);
        },
    )?;
    Ok(out)
}

/// What [`forward_file`] did.
pub struct ForwardReport {
    pub images: usize,
    pub seconds: f64,
    /// NaN/Inf values in the input (their images' outputs are not finite).
    pub non_finite_inputs: usize,
}

/// `dawin forward`: `pixel_values` `[N,C,H,W]` from `input` through `model`
/// into `out` (`image_embeds` and, with a head, `logits`).
pub fn forward_file(
    ex: &dyn Executor,
    model: &super::Model,
    (model_path, input, out): (&std::path::Path, &std::path::Path, &std::path::Path),
    batch_size: usize,
    precision: super::device::Precision,
) -> Result<ForwardReport> {
    use crate::tensorfile::{Tensor, TensorFile, write_f32};
    let s = &model.spec;
    let px = TensorFile::open(input)?.read_f32("pixel_values")?;
    let [n, c, h, w] = px.shape[..] else {
        return Err(Error::file(
            input,
            format!(
                "`pixel_values` has shape {:?}, expected [N, {}, {}, {}]",
                px.shape, s.channels, s.image_size, s.image_size
            ),
        ));
    };
    if c != s.channels || h != s.image_size || w != s.image_size {
        return Err(Error::file(
            input,
            format!(
                "images are {c}×{h}×{w}, but {} expects {}×{}×{} (its positional embedding has {} tokens for patch {})",
                model_path.display(),
                s.channels,
                s.image_size,
                s.image_size,
                s.tokens(),
                s.patch
            ),
        ));
    }
    let non_finite_inputs = px.data.iter().filter(|v| !v.is_finite()).count();
    let t0 = std::time::Instant::now();
    let dm = DeviceModel::upload_as(ex, model, precision)?;
    let o = forward_batched(ex, &dm, &px.data, n, batch_size, |_| {})?;
    let seconds = t0.elapsed().as_secs_f64();
    let embeds = Tensor {
        shape: vec![n, s.embed_dim],
        data: o.embeds,
    };
    let logits = o.logits.map(|l| Tensor {
        shape: vec![n, s.classes.unwrap_or(0)],
        data: l,
    });
    let mut tensors = vec![("image_embeds", &embeds)];
    if let Some(l) = &logits {
        tensors.push(("logits", l));
    }
    write_f32(out, &tensors, None)?;
    Ok(ForwardReport {
        images: n,
        seconds,
        non_finite_inputs,
    })
}

//! Forwards over more images than fit on the device at once: batches are
//! halved when the device runs out of memory, and the work goes on.

use super::pixels::{HostPixels, Normalization};
use super::placed::PlacedModel;
use super::vit::{Output, Pixels, forward_with, stage};
use crate::error::{Error, Result};
use crate::exec::{Executor, OwnedBuf};
use std::cell::{Cell, RefCell};

/// Images for a forward: `n` of them, and the serial that names their batch
/// (unique in the process; a data loader's), which lets a call use the
/// upload the previous call staged for it.
#[derive(Clone, Copy)]
pub struct Images<'p> {
    pub pixels: HostPixels<'p>,
    pub n: usize,
    pub serial: Option<u64>,
}

impl<'p> Images<'p> {
    /// Images that no earlier call staged.
    pub fn host(pixels: impl Into<HostPixels<'p>>, n: usize) -> Self {
        Images {
            pixels: pixels.into(),
            n,
            serial: None,
        }
    }
}

/// What the next call will run on, so its first upload overlaps this
/// call's last forward (on `cuda`; elsewhere it is only a copy).
pub trait Lookahead {
    fn peek(&mut self) -> Option<Images<'_>>;
}

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
                    crate::reporter::warn(&format!(
                        "out of device memory with a batch of {k} ({msg}); \
                         going on with batches of {half}"
                    ));
                    self.0.set(half);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A chunk's images already on the device: batch `serial`, images
/// `start..start + count`.
struct Staged<'e> {
    key: (Option<u64>, usize, usize),
    pixels: OwnedBuf<'e>,
    norm: Option<Normalization>,
}

/// One chunk's forward: its images, the index of its first image and its
/// count, and the hook to call once its kernels are queued.
pub type ChunkForward<'f, 'e> =
    dyn Fn(Pixels<'_, 'e>, usize, usize, &mut dyn FnMut()) -> Result<Output> + 'f;

/// Runs forwards chunk by chunk, staging each next chunk's images on the
/// device while the current chunk's forward runs (on `cuda` the copy
/// overlaps the kernels; elsewhere it is the same copy, earlier). The stage
/// made during a call's last forward waits here for the call that names it.
pub struct Stager<'e> {
    ex: &'e dyn Executor,
    ahead: RefCell<Option<Staged<'e>>>,
}

impl<'e> Stager<'e> {
    pub fn new(ex: &'e dyn Executor) -> Self {
        Stager {
            ex,
            ahead: RefCell::new(None),
        }
    }

    /// Runs `f` over `images` in chunks of at most the cap (halved when the
    /// device runs out of memory); `sink` gets each chunk's output in order.
    /// After the last chunk's kernels, the first chunk of `next`'s images
    /// is staged.
    pub fn run(
        &self,
        cap: &BatchCap,
        images: Images,
        next: Option<&mut dyn Lookahead>,
        f: &ChunkForward<'_, 'e>,
        sink: impl FnMut(usize, Output),
    ) -> Result<()> {
        let Images { pixels, n, serial } = images;
        let img = pixels.len() / n.max(1);
        // Taken now, so a stage this call does not use is dropped.
        let staged = RefCell::new(self.ahead.take());
        let next = RefCell::new(next);
        let chunk = |start: usize, k: usize| {
            let px = match staged.take() {
                // A stage of an earlier call has a serial, so a call without
                // one matches only its own.
                Some(s) if s.key == (serial, start, k) => Pixels::Staged(s.pixels, s.norm),
                _ => Pixels::Host(pixels.slice(start * img..(start + k) * img)),
            };
            let mut between = || {
                let after = start + k;
                if after < n {
                    let k2 = cap.get().min(n - after);
                    let px = pixels.slice(after * img..(after + k2) * img);
                    *staged.borrow_mut() = self.stage((serial, after, k2), px);
                } else if let Some(la) = next.borrow_mut().as_mut()
                    && let Some(im) = la.peek()
                    && im.serial.is_some()
                    && im.n > 0
                {
                    let k2 = cap.get().min(im.n);
                    let px = im.pixels.slice(0..k2 * (im.pixels.len() / im.n));
                    *self.ahead.borrow_mut() = self.stage((im.serial, 0, k2), px);
                }
            };
            f(px, start, k, &mut between)
        };
        cap.run(n, chunk, sink)
    }

    /// Images on the device ahead of their forward, or none: a stage that
    /// fails (out of memory) leaves the upload to the forward itself.
    fn stage(&self, key: (Option<u64>, usize, usize), px: HostPixels) -> Option<Staged<'e>> {
        let (pixels, norm) = stage(self.ex, px).ok()?;
        Some(Staged { key, pixels, norm })
    }
}

/// Runs `forward` in batches of at most `batch_size` images, concatenating;
/// batches that do not fit in device memory are halved.
pub fn forward_batched<'e, 'p>(
    exec: &'e dyn Executor,
    m: &PlacedModel,
    pixels: impl Into<HostPixels<'p>>,
    n: usize,
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Output> {
    let mut out = Output {
        embeds: Vec::with_capacity(n * m.spec.embed_dim),
        logits: m.spec.classes.map(|c| Vec::with_capacity(n * c)),
    };
    let f = |px: Pixels<'_, 'e>, _, cnt, between: &mut dyn FnMut()| {
        forward_with(exec, m, px, cnt, None, between)
    };
    let images = Images::host(pixels, n);
    let cap = BatchCap::new(batch_size);
    Stager::new(exec).run(&cap, images, None, &f, |cnt, o| {
        out.embeds.extend(o.embeds);
        if let (Some(all), Some(l)) = (out.logits.as_mut(), o.logits) {
            all.extend(l);
        }
        on_batch(cnt);
    })?;
    Ok(out)
}

/// What [`forward_file`] did.
pub struct ForwardReport {
    pub images: usize,
    pub seconds: f64,
    /// NaN/Inf values in the input (their images' outputs are not finite).
    pub non_finite_inputs: usize,
}

/// `dawin forward`: `px`, the `pixel_values` `[N,C,H,W]` read from `input`,
/// through `model` into `out` (`image_embeds` and, with a head, `logits`).
pub fn forward_file(
    ex: &dyn Executor,
    model: &super::Model,
    (model_path, input, out): (&std::path::Path, &std::path::Path, &std::path::Path),
    (shape, px): (Vec<usize>, super::pixels::PixelBuf),
    (batch_size, precision): (usize, super::placed::Precision),
) -> Result<ForwardReport> {
    use crate::tensorfile::{Tensor, write_f32};
    let s = &model.spec;
    let [n, c, h, w] = shape[..] else {
        return Err(Error::file(
            input,
            format!(
                "`pixel_values` has shape {:?}, expected [N, {}, {}, {}]",
                shape, s.channels, s.image_size, s.image_size
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
    let non_finite_inputs = match &px {
        super::pixels::PixelBuf::F32(p) => p.iter().filter(|v| !v.is_finite()).count(),
        super::pixels::PixelBuf::U8(..) => 0,
    };
    let t0 = std::time::Instant::now();
    let dm = PlacedModel::upload_as(ex, model, precision)?;
    let o = forward_batched(ex, &dm, px.view(), n, batch_size, |_| {})?;
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

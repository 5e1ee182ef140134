//! The images one `dawin preprocess` run reads: class folders (labels by
//! folder, numbered as eval numbers them) and single image files (label
//! −1), decoded and CLIP-preprocessed a chunk at a time on every thread,
//! handed over in order while the next chunk decodes. Nothing is kept:
//! the caller writes each image as it comes ([`super::pixel_file`]).

use super::dataset::{Dataset, FolderOptions};
use super::preprocess;
use crate::error::Result;
use rayon::prelude::*;
use std::path::PathBuf;

/// Most images decoded at once: enough to keep every thread busy, few
/// enough that a chunk's pixels (64 · 150 KB at 224) stay small.
const CHUNK: usize = 64;
/// Pixel bytes a chunk may hold before it is cut below [`CHUNK`] (large
/// `--size`: 8192 is 201 MB an image).
const CHUNK_BYTES: usize = 256 << 20;

/// The readable-looking images of some paths, in order.
pub struct ImageSet {
    parts: Vec<Part>,
    size: usize,
    border: usize,
    /// Files a folder's listing already refused.
    skipped: usize,
}

enum Part {
    Files(Vec<PathBuf>),
    Folder(Box<Dataset>),
}

/// One image: its part and its index there.
#[derive(Clone, Copy)]
struct Item {
    part: usize,
    index: usize,
}

/// What a pass over an [`ImageSet`] kept.
pub struct Decoded {
    /// The label of every image handed over, in order.
    pub labels: Vec<i64>,
    /// Images that could not be read (each reported as a warning).
    pub skipped: usize,
}

impl ImageSet {
    /// Lists `paths` (class folders or image files); a folder's warnings
    /// and the files its listing refused are reported here.
    pub fn open(paths: &[PathBuf], size: usize, opt: &FolderOptions) -> Result<ImageSet> {
        if size == 0 {
            return Err(crate::invalid!("--size must be positive"));
        }
        let mut set = ImageSet {
            parts: Vec::new(),
            size,
            border: opt.crop_border,
            skipped: 0,
        };
        for p in paths {
            if !p.is_dir() {
                match set.parts.last_mut() {
                    Some(Part::Files(files)) => files.push(p.clone()),
                    _ => set.parts.push(Part::Files(vec![p.clone()])),
                }
                continue;
            }
            let d = Dataset::open_with(p, size, opt)?;
            for w in &d.warnings {
                crate::reporter::warn(&format!("{}: {w}", p.display()));
            }
            for f in &d.skipped_files {
                crate::reporter::warn(&format!("skipped {}: {}", f.path.display(), f.why));
            }
            set.skipped += d.skipped_files.len();
            set.parts.push(Part::Folder(Box::new(d)));
        }
        Ok(set)
    }

    /// How many images a pass decodes (the most it can hand over).
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes every image and hands its planar u8 `[3, S, S]` pixels and
    /// label to `sink`, in order, while the next chunk decodes; an image
    /// that cannot be read is reported and skipped.
    pub fn decode_each(
        &self,
        progress: bool,
        mut sink: impl FnMut(&[u8], i64) -> Result<()> + Send,
    ) -> Result<Decoded> {
        let items: Vec<Item> = (self.parts.iter().enumerate())
            .flat_map(|(part, p)| (0..p.len()).map(move |index| Item { part, index }))
            .collect();
        let mut out = Decoded {
            labels: Vec::with_capacity(items.len()),
            skipped: self.skipped,
        };
        let pb = crate::reporter::progress(items.len(), "preprocess", progress);
        let mut chunks = items.chunks(self.chunk_len());
        let mut ready = chunks.next().map(|c| self.decode(c)).unwrap_or_default();
        while !ready.is_empty() {
            crate::interrupt::check()?;
            let n = ready.len();
            let hand_over = || self.hand_over(ready, &mut sink, &mut out);
            let (next, handed) = rayon::join(|| chunks.next().map(|c| self.decode(c)), hand_over);
            handed?;
            pb.inc(n as u64);
            ready = next.unwrap_or_default();
        }
        pb.finish();
        Ok(out)
    }

    /// Images per chunk: [`CHUNK`], fewer for large images, never fewer
    /// than the threads.
    fn chunk_len(&self) -> usize {
        let image = 3 * self.size * self.size;
        // Not `clamp`: a machine may have more threads than CHUNK.
        (CHUNK_BYTES / image)
            .min(CHUNK)
            .max(rayon::current_num_threads())
    }

    /// Decodes `items` on every thread, in order.
    fn decode(&self, items: &[Item]) -> Vec<(Item, Result<Vec<u8>>)> {
        let one = |it: &Item| match &self.parts[it.part] {
            Part::Files(f) => preprocess::load_pixels_cropped(&f[it.index], self.size, self.border),
            Part::Folder(d) => d.load_pixels(it.index),
        };
        items.par_iter().map(|it| (*it, one(it))).collect()
    }

    fn hand_over(
        &self,
        decoded: Vec<(Item, Result<Vec<u8>>)>,
        sink: &mut impl FnMut(&[u8], i64) -> Result<()>,
        out: &mut Decoded,
    ) -> Result<()> {
        for (it, px) in decoded {
            let part = &self.parts[it.part];
            match px {
                Ok(px) => {
                    let label = part.label(it.index);
                    sink(&px, label)?;
                    out.labels.push(label);
                }
                Err(e) => {
                    crate::reporter::warn(&part.skipped(it.index, &e));
                    out.skipped += 1;
                }
            }
        }
        Ok(())
    }
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Files(f) => f.len(),
            Part::Folder(d) => d.len(),
        }
    }

    fn label(&self, i: usize) -> i64 {
        match self {
            Part::Files(_) => -1,
            Part::Folder(d) => d.labels[i],
        }
    }

    /// The warning for image `i`, which could not be read.
    fn skipped(&self, i: usize, e: &crate::error::Error) -> String {
        match self {
            // A single file's error names it already.
            Part::Files(_) => format!("skipped {e}"),
            Part::Folder(d) => format!("skipped {}: {e}", d.describe(i)),
        }
    }
}

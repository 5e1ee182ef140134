//! Evaluation data: a safetensors file (`pixel_values` f32 [N,3,S,S],
//! `labels` i64 [N]) or an image folder (one subfolder per class, classes
//! indexed by sorted folder name, jpg/png inside), streamed in batches with
//! decoding on a background thread so it overlaps compute.

use super::preprocess;
use crate::error::{Error, Result};
use crate::tensorfile::TensorFile;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

enum Source {
    Tensors(TensorFile),
    Folder { paths: Vec<PathBuf> },
}

pub struct Dataset {
    pub path: PathBuf,
    source: Source,
    pub labels: Vec<i64>,
    /// Image side in pixels (the model's input size for folders).
    pub size: usize,
    /// Class names (folder names) when known.
    pub classes: Vec<String>,
}

/// One decoded batch: the dataset indices it holds (unreadable images are
/// left out and reported in `failed`), and their pixels.
pub struct Batch {
    pub indices: Vec<usize>,
    pub pixels: Vec<f32>,
    pub failed: Vec<(usize, String)>,
}

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "JPEG"];

impl Dataset {
    /// Opens `path`; `size` is the model's input size (used for folders, and
    /// checked against tensor files).
    pub fn open(path: &Path, size: usize) -> Result<Dataset> {
        if path.is_dir() {
            return Self::open_folder(path, size);
        }
        let f = TensorFile::open(path)?;
        let shape = f.shape("pixel_values").ok_or_else(|| {
            Error::file(
                path,
                "missing tensor `pixel_values` (expected f32 [N,3,S,S])",
            )
        })?;
        let [n, c, h, w] = shape[..] else {
            return Err(Error::file(
                path,
                format!("`pixel_values` has shape {shape:?}, expected [N,3,S,S]"),
            ));
        };
        if c != 3 || h != w {
            return Err(Error::file(
                path,
                format!("`pixel_values` has shape {shape:?}, expected [N,3,S,S]"),
            ));
        }
        if h != size {
            return Err(Error::file(
                path,
                format!(
                    "images are {h}×{w}, but the model expects {size}×{size}; run `dawin preprocess --size {size}`"
                ),
            ));
        }
        let (lshape, labels) = f.read_i64("labels")?;
        if lshape != [n] {
            return Err(Error::file(
                path,
                format!("`labels` has shape {lshape:?}, expected [{n}]"),
            ));
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            source: Source::Tensors(f),
            labels,
            size,
            classes: vec![],
        })
    }

    fn open_folder(path: &Path, size: usize) -> Result<Dataset> {
        let rd = |p: &Path| std::fs::read_dir(p).map_err(|e| Error::io(p, e));
        let mut classes: Vec<(String, PathBuf)> = rd(path)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(Error::file(
                path,
                "no class subfolders (expected one folder per class holding jpg/png)",
            ));
        }
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for (ci, (_, dir)) in classes.iter().enumerate() {
            let mut files: Vec<PathBuf> = rd(dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| IMAGE_EXTS.contains(&x.to_string_lossy().as_ref()))
                })
                .collect();
            files.sort();
            labels.extend(std::iter::repeat_n(ci as i64, files.len()));
            paths.extend(files);
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            source: Source::Folder { paths },
            labels,
            size,
            classes: classes.into_iter().map(|c| c.0).collect(),
        })
    }

    /// A data set for a `classes`-class label space: not empty, and every
    /// label a class index.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        if self.is_empty() {
            return Err(Error::file(&self.path, "the data set is empty"));
        }
        match self
            .labels
            .iter()
            .position(|&y| y < 0 || y as usize >= classes)
        {
            Some(i) => Err(Error::file(
                &self.path,
                format!(
                    "label {} of {} is out of range for {classes} classes",
                    self.labels[i],
                    self.describe(i)
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Where sample `i` comes from, for messages.
    pub fn describe(&self, i: usize) -> String {
        match &self.source {
            Source::Tensors(_) => format!("{} sample {i}", self.path.display()),
            Source::Folder { paths } => paths[i].display().to_string(),
        }
    }

    /// A cheap fingerprint of the data for cache validation.
    pub fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        match &self.source {
            Source::Tensors(f) => {
                h.update(f.path().to_string_lossy().as_bytes());
                if let Ok(b) = std::fs::read(f.path()) {
                    h.update(&b);
                }
            }
            Source::Folder { paths } => {
                for p in paths {
                    h.update(p.to_string_lossy().as_bytes());
                    if let Ok(m) = std::fs::metadata(p) {
                        h.update(&m.len().to_le_bytes());
                        if let Ok(t) = m.modified() {
                            h.update(format!("{t:?}").as_bytes());
                        }
                    }
                }
            }
        }
        h.update(&(self.size as u64).to_le_bytes());
        format!("{:032x}", h.digest128())
    }

    /// Pixels of the given samples, decoding folders in parallel.
    pub fn load(&self, indices: &[usize]) -> Batch {
        let img = 3 * self.size * self.size;
        match &self.source {
            Source::Tensors(f) => {
                let st = f.tensors();
                let t = st.tensor("pixel_values").expect("checked in open");
                let bytes = t.data();
                let mut pixels = Vec::with_capacity(indices.len() * img);
                for &i in indices {
                    let b = &bytes[i * img * 4..(i + 1) * img * 4];
                    pixels.extend(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
                    );
                }
                Batch {
                    indices: indices.to_vec(),
                    pixels,
                    failed: vec![],
                }
            }
            Source::Folder { paths } => {
                let decoded: Vec<(usize, Result<Vec<f32>>)> = indices
                    .par_iter()
                    .map(|&i| (i, preprocess::load_image(&paths[i], self.size)))
                    .collect();
                let mut b = Batch {
                    indices: vec![],
                    pixels: Vec::with_capacity(indices.len() * img),
                    failed: vec![],
                };
                for (i, r) in decoded {
                    match r {
                        Ok(p) => {
                            b.indices.push(i);
                            b.pixels.extend(p);
                        }
                        Err(e) => b.failed.push((i, e.to_string())),
                    }
                }
                b
            }
        }
    }

    /// Calls `f` on consecutive batches of `indices`, loading the next batch
    /// on a background thread while `f` runs.
    pub fn for_each_batch(
        &self,
        indices: &[usize],
        batch_size: usize,
        mut f: impl FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        let chunks: Vec<&[usize]> = indices.chunks(batch_size.max(1)).collect();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
            let producer = s.spawn(move || {
                for c in chunks {
                    if tx.send(self.load(c)).is_err() {
                        break;
                    }
                }
            });
            let mut result = Ok(());
            for b in rx.iter() {
                if let Err(e) = f(b) {
                    result = Err(e);
                    break;
                }
            }
            drop(rx);
            let _ = producer.join();
            result
        })
    }
}

/// What `dawin preprocess` produced: pixels `[n,3,size,size]`, labels
/// (−1 for single images) and how many images could not be read.
pub struct Preprocessed {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub skipped: usize,
}

/// Decodes and CLIP-preprocesses every image of `paths`: class folders
/// (labels by sorted folder name) or single images (label −1).
/// Unreadable images are reported on stderr and skipped.
pub fn preprocess_paths(
    paths: &[std::path::PathBuf],
    size: usize,
    progress: bool,
) -> Result<Preprocessed> {
    if size == 0 {
        return Err(crate::invalid!("--size must be positive"));
    }
    let mut out = Preprocessed {
        pixels: Vec::new(),
        labels: Vec::new(),
        skipped: 0,
    };
    for p in paths {
        if !p.is_dir() {
            match preprocess::load_image(p, size) {
                Ok(v) => {
                    out.pixels.extend(v);
                    out.labels.push(-1);
                }
                Err(e) => {
                    eprintln!("warning: skipped {e}");
                    out.skipped += 1;
                }
            }
            continue;
        }
        let d = Dataset::open(p, size)?;
        let all: Vec<usize> = (0..d.len()).collect();
        let pb = super::progress::progress_bar(all.len(), "preprocess", progress);
        d.for_each_batch(&all, 64, |b| {
            for (i, e) in &b.failed {
                eprintln!("warning: skipped {}: {e}", d.describe(*i));
                out.skipped += 1;
            }
            out.labels.extend(b.indices.iter().map(|&i| d.labels[i]));
            out.pixels.extend_from_slice(&b.pixels);
            pb.inc((b.indices.len() + b.failed.len()) as u64);
            Ok(())
        })?;
        pb.finish_and_clear();
    }
    if out.labels.is_empty() {
        return Err(crate::invalid!(
            "no image could be read from {} path(s)",
            paths.len()
        ));
    }
    Ok(out)
}

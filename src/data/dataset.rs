//! Evaluation data: a safetensors file (`pixel_values` `[N,3,S,S]` in any
//! float dtype, `labels` i64 `[N]`) or an image folder read the way
//! torchvision's `ImageFolder` reads one (one subfolder per class, classes
//! indexed by sorted folder name, images found recursively inside each,
//! extensions matched case-insensitively), streamed in batches with
//! decoding on a background thread so it overlaps compute.

use crate::choice::{Choice, Named};
use crate::data::pixel_cache::{Cached, Opened, PixelCache};
use crate::data::preprocess;
use crate::error::{Error, Result};
use crate::model::batch::{Images, Lookahead};
use crate::model::pixels::PixelBuf;
use crate::tensorfile::{TensorFile, f32_values};
use rayon::prelude::*;
use safetensors::Dtype;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// How the class folders of an image folder are numbered.
/// Each value's meaning is its help in [`LabelOrder::ALL`](crate::choice::Choice::ALL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelOrder {
    #[default]
    Sorted,
    Numeric,
}

impl Choice for LabelOrder {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            LabelOrder::Sorted,
            "sorted",
            "By sorted folder name, as torchvision's ImageFolder",
        ),
        Named::new(
            LabelOrder::Numeric,
            "numeric",
            "Each folder is named by its class index (ImageNetV2's 0…999)",
        ),
    ];
}

crate::display_choice!(LabelOrder);

/// What `dawin preprocess` stores as `pixel_values`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PixelDtype {
    #[default]
    F32,
    U8,
}

impl Choice for PixelDtype {
    const ALL: &'static [Named<Self>] = &[
        Named::new(
            PixelDtype::F32,
            "f32",
            "CLIP-normalised f32, what every tool reads",
        ),
        Named::new(
            PixelDtype::U8,
            "u8",
            "The u8 RGB pixels after resize and crop, a quarter of the size: a pixel cache that dawin normalises as it reads (bit-identical to f32)",
        ),
    ];
}
crate::display_choice!(PixelDtype);

/// Metadata key of a u8 `pixel_values` written by `dawin preprocess`.
pub const U8_PIXELS_KEY: &str = "dawin.pixel_values";
/// Its value: what the u8 values are and how they are normalised.
pub const U8_PIXELS_MEANING: &str =
    "u8 RGB after resize and center crop, [N,3,S,S]; normalise with CLIP's mean and std";

/// How an image folder is read: the class numbering, which class folders
/// are kept, and a border trimmed from every image before preprocessing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FolderOptions {
    pub order: LabelOrder,
    /// Keep only these class folders (ObjectNet's 113 of 313); the kept
    /// folders are numbered as `order` says.
    pub keep: Option<Vec<String>>,
    /// Pixels trimmed from each side of each image (ObjectNet: 2).
    pub crop_border: usize,
}

impl From<LabelOrder> for FolderOptions {
    fn from(order: LabelOrder) -> Self {
        FolderOptions {
            order,
            ..Default::default()
        }
    }
}

/// A file of an image folder that is not a sample, and why.
#[derive(Clone, Debug)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub why: String,
    /// How many samples come before it in `ImageFolder`'s order: the shard
    /// whose samples reach past it reports it.
    pub before: usize,
}

impl SkippedFile {
    /// Whether the shard of samples `range` (of `n`) reports this file:
    /// each file belongs to exactly one shard of a split.
    pub fn in_shard(&self, range: &std::ops::Range<usize>, n: usize) -> bool {
        range.contains(&self.before) || (self.before >= n && range.end == n)
    }
}

enum Source {
    /// The file and the dtype of its `pixel_values`.
    Tensors(TensorFile, Dtype),
    Folder {
        paths: Vec<PathBuf>,
    },
}

pub struct Dataset {
    pub path: PathBuf,
    source: Source,
    pub labels: Vec<i64>,
    /// Image side in pixels (the model's input size for folders).
    pub size: usize,
    /// Class names (folder names) when known, by label.
    pub classes: Vec<String>,
    /// Files of an image folder that are not samples: not images, broken
    /// links, link loops.
    pub skipped_files: Vec<SkippedFile>,
    /// What the user should know about the folder (empty classes, ...).
    pub warnings: Vec<String>,
    /// Pixels trimmed from each side of each image before preprocessing.
    pub crop_border: usize,
    /// Decoded images of a folder, kept across passes and runs.
    pixel_cache: Option<PixelCache>,
}

/// One decoded batch: the dataset indices it holds (unreadable images are
/// left out and reported in `failed`), and their pixels.
pub struct Batch {
    pub indices: Vec<usize>,
    /// u8 RGB for image folders and u8 files (normalised by the forward's
    /// first op), f32 for float files.
    pub pixels: PixelBuf,
    pub failed: Vec<(usize, String)>,
    /// Unique in the process: names the batch whose images an engine staged
    /// on the device during the previous batch's forward.
    pub serial: u64,
}

static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Batch {
    fn new(indices: Vec<usize>, pixels: PixelBuf) -> Batch {
        Batch {
            indices,
            pixels,
            failed: vec![],
            serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A batch of u8 images, with room for `bytes`.
    fn of_bytes(bytes: usize) -> Batch {
        let px = PixelBuf::U8(Vec::with_capacity(bytes), preprocess::CLIP_NORMALIZATION);
        Batch::new(vec![], px)
    }

    /// Appends sample `i` from its u8 pixels (a batch of bytes).
    fn push_bytes(&mut self, i: usize, px: &[u8]) {
        let PixelBuf::U8(bytes, _) = &mut self.pixels else {
            unreachable!("only batches of bytes take bytes")
        };
        self.indices.push(i);
        bytes.extend_from_slice(px);
    }

    /// The batch's images, named by its serial.
    pub fn images(&self) -> Images<'_> {
        Images {
            pixels: self.pixels.view(),
            n: self.indices.len(),
            serial: Some(self.serial),
        }
    }
}

/// The batches still to come, for a [`Dataset::for_each_batch_ahead`]
/// callback: peeking waits for the loader's next batch and keeps it.
pub struct Upcoming<'r> {
    rx: &'r std::sync::mpsc::Receiver<Batch>,
    held: Option<Batch>,
}

impl Lookahead for Upcoming<'_> {
    fn peek(&mut self) -> Option<Images<'_>> {
        if self.held.is_none() {
            self.held = self.rx.recv().ok();
        }
        self.held.as_ref().map(Batch::images)
    }
}

/// Whether the `image` crate of this build decodes files with this
/// extension (any case).
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(image::ImageFormat::from_extension)
        .is_some_and(|f| f.reading_enabled())
}

impl Dataset {
    /// Opens `path`; `size` is the model's input size (used for folders, and
    /// checked against tensor files).
    pub fn open(path: &Path, size: usize) -> Result<Dataset> {
        Self::open_with(path, size, &FolderOptions::default())
    }

    /// [`Dataset::open`] with how image folders are read.
    pub fn open_with(path: &Path, size: usize, opt: &FolderOptions) -> Result<Dataset> {
        if path.is_dir() {
            return Self::open_folder(path, size, opt);
        }
        if opt.keep.is_some() || opt.crop_border > 0 {
            return Err(Error::file(
                path,
                "--folders and --crop-border apply to image folders, and this is a tensor file (crop before `dawin preprocess` instead)",
            ));
        }
        let f = TensorFile::open(path)?;
        let st = f.tensors();
        let px = st
            .tensor("pixel_values")
            .map_err(|_| Error::file(path, "missing tensor `pixel_values` (expected [N,3,S,S])"))?;
        let (dtype, shape) = (px.dtype(), px.shape().to_vec());
        if dtype != Dtype::U8 && f32_values(dtype, &[]).is_none() {
            return Err(Error::file(
                path,
                format!(
                    "`pixel_values` has dtype {dtype:?}: pixels must be floats (F32, F16, BF16 or F64), normalised as CLIP expects, or u8 RGB (`dawin preprocess --dtype u8`); run `dawin preprocess`"
                ),
            ));
        }
        let mut warnings = vec![];
        let marked = f.metadata().contains_key(U8_PIXELS_KEY);
        if dtype == Dtype::U8 && !marked {
            warnings.push(format!(
                "`pixel_values` is u8 without dawin's `{U8_PIXELS_KEY}` mark: read as RGB 0–255 [N,3,S,S] after resize and crop, normalised with CLIP's mean and std"
            ));
        }
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
        drop(st);
        Ok(Dataset {
            path: path.to_path_buf(),
            source: Source::Tensors(f, dtype),
            labels,
            size,
            classes: vec![],
            skipped_files: vec![],
            warnings,
            crop_border: 0,
            pixel_cache: None,
        })
    }

    fn open_folder(path: &Path, size: usize, opt: &FolderOptions) -> Result<Dataset> {
        let mut classes = class_folders(path)?;
        let mut warnings = Vec::new();
        if let Some(keep) = &opt.keep {
            classes = keep_folders(classes, keep, &mut warnings);
        }
        if classes.is_empty() {
            return Err(Error::file(
                path,
                match opt.keep {
                    Some(_) => "none of the class folders --folders lists is here",
                    None => "no class subfolders (expected one folder per class holding images)",
                },
            ));
        }
        let ids = class_ids(path, &classes, opt.order)?;
        let mut d = Dataset {
            path: path.to_path_buf(),
            source: Source::Folder { paths: vec![] },
            labels: vec![],
            size,
            classes: vec![],
            skipped_files: vec![],
            warnings,
            crop_border: opt.crop_border,
            pixel_cache: None,
        };
        let mut paths = Vec::new();
        for ((name, dir), id) in classes.iter().zip(&ids) {
            let (mut files, mut odd) = (Vec::new(), Vec::new());
            walk(dir, &mut HashSet::new(), &mut files, &mut odd)?;
            let not_image = "not an image file this build decodes (by its extension)";
            files.extend(odd.iter().map(|(d, f, _)| (d.clone(), f.clone())));
            // ImageFolder's order: sorted by folder path, then file name, as strings.
            files.sort_by_cached_key(|(dir, f)| {
                let name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                (dir.to_string_lossy().to_string(), name)
            });
            let mut images = Vec::new();
            for (_, f) in files {
                let why = match odd.iter().find(|(_, o, _)| *o == f) {
                    Some((_, _, why)) => why.clone(),
                    None if is_image(&f) => {
                        images.push(f);
                        continue;
                    }
                    None => not_image.to_string(),
                };
                let before = paths.len() + images.len();
                d.skipped_files.push(SkippedFile {
                    path: f,
                    why,
                    before,
                });
            }
            if images.is_empty() {
                d.warnings
                    .push(format!("class folder `{name}` (label {id}) holds no image"));
            }
            d.labels.extend(std::iter::repeat_n(*id, images.len()));
            paths.extend(images);
        }
        let n_classes = ids.iter().max().map_or(0, |m| *m as usize + 1);
        d.classes = vec![String::new(); n_classes];
        for ((name, _), id) in classes.into_iter().zip(ids) {
            d.classes[id as usize] = name;
        }
        d.source = Source::Folder { paths };
        Ok(d)
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

    /// Whether the samples come from an image folder (they have paths).
    pub fn is_folder(&self) -> bool {
        matches!(self.source, Source::Folder { .. })
    }

    /// The file of sample `i` of an image folder.
    pub fn sample_path(&self, i: usize) -> Option<&Path> {
        match &self.source {
            Source::Folder { paths } => paths.get(i).map(|p| p.as_path()),
            Source::Tensors(..) => None,
        }
    }

    /// Where sample `i` comes from, for messages.
    pub fn describe(&self, i: usize) -> String {
        match &self.source {
            Source::Tensors(..) => format!("{} sample {i}", self.path.display()),
            Source::Folder { paths } => paths[i].display().to_string(),
        }
    }

    /// A hash of the data's content (every byte of the file, or of every
    /// image of the folder with its place in it), the size the images are
    /// read at and the labels: a changed byte changes it.
    pub fn fingerprint(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        match &self.source {
            Source::Tensors(f, _) => match std::fs::read(f.path()) {
                Ok(b) => h.update(&b),
                Err(e) => h.update(format!("unreadable: {e}").as_bytes()),
            },
            Source::Folder { paths } => {
                for p in paths {
                    let rel = p.strip_prefix(&self.path).unwrap_or(p);
                    h.update(rel.to_string_lossy().as_bytes());
                    match std::fs::read(p) {
                        Ok(b) => h.update(&xxhash_rust::xxh3::xxh3_128(&b).to_le_bytes()),
                        Err(e) => h.update(format!("unreadable: {e}").as_bytes()),
                    }
                }
            }
        }
        h.update(&(self.size as u64).to_le_bytes());
        h.update(&(self.crop_border as u64).to_le_bytes());
        h.update(bytemuck::cast_slice(&self.labels));
        format!("{:032x}", h.digest128())
    }

    /// Pixels of the given samples, decoding folders in parallel.
    pub fn load(&self, indices: &[usize]) -> Batch {
        let img = 3 * self.size * self.size;
        match &self.source {
            Source::Tensors(f, dtype) => {
                let st = f.tensors();
                let bytes = st.tensor("pixel_values").expect("checked in open").data();
                let el = bytes.len() / (self.len() * img).max(1);
                let rows = indices
                    .iter()
                    .map(|&i| &bytes[i * img * el..(i + 1) * img * el]);
                if *dtype == Dtype::U8 {
                    let mut b = Batch::of_bytes(indices.len() * img);
                    indices
                        .iter()
                        .zip(rows)
                        .for_each(|(&i, px)| b.push_bytes(i, px));
                    return b;
                }
                let f = |b| f32_values(*dtype, b).expect("a float dtype, checked in open");
                Batch::new(indices.to_vec(), PixelBuf::F32(rows.flat_map(f).collect()))
            }
            Source::Folder { .. } => {
                let cache = self.pixel_cache.as_ref();
                cache
                    .and_then(|c| self.load_cached(c, indices))
                    .unwrap_or_else(|| self.load_decoded(indices))
            }
        }
    }

    /// The samples from a complete pixel cache; `None` when any of them is
    /// not there (the entry is still filling, or failed a checksum).
    fn load_cached(&self, cache: &PixelCache, indices: &[usize]) -> Option<Batch> {
        let mut b = Batch::of_bytes(indices.len() * 3 * self.size * self.size);
        for &i in indices {
            match cache.get(i)? {
                Cached::Pixels(px) => b.push_bytes(i, px),
                Cached::Failed(why) => b.failed.push((i, why.to_string())),
            }
        }
        Some(b)
    }

    /// The samples decoded from their files (and handed to a filling
    /// pixel cache).
    fn load_decoded(&self, indices: &[usize]) -> Batch {
        let plane = self.size * self.size;
        let decoded = self.decode(indices);
        if let Some(c) = self.pixel_cache.as_ref().filter(|c| c.filling()) {
            let view: Vec<_> = decoded
                .iter()
                .map(|(i, r)| (*i, r.as_deref().map_err(|e| e.to_string())))
                .collect();
            c.fill(&view);
        }
        let mut b = Batch::of_bytes(indices.len() * 3 * plane);
        for (i, r) in decoded {
            match r {
                Ok(px) => b.push_bytes(i, &px),
                Err(e) => b.failed.push((i, e.to_string())),
            }
        }
        b
    }

    /// Keeps this folder's decoded images in the pixel cache at `dir` under
    /// `key` (the data's [`Dataset::fingerprint`]): read from a complete
    /// entry, else filled as this run decodes when `fill` (it reads every
    /// image). A hit whose first image no longer decodes to the cached
    /// bytes (preprocessing changed) is refilled. Nothing for tensor files.
    pub fn attach_pixel_cache(&mut self, dir: &Path, key: &str, fill: bool) -> Option<Opened> {
        if !self.is_folder() || self.is_empty() {
            return None;
        }
        let (cache, mut opened) = PixelCache::open(dir, key, self.len(), self.size, fill);
        if opened == Opened::Hit && !self.agrees_with(&cache) {
            let _ = std::fs::remove_file(cache.path().with_extension("json"));
            let (refill, again) = PixelCache::open(dir, key, self.len(), self.size, fill);
            self.pixel_cache = Some(refill);
            opened = again;
        } else {
            self.pixel_cache = Some(cache);
        }
        if let (Opened::Hit, Some(c)) = (&opened, &self.pixel_cache) {
            crate::reporter::note(&format!(
                "reading the {} images of {} from the pixel cache {} (no decoding)",
                self.len(),
                self.path.display(),
                c.path().display()
            ));
        }
        Some(opened)
    }

    /// Whether the attached pixel cache entry is complete (for one opened
    /// as `Filling`: whether this run completed it).
    pub fn pixel_cache_filled(&self) -> bool {
        self.pixel_cache.as_ref().is_some_and(PixelCache::complete)
    }

    /// Whether the first image the cache holds decodes, today, to its
    /// cached bytes.
    fn agrees_with(&self, cache: &PixelCache) -> bool {
        let first = (0..self.len()).find_map(|i| match cache.get(i) {
            Some(Cached::Pixels(px)) => Some((i, px)),
            _ => None,
        });
        match first {
            Some((i, px)) => self
                .decode(&[i])
                .pop()
                .is_some_and(|(_, r)| r.is_ok_and(|d| d == px)),
            None => true,
        }
    }

    /// Decode, resize and center crop of a folder's image `i`, as planar
    /// u8 `[3, size, size]` (an error for a tensor file's samples, which
    /// are pixels already).
    pub fn load_pixels(&self, i: usize) -> Result<Vec<u8>> {
        match &self.source {
            Source::Folder { paths } => {
                preprocess::load_pixels_cropped(&paths[i], self.size, self.crop_border)
            }
            _ => Err(crate::invalid!(
                "{} holds pixels, not images to decode",
                self.describe(i)
            )),
        }
    }

    /// Decodes, trims, resizes and crops images of a folder in parallel, as
    /// u8 `[3,S,S]` each (`preprocess::clip_pixels`), in `indices` order;
    /// empty for a tensor file.
    fn decode(&self, indices: &[usize]) -> Vec<(usize, Result<Vec<u8>>)> {
        if !matches!(self.source, Source::Folder { .. }) {
            return vec![];
        }
        indices
            .par_iter()
            .map(|&i| (i, self.load_pixels(i)))
            .collect()
    }

    /// Calls `f` on consecutive batches of `indices`, loading the next batch
    /// on a background thread while `f` runs.
    pub fn for_each_batch(
        &self,
        indices: &[usize],
        batch_size: usize,
        mut f: impl FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        self.for_each_batch_ahead(indices, batch_size, |b, _| f(b))
    }

    /// [`Dataset::for_each_batch`], where `f` may also peek at the next
    /// batch (to stage its upload during this one's forward).
    pub fn for_each_batch_ahead(
        &self,
        indices: &[usize],
        batch_size: usize,
        mut f: impl FnMut(Batch, &mut Upcoming) -> Result<()>,
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
            let mut upcoming = Upcoming {
                rx: &rx,
                held: None,
            };
            let mut result = Ok(());
            while let Some(b) = upcoming.held.take().or_else(|| rx.recv().ok()) {
                // Between batches is a safe point to stop at.
                if let Err(e) = crate::interrupt::check().and_then(|_| f(b, &mut upcoming)) {
                    result = Err(e);
                    break;
                }
            }
            drop(upcoming);
            drop(rx);
            let _ = producer.join();
            result
        })
    }
}

/// An image folder's class folders in `ImageFolder`'s order (sorted by
/// name), with their paths: the one listing `eval` labels by and
/// `zeroshot --classes FOLDER` names the head's rows by.
pub fn class_folders(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut classes: Vec<(String, PathBuf)> = read_dir(path)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                p,
            )
        })
        .collect();
    classes.sort();
    Ok(classes)
}

/// The entries of a folder, or an error naming it.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
}

/// Every file below `dir`, following links as `ImageFolder` does (a folder
/// reached twice, a link loop, is walked once), each with its folder for
/// `ImageFolder`'s order: by folder, then by name. What is neither a file
/// nor a folder to follow (a broken link, a link loop, a socket) goes to
/// `odd` with the reason.
fn walk(
    dir: &Path,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<(PathBuf, PathBuf)>,
    odd: &mut Vec<(PathBuf, PathBuf, String)>,
) -> Result<()> {
    let real = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.insert(real) {
        odd.push((
            dir.to_path_buf(),
            dir.to_path_buf(),
            "a link to a folder already read (a loop, or a second link to it); not read again"
                .into(),
        ));
        return Ok(());
    }
    for p in read_dir(dir)? {
        if p.is_dir() {
            walk(&p, seen, out, odd)?;
        } else if p.is_file() {
            out.push((dir.to_path_buf(), p));
        } else {
            let why = not_a_file(&p);
            odd.push((dir.to_path_buf(), p, why));
        }
    }
    Ok(())
}

/// Why an entry that is neither a file nor a folder is not read.
fn not_a_file(p: &Path) -> String {
    let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    match std::fs::metadata(p) {
        Err(e) if is_link && e.kind() == std::io::ErrorKind::NotFound => {
            let target = std::fs::read_link(p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!("a broken symbolic link (its target {target} does not exist)")
        }
        Err(e) if is_link => format!("a symbolic link that cannot be followed ({e}; a loop?)"),
        Err(e) => format!("cannot be read ({e})"),
        Ok(_) => "not a regular file (a socket, pipe or device)".into(),
    }
}

/// The label of each class folder (`classes` sorted by name).
/// The class folders `keep` lists (in sorted order); what is absent or
/// left out is said in `warnings`.
fn keep_folders(
    classes: Vec<(String, PathBuf)>,
    keep: &[String],
    warnings: &mut Vec<String>,
) -> Vec<(String, PathBuf)> {
    let want: HashSet<&str> = keep.iter().map(|s| s.as_str()).collect();
    let have: HashSet<&str> = classes.iter().map(|(n, _)| n.as_str()).collect();
    let absent: Vec<&str> = keep
        .iter()
        .map(|s| s.as_str())
        .filter(|k| !have.contains(k))
        .collect();
    if !absent.is_empty() {
        warnings.push(format!(
            "{} of the {} class folders --folders lists are absent (e.g. `{}`); their classes get no samples",
            absent.len(),
            keep.len(),
            absent[0]
        ));
    }
    let (kept, dropped): (Vec<_>, Vec<_>) = classes
        .into_iter()
        .partition(|(n, _)| want.contains(n.as_str()));
    if !dropped.is_empty() {
        warnings.push(format!(
            "{} class folders outside --folders are not evaluated (e.g. `{}`)",
            dropped.len(),
            dropped[0].0
        ));
    }
    kept
}

fn class_ids(root: &Path, classes: &[(String, PathBuf)], order: LabelOrder) -> Result<Vec<i64>> {
    match order {
        LabelOrder::Sorted => Ok((0..classes.len() as i64).collect()),
        LabelOrder::Numeric => {
            let mut seen = HashSet::new();
            classes
                .iter()
                .map(|(name, _)| {
                    let id = name.parse::<u32>().map_err(|_| {
                        Error::file(
                            root,
                            format!(
                                "--label-order numeric: class folder `{name}` is not a class index"
                            ),
                        )
                    })?;
                    if !seen.insert(id) {
                        return Err(Error::file(
                            root,
                            format!("two class folders have index {id}"),
                        ));
                    }
                    Ok(id as i64)
                })
                .collect()
        }
    }
}

/// The `pixel_values` of a tensor file as f32: floats as they are, a u8
/// pixel cache (`dawin preprocess --dtype u8`, `[N,3,S,S]`) normalised as
/// the f32 files are.
pub fn read_pixel_values(path: &Path) -> Result<(Vec<usize>, PixelBuf)> {
    let f = TensorFile::open(path)?;
    let st = f.tensors();
    let t = st
        .tensor("pixel_values")
        .map_err(|_| Error::file(path, "missing tensor `pixel_values`"))?;
    if t.dtype() != Dtype::U8 {
        drop(st);
        let t = f.read_f32("pixel_values")?;
        return Ok((t.shape, PixelBuf::F32(t.data)));
    }
    let shape = t.shape().to_vec();
    if !matches!(shape[..], [_, 3, h, w] if h == w) {
        return Err(Error::file(
            path,
            format!("u8 `pixel_values` has shape {shape:?}, expected [N,3,S,S]"),
        ));
    }
    // Bytes, normalised by the forward's first op.
    let px = PixelBuf::U8(t.data().to_vec(), preprocess::CLIP_NORMALIZATION);
    Ok((shape, px))
}

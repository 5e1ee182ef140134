//! Eval's pixel cache for image folders: every image's u8 pixels after
//! decode, resize and crop (`[3,S,S]` each, what `dawin preprocess --dtype
//! u8` stores), kept in a cache folder under the data's content
//! fingerprint. The first run that reads the whole folder fills it as it
//! decodes; every later read of the same content (a second pass of the
//! same run, a later run, another model pair) maps it instead of decoding
//! JPEGs. Normalising the cached bytes gives the decoded run's f32 values
//! bit for bit, so a hit changes no result.
//!
//! An entry is two files: `<key>.u8`, the images back to back, and
//! `<key>.json`, written last, which marks the entry complete and holds the
//! images that could not be decoded (with their reasons, reported again on
//! a hit) and a checksum per image. Every image is checked as it is read;
//! a mismatch is reported and the folder is decoded instead.

use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// The format version in an entry's `.json`; another version is a miss.
const FORMAT: u64 = 1;

/// Where the cache lives: `$DAWIN_CACHE_DIR/pixels`, else
/// `$XDG_CACHE_HOME/dawin/pixels`, else `~/.cache/dawin/pixels`.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let root = env("DAWIN_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("dawin")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("dawin")))?;
    Some(root.join("pixels"))
}

/// What a cached sample holds.
pub enum Cached<'a> {
    Pixels(&'a [u8]),
    /// The image could not be decoded when the entry was filled.
    Failed(&'a str),
}

/// How opening the cache went, for the run's messages and provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A complete entry: no image is decoded.
    Hit,
    /// No entry: this run fills one as it decodes.
    Filling,
    /// Not used; the reason.
    Unused(String),
}

impl Opened {
    /// How the run read its images, for a summary (the pixels, and so the
    /// results, are the same either way); `filled`: the run completed the
    /// entry it was filling.
    pub fn record(&self, filled: bool) -> String {
        match self {
            Opened::Hit => "hit".into(),
            Opened::Filling if filled => "filled by this run".into(),
            Opened::Filling => "decoded (the entry was not completed)".into(),
            Opened::Unused(why) => format!("unused: {why}"),
        }
    }
}

/// The images of one folder content in the cache.
pub struct PixelCache {
    data: PathBuf,
    sidecar: PathBuf,
    /// Bytes of one image, `3·S·S`.
    image: usize,
    samples: usize,
    filler: Mutex<Option<Filler>>,
    ready: OnceLock<Ready>,
    /// Set when a checksum failed or filling stopped: decode from then on.
    broken: AtomicBool,
}

/// A complete entry, mapped.
struct Ready {
    map: memmap2::Mmap,
    checksums: Vec<u64>,
    failed: BTreeMap<usize, String>,
}

/// An entry being written: images land at their slots as they are decoded.
struct Filler {
    tmp: PathBuf,
    file: File,
    checksums: Vec<u64>,
    written: Vec<bool>,
    left: usize,
    failed: BTreeMap<usize, String>,
}

impl Drop for Filler {
    fn drop(&mut self) {
        // Only a finished entry is renamed away from `tmp`.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl PixelCache {
    /// The entry of `key` (the data's content fingerprint) in `dir`, for
    /// `samples` images of side `size`: mapped when complete, else
    /// created for filling when `fill` (this run decodes every image).
    pub fn open(dir: &Path, key: &str, samples: usize, size: usize, fill: bool) -> (Self, Opened) {
        let cache = PixelCache {
            data: dir.join(format!("{key}.u8")),
            sidecar: dir.join(format!("{key}.json")),
            image: 3 * size * size,
            samples,
            filler: Mutex::new(None),
            ready: OnceLock::new(),
            broken: AtomicBool::new(false),
        };
        let opened = match cache.map_entry(key) {
            Ok(Some(r)) => {
                let _ = cache.ready.set(r);
                Opened::Hit
            }
            Ok(None) if !fill => Opened::Unused(
                "no entry, and this run does not read every image (a shard) to fill one".into(),
            ),
            Ok(None) => match cache.start_filling(dir) {
                Ok(f) => {
                    *cache.lock() = Some(f);
                    Opened::Filling
                }
                Err(e) => unusable(e),
            },
            Err(e) => unusable(e),
        };
        if matches!(opened, Opened::Unused(_)) {
            cache.broken.store(true, Ordering::Relaxed);
        }
        (cache, opened)
    }

    /// The entry's data file, for messages.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// Whether the entry is complete: opened so, or filled by this run
    /// (for an entry opened as `Filling`, whether this run completed it).
    pub fn complete(&self) -> bool {
        self.ready.get().is_some()
    }

    /// Whether decoded images are still wanted for the entry.
    pub fn filling(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Filler>> {
        self.filler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sample `i` from a complete entry; `None` when the entry is not
    /// complete (or no longer trusted). A checksum mismatch is reported
    /// once and stops the cache's use.
    pub fn get(&self, i: usize) -> Option<Cached<'_>> {
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        let r = self.ready.get()?;
        if let Some(why) = r.failed.get(&i) {
            return Some(Cached::Failed(why));
        }
        let px = &r.map[i * self.image..(i + 1) * self.image];
        if xxhash_rust::xxh3::xxh3_64(px) != r.checksums[i] {
            // Without its mark the entry is refilled by the next whole run.
            let _ = std::fs::remove_file(&self.sidecar);
            self.stop(&format!(
                "image {i} does not match its checksum (the file was changed or damaged); decoding the images instead, and the entry is dropped for the next run to refill"
            ));
            return None;
        }
        Some(Cached::Pixels(px))
    }

    /// Records decoded images (`Ok` pixels or the decode error's message)
    /// while filling; the last missing one completes the entry.
    pub fn fill(&self, decoded: &[(usize, std::result::Result<&[u8], String>)]) {
        let mut guard = self.lock();
        let Some(f) = guard.as_mut() else { return };
        let written = decoded
            .iter()
            .try_for_each(|(i, r)| f.put(*i, r, self.image));
        let done = match written {
            Ok(()) if f.left == 0 => guard.take().map(|f| self.finish(f)),
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        };
        drop(guard);
        match done {
            Some(Ok(r)) => {
                let _ = self.ready.set(r);
                crate::reporter::note(&format!(
                    "kept the {} decoded images in the pixel cache {} ({}): later passes and runs on these files read them instead of decoding (--pixel-cache off to not keep them)",
                    self.samples,
                    self.data.display(),
                    mb((self.samples * self.image) as u64)
                ));
            }
            Some(Err(e)) => {
                *self.lock() = None;
                self.stop(&format!(
                    "cannot be written ({e}); the images are decoded as usual"
                ));
            }
            None => {}
        }
    }

    fn stop(&self, why: &str) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            crate::reporter::warn(&format!("pixel cache {}: {why}", self.data.display()));
        }
    }

    /// The complete entry of `key`, mapped; `None` when there is none or it
    /// does not describe these images (it is then refilled).
    fn map_entry(&self, key: &str) -> Result<Option<Ready>> {
        let Ok(text) = std::fs::read_to_string(&self.sidecar) else {
            return Ok(None);
        };
        let Some((checksums, failed)) = self.parse_sidecar(&text, key) else {
            return Ok(None);
        };
        let Ok(file) = File::open(&self.data) else {
            return Ok(None);
        };
        let len = file.metadata().map_err(|e| Error::io(&self.data, e))?.len();
        if len != (self.samples * self.image) as u64 {
            return Ok(None);
        }
        // SAFETY: entries are only ever replaced by rename, never written in
        // place, so the mapped file does not change under us; a damaged one
        // fails its checksums.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&self.data, e))?;
        Ok(Some(Ready {
            map,
            checksums,
            failed,
        }))
    }

    fn parse_sidecar(&self, text: &str, key: &str) -> Option<(Vec<u64>, BTreeMap<usize, String>)> {
        let v: Value = serde_json::from_str(text).ok()?;
        let fits = v["format"].as_u64() == Some(FORMAT)
            && v["key"].as_str() == Some(key)
            && v["samples"].as_u64() == Some(self.samples as u64)
            && v["image_bytes"].as_u64() == Some(self.image as u64);
        let checksums: Vec<u64> = v["checksums"]
            .as_array()?
            .iter()
            .map(|c| u64::from_str_radix(c.as_str()?, 16).ok())
            .collect::<Option<_>>()?;
        let failed = v["failed"]
            .as_object()?
            .iter()
            .map(|(i, why)| Some((i.parse().ok()?, why.as_str()?.to_string())))
            .collect::<Option<BTreeMap<usize, String>>>()?;
        let complete = checksums.len() == self.samples && failed.keys().all(|&i| i < self.samples);
        (fits && complete).then_some((checksums, failed))
    }

    fn start_filling(&self, dir: &Path) -> Result<Filler> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        remove_orphans(dir);
        let bytes = (self.samples * self.image) as u64;
        if let Some(free) = free_bytes(dir) {
            // Leave the disk a margin: the cache is never worth filling it.
            if free < bytes + bytes / 10 + (1 << 30) {
                return Err(Error::file(
                    dir,
                    format!("has {} free, and the entry needs {}", mb(free), mb(bytes)),
                ));
            }
        }
        let name = self.data.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp~", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let filler = Filler {
            tmp,
            file,
            checksums: vec![0; self.samples],
            written: vec![false; self.samples],
            left: self.samples,
            failed: BTreeMap::new(),
        };
        filler
            .file
            .set_len(bytes)
            .map_err(|e| Error::io(&filler.tmp, e))?;
        Ok(filler)
    }

    /// Syncs and renames the data file into place, then writes the sidecar
    /// that marks it complete, and maps it.
    fn finish(&self, f: Filler) -> Result<Ready> {
        f.file.sync_all().map_err(|e| Error::io(&f.tmp, e))?;
        std::fs::rename(&f.tmp, &self.data).map_err(|e| Error::io(&self.data, e))?;
        let sidecar = json!({
            "format": FORMAT,
            "key": self.data.file_stem().map(|s| s.to_string_lossy()),
            "samples": self.samples,
            "image_bytes": self.image,
            "failed": f.failed.iter().map(|(i, w)| (i.to_string(), json!(w))).collect::<serde_json::Map<_, _>>(),
            "checksums": f.checksums.iter().map(|c| format!("{c:016x}")).collect::<Vec<_>>(),
        });
        crate::tensorfile::write_atomic(&self.sidecar, sidecar.to_string().as_bytes())?;
        let file = File::open(&self.data).map_err(|e| Error::io(&self.data, e))?;
        // SAFETY: as in `map_entry`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&self.data, e))?;
        Ok(Ready {
            map,
            checksums: f.checksums.clone(),
            failed: f.failed.clone(),
        })
    }
}

impl Filler {
    fn put(
        &mut self,
        i: usize,
        r: &std::result::Result<&[u8], String>,
        image: usize,
    ) -> Result<()> {
        if i >= self.written.len() || self.written[i] {
            return Ok(());
        }
        match r {
            Ok(px) => {
                assert_eq!(px.len(), image, "a decoded image has 3·S·S bytes");
                let at = (i * image) as u64;
                self.file
                    .write_all_at(px, at)
                    .map_err(|e| Error::io(&self.tmp, e))?;
                self.checksums[i] = xxhash_rust::xxh3::xxh3_64(px);
            }
            Err(why) => {
                self.failed.insert(i, why.clone());
            }
        }
        self.written[i] = true;
        self.left -= 1;
        Ok(())
    }
}

/// The cache cannot be used (its folder cannot be written, the disk is
/// short of space, an entry cannot be read): said once, and the images
/// are decoded as usual.
fn unusable(e: Error) -> Opened {
    crate::reporter::warn(&format!(
        "pixel cache: {e}; decoding the images as usual (--pixel-cache off to not try)"
    ));
    Opened::Unused(e.to_string())
}

/// Removes the partial entries of processes that are gone (killed while
/// filling: a clean stop removes its own).
fn remove_orphans(dir: &Path) {
    // Without /proc, whether a process lives cannot be told: keep all.
    let Ok(entries) = std::fs::read_dir(dir).and_then(|e| {
        std::fs::metadata("/proc/self")?;
        Ok(e)
    }) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let pid = name
            .strip_suffix(".tmp~")
            .and_then(|n| n.rsplit('.').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = |p: u32| Path::new(&format!("/proc/{p}")).exists();
        if name.starts_with('.') && pid.is_some_and(|p| !alive(p)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Free bytes on the file system holding `dir`, where it can be asked.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// `bytes` as MB with one decimal, for messages.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

//! `dawin preprocess`'s output, written as the images are decoded: a
//! safetensors file of `pixel_values` `[N,3,S,S]` (u8 or f32) then
//! `labels` `[N]`, through a temporary file and a rename as every output
//! is. The header is written last, into room reserved for the most images
//! the run can keep (a shorter one is padded with spaces, as safetensors
//! allows), so no image is held in memory and the disk writes the first
//! images while the last are decoded: writing the whole file at the end
//! took a third of `dawin preprocess --dtype u8` on 2 cores.

use crate::error::{Error, Result};
use safetensors::Dtype;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes written between two requests to start writing them to disk.
const FLUSH_EVERY: u64 = 16 << 20;

/// A pixel file being written; removed unless [`PixelFile::finish`] ran.
pub struct PixelFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    dtype: Dtype,
    /// `[3, S, S]`.
    image_shape: [usize; 3],
    image_bytes: u64,
    metadata: Option<HashMap<String, String>>,
    /// Header bytes reserved after the 8-byte length.
    reserved: usize,
    images: usize,
    most: usize,
    /// Bytes of pixels already asked to go to disk.
    flushed: u64,
}

impl PixelFile {
    /// Starts `path` for at most `most` images of `[3, size, size]`
    /// `dtype` (U8 or F32) values; refuses when the file system cannot
    /// hold that many.
    pub fn create(
        path: &Path,
        (dtype, size): (Dtype, usize),
        most: usize,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<PixelFile> {
        crate::tensorfile::check_output(path)?;
        let image_shape = [3, size, size];
        let image_bytes = (3 * size * size * dtype.bitsize() / 8) as u64;
        let mut w = PixelFile {
            path: path.to_path_buf(),
            tmp: crate::tensorfile::temp_beside(path),
            file: None,
            dtype,
            image_shape,
            image_bytes,
            metadata,
            reserved: 0,
            images: 0,
            most,
            flushed: 0,
        };
        // Data starts on 64 bytes, where every dtype's values are aligned.
        w.reserved = (w.header(most).len() + 8).div_ceil(64) * 64 - 8;
        w.check_room()?;
        let f = w
            .file
            .insert(File::create(&w.tmp).map_err(|e| Error::io(path, e))?);
        // Dropped on an error here, `w` removes the temporary file.
        f.seek(SeekFrom::Start(8 + w.reserved as u64))
            .map_err(|e| Error::io(path, e))?;
        Ok(w)
    }

    /// Appends one image's values (`3·S·S` of the file's dtype, as bytes).
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        assert_eq!(bytes.len() as u64, self.image_bytes, "one whole image");
        assert!(self.images < self.most, "more images than reserved");
        let f = self.file.as_mut().expect("not finished");
        f.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        self.images += 1;
        let written = self.images as u64 * self.image_bytes;
        if written - self.flushed >= FLUSH_EVERY {
            start_writeback(
                f,
                8 + self.reserved as u64 + self.flushed,
                written - self.flushed,
            );
            self.flushed = written;
        }
        Ok(())
    }

    /// How many images were pushed.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Appends the labels (one per image), writes the header, waits until
    /// it all is on disk and renames the file into place.
    pub fn finish(mut self, labels: &[i64]) -> Result<()> {
        assert_eq!(labels.len(), self.images, "one label per image");
        let mut header = self.header(self.images).into_bytes();
        header.resize(self.reserved, b' ');
        let mut f = self.file.take().expect("not finished");
        let done = f
            .write_all(bytemuck::cast_slice(labels))
            .and_then(|_| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(&(header.len() as u64).to_le_bytes()))
            .and_then(|_| f.write_all(&header))
            .and_then(|_| f.sync_all())
            .and_then(|_| std::fs::rename(&self.tmp, &self.path))
            .and_then(|_| crate::tensorfile::sync_parent(&self.path));
        if done.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        done.map_err(|e| Error::io(&self.path, e))
    }

    /// The header's JSON for `n` images.
    fn header(&self, n: usize) -> String {
        let pixels = n as u64 * self.image_bytes;
        let [c, h, w] = self.image_shape;
        let mut v = serde_json::json!({
            "pixel_values": {
                "dtype": format!("{:?}", self.dtype),
                "shape": [n, c, h, w],
                "data_offsets": [0, pixels],
            },
            "labels": {
                "dtype": "I64",
                "shape": [n],
                "data_offsets": [pixels, pixels + 8 * n as u64],
            },
        });
        if let Some(m) = &self.metadata {
            v["__metadata__"] = serde_json::json!(m);
        }
        v.to_string()
    }

    /// Refuses a file larger than the free space of its folder.
    fn check_room(&self) -> Result<()> {
        let need = (self.most as u64)
            .saturating_mul(self.image_bytes + 8)
            .saturating_add(8 + self.reserved as u64);
        let dir = crate::tensorfile::folder_of(&self.path);
        match crate::data::pixel_cache::free_bytes(dir) {
            Some(free) if free < need => Err(crate::invalid!(
                "{} needs up to {} for {} images, and its file system has {} free",
                self.path.display(),
                crate::data::pixel_cache::mb(need),
                self.most,
                crate::data::pixel_cache::mb(free)
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for PixelFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk
/// without waiting for them, so the final sync finds little left to do.
#[cfg(target_os = "linux")]
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call only reads its arguments. A
    // failure is harmless (the final sync writes everything).
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorfile::TensorFile;

    fn image(seed: u8, size: usize) -> Vec<u8> {
        (0..3 * size * size)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect()
    }

    /// Room is reserved for five images; three arrive (two were
    /// unreadable): the shorter header is padded and the file reads back
    /// with exactly the three, their labels, and data on 64 bytes.
    #[test]
    fn fewer_images_than_reserved_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("px.safetensors");
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        let mut f = PixelFile::create(&path, (Dtype::U8, 5), 5, Some(meta)).unwrap();
        for seed in [3, 5, 7] {
            f.push(&image(seed, 5)).unwrap();
        }
        assert_eq!(f.images(), 3);
        f.finish(&[2, -1, 0]).unwrap();
        let t = TensorFile::open(&path).unwrap();
        assert_eq!(t.metadata()["k"], "v");
        assert_eq!(t.read_i64("labels").unwrap(), (vec![3], vec![2, -1, 0]));
        let st = t.tensors();
        let px = st.tensor("pixel_values").unwrap();
        assert_eq!(px.shape(), [3, 3, 5, 5]);
        let want: Vec<u8> = [3, 5, 7].iter().flat_map(|&s| image(s, 5)).collect();
        assert_eq!(px.data(), &want[..]);
        let bytes = std::fs::read(&path).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header) % 64, 0, "data starts on 64 bytes");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    /// A run that stops before `finish` leaves neither the output nor its
    /// temporary file.
    #[test]
    fn an_unfinished_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("px.safetensors");
        let mut f = PixelFile::create(&path, (Dtype::F32, 4), 2, None).unwrap();
        f.push(bytemuck::cast_slice(&[0.5f32; 48])).unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    /// More images than the disk can hold are refused before any is
    /// decoded, with the sizes named.
    #[test]
    fn a_file_larger_than_the_disk_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("px.safetensors");
        let e = PixelFile::create(&path, (Dtype::F32, 224), 1 << 40, None)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("free") && e.contains("images"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}

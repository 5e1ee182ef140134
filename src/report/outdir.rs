//! An output folder that never mixes runs: one run at a time holds it (an
//! exclusive lock, released when the process ends however it ends), and a
//! run's outputs are written into a staging folder beside them and moved
//! into place together, so a failure while writing leaves the previous
//! complete set. An earlier set made with other inputs or settings is moved
//! aside to `previous/`, never dropped.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside an output folder.
const LOCK: &str = ".dawin.lock";

/// An output folder held by this process.
pub struct OutDir {
    pub path: PathBuf,
    /// Holds the lock while alive.
    _lock: File,
}

impl OutDir {
    /// Creates `path` if needed and takes it; fails at once, naming the
    /// holder, when another run holds it.
    pub fn lock(path: &Path) -> Result<OutDir> {
        if path.exists() && !path.is_dir() {
            return Err(Error::file(path, "is a file; --out-dir must be a folder"));
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock_path = path.join(LOCK);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        if let Err(e) = f.try_lock() {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another run"
            } else {
                holder
            };
            return Err(Error::file(
                path,
                format!("is in use by {who} ({e}); wait for it or give another --out-dir"),
            ));
        }
        let holder = format!(
            "pid {} ({}), since {}",
            std::process::id(),
            crate::report::provenance::command_line(),
            humantime_now()
        );
        let _ = f
            .set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| f.write_all(holder.as_bytes()));
        Ok(OutDir {
            path: path.to_path_buf(),
            _lock: f,
        })
    }

    /// A fresh staging folder for this run's outputs, removed on drop
    /// unless committed.
    pub fn stage(&self) -> Result<Staging> {
        let dir = self.path.join(format!(".staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging { dir })
    }

    /// Moves the outputs `names` of an earlier set into
    /// `previous/<time>/`, and returns that folder.
    pub fn move_aside(&self, names: &[&str]) -> Result<PathBuf> {
        let stamp = format!(
            "{}-{}",
            humantime_now().replace([':', ' '], "-"),
            std::process::id()
        );
        let dest = self.path.join("previous").join(stamp);
        std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        for n in names {
            let from = self.path.join(n);
            if from.exists() {
                std::fs::rename(&from, dest.join(n)).map_err(|e| Error::io(&from, e))?;
            }
        }
        Ok(dest)
    }
}

/// Files written for one run, not yet in place.
pub struct Staging {
    pub dir: PathBuf,
}

impl Staging {
    /// Moves every staged file into `out`, `last` at the end (the file
    /// whose presence says the set is complete), and removes the stage.
    pub fn commit(self, out: &OutDir, last: &str) -> Result<()> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort_by_key(|p| p.file_name().is_some_and(|n| n == last));
        for from in names {
            let to = out.path.join(from.file_name().unwrap_or_default());
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The time now in UTC, `YYYY-MM-DD hh:mm:ss`.
fn humantime_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

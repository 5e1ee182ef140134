//! An output folder that never mixes runs: one run at a time holds it (an
//! exclusive lock, released when the process ends however it ends), and a
//! run's outputs are written into a staging folder beside them and put in
//! place by one journaled commit:
//!
//! 1. every staged file and the stage are flushed to disk;
//! 2. a commit record (`.dawin-commit`: the stage, the earlier set's files
//!    and where they go) is written and flushed: from here the commit is
//!    decided;
//! 3. the earlier set's files leave the top level (to `previous/<time>/`
//!    when it came from other inputs or settings; to a scratch folder that
//!    is then deleted when this run carried its results over);
//! 4. the staged files move in, `summary.json` last, and the folder is
//!    flushed;
//! 5. the record and the scratch are removed.
//!
//! A run stopped anywhere (a signal, SIGKILL, a full disk) leaves either
//! the earlier set untouched (before 2) or a record that the next run to
//! take the folder rolls forward; it also removes stages that dead runs
//! left and says so. No folder ever holds a mix of two runs.

use crate::error::{Error, Result};
use crate::tensorfile::sync_dir;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside an output folder.
const LOCK: &str = ".dawin.lock";
/// The commit record of a commit under way.
const JOURNAL: &str = ".dawin-commit";
/// What the name of a run's stage starts with.
const STAGE_PREFIX: &str = ".staging-";
/// What the name of a replaced set's scratch folder starts with.
const SCRATCH_PREFIX: &str = ".replaced-";

/// An output folder held by this process.
pub struct OutDir {
    pub path: PathBuf,
    /// Holds the lock while alive.
    _lock: File,
    /// The folder did not exist before this run.
    created: bool,
}

/// A run that ends without writing anything leaves nothing behind: not
/// its lock file, nor the folder when it made it.
impl Drop for OutDir {
    fn drop(&mut self) {
        let only_lock = std::fs::read_dir(&self.path).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .all(|e| e.file_name() == LOCK)
        });
        if only_lock {
            let _ = std::fs::remove_file(self.path.join(LOCK));
            if self.created {
                let _ = std::fs::remove_dir(&self.path);
            }
        }
    }
}

impl OutDir {
    /// Creates `path` if needed and takes it; fails at once, naming the
    /// holder, when another run holds it.
    pub fn lock(path: &Path) -> Result<OutDir> {
        if path.exists() && !path.is_dir() {
            return Err(Error::file(path, "is a file; --out-dir must be a folder"));
        }
        let created = !path.exists();
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock_path = path.join(LOCK);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        if let Err(e) = try_lock_briefly(&f) {
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
        let out = OutDir {
            path: path.to_path_buf(),
            _lock: f,
            created,
        };
        out.recover()?;
        Ok(out)
    }

    /// Finishes a commit an interrupted run decided, and removes what dead
    /// runs left (only one run holds the folder, so every stage is theirs).
    fn recover(&self) -> Result<()> {
        let journal = self.path.join(JOURNAL);
        if journal.exists() {
            let plan = Plan::read(&journal)?;
            plan.apply(self, &mut |_| {})?;
            crate::reporter::note(&format!(
                "{}: finished the commit of an interrupted run (its results are in place)",
                self.path.display()
            ));
        }
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(STAGE_PREFIX) || name.starts_with(SCRATCH_PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
                if name.starts_with(STAGE_PREFIX) {
                    crate::reporter::note(&format!(
                        "{}: removed {name}, the unfinished outputs of an interrupted run",
                        self.path.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// A fresh staging folder for this run's outputs, removed on drop
    /// unless committed.
    pub fn stage(&self) -> Result<Staging> {
        let dir = self
            .path
            .join(format!("{STAGE_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging { dir })
    }

    /// Whether an earlier run left any of `names` at the top level.
    pub fn holds_any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.path.join(n).exists())
    }

    /// Where an earlier set from other inputs or settings goes at this
    /// run's commit: `previous/<time>-<pid>/` (not created until then).
    pub fn previous_path(&self) -> PathBuf {
        let stamp = format!(
            "{}-{}",
            humantime_now().replace([':', ' '], "-"),
            std::process::id()
        );
        self.path.join("previous").join(stamp)
    }
}

/// Files written for one run, not yet in place.
pub struct Staging {
    pub dir: PathBuf,
}

/// What becomes of the earlier set's files at a commit.
pub enum Earlier {
    /// Moved to this folder (`OutDir::previous_path`).
    MoveTo(PathBuf),
    /// Deleted: this run carried its results over.
    Replace,
    /// Left alone, each replaced where this run wrote the same name.
    Keep,
}

impl Staging {
    /// Puts every staged file in place by the journaled commit the module
    /// describes; `outputs` are the names a result set may hold (the earlier
    /// set's files among them leave first), `last` the file whose presence
    /// says the set is complete.
    pub fn commit(
        self,
        out: &OutDir,
        outputs: &[&str],
        last: &str,
        earlier: Earlier,
    ) -> Result<()> {
        let mut staged: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        staged.sort_by_key(|n| n == last);
        for n in &staged {
            let f = self.dir.join(n);
            sync_file(&f).map_err(|e| Error::io(&f, e))?;
        }
        sync_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        kill_point();
        // The last point to stop at: past the record, the commit finishes.
        crate::interrupt::check()?;
        let old: Vec<String> = match earlier {
            Earlier::Keep => Vec::new(),
            _ => outputs
                .iter()
                .filter(|n| out.path.join(n).exists())
                .map(|n| n.to_string())
                .collect(),
        };
        let aside = match earlier {
            Earlier::MoveTo(p) => Some(p),
            Earlier::Replace => Some(
                out.path
                    .join(format!("{SCRATCH_PREFIX}{}", std::process::id())),
            ),
            _ => None,
        };
        let plan = Plan {
            stage: self.dir.clone(),
            staged,
            old,
            aside,
        };
        plan.write(&out.path.join(JOURNAL))?;
        kill_point();
        plan.apply(out, &mut |_| kill_point())
    }
}

/// A commit's record: enough to finish it from any point.
#[derive(serde::Serialize, serde::Deserialize)]
struct Plan {
    stage: PathBuf,
    /// The stage's files, the one that completes the set last.
    staged: Vec<String>,
    /// The earlier set's files at the top level when the commit began.
    old: Vec<String>,
    /// Where they go; `None`: they stay (and are replaced where staged).
    aside: Option<PathBuf>,
}

impl Plan {
    fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::tensorfile::write_atomic(path, &text)
    }

    fn read(path: &Path) -> Result<Plan> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&text).map_err(|e| {
            Error::file(
                path,
                format!("is a damaged commit record ({e}); move it away to use the folder"),
            )
        })
    }

    /// Steps 3 to 5, each idempotent, so an interrupted commit can be run
    /// again from its record. `step` is called after every file moved.
    fn apply(&self, out: &OutDir, step: &mut dyn FnMut(usize)) -> Result<()> {
        let top = |n: &str| out.path.join(n);
        if let Some(aside) = &self.aside {
            std::fs::create_dir_all(aside).map_err(|e| Error::io(aside, e))?;
            for n in &self.old {
                // A staged name already gone from the stage is in place: the
                // file at the top is this run's, not the earlier set's.
                let replaced_already = self.staged.contains(n) && !self.stage.join(n).exists();
                if top(n).exists() && !replaced_already && !aside.join(n).exists() {
                    rename(&top(n), &aside.join(n))?;
                    step(0);
                }
            }
            sync_dir(aside).map_err(|e| Error::io(aside, e))?;
        }
        for n in &self.staged {
            let from = self.stage.join(n);
            if from.exists() {
                rename(&from, &top(n))?;
                step(1);
            }
        }
        sync_dir(&out.path).map_err(|e| Error::io(&out.path, e))?;
        let journal = out.path.join(JOURNAL);
        std::fs::remove_file(&journal).map_err(|e| Error::io(&journal, e))?;
        step(2);
        let _ = std::fs::remove_dir_all(&self.stage);
        if let Some(aside) = &self.aside
            && aside
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(SCRATCH_PREFIX))
        {
            let _ = std::fs::remove_dir_all(aside);
        }
        sync_dir(&out.path).map_err(|e| Error::io(&out.path, e))
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// For the tests of interrupted commits: with `DAWIN_TEST_ABORT_COMMIT_AT=k`
/// the process aborts (as SIGKILL would end it) at the k-th point of a
/// commit, counting from 1.
fn kill_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = std::env::var("DAWIN_TEST_ABORT_COMMIT_AT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        std::process::abort();
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Takes the lock, waiting up to a second for a holder that is letting go:
/// a lock closed by its run is still held for a moment by any process that
/// run (or a thread of the same program) was spawning then, since a child
/// shares the open file until it starts its own program.
fn try_lock_briefly(f: &File) -> std::result::Result<(), std::fs::TryLockError> {
    let mut waited = 0;
    loop {
        match f.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if waited < 20 => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                waited += 1;
            }
            r => return r,
        }
    }
}

/// The time now in UTC, `YYYY-MM-DD hh:mm:ss`.
fn humantime_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

//! One error type for the library: every failure names what it was working on.

use std::path::{Path, PathBuf};

#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// A problem with a file's content: the path and what is wrong with it.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A request the engine cannot serve (bad shapes, unknown device, ...).
    #[error("{0}")]
    Invalid(String),
    /// A device failure (driver error, emulator fault), naming the kernel.
    #[error("{0}")]
    Device(String),
    /// The device ran out of memory (callers may retry with less work).
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// The user stopped the run (Ctrl-C, SIGTERM) and it stopped at a safe
    /// point, before committing any result.
    #[error("interrupted: stopped before writing results; the output folder keeps what it held")]
    Interrupted,
    /// The OS error is part of the message (not a `source`) so it is shown once.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    /// The error of one part of a larger run (a data set, a task), its
    /// message prefixed with `part`; file and I/O errors already name
    /// their path and stay as they are.
    pub fn within(self, part: &str) -> Self {
        match self {
            Error::Invalid(m) => Error::Invalid(format!("{part}: {m}")),
            Error::Device(m) => Error::Device(format!("{part}: {m}")),
            e => e,
        }
    }
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err,
        }
    }
}

/// `bail!`-style shorthand for [`Error::Invalid`].
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::Invalid(format!($($arg)*)) };
}

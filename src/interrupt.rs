//! A stop the user asked for (Ctrl-C, SIGTERM). The program that catches
//! the signal calls [`request`]; the batch loops and the output folder's
//! commit call [`check`] at their safe points and end the run with
//! [`Error::Interrupted`], so a stopped run leaves no half-written result
//! and the folder's earlier set as it was.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the run to stop at its next safe point.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop was asked for.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Forgets a stop once the run it stopped has ended: a host that runs
/// again in the same process (the Python module) starts afresh.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

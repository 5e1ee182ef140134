//! How the library speaks to whoever runs it. Warnings, notes, status lines
//! and progress go to the [`Reporter`] the program installs ([`install`]);
//! the library itself never prints. The CLI draws them on stderr (progress
//! bars on a terminal only), tests capture them, and without a reporter
//! they are kept ([`take_kept`]): never printed, never lost.

use std::sync::{Arc, Mutex, RwLock};

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something odd about an input or a result that the user should know.
    Warning,
    /// Something the run did on its own (moved old results aside, ...).
    Note,
    /// Where a long run stands (a phase, a set, a bench row); sent only
    /// when the caller asked for progress.
    Status,
}

/// What a progress display counts: its plural and its rate's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub plural: &'static str,
    pub rate: &'static str,
}

pub const IMAGES: Unit = Unit {
    plural: "images",
    rate: "img/s",
};

/// Where the library's messages and progress go.
pub trait Reporter: Send + Sync {
    fn message(&self, level: Level, text: &str);
    /// A new progress display over `len` items, labelled `what`.
    fn progress(&self, len: usize, what: &str, unit: Unit) -> Box<dyn ProgressSink>;
}

/// One progress display of a [`Reporter`].
pub trait ProgressSink: Send + Sync {
    fn set_position(&self, pos: u64);
    fn inc(&self, n: u64);
    /// The work is done: leave what a finished display shows.
    fn finish(&self);
}

static REPORTER: RwLock<Option<Arc<dyn Reporter>>> = RwLock::new(None);

/// Messages sent while no reporter was installed, oldest first.
static KEPT: Mutex<Kept> = Mutex::new(Kept {
    messages: Vec::new(),
    dropped: 0,
});

/// At most this many messages are kept without a reporter; later ones are
/// counted only.
const KEEP: usize = 10_000;

struct Kept {
    messages: Vec<(Level, String)>,
    dropped: usize,
}

/// Makes `r` the process's reporter (replacing any earlier one).
pub fn install(r: Arc<dyn Reporter>) {
    *REPORTER.write().unwrap_or_else(|e| e.into_inner()) = Some(r);
}

/// The messages kept while no reporter was installed, and how many more
/// were sent but not kept.
pub fn take_kept() -> (Vec<(Level, String)>, usize) {
    let mut k = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    (
        std::mem::take(&mut k.messages),
        std::mem::take(&mut k.dropped),
    )
}

fn current() -> Option<Arc<dyn Reporter>> {
    REPORTER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sends one message.
pub fn send(level: Level, text: &str) {
    match current() {
        Some(r) => r.message(level, text),
        None => {
            let mut k = KEPT.lock().unwrap_or_else(|e| e.into_inner());
            if k.messages.len() < KEEP {
                k.messages.push((level, text.to_string()));
            } else {
                k.dropped += 1;
            }
        }
    }
}

pub fn warn(text: &str) {
    send(Level::Warning, text)
}

pub fn note(text: &str) {
    send(Level::Note, text)
}

pub fn status(text: &str) {
    send(Level::Status, text)
}

/// A progress display, or nothing when it is not wanted or there is no
/// reporter to show it.
pub struct Progress(Option<Box<dyn ProgressSink>>);

impl Progress {
    pub fn inc(&self, n: u64) {
        if let Some(p) = &self.0 {
            p.inc(n)
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(p) = &self.0 {
            p.set_position(pos)
        }
    }

    pub fn finish(self) {
        if let Some(p) = &self.0 {
            p.finish()
        }
    }
}

/// Progress over `len` images labelled `what`, shown when `visible`.
pub fn progress(len: usize, what: &str, visible: bool) -> Progress {
    progress_of(len, what, IMAGES, visible)
}

/// [`progress`] over something else than images.
pub fn progress_of(len: usize, what: &str, unit: Unit, visible: bool) -> Progress {
    let sink = visible
        .then(current)
        .flatten()
        .map(|r| r.progress(len, what, unit));
    Progress(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is sent.
    struct Recorder(Mutex<Vec<String>>);

    impl Reporter for Recorder {
        fn message(&self, level: Level, text: &str) {
            self.0.lock().unwrap().push(format!("{level:?}: {text}"));
        }
        fn progress(&self, len: usize, what: &str, _: Unit) -> Box<dyn ProgressSink> {
            self.0
                .lock()
                .unwrap()
                .push(format!("progress {what} of {len}"));
            Box::new(Silent)
        }
    }

    struct Silent;

    impl ProgressSink for Silent {
        fn set_position(&self, _: u64) {}
        fn inc(&self, _: u64) {}
        fn finish(&self) {}
    }

    /// One test, as the reporter is the process's: kept before a reporter,
    /// sent to it after, progress only when visible.
    #[test]
    fn messages_are_kept_until_a_reporter_takes_them() {
        warn("early");
        let (kept, dropped) = take_kept();
        assert!(kept.contains(&(Level::Warning, "early".into())), "{kept:?}");
        assert_eq!(dropped, 0);
        let r = Arc::new(Recorder(Mutex::new(Vec::new())));
        install(r.clone());
        note("later");
        progress(3, "hidden", false).finish();
        progress(5, "shown", true).finish();
        // Other tests of this binary may send messages meanwhile.
        let got = r.0.lock().unwrap().clone();
        let has = |s: &str| got.iter().any(|g| g == s);
        assert!(has("Note: later") && has("progress shown of 5"), "{got:?}");
        assert!(!got.iter().any(|g| g.contains("hidden")), "{got:?}");
    }
}

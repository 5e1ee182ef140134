//! The library's messages and progress, in Python: warnings through
//! `warnings.warn` (category `dawin.errors.DawinWarning`), notes and status
//! lines through the `dawin` logger, progress through the callback
//! `evaluate(progress=...)` was given or a tqdm bar when tqdm is installed.
//! Each call also lets Python handle a pending Ctrl-C: the run is asked to
//! stop at its next safe point and ends with KeyboardInterrupt.

use dawin::reporter::{Level, ProgressSink, Reporter, Unit};
use pyo3::prelude::*;
use std::sync::Mutex;

/// Where progress goes while a call runs: a callable
/// `callback(what, done, total)`, or tqdm bars (`None`: nowhere).
pub(crate) static PROGRESS: Mutex<Option<Py<PyAny>>> = Mutex::new(None);

/// Runs Python's pending signal handlers; a KeyboardInterrupt asks the
/// run to stop (it is raised again when the call returns).
fn check_signals(py: Python<'_>) {
    if py.check_signals().is_err() {
        dawin::interrupt::request();
    }
}

/// An error from Python code the reporter called: a KeyboardInterrupt
/// (Ctrl-C while it ran) stops the run; anything else is printed, as a
/// failing display must not end the run.
fn handle(py: Python<'_>, e: PyErr) {
    if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
        dawin::interrupt::request();
    } else {
        e.print(py);
    }
}

pub(crate) struct PyReporter;

impl Reporter for PyReporter {
    fn message(&self, level: Level, text: &str) {
        Python::attach(|py| {
            let sent = match level {
                Level::Warning => py.import("dawin.errors").and_then(|e| {
                    let category = e.getattr("DawinWarning")?;
                    py.import("warnings")?
                        .call_method1("warn", (text, category, 2))
                        .map(drop)
                }),
                _ => py
                    .import("logging")
                    .and_then(|l| l.call_method1("getLogger", ("dawin",)))
                    .and_then(|log| log.call_method1("info", (text,)).map(drop)),
            };
            if let Err(e) = sent {
                handle(py, e);
            }
            check_signals(py);
        })
    }

    fn progress(&self, len: usize, what: &str, unit: Unit) -> Box<dyn ProgressSink> {
        let sink = Python::attach(|py| -> PyResult<Option<Sink>> {
            let cb = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cb) = cb.as_ref()
                && cb.bind(py).is_callable()
            {
                let (cb, what) = (cb.clone_ref(py), what.to_string());
                return Ok(Some(Sink::Callback(cb, what, len)));
            }
            let Ok(tqdm) = py.import("tqdm.auto") else {
                return Ok(None);
            };
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("total", len)?;
            kwargs.set_item("desc", what)?;
            kwargs.set_item("unit", unit.plural)?;
            let bar = tqdm.getattr("tqdm")?.call((), Some(&kwargs))?;
            Ok(Some(Sink::Bar(bar.unbind())))
        });
        Box::new(PyProgress {
            sink: sink.ok().flatten(),
            done: Mutex::new(0),
        })
    }
}

enum Sink {
    /// `callback(what, done, total)`.
    Callback(Py<PyAny>, String, usize),
    /// A tqdm bar.
    Bar(Py<PyAny>),
}

struct PyProgress {
    sink: Option<Sink>,
    done: Mutex<u64>,
}

impl PyProgress {
    /// Moves the display to `done` items.
    fn show(&self, done: u64) {
        let Some(sink) = &self.sink else { return };
        Python::attach(|py| {
            let shown = match sink {
                Sink::Callback(cb, what, total) => cb.call1(py, (what, done, *total)).map(drop),
                Sink::Bar(bar) => {
                    let bar = bar.bind(py);
                    bar.setattr("n", done)
                        .and_then(|_| bar.call_method0("refresh").map(drop))
                }
            };
            if let Err(e) = shown {
                handle(py, e);
            }
            check_signals(py);
        })
    }
}

impl ProgressSink for PyProgress {
    fn set_position(&self, pos: u64) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = pos;
        self.show(pos);
    }

    fn inc(&self, n: u64) {
        let done = {
            let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
            *d += n;
            *d
        };
        self.show(done);
    }

    fn finish(&self) {
        if let Some(Sink::Bar(bar)) = &self.sink {
            Python::attach(|py| {
                let _ = bar.bind(py).call_method0("close");
            });
        }
    }
}

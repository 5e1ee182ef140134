//! The library's messages and progress on stderr: warnings and notes with
//! their prefix, status lines as they are, and progress bars on a terminal
//! only, so logs and pipes stay clean. A bar says what it counts and for
//! which phase; it shows no rate or eta before it has one, and leaves a
//! line with the count, the time taken and the rate when it is done.

use dawin::reporter::{Level, ProgressSink, Reporter, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

pub struct Terminal;

impl Reporter for Terminal {
    fn message(&self, level: Level, text: &str) {
        match level {
            Level::Warning => crate::errln!("warning: {text}"),
            Level::Note => crate::errln!("note: {text}"),
            Level::Status => crate::errln!("{text}"),
        }
    }

    fn progress(&self, len: usize, what: &str, unit: Unit) -> Box<dyn ProgressSink> {
        Box::new(Bar {
            bar: bar(len, what, unit),
            unit,
        })
    }
}

/// Items per second as an integer with its unit (blank before any).
fn rate(state: &ProgressState, w: &mut dyn std::fmt::Write, unit: &str) {
    if state.pos() > 0 {
        let _ = write!(w, "{:.0} {unit}", state.per_sec());
    }
}

/// The remaining time, once there is a rate to estimate it from.
fn eta(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    if state.pos() > 0 && state.pos() < state.len().unwrap_or(0) {
        let _ = write!(w, "eta {}", indicatif::HumanDuration(state.eta()));
    }
}

/// A bar over `len` items labelled `what`, drawn only on a terminal.
fn bar(len: usize, what: &str, unit: Unit) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = format!(
        "{{msg:>20}} [{{bar:40}}] {{pos}}/{{len}} {} {{rate}} {{eta2}}",
        unit.plural
    );
    let style = ProgressStyle::with_template(&template)
        .expect("a valid template")
        .with_key(
            "rate",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| rate(s, w, unit.rate),
        )
        .with_key("eta2", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            eta(s, w)
        })
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

struct Bar {
    bar: ProgressBar,
    unit: Unit,
}

impl ProgressSink for Bar {
    fn set_position(&self, pos: u64) {
        self.bar.set_position(pos)
    }

    fn inc(&self, n: u64) {
        self.bar.inc(n)
    }

    /// One line that stays: what, how many, how long, how fast.
    fn finish(&self) {
        let unit = self.unit;
        let template = format!(
            "{{msg:>20}} {{pos}} {} in {{elapsed}} ({{rate}})",
            unit.plural
        );
        let style = ProgressStyle::with_template(&template)
            .expect("a valid template")
            .with_key(
                "rate",
                move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let secs = s.elapsed().as_secs_f64().max(1e-9);
                    let _ = write!(w, "{:.0} {}", s.pos() as f64 / secs, unit.rate);
                },
            );
        self.bar.set_style(style);
        self.bar.finish();
    }
}

//! Progress bars for the passes over the data: on a terminal only, so logs
//! and pipes stay clean. A bar says what it counts and for which phase; it
//! shows no rate or eta before it has one, and leaves a line with the
//! count, the time taken and the rate when it is done.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What a bar counts: its plural and its rate's unit.
#[derive(Clone, Copy)]
pub struct Unit {
    pub plural: &'static str,
    pub rate: &'static str,
}

pub const IMAGES: Unit = Unit {
    plural: "images",
    rate: "img/s",
};

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

/// A bar over `len` images labelled `what`; hidden unless `visible` and
/// stderr is a terminal.
pub fn progress_bar(len: usize, what: &str, visible: bool) -> ProgressBar {
    progress_bar_of(len, what, IMAGES, visible)
}

/// [`progress_bar`] over something else than images.
pub fn progress_bar_of(len: usize, what: &str, unit: Unit, visible: bool) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if !visible || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
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

/// Ends a bar with one line that stays: what, how many, how long, how fast.
pub fn finish(pb: &ProgressBar) {
    finish_of(pb, IMAGES)
}

/// [`finish`] for a bar of [`progress_bar_of`].
pub fn finish_of(pb: &ProgressBar, unit: Unit) {
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
    pb.set_style(style);
    pb.finish();
}

//! Progress bars for the passes over the data: on a terminal only, so logs
//! and pipes stay clean. A bar says what it counts and for which phase; it
//! shows no rate or eta before it has one, and leaves a line with the
//! count, the time taken and the rate when it is done.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Images per second as an integer with its unit (blank before any).
fn rate(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    if state.pos() > 0 {
        let _ = write!(w, "{:.0} img/s", state.per_sec());
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
    let pb = ProgressBar::new(len as u64);
    if !visible || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} images {rate} {eta2}")
            .expect("a valid template")
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                rate(s, w)
            })
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
    let style = ProgressStyle::with_template("{msg:>20} {pos} images in {elapsed} ({rate})")
        .expect("a valid template")
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let secs = s.elapsed().as_secs_f64().max(1e-9);
            let _ = write!(w, "{:.0} img/s", s.pos() as f64 / secs);
        });
    pb.set_style(style);
    pb.finish();
}

//! Progress bars for the passes over the data: on a terminal only, so logs
//! and pipes stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` images labelled `what`; hidden unless `visible` and
/// stderr is a terminal.
pub fn progress_bar(len: usize, what: &str, visible: bool) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if !visible || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} images {per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

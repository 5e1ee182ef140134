//! Writing to stdout and stderr without panicking when the reader has gone
//! (`dawin inspect MODEL | head -1`). `crate::outln!` panics on a closed pipe
//! ("failed printing to stdout: Broken pipe"); these macros drop the text
//! instead, so a command whose reader left finishes its work and exits as
//! it would have, with nothing lost but output nobody reads.

use std::io::Write;

/// Writes `args` to stdout; a write error (a closed pipe) is ignored.
pub fn stdout(args: std::fmt::Arguments) {
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// Writes `args` to stderr; a write error (a closed pipe) is ignored.
pub fn stderr(args: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// `print!` that never panics.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::output::stdout(format_args!($($t)*)) };
}

/// `crate::outln!` that never panics.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::output::stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::output::stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::cli::output::stderr(format_args!($($t)*)) };
}

/// `crate::errln!` that never panics.
#[macro_export]
macro_rules! errln {
    () => { $crate::cli::output::stderr(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::output::stderr(format_args!("{}\n", format_args!($($t)*))) };
}

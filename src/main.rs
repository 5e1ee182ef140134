//! The `dawin` command line: parse, call the library, print. The commands
//! and flags are in `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // The library reports through this; it never prints.
    dawin::reporter::install(std::sync::Arc::new(cli::terminal::Terminal));
    stop_on_signals();
    dawin::hostmem::keep_freed_blocks();
    if let Some(n) = args.threads {
        // The global pool is built once, here, before anything runs.
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
        {
            crate::errln!("error: --threads {n}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    match cli::commands::run(args.cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e)
            if matches!(
                e.downcast_ref::<dawin::Error>(),
                Some(dawin::Error::Interrupted)
            ) =>
        {
            crate::errln!("{e:#}");
            // 128 + SIGINT, as shells report a run stopped by Ctrl-C.
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            crate::errln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ctrl-C and SIGTERM stop the run at its next safe point (between batches,
/// or before the output folder's commit), so the folder never holds half a
/// result; a second one stops it at once.
fn stop_on_signals() {
    let handler = || {
        if dawin::interrupt::requested() {
            std::process::exit(130);
        }
        dawin::interrupt::request();
        crate::errln!("stopping at the next safe point (again to stop now)...");
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        crate::errln!("warning: Ctrl-C will stop at once: {e}");
    }
}

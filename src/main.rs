//! The `dawin` command line: parse, call the library, print. The commands
//! and flags are in `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // The library reports through this; it never prints.
    dawin::reporter::install(std::sync::Arc::new(cli::terminal::Terminal));
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
        Err(e) => {
            crate::errln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

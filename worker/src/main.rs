//! The `riskstream` binary: logging, the async runtime, then the library's
//! command line ([`riskstream::cli`]).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc for the Rust side: records are allocated on the source thread
/// and freed on the sink and producer threads, which glibc's per-thread
/// arenas handle poorly (about a sixth of the worker's CPU went to
/// malloc/free and arena consolidation; see issue 6's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RISKSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for people: log collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = riskstream::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(riskstream::cli::dispatch(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: messages say what was being done, their
            // sources what went wrong.
            eprintln!("error: {}", riskstream::outcome::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

//! `reinado`: the command-line client. Parses arguments, runs one command (see `cli/`), and exits with a code
//! that means something: 0 done, 1 failed, 2 bad usage, 3 cluster unavailable, 4 not found, 5 invalid
//! request, 6 quota reached, 7 compare-and-swap did not swap, 8 not serving (`health`).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    let code = runtime.block_on(cli::run(args));
    ExitCode::from(code)
}

use std::process::ExitCode;

use clap::Parser;
use tcpfile::cli::{ServerArgs, VERSION, parse_or_exit};
use tcpfile::server::{self, iterative};

/// Serve files one client at a time, each completely before the next.
#[derive(Parser)]
#[command(name = "tcpfile-server-iterative", version = VERSION)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> ExitCode {
    match parse_or_exit::<Cli>(server::USAGE_EXIT) {
        Ok(cli) => server::exit(&cli.server, iterative::run),
        Err(code) => code,
    }
}

use std::process::ExitCode;

use clap::Parser;
use tcpfile::cli::{ServerArgs, VERSION, parse_or_exit};
use tcpfile::server::{self, evented};

/// Serve clients from WORKERS processes forked at start, each an event loop
/// over many connections at once.
#[derive(Parser)]
#[command(name = "tcpfile-server-evented", version = VERSION)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// Worker processes, each serving any number of connections at once
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
}

fn main() -> ExitCode {
    match parse_or_exit::<Cli>(server::USAGE_EXIT) {
        Ok(cli) => server::exit(&cli.server, |args| evented::run(args, cli.workers as usize)),
        Err(code) => code,
    }
}

use std::process::ExitCode;

use clap::Parser;
use tcpfile::cli::{ServerArgs, VERSION, parse_or_exit};
use tcpfile::server::{self, parallel};

/// Serve each client in a process of its own, at most MAX_CHILDREN at once.
#[derive(Parser)]
#[command(name = "tcpfile-server-parallel", version = VERSION)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// Most connections served at once; more wait in the kernel's queue
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    max_children: u32,
}

fn main() -> ExitCode {
    match parse_or_exit::<Cli>(server::USAGE_EXIT) {
        Ok(cli) => server::exit(&cli.server, |args| {
            parallel::run(args, cli.max_children as usize)
        }),
        Err(code) => code,
    }
}

use std::process::ExitCode;

use clap::Parser;
use tcpfile::cli::{ServerArgs, VERSION, parse_or_exit};
use tcpfile::server::{self, preforked};

/// Serve clients from CHILDREN worker processes forked at start.
#[derive(Parser)]
#[command(name = "tcpfile-server-preforked", version = VERSION)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// Worker processes, each serving one connection at a time
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    children: u32,
}

fn main() -> ExitCode {
    match parse_or_exit::<Cli>(server::USAGE_EXIT) {
        Ok(cli) => server::exit(&cli.server, |args| {
            preforked::run(args, cli.children as usize)
        }),
        Err(code) => code,
    }
}

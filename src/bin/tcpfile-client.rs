use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tcpfile::cli::{VERSION, Verbosity, parse_or_exit, parse_seconds, parse_timeout};
use tcpfile::client::{self, Progress, Request, exit_code};
use tcpfile::destination;
use tcpfile::logging::{self, Style};
use tcpfile::protocol::{FileName, PROTOCOL_VERSION};

/// Fetch one file from a tcpfile server.
#[derive(Parser)]
#[command(name = "tcpfile-client", version = VERSION)]
struct Cli {
    /// Server address: an IPv4 or IPv6 literal or a host name
    addr: String,
    /// Server port
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Name of the file to fetch
    filename: OsString,
    /// Largest file accepted, in bytes; K, M and G suffixes are powers of 1024
    #[arg(value_parser = client::parse_size)]
    max_size: u64,
    /// Where to write the file [default: ./FILENAME]
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Seconds allowed for connecting and for every read
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    timeout: Duration,
    /// Keep retrying for up to SECS while the server's name does not resolve
    /// or the server does not answer yet
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    wait: Option<Duration>,
    /// Only check that the server answers the protocol (for health checks):
    /// any well-formed response succeeds, and no file is written
    #[arg(long)]
    probe: bool,
    /// Protocol version to send, to show a version mismatch end to end
    #[arg(long, value_name = "N", default_value_t = PROTOCOL_VERSION)]
    protocol_version: u8,
    #[command(flatten)]
    verbosity: Verbosity,
}

fn main() -> ExitCode {
    let cli = match parse_or_exit::<Cli>(exit_code::USAGE_OR_LOCAL) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let level = cli.verbosity.level();
    logging::init(level, Style::Client);
    // A file size limit must end in a clear error, not a silent kill.
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };

    if let Err(error) = destination::remove_staging_file_on_stop_signals() {
        log::warn!("a stop signal may leave a staging file behind: {error}");
    }

    let name = match FileName::parse(cli.filename.as_bytes()) {
        Ok(name) => name,
        Err(error) => {
            log::error!("invalid file name {:?}: {error}", cli.filename);
            return ExitCode::from(exit_code::USAGE_OR_LOCAL);
        }
    };
    let request = Request {
        output: cli.output.unwrap_or_else(|| client::default_output(&name)),
        addr: cli.addr,
        port: cli.port,
        name,
        max_size: cli.max_size,
        timeout: cli.timeout,
        wait: cli.wait,
        protocol_version: cli.protocol_version,
        progress: Progress::for_stderr(level),
    };
    let result = if cli.probe {
        client::probe(&request).map(|status| log::info!("the server answers: {status}"))
    } else {
        client::fetch(&request).map(drop)
    };
    match result {
        Ok(()) => ExitCode::from(exit_code::SUCCESS),
        Err(failure) => {
            log::error!("{failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

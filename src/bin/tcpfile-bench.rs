use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tcpfile::bench::http::{self, HttpPath};
use tcpfile::bench::{self, Config, Protocol};
use tcpfile::cli::{VERSION, parse_or_exit, parse_timeout};
use tcpfile::client::parse_size;
use tcpfile::protocol::FileName;

/// The run could not start or could not go on.
const CANNOT_RUN: u8 = 1;
const USAGE: u8 = 2;
/// The run finished, but some requests failed their checks.
const REQUESTS_FAILED: u8 = 3;

/// Load a tcpfile server: keep CONCURRENCY requests in flight, each on a new
/// connection, check every response's status and byte count, and report
/// requests/s, MB/s, latency percentiles and errors by kind.
///
/// With `--protocol http` it loads a web server the same way: an HTTP/1.0
/// GET per connection, read to the server's close; the status must be 200
/// and the body as long as the Content-Length.
///
/// Exit status: 0 when every response was as expected, 1 when the run could
/// not be made, 2 for a usage error, 3 when some requests failed.
#[derive(Parser)]
#[command(name = "tcpfile-bench", version = VERSION)]
struct Cli {
    /// Server address: an IPv4 or IPv6 literal or a host name
    addr: String,
    /// Server port
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Files to request, in turn (URL paths with --protocol http)
    #[arg(required = true)]
    filenames: Vec<OsString>,
    /// The protocol the requests speak
    #[arg(long, value_enum, default_value_t = ProtocolName::Tcpfile)]
    protocol: ProtocolName,
    /// Requests in flight at once
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    concurrency: u32,
    /// Requests to make in all
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1000)]
    requests: u64,
    /// Stop after SECS even if requests remain; those in flight are abandoned
    #[arg(short, long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
    duration: Duration,
    /// Seconds one request may take, from connect to the last byte
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    timeout: Duration,
    /// Event loops sharing the connections; one is enough unless the
    /// generator itself saturates a core
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Size every file must have, in bytes (K, M and G suffixes are powers of
    /// 1024), in HTTP its Content-Length; without it, the first response for
    /// a file sets its size
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    expect_size: Option<u64>,
    /// Print the report as one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolName {
    Tcpfile,
    Http,
}

/// The requests the command line asks for, or the message for a name that
/// cannot be requested.
fn protocol_of(cli: &Cli) -> Result<Protocol, String> {
    let names = cli.filenames.iter().map(|name| name.as_bytes());
    match cli.protocol {
        ProtocolName::Tcpfile => names
            .map(|name| {
                FileName::parse(name).map_err(|error| {
                    format!(
                        "invalid file name {:?}: {error}",
                        String::from_utf8_lossy(name)
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Protocol::Tcpfile),
        ProtocolName::Http => names
            .map(|name| {
                HttpPath::parse(name).map_err(|error| {
                    format!("invalid path {:?}: {error}", String::from_utf8_lossy(name))
                })
            })
            .collect::<Result<_, _>>()
            .map(|paths| Protocol::Http {
                host: http::host_header(&cli.addr, cli.port),
                paths,
            }),
    }
}

fn main() -> ExitCode {
    let cli = match parse_or_exit::<Cli>(USAGE) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let protocol = match protocol_of(&cli) {
        Ok(protocol) => protocol,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(USAGE);
        }
    };
    let target = match bench::resolve(&cli.addr, cli.port) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: cannot resolve {}: {error}", cli.addr);
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let config = Config {
        target,
        protocol,
        concurrency: cli.concurrency as usize,
        requests: cli.requests,
        duration: cli.duration,
        timeout: cli.timeout,
        threads: cli.threads as usize,
        expected_size: cli.expect_size,
    };
    match bench::run(&config) {
        Ok(report) => {
            let text = if cli.json {
                format!("{}\n", report.to_json())
            } else {
                report.to_string()
            };
            if let Err(error) = std::io::stdout().lock().write_all(text.as_bytes()) {
                eprintln!("error: cannot write the report: {error}");
                return ExitCode::from(CANNOT_RUN);
            }
            ExitCode::from(if report.clean() { 0 } else { REQUESTS_FAILED })
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}

//! Command-line pieces the binaries share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// What `--version` prints: the crate version, the target it was built for,
/// and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TCPFILE_TARGET"),
    ", commit ",
    env!("TCPFILE_COMMIT"),
    ")"
);

/// The arguments every server model takes.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on: an IPv4 or IPv6 literal or a host name
    pub addr: String,
    /// TCP port; 0 picks a free one, printed on the first line of stdout
    pub port: u16,
    /// Directory whose regular files are served
    pub dir: PathBuf,
    /// Seconds a client may take to send its request or reply, or stall the transfer
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Seconds transfers in flight may take to finish after SIGINT or SIGTERM
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub grace: Duration,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Verbosity {
    /// Print warnings and errors only
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print debug messages too, such as every header in hex
    #[arg(short, long)]
    pub verbose: bool,
}

impl Verbosity {
    pub fn level(self) -> log::LevelFilter {
        if self.quiet {
            log::LevelFilter::Warn
        } else if self.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        }
    }
}

/// The longest duration any option takes: a day. Far above any sensible
/// timeout or grace period, and far below where adding it to the clock would
/// overflow.
pub const MAX_SECONDS: u32 = 86_400;

/// Seconds as a decimal number from 0 to [`MAX_SECONDS`], such as `10` or
/// `0.5`.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=f64::from(MAX_SECONDS)).contains(&seconds) {
        return Err(format!(
            "{text:?} is out of range: give 0 to {MAX_SECONDS} seconds"
        ));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a usable number of seconds"))
}

/// Like [`parse_seconds`], for a timeout, which must be longer than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_seconds(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?}: a timeout must be longer than 0 seconds"));
    }
    Ok(duration)
}

/// Parses the command line; on a usage error prints clap's message and exits
/// with `usage_code` (help and version exit 0).
pub fn parse_or_exit<T: Parser>(usage_code: u8) -> Result<T, ExitCode> {
    T::try_parse().map_err(|error| {
        let _ = error.print();
        if error.use_stderr() {
            ExitCode::from(usage_code)
        } else {
            ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds("86400"), Ok(Duration::from_secs(86_400)));
        for nonsense in ["-1", "soon", "86400.5", "1e19", "inf", "NaN", ""] {
            assert!(parse_seconds(nonsense).is_err(), "{nonsense}");
        }
    }

    #[test]
    fn timeouts_must_be_longer_than_zero() {
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0.0").is_err());
        assert_eq!(parse_timeout("0.001"), Ok(Duration::from_millis(1)));
        assert!(parse_timeout("1e19").is_err());
    }
}

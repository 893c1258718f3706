//! The client's side of the conversation: connect, ask for one file, and
//! write it to its destination only when every byte has arrived.

use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::destination::Destination;
use crate::protocol::{
    ClientReply, FileName, FileRequest, FileResponse, Hex, MessageType, RESPONSE_LEN, Status,
    StatusCode,
};
use crate::transfer::{ContentCopier, CopyError, ShortRead, describe_rate, read_exact_counted};

/// The client's exit codes, one per way a fetch can end.
pub mod exit_code {
    pub const SUCCESS: u8 = 0;
    pub const USAGE_OR_LOCAL: u8 = 1;
    pub const CANNOT_CONNECT: u8 = 2;
    pub const SERVER_ERROR: u8 = 3;
    pub const TOO_LARGE: u8 = 4;
    pub const TRANSFER_BROKE: u8 = 5;
}

/// How a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Local(String),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("the server answered: {0}")]
    Server(StatusCode),
    #[error("refusing the file: its size ({size} bytes) exceeds the maximum of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("transfer broke: {0}")]
    Broken(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Local(_) => exit_code::USAGE_OR_LOCAL,
            Failure::Connect { .. } => exit_code::CANNOT_CONNECT,
            Failure::Server(_) => exit_code::SERVER_ERROR,
            Failure::TooLarge { .. } => exit_code::TOO_LARGE,
            Failure::Broken(_) => exit_code::TRANSFER_BROKE,
        }
    }
}

/// How progress is shown while the content arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A redrawn bar, for a terminal.
    Bar,
    /// A line at every tenth of the file, for logs and pipes.
    Lines,
    Silent,
}

impl Progress {
    /// A bar when stderr is a terminal, lines otherwise, nothing when quiet.
    pub fn for_stderr(level: log::LevelFilter) -> Progress {
        if level < log::LevelFilter::Info {
            Progress::Silent
        } else if io::stderr().is_terminal() {
            Progress::Bar
        } else {
            Progress::Lines
        }
    }
}

pub struct Request {
    pub addr: String,
    pub port: u16,
    pub name: FileName,
    pub max_size: u64,
    pub output: PathBuf,
    /// Bounds connecting and every read.
    pub timeout: Duration,
    /// How long to keep retrying while the server's name does not resolve
    /// or the server refuses or does not answer.
    pub wait: Option<Duration>,
    pub protocol_version: u8,
    pub progress: Progress,
}

/// A file that arrived and was put in place.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: u64,
    pub path: PathBuf,
}

/// Parses a byte count with an optional `K`, `M` or `G` suffix (powers of
/// 1024), such as `104857600` or `100M`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, multiplier) = match text.char_indices().last() {
        Some((at, suffix)) if suffix.is_ascii_alphabetic() => {
            let multiplier = match suffix.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{text:?}: the suffix must be K, M or G")),
            };
            (&text[..at], multiplier)
        }
        _ => (text, 1),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (such as 104857600 or 100M)"))?;
    count
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Fetches one file; see [`Failure`] for every way it can end early. Nothing
/// is written at the destination unless the whole file arrived.
pub fn fetch(request: &Request) -> Result<Fetched, Failure> {
    let mut destination = Destination::open(&request.output)
        .map_err(|error| Failure::Local(format!("cannot write the file: {error}")))?;
    let (mut stream, response) = ask(request)?;
    let size = match judge_response(&response, request.protocol_version, request.max_size) {
        Ok(size) => size,
        Err(failure) => {
            if matches!(failure, Failure::TooLarge { .. }) {
                let _ = stream.write_all(&ClientReply::RefuseToReceive.encode());
            }
            return Err(failure);
        }
    };
    stream
        .write_all(&ClientReply::ReadyToReceive.encode())
        .map_err(|error| Failure::Broken(format!("cannot send the reply: {error}")))?;

    log::info!("receiving {size} bytes into {}", request.output.display());
    let started = Instant::now();
    receive(&mut stream, destination.file(), size, request.progress)?;
    destination.finish().map_err(|error| {
        Failure::Local(format!(
            "cannot put {} in place: {error}",
            request.output.display()
        ))
    })?;
    log::info!(
        "transfer complete: {}",
        describe_rate(size, started.elapsed())
    );
    log::info!("saved {}", request.output.display());
    Ok(Fetched {
        bytes: size,
        path: request.output.clone(),
    })
}

/// Checks that a server answers the protocol: sends the request, expects a
/// well-formed response whatever its status, and refuses the content. For
/// health checks; nothing is written.
pub fn probe(request: &Request) -> Result<StatusCode, Failure> {
    let (mut stream, response) = ask(request)?;
    check_message_type(&response)?;
    if response.status.known() == Some(Status::Ok) {
        let _ = stream.write_all(&ClientReply::RefuseToReceive.encode());
    }
    match response.status.known() {
        Some(_) => Ok(response.status),
        None => Err(Failure::Broken(format!(
            "protocol violation: unknown status code {}",
            response.status.0
        ))),
    }
}

/// Connects, sends the request and reads the response header.
fn ask(request: &Request) -> Result<(TcpStream, FileResponse), Failure> {
    let target = display_target(bare_host(&request.addr), request.port);
    log::info!("connecting to {target}");
    let mut stream = connect(request, &target)?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| target.clone(), |addr| addr.to_string());
    log::info!("connected to {peer}");
    let broken = |what: &str, error: io::Error| Failure::Broken(format!("{what}: {error}"));
    stream
        .set_read_timeout(Some(request.timeout))
        .and_then(|()| stream.set_write_timeout(Some(request.timeout)))
        .map_err(|error| broken("cannot set the timeouts", error))?;

    let bytes = FileRequest::new(&request.name, request.protocol_version).encode();
    log::info!("sending the file request for \"{}\"", request.name);
    log::debug!("request header: {}", Hex(&bytes[..16]));
    stream
        .write_all(&bytes)
        .map_err(|error| broken("cannot send the request", error))?;

    let mut header = [0u8; RESPONSE_LEN];
    read_exact_counted(&mut stream, &mut header)
        .map_err(|short| describe_short("the response", short, RESPONSE_LEN as u64))?;
    log::debug!("response header: {}", Hex(&header));
    let response = FileResponse::decode(&header);
    log::info!(
        "received header: protocol version {}, message type {}, status {}, file size {}",
        response.protocol_version,
        response.message_type,
        response.status.0,
        response.file_size
    );
    Ok((stream, response))
}

/// Judges a response header the way [`fetch`] does before it replies: the
/// number of content bytes to accept, or why the fetch ends with this
/// header. Pure, so that every possible header can be tried against it.
pub fn judge_response(
    response: &FileResponse,
    sent_version: u8,
    max_size: u64,
) -> Result<u64, Failure> {
    check_message_type(response)?;
    if response.status.known() != Some(Status::Ok) {
        return Err(Failure::Server(response.status));
    }
    if response.protocol_version != sent_version {
        return Err(Failure::Broken(format!(
            "protocol violation: the server answered with protocol version {} to a version {sent_version} request",
            response.protocol_version
        )));
    }
    if response.file_size > max_size {
        return Err(Failure::TooLarge {
            size: response.file_size,
            max: max_size,
        });
    }
    Ok(response.file_size)
}

fn check_message_type(response: &FileResponse) -> Result<(), Failure> {
    if response.message_type == MessageType::FileResponse as u8 {
        Ok(())
    } else {
        Err(Failure::Broken(format!(
            "protocol violation: message type {} is not FILE_RESPONSE",
            response.message_type
        )))
    }
}

/// The host without the brackets a user may put around an IPv6 literal.
fn bare_host(addr: &str) -> &str {
    addr.trim_start_matches('[').trim_end_matches(']')
}

/// "host:port", with brackets around an IPv6 literal.
fn display_target(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn connect(request: &Request, target: &str) -> Result<TcpStream, Failure> {
    let host = bare_host(&request.addr);
    let give_up = request.wait.map(|wait| Instant::now() + wait);
    let mut announced_wait = false;
    loop {
        let attempt = (host, request.port)
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve {host}: {error}"))
            .and_then(|addrs| connect_any(addrs.collect(), request.timeout));
        let reason = match attempt {
            Ok(stream) => return Ok(stream),
            Err(reason) => reason,
        };
        match give_up {
            Some(deadline) if Instant::now() < deadline => {
                if !announced_wait {
                    log::info!("{target} does not answer yet ({reason}); retrying");
                    announced_wait = true;
                }
                std::thread::sleep(Duration::from_millis(200).min(deadline - Instant::now()));
            }
            _ => {
                return Err(Failure::Connect {
                    target: target.to_string(),
                    reason,
                });
            }
        }
    }
}

fn connect_any(addrs: Vec<SocketAddr>, timeout: Duration) -> Result<TcpStream, String> {
    let mut reason = "the name resolves to no address".to_string();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => reason = format!("{addr}: {error}"),
        }
    }
    Err(reason)
}

fn describe_short(what: &str, short: ShortRead, wanted: u64) -> Failure {
    Failure::Broken(match short.error {
        None => format!(
            "the server closed the connection after {} of {wanted} bytes of {what}",
            short.got
        ),
        Some(error) if is_timeout(&error) => format!(
            "timed out waiting for {what} after {} of {wanted} bytes",
            short.got
        ),
        Some(error) => format!("{what}: {error} after {} of {wanted} bytes", short.got),
    })
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads exactly `size` bytes into `file`, then insists that the server
/// closes: more bytes than announced are a protocol violation.
fn receive(
    stream: &mut TcpStream,
    file: &mut std::fs::File,
    size: u64,
    progress: Progress,
) -> Result<(), Failure> {
    let mut meter = Meter::new(size, progress);
    let mut copier = ContentCopier::new();
    let mut received: u64 = 0;
    while received < size {
        let limit = usize::try_from(size - received).unwrap_or(usize::MAX);
        let moved = match copier.step(stream, file, limit) {
            Ok(moved) => moved,
            Err(CopyError::Read(error)) => {
                meter.abandon();
                let short = ShortRead {
                    got: received,
                    error: Some(error),
                };
                return Err(describe_short("the content", short, size));
            }
            Err(CopyError::Write(error)) => {
                meter.abandon();
                return Err(Failure::Broken(format!(
                    "cannot write the file after {received} bytes: {error}"
                )));
            }
        };
        if moved == 0 {
            meter.abandon();
            let short = ShortRead {
                got: received,
                error: None,
            };
            return Err(describe_short("the content", short, size));
        }
        received += moved as u64;
        meter.advance(received);
    }
    meter.finish();

    let mut extra = [0u8; 1];
    match stream.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Failure::Broken(format!(
            "protocol violation: the server sent more than the {size} bytes it announced"
        ))),
        Err(error) if is_timeout(&error) => Err(Failure::Broken(
            "the server did not close the connection after the content".to_string(),
        )),
        // A reset after every byte arrived loses nothing.
        Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Ok(()),
        Err(error) => Err(Failure::Broken(format!("after the content: {error}"))),
    }
}

/// Shows how far a transfer has come, without a line per chunk.
struct Meter {
    size: u64,
    bar: Option<ProgressBar>,
    lines: bool,
    next_tenth: u64,
}

impl Meter {
    fn new(size: u64, progress: Progress) -> Meter {
        let bar = (progress == Progress::Bar && size > 0).then(|| {
            let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Meter {
            size,
            bar,
            lines: progress == Progress::Lines && size > 0,
            next_tenth: 1,
        }
    }

    fn advance(&mut self, received: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(received);
        }
        if self.lines {
            let tenths = received.saturating_mul(10) / self.size;
            if tenths >= self.next_tenth && received < self.size {
                log::info!(
                    "received {received} of {} bytes ({}%)",
                    self.size,
                    tenths * 10
                );
                self.next_tenth = tenths + 1;
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// Where the file goes when `--output` is not given: the file's name in the
/// current directory.
pub fn default_output(name: &FileName) -> PathBuf {
    Path::new(".").join(name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("104857600"), Ok(104_857_600));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("10T").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("17179869184G").is_err());
    }

    #[test]
    fn failures_have_distinct_exit_codes() {
        let codes = [
            Failure::Local(String::new()).exit_code(),
            Failure::Connect {
                target: String::new(),
                reason: String::new(),
            }
            .exit_code(),
            Failure::Server(StatusCode(3)).exit_code(),
            Failure::TooLarge { size: 2, max: 1 }.exit_code(),
            Failure::Broken(String::new()).exit_code(),
        ];
        let mut unique = codes.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
        assert!(!codes.contains(&exit_code::SUCCESS));
    }

    #[test]
    fn responses_are_judged_by_type_then_status_then_version_then_size() {
        let judge = |response: FileResponse, max| judge_response(&response, 1, max);
        assert!(matches!(judge(FileResponse::ok(10), 10), Ok(10)));
        assert!(matches!(
            judge(FileResponse::ok(11), 10),
            Err(Failure::TooLarge { size: 11, max: 10 })
        ));
        let newer = FileResponse {
            protocol_version: 2,
            ..FileResponse::error(Status::FileNotFound)
        };
        assert!(matches!(
            judge(newer, 10),
            Err(Failure::Server(StatusCode(3)))
        ));
        let newer_ok = FileResponse {
            protocol_version: 2,
            ..FileResponse::ok(1)
        };
        assert!(matches!(judge(newer_ok, 10), Err(Failure::Broken(_))));
        let wrong_type = FileResponse {
            message_type: 1,
            ..FileResponse::error(Status::FileNotFound)
        };
        assert!(matches!(judge(wrong_type, 10), Err(Failure::Broken(_))));
    }

    #[test]
    fn targets_bracket_ipv6() {
        assert_eq!(display_target("::1", 80), "[::1]:80");
        assert_eq!(display_target("server", 9000), "server:9000");
    }
}

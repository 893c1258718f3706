//! A load generator that speaks the protocol, or HTTP/1.0 to measure a web
//! server the same way: it keeps a fixed number of requests in flight, each
//! on a new connection as the protocol demands, checks every response, and
//! measures what it got.
//!
//! Each thread runs one edge-triggered epoll loop over its share of the
//! connections, so the generator costs a handful of system calls per request
//! and no context switch per connection: on a two-core machine the server
//! under test keeps the other core. A thread per connection would instead
//! put hundreds of threads on the same two cores as the server, and the
//! measurement would be of the scheduler.

pub mod http;
pub mod latency;
pub mod report;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, connect, socket};

use crate::protocol::{
    ClientReply, FileName, FileRequest, FileResponse, MessageType, PROTOCOL_VERSION, RESPONSE_LEN,
    Status,
};

use http::HttpPath;
use latency::Latencies;
pub use report::Report;

/// What the requests ask for, in which protocol. The files or paths are
/// requested in turn, one per request.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// The tcpfile conversation: request, response, reply, content.
    Tcpfile(Vec<FileName>),
    /// An HTTP/1.0 GET with this Host header, answered by a 200 with a
    /// Content-Length and the body.
    Http { host: String, paths: Vec<HttpPath> },
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tcpfile(_) => "tcpfile",
            Protocol::Http { .. } => "http",
        }
    }

    /// The files or paths, as given.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Protocol::Tcpfile(files) => files.iter().map(FileName::as_str).collect(),
            Protocol::Http { paths, .. } => paths.iter().map(HttpPath::as_str).collect(),
        }
    }

    /// The bytes of each request, in turn.
    fn requests(&self) -> Vec<Vec<u8>> {
        match self {
            Protocol::Tcpfile(files) => files
                .iter()
                .map(|name| FileRequest::new(name, PROTOCOL_VERSION).encode().to_vec())
                .collect(),
            Protocol::Http { host, paths } => {
                paths.iter().map(|path| http::request(path, host)).collect()
            }
        }
    }
}

/// What to load, how hard, and for how long at most.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: SocketAddr,
    pub protocol: Protocol,
    /// Requests kept in flight at once.
    pub concurrency: usize,
    /// Requests to make; the run ends when all have finished...
    pub requests: u64,
    /// ...or when this much time has passed, whichever comes first.
    pub duration: Duration,
    /// A request that takes longer than this, from connect to the last byte,
    /// is given up and counted as failed.
    pub timeout: Duration,
    /// Event loops, each with its share of the concurrency.
    pub threads: usize,
    /// The size every file must have (in HTTP, every Content-Length).
    /// Without it, the first response for each file fixes its size, and
    /// every later response must agree.
    pub expected_size: Option<u64>,
}

/// Why one request did not count as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// No connection: refused, unreachable, or no local port left.
    Connect,
    /// The connection broke: a reset, or another error on the socket.
    Broken,
    /// The whole request took longer than the timeout.
    Timeout,
    /// The server closed before the 16 bytes of its response, or before the
    /// end of an HTTP response head.
    ShortResponse,
    /// A well-formed response with a status other than OK.
    Status(u8),
    /// An HTTP response with a status other than 200.
    HttpStatus(u16),
    /// A response of the wrong message type or protocol version, or an HTTP
    /// response head that does not parse.
    Protocol,
    /// An HTTP 200 response without a Content-Length, whose body cannot be
    /// checked.
    NoContentLength,
    /// The announced size differs from the expected one.
    SizeMismatch,
    /// The server closed before sending the announced number of bytes.
    ShortContent,
    /// The server sent more bytes than it announced.
    ExtraContent,
}

impl Failure {
    /// A short name without spaces, used as a key in the JSON report.
    pub fn key(self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Broken => "broken".into(),
            Failure::Timeout => "timeout".into(),
            Failure::ShortResponse => "short_response".into(),
            Failure::Status(code) => match Status::from_code(code) {
                Some(status) => format!("status_{}", status.name()),
                None => format!("status_{code}"),
            },
            Failure::HttpStatus(code) => format!("http_status_{code}"),
            Failure::Protocol => "protocol".into(),
            Failure::NoContentLength => "no_content_length".into(),
            Failure::SizeMismatch => "size_mismatch".into(),
            Failure::ShortContent => "short_content".into(),
            Failure::ExtraContent => "extra_content".into(),
        }
    }
}

/// What a part of the run served, failed and measured.
#[derive(Clone, Default)]
pub struct Tally {
    pub completed: u64,
    /// Content bytes of the completed requests.
    pub bytes: u64,
    pub latency: Latencies,
    pub failures: BTreeMap<Failure, u64>,
    /// Requests still in flight when the time limit ended the run.
    pub abandoned: u64,
}

impl Tally {
    fn fail(&mut self, failure: Failure) {
        *self.failures.entry(failure).or_default() += 1;
    }

    fn merge(&mut self, other: &Tally) {
        self.completed += other.completed;
        self.bytes += other.bytes;
        self.latency.merge(&other.latency);
        for (failure, count) in &other.failures {
            *self.failures.entry(*failure).or_default() += count;
        }
        self.abandoned += other.abandoned;
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// The first address `addr` and `port` resolve to.
pub fn resolve(addr: &str, port: u16) -> io::Result<SocketAddr> {
    let host = addr.trim_start_matches('[').trim_end_matches(']');
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    })
}

/// Runs the load described by `config` and reports what it measured.
pub fn run(config: &Config) -> io::Result<Report> {
    if config.protocol.names().is_empty() || config.concurrency == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a run needs at least one file or path and a concurrency of at least 1",
        ));
    }
    let threads = config.threads.clamp(1, config.concurrency);
    let shared = Shared::new(config);
    let drops_before = report::listen_drops();
    let cpu_before = cpu_time()?;
    let started = Instant::now();

    let results: Vec<io::Result<Tally>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let slots = config.concurrency / threads
                    + usize::from(index < config.concurrency % threads);
                let shared = &shared;
                scope.spawn(move || EventLoop::new(shared, slots)?.run())
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")))
            })
            .collect()
    });

    let elapsed = started.elapsed();
    let cpu = cpu_time()?.saturating_sub(cpu_before);
    let mut tally = Tally::default();
    for result in results {
        tally.merge(&result?);
    }
    Ok(Report {
        config: Config {
            threads,
            ..config.clone()
        },
        tally,
        elapsed,
        cpu,
        listen_drops: drops_before
            .zip(report::listen_drops())
            .map(|(before, after)| after.saturating_sub(before)),
    })
}

fn cpu_time() -> io::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let as_duration = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(time.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(time.tv_usec()).unwrap_or(0))
    };
    Ok(as_duration(usage.user_time()) + as_duration(usage.system_time()))
}

/// A size not learnt yet.
const UNKNOWN_SIZE: u64 = u64::MAX;

/// What every event loop of a run shares.
struct Shared<'a> {
    config: &'a Config,
    address: SockaddrStorage,
    family: AddressFamily,
    requests: Vec<Vec<u8>>,
    sizes: Vec<AtomicU64>,
    issued: AtomicU64,
    deadline: Instant,
}

impl<'a> Shared<'a> {
    fn new(config: &'a Config) -> Shared<'a> {
        let requests = config.protocol.requests();
        let sizes = requests
            .iter()
            .map(|_| AtomicU64::new(config.expected_size.unwrap_or(UNKNOWN_SIZE)))
            .collect();
        Shared {
            config,
            address: SockaddrStorage::from(config.target),
            family: match config.target {
                SocketAddr::V4(_) => AddressFamily::Inet,
                SocketAddr::V6(_) => AddressFamily::Inet6,
            },
            requests,
            sizes,
            issued: AtomicU64::new(0),
            deadline: Instant::now() + config.duration,
        }
    }

    /// The file for the next request, or `None` once the run has made all
    /// its requests or used up its time.
    fn next_request(&self) -> Option<usize> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let ticket = self.issued.fetch_add(1, Ordering::Relaxed);
        (ticket < self.config.requests).then(|| (ticket % self.requests.len() as u64) as usize)
    }

    /// Whether `size` is what `file` is expected to have; the first size seen
    /// for a file becomes its expected size.
    fn size_agrees(&self, file: usize, size: u64) -> bool {
        match self.sizes[file].compare_exchange(
            UNKNOWN_SIZE,
            size,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => true,
            Err(expected) => expected == size,
        }
    }
}

enum Phase {
    Request {
        sent: usize,
    },
    Response {
        header: [u8; RESPONSE_LEN],
        got: usize,
    },
    Reply {
        size: u64,
    },
    HttpHead {
        head: Vec<u8>,
    },
    Content {
        size: u64,
        received: u64,
    },
}

struct Connection {
    stream: TcpStream,
    file: usize,
    started: Instant,
    phase: Phase,
}

/// How far a connection got this time.
enum Progress {
    /// Waiting for the socket.
    Blocked,
    Served {
        bytes: u64,
    },
    Failed(Failure),
}

impl Connection {
    fn open(shared: &Shared, file: usize) -> Result<Connection, Failure> {
        let started = Instant::now();
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let socket =
            socket(shared.family, SockType::Stream, flags, None).map_err(|_| Failure::Connect)?;
        match connect(socket.as_raw_fd(), &shared.address) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(_) => return Err(Failure::Connect),
        }
        // No TCP_NODELAY: the one-byte reply goes out after the server's
        // response, which acknowledged the request, so Nagle never holds it.
        Ok(Connection {
            stream: TcpStream::from(socket),
            file,
            started,
            phase: Phase::Request { sent: 0 },
        })
    }

    /// Moves the conversation on until the socket would block or it ends.
    fn advance(&mut self, shared: &Shared, scratch: &mut [u8]) -> Progress {
        loop {
            let step = match &mut self.phase {
                Phase::Request { sent } => {
                    let request = &shared.requests[self.file];
                    match (&self.stream).write(&request[*sent..]) {
                        Ok(n) => {
                            *sent += n;
                            if *sent == request.len() {
                                self.phase = match shared.config.protocol {
                                    Protocol::Tcpfile(_) => Phase::Response {
                                        header: [0; RESPONSE_LEN],
                                        got: 0,
                                    },
                                    Protocol::Http { .. } => Phase::HttpHead {
                                        head: Vec::with_capacity(HEAD_CAPACITY),
                                    },
                                };
                                // The response can only come after the
                                // request, so its arrival is a new edge:
                                // reading now would only find nothing.
                                return Progress::Blocked;
                            }
                            Ok(())
                        }
                        Err(error) => Err((error, *sent == 0)),
                    }
                }
                Phase::Response { header, got } => match (&self.stream).read(&mut header[*got..]) {
                    Ok(0) => return Progress::Failed(Failure::ShortResponse),
                    Ok(n) => {
                        *got += n;
                        if *got == RESPONSE_LEN {
                            match judge(shared, self.file, &FileResponse::decode(header)) {
                                Ok(size) => self.phase = Phase::Reply { size },
                                Err(failure) => return Progress::Failed(failure),
                            }
                        }
                        Ok(())
                    }
                    Err(error) => Err((error, false)),
                },
                Phase::Reply { size } => {
                    let size = *size;
                    match (&self.stream).write(&ClientReply::ReadyToReceive.encode()) {
                        Ok(0) => return Progress::Failed(Failure::Broken),
                        Ok(_) => {
                            self.phase = Phase::Content { size, received: 0 };
                            // As for the request: the content follows the
                            // reply, so its arrival wakes the loop.
                            return Progress::Blocked;
                        }
                        Err(error) => Err((error, false)),
                    }
                }
                Phase::HttpHead { head } => match (&self.stream).read(scratch) {
                    Ok(0) => return Progress::Failed(Failure::ShortResponse),
                    Ok(n) => {
                        head.extend_from_slice(&scratch[..n]);
                        match judge_http(shared, self.file, head) {
                            Ok(None) => {}
                            Ok(Some(phase)) => self.phase = phase,
                            Err(failure) => return Progress::Failed(failure),
                        }
                        Ok(())
                    }
                    Err(error) => Err((error, false)),
                },
                // Reading past the announced size, so that extra bytes and the
                // closing FIN are both seen.
                Phase::Content { size, received } => match (&self.stream).read(scratch) {
                    Ok(0) if *received == *size => return Progress::Served { bytes: *size },
                    Ok(0) => return Progress::Failed(Failure::ShortContent),
                    Ok(n) => {
                        *received += n as u64;
                        if *received > *size {
                            return Progress::Failed(Failure::ExtraContent);
                        }
                        Ok(())
                    }
                    Err(error) => Err((error, false)),
                },
            };
            if let Err((error, before_first_byte)) = step {
                match error.kind() {
                    io::ErrorKind::WouldBlock => return Progress::Blocked,
                    io::ErrorKind::Interrupted => {}
                    _ => return Progress::Failed(failure_of(&error, before_first_byte)),
                }
            }
        }
    }
}

/// Checks a response header; the file's size when the content may follow.
fn judge(shared: &Shared, file: usize, response: &FileResponse) -> Result<u64, Failure> {
    if response.message_type != MessageType::FileResponse as u8
        || response.protocol_version != PROTOCOL_VERSION
    {
        return Err(Failure::Protocol);
    }
    if response.status.known() != Some(Status::Ok) {
        return Err(Failure::Status(response.status.0));
    }
    if !shared.size_agrees(file, response.file_size) {
        return Err(Failure::SizeMismatch);
    }
    Ok(response.file_size)
}

/// Checks an HTTP response head read so far: `None` while it is incomplete,
/// or the content phase, counting the body bytes that came with the head.
fn judge_http(shared: &Shared, file: usize, head: &[u8]) -> Result<Option<Phase>, Failure> {
    let parsed = match http::parse_head(head) {
        Ok(Some(parsed)) => parsed,
        Ok(None) if head.len() > http::HEAD_LIMIT => return Err(Failure::Protocol),
        Ok(None) => return Ok(None),
        Err(http::Malformed) => return Err(Failure::Protocol),
    };
    if parsed.status != 200 {
        return Err(Failure::HttpStatus(parsed.status));
    }
    let size = parsed.content_length.ok_or(Failure::NoContentLength)?;
    if !shared.size_agrees(file, size) {
        return Err(Failure::SizeMismatch);
    }
    let received = (head.len() - parsed.len) as u64;
    if received > size {
        return Err(Failure::ExtraContent);
    }
    Ok(Some(Phase::Content { size, received }))
}

/// A socket error while sending the first bytes of the request is the
/// connect's failure; any later one broke an established connection.
fn failure_of(error: &io::Error, before_first_byte: bool) -> Failure {
    let errno = error.raw_os_error().map(Errno::from_raw);
    let refused = matches!(
        errno,
        Some(
            Errno::ECONNREFUSED
                | Errno::ETIMEDOUT
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH
                | Errno::EADDRNOTAVAIL
        )
    );
    if before_first_byte && refused {
        Failure::Connect
    } else {
        Failure::Broken
    }
}

/// How often, in milliseconds, the loop looks for requests past their timeout
/// and for the end of the run when no socket wakes it.
const SCAN_INTERVAL_MS: u16 = 50;
const SCAN_INTERVAL: Duration = Duration::from_millis(SCAN_INTERVAL_MS as u64);
/// Big enough that a bulk transfer takes few reads.
const SCRATCH_LEN: usize = 256 * 1024;
/// Room for a web server's usual response head and a small body.
const HEAD_CAPACITY: usize = 1024;

/// One thread's connections. A connection lives in a slot; the epoll data
/// carries the slot and its generation, so that an event still queued for a
/// closed connection is not taken for its successor's.
struct EventLoop<'a> {
    shared: &'a Shared<'a>,
    epoll: Epoll,
    slots: Vec<Option<Connection>>,
    generations: Vec<u32>,
    open: usize,
    exhausted: bool,
    scratch: Vec<u8>,
    tally: Tally,
}

fn token(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

fn untoken(data: u64) -> (usize, u32) {
    ((data & u64::from(u32::MAX)) as usize, (data >> 32) as u32)
}

impl<'a> EventLoop<'a> {
    fn new(shared: &'a Shared<'a>, slots: usize) -> io::Result<EventLoop<'a>> {
        Ok(EventLoop {
            shared,
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            slots: (0..slots).map(|_| None).collect(),
            generations: vec![0; slots],
            open: 0,
            exhausted: false,
            scratch: vec![0; SCRATCH_LEN],
            tally: Tally::default(),
        })
    }

    fn run(mut self) -> io::Result<Tally> {
        for slot in 0..self.slots.len() {
            self.refill(slot)?;
        }
        let mut events = vec![EpollEvent::empty(); self.slots.len().max(1)];
        let mut last_scan = Instant::now();
        while self.open > 0 {
            let ready = match self
                .epoll
                .wait(&mut events, EpollTimeout::from(SCAN_INTERVAL_MS))
            {
                Ok(ready) => ready,
                Err(Errno::EINTR) => 0,
                Err(errno) => return Err(errno.into()),
            };
            for event in &events[..ready] {
                let (slot, generation) = untoken(event.data());
                if self.generations[slot] == generation {
                    self.advance(slot)?;
                }
            }
            if last_scan.elapsed() >= SCAN_INTERVAL {
                last_scan = Instant::now();
                self.scan(last_scan)?;
            }
        }
        Ok(self.tally)
    }

    /// Moves the connection in `slot` on; each time one ends, the next
    /// request takes its place and is moved on in turn.
    fn advance(&mut self, slot: usize) -> io::Result<()> {
        while let Some(connection) = self.slots[slot].as_mut() {
            match connection.advance(self.shared, &mut self.scratch) {
                Progress::Blocked => break,
                Progress::Served { bytes } => {
                    self.tally.completed += 1;
                    self.tally.bytes += bytes;
                    self.tally.latency.record(connection.started.elapsed());
                }
                Progress::Failed(failure) => self.tally.fail(failure),
            }
            self.close(slot);
            self.start(slot)?;
        }
        Ok(())
    }

    fn close(&mut self, slot: usize) {
        // Closing the socket also takes it out of the epoll set.
        if self.slots[slot].take().is_some() {
            self.open -= 1;
        }
        self.generations[slot] = self.generations[slot].wrapping_add(1);
    }

    /// Opens the next request's connection in `slot`, unless the run is
    /// over. A request whose connect fails at once is counted, and the next
    /// one takes its place.
    fn start(&mut self, slot: usize) -> io::Result<()> {
        while !self.exhausted {
            let Some(file) = self.shared.next_request() else {
                self.exhausted = true;
                break;
            };
            match Connection::open(self.shared, file) {
                Ok(connection) => {
                    let interest = EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLOUT
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLET;
                    let data = token(slot, self.generations[slot]);
                    self.epoll
                        .add(&connection.stream, EpollEvent::new(interest, data))?;
                    self.slots[slot] = Some(connection);
                    self.open += 1;
                    break;
                }
                Err(failure) => self.tally.fail(failure),
            }
        }
        Ok(())
    }

    /// Starts a request in the empty `slot` and, since on loopback the
    /// handshake is often complete already, sends it at once rather than
    /// waiting for the first event.
    fn refill(&mut self, slot: usize) -> io::Result<()> {
        self.start(slot)?;
        self.advance(slot)
    }

    /// Fails the requests that have run out of time, and at the end of the
    /// run's time abandons those still in flight.
    fn scan(&mut self, now: Instant) -> io::Result<()> {
        let over = now >= self.shared.deadline;
        for slot in 0..self.slots.len() {
            let Some(connection) = &self.slots[slot] else {
                continue;
            };
            if over {
                self.tally.abandoned += 1;
                self.exhausted = true;
                self.close(slot);
            } else if now.duration_since(connection.started) >= self.shared.config.timeout {
                self.tally.fail(Failure::Timeout);
                self.close(slot);
                self.refill(slot)?;
            }
        }
        Ok(())
    }
}

//! The harness every integration test shares: start a real server binary on
//! port 0, read the address it prints, watch its log, find its processes in
//! /proc, and kill and reap everything when the test ends.
//!
//! Set `TCPFILE_TEST_RUNNER` (for example `qemu-aarch64-static`) to start the
//! binaries under an emulator, the way cargo's target runner starts the tests.

// Each test crate uses a part of the harness.
#![allow(dead_code, unused_macros)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tcpfile::protocol::{FileName, FileRequest, FileResponse, PROTOCOL_VERSION, RESPONSE_LEN};

/// How long a test waits for something that normally takes milliseconds.
/// Generous, because the suite also runs under qemu emulation.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn binary_path(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "tcpfile-client" => env!("CARGO_BIN_EXE_tcpfile-client"),
        "tcpfile-server-iterative" => env!("CARGO_BIN_EXE_tcpfile-server-iterative"),
        "tcpfile-server-parallel" => env!("CARGO_BIN_EXE_tcpfile-server-parallel"),
        "tcpfile-server-preforked" => env!("CARGO_BIN_EXE_tcpfile-server-preforked"),
        "tcpfile-server-evented" => env!("CARGO_BIN_EXE_tcpfile-server-evented"),
        "tcpfile-bench" => env!("CARGO_BIN_EXE_tcpfile-bench"),
        other => panic!("no binary named {other}"),
    })
}

/// A command for one of the project's binaries, under the test runner when
/// one is set.
pub fn command(name: &str) -> Command {
    match std::env::var("TCPFILE_TEST_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut command = Command::new(runner);
            command.arg(binary_path(name));
            command
        }
        _ => Command::new(binary_path(name)),
    }
}

pub fn under_emulation() -> bool {
    std::env::var("TCPFILE_TEST_RUNNER").is_ok_and(|runner| !runner.is_empty())
}

/// Makes a test of each listed function for each server model: `fn
/// name(model: Model)` becomes `iterative::name`, `parallel::name`,
/// `preforked::name` and `evented::name`.
macro_rules! for_each_model {
    ($($test:ident),* $(,)?) => {
        mod iterative {
            $( #[test] fn $test() { super::$test(super::Model::Iterative) } )*
        }
        mod parallel {
            $( #[test] fn $test() { super::$test(super::Model::Parallel(4)) } )*
        }
        mod preforked {
            $( #[test] fn $test() { super::$test(super::Model::Preforked(3)) } )*
        }
        mod evented {
            $( #[test] fn $test() { super::$test(super::Model::Evented(2)) } )*
        }
    };
}

/// The server models, with the process count each test gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Iterative,
    Parallel(u32),
    Preforked(u32),
    Evented(u32),
}

impl Model {
    pub fn binary(self) -> &'static str {
        match self {
            Model::Iterative => "tcpfile-server-iterative",
            Model::Parallel(_) => "tcpfile-server-parallel",
            Model::Preforked(_) => "tcpfile-server-preforked",
            Model::Evented(_) => "tcpfile-server-evented",
        }
    }

    pub fn process_count(self) -> Option<u32> {
        match self {
            Model::Iterative => None,
            Model::Parallel(count) | Model::Preforked(count) | Model::Evented(count) => Some(count),
        }
    }

    /// The workers forked at start, for the models that have them.
    pub fn workers(self) -> Option<u32> {
        match self {
            Model::Preforked(workers) | Model::Evented(workers) => Some(workers),
            Model::Iterative | Model::Parallel(_) => None,
        }
    }

    /// Whether one process serves one connection at a time.
    pub fn one_connection_per_process(self) -> bool {
        !matches!(self, Model::Evented(_))
    }
}

/// The command that starts `model` serving `dir` on 127.0.0.1 port 0 with
/// `extra` options (and `--timeout 5` unless they give one).
pub fn server_command(model: Model, dir: &Path, extra: &[&str]) -> Command {
    let mut command = command(model.binary());
    command.args(["127.0.0.1", "0"]).arg(dir);
    if let Some(count) = model.process_count() {
        command.arg(count.to_string());
    }
    if !extra.contains(&"--timeout") {
        command.args(["--timeout", "5"]);
    }
    command.args(extra);
    command
}

/// A running server. Dropping it kills the server and its children.
pub struct ServerProcess {
    child: Option<Child>,
    pub pid: i32,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Set once every process that held the server's stderr has closed it.
    log_ended: Arc<std::sync::atomic::AtomicBool>,
}

impl ServerProcess {
    pub fn start(model: Model, dir: &Path) -> ServerProcess {
        ServerProcess::start_with(model, dir, &[])
    }

    /// Starts `model` serving `dir` on 127.0.0.1 port 0 with `extra` options.
    pub fn start_with(model: Model, dir: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::spawn(server_command(model, dir, extra))
    }

    /// Spawns a prepared server command and waits for its address line. The
    /// server leads a process group of its own, as it would in a terminal.
    pub fn spawn(mut command: Command) -> ServerProcess {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        ServerProcess::launch(command)
    }

    /// Spawns a prepared server command that leads a session of its own, with
    /// no controlling terminal, as under systemd or as PID 1 in a container.
    pub fn spawn_session_leader(mut command: Command) -> ServerProcess {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the
        // parent.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        ServerProcess::launch(command)
    }

    fn launch(mut command: Command) -> ServerProcess {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "debug");
        let mut child = command.spawn().expect("start the server");
        let pid = child.id() as i32;

        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        let log_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ended = Arc::clone(&log_ended);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });

        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            // Keep draining, so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = ServerProcess {
            child: Some(child),
            pid,
            addr: "0.0.0.0:0".parse().expect("placeholder address"),
            log,
            log_ended,
        };
        let first = receiver.recv_timeout(PATIENCE);
        let line = match first {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "the server printed no address line ({other:?}); log:\n{}",
                server.log_text()
            ),
        };
        server.addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        server
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until the log holds `count` lines containing `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, within: Duration) -> bool {
        wait_until(within, || self.count_in_log(needle) >= count)
    }

    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        self.wait_for_log_count(needle, 1, within)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal)
            .expect("signal the server");
    }

    /// Waits for the server to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("not yet reaped");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                // The last lines may still be on their way through the pipe.
                wait_until(Duration::from_secs(2), || {
                    self.log_ended.load(std::sync::atomic::Ordering::SeqCst)
                });
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's child processes, read from /proc.
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid)
    }

    /// Children that have exited and not been reaped.
    pub fn zombies(&self) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|pid| process_state(*pid) == Some('Z'))
            .collect()
    }

    pub fn open_fds(&self) -> usize {
        open_fds(self.pid)
    }

    /// Fetches `name` with the real client and checks that exactly
    /// `expected` arrived and that nothing else was left beside it.
    pub fn fetch_expecting(&self, name: &str, expected: &[u8]) {
        let out = tempfile::tempdir().expect("temp dir");
        let destination = out.path().join(name);
        let output = self.fetch(name, "100M", &destination);
        assert!(
            output.status.success(),
            "fetching {name} failed: {}\nserver log:\n{}",
            stderr_of(&output),
            self.log_text()
        );
        let received = std::fs::read(&destination).expect("downloaded file");
        assert!(received == expected, "{name}: content differs");
        let left = std::fs::read_dir(out.path()).expect("list").count();
        assert_eq!(left, 1, "only the file itself is left");
    }

    /// A request for `name` by the real client, into `out`.
    pub fn fetch(&self, name: &str, max_size: &str, out: &Path) -> Output {
        run_client(self.port(), name, max_size, out, &[])
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let children = children_of(self.pid);
            let _ = child.kill();
            let _ = child.wait();
            for pid in children {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The server `--timeout` that timing tests give, and how late past it they
/// let an event come: enough for a loaded machine or an emulator, and always
/// less than the timeout itself, so that twice the timeout never passes.
pub fn timeout_and_slack() -> (Duration, Duration) {
    if under_emulation() {
        (Duration::from_secs(2), Duration::from_millis(1500))
    } else {
        (Duration::from_secs(1), Duration::from_millis(800))
    }
}

/// Asserts that `what` took `took`, which should be `expected`: not sooner
/// (but for a clock tick), and not later than `slack` past it.
pub fn assert_took(what: &str, took: Duration, expected: Duration, slack: Duration) {
    assert!(
        took + Duration::from_millis(20) >= expected && took <= expected + slack,
        "{what} took {took:?}, not {expected:?} (+ up to {slack:?})"
    );
}

pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The children of `pid`; none once it is gone. Panics when `pid` lives but
/// its children cannot be read, rather than report none.
pub fn children_of(pid: i32) -> Vec<i32> {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        Ok(list) => list
            .split_whitespace()
            .map(|child| child.parse().expect("a PID in /proc/PID/task/PID/children"))
            .collect(),
        Err(_) if !process_exists(pid) => Vec::new(),
        Err(error) => panic!("cannot read the children of process {pid}: {error}"),
    }
}

/// The state letter of a process (R, S, Z, ...), or `None` once it is gone.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

pub fn process_exists(pid: i32) -> bool {
    process_state(pid).is_some_and(|state| state != 'Z')
}

/// How many descriptors `pid` has open. Panics when they cannot be counted.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or_else(|error| panic!("cannot list the descriptors of process {pid}: {error}"))
}

/// Runs `command` to its end and returns what it printed, like
/// `Command::output`, for a command that should end at once: one still
/// running after [`PATIENCE`] is killed, and the test fails.
pub fn output_promptly(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait for the command"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{command:?} still ran after {PATIENCE:?}");
        }
    }
}

/// Runs the real client against 127.0.0.1:`port`.
pub fn run_client(port: u16, name: &str, max_size: &str, out: &Path, extra: &[&str]) -> Output {
    client_command(port, name, max_size, out, extra)
        .output()
        .expect("run the client")
}

pub fn client_command(
    port: u16,
    name: &str,
    max_size: &str,
    out: &Path,
    extra: &[&str],
) -> Command {
    let mut command = command("tcpfile-client");
    command
        .args(["127.0.0.1", &port.to_string(), name, max_size, "-o"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::null());
    if !extra.contains(&"--timeout") {
        command.args(["--timeout", "20"]);
    }
    command
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory of files to serve, removed when dropped.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn add(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write fixture");
        path
    }

    pub fn add_random(&self, name: &str, size: usize) -> Vec<u8> {
        let content = random_bytes(size, name.len() as u64 + size as u64);
        self.add(name, &content);
        content
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be
/// reproduced byte for byte.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// A hand-made peer for the cases the real client never produces.
pub struct RawPeer {
    pub stream: TcpStream,
}

impl RawPeer {
    pub fn connect(server: &ServerProcess) -> RawPeer {
        let stream = TcpStream::connect(server.addr).expect("connect");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("set read timeout");
        RawPeer { stream }
    }

    /// Connects with a small receive buffer, so that a slow reader really
    /// holds the server back instead of letting the kernel buffer the file.
    pub fn connect_small_window(addr: SocketAddr, receive_buffer: usize) -> RawPeer {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        setsockopt(&fd, sockopt::RcvBuf, &receive_buffer).expect("SO_RCVBUF");
        let SocketAddr::V4(v4) = addr else {
            panic!("tests listen on IPv4")
        };
        use std::os::fd::AsRawFd;
        connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("connect");
        let stream = TcpStream::from(fd);
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("set read timeout");
        RawPeer { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn request(&mut self, name: &str) {
        let name = FileName::parse(name.as_bytes()).expect("valid name");
        let bytes = FileRequest::new(&name, PROTOCOL_VERSION).encode();
        self.send(&bytes);
    }

    pub fn response(&mut self) -> FileResponse {
        let mut header = [0u8; RESPONSE_LEN];
        self.stream
            .read_exact(&mut header)
            .expect("a 16-byte response");
        FileResponse::decode(&header)
    }

    /// Reads until the server closes; the bytes after the response.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).expect("read to end");
        rest
    }

    /// Waits for the server to close the connection (EOF or reset) and
    /// returns when it saw that; panics after [`PATIENCE`].
    pub fn wait_closed(&mut self) -> Instant {
        assert!(
            self.closed_within(PATIENCE),
            "the server never closed the connection"
        );
        Instant::now()
    }

    /// Whether the server closed the connection (EOF or reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(within))
            .expect("set read timeout");
        let mut scratch = [0u8; 4096];
        loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(error) => {
                    return !matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }
}

/// A request with every field chosen by hand.
pub fn raw_request(version: u8, message_type: u8, length: u16, name: &[u8]) -> [u8; 260] {
    let mut bytes = [0u8; 260];
    bytes[0] = version;
    bytes[1] = message_type;
    bytes[2..4].copy_from_slice(&length.to_le_bytes());
    bytes[4..4 + name.len()].copy_from_slice(name);
    bytes
}

/// Milliseconds since midnight of a server log line's timestamp
/// (`2026-01-01T12:34:56.789Z ...`).
pub fn log_millis(line: &str) -> Option<u64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let time = time.trim_end_matches('Z');
    let (hms, millis) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|part| part.parse::<u64>().ok());
    let (hours, minutes, seconds) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((hours * 60 + minutes) * 60 + seconds) * 1000 + millis.parse::<u64>().ok()?)
}

/// The `[PID n]` a server log line carries.
pub fn log_pid(line: &str) -> Option<i32> {
    let start = line.find("[PID ")? + 5;
    let end = start + line[start..].find(']')?;
    line[start..end].parse().ok()
}

/// The most transfers the log shows in progress at once, each from "ready to
/// receive" to the end of its transfer, per serving process.
pub fn max_concurrent_transfers(lines: &[String]) -> usize {
    let mut events: Vec<(u64, i32)> = Vec::new();
    for line in lines {
        let Some(at) = log_millis(line) else { continue };
        if line.contains("client is ready to receive") {
            events.push((at, 1));
        } else if line.contains("transfer complete") || line.contains("broke off") {
            events.push((at, -1));
        }
    }
    // At equal times, ends come before starts: intervals that merely touch
    // did not overlap.
    events.sort();
    let mut current = 0i32;
    let mut most = 0i32;
    for (_, change) in events {
        current += change;
        most = most.max(current);
    }
    most as usize
}

/// Starts `count` non-blocking connects to `addr` and waits until every one
/// has completed its handshake.
pub fn connect_all_at_once(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, connect, getsockopt, socket, sockopt,
    };
    use std::os::fd::{AsFd, AsRawFd};

    let SocketAddr::V4(v4) = addr else {
        panic!("tests listen on IPv4")
    };
    let sockets: Vec<_> = (0..count)
        .map(|_| {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None).expect("socket");
            match connect(fd.as_raw_fd(), &SockaddrIn::from(v4)) {
                Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => fd,
                Err(error) => panic!("connect: {error}"),
            }
        })
        .collect();
    let mut pending: Vec<usize> = (0..count).collect();
    let deadline = Instant::now() + PATIENCE;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} connects never completed",
            pending.len()
        );
        let mut fds: Vec<_> = pending
            .iter()
            .map(|&index| PollFd::new(sockets[index].as_fd(), PollFlags::POLLOUT))
            .collect();
        poll(&mut fds, PollTimeout::from(100u16)).expect("poll");
        let done: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(false)).collect();
        drop(fds);
        let mut still = Vec::new();
        for (index, finished) in pending.into_iter().zip(done) {
            if finished {
                let error = getsockopt(&sockets[index], sockopt::SocketError).expect("SO_ERROR");
                assert_eq!(error, 0, "connect {index} failed");
            } else {
                still.push(index);
            }
        }
        pending = still;
    }
    sockets.into_iter().map(TcpStream::from).collect()
}

/// A relay on loopback between a client and a server that can hold the
/// server's bytes back: it passes the first `hold_after` bytes from the server
/// through, then waits for [`Relay::release`] before it passes the rest. A test
/// can thus act at a known point in the middle of a transfer, however fast
/// the machine is. The relay reads the server through a small receive window,
/// so a held transfer soon fills the server's buffers and holds the server
/// too. A reset from the server reaches the client as an early close.
pub struct Relay {
    pub addr: SocketAddr,
    hold_after: u64,
    shared: Arc<RelayShared>,
}

struct RelayShared {
    passed: std::sync::atomic::AtomicU64,
    released: Mutex<bool>,
    wake: std::sync::Condvar,
}

const RELAY_WINDOW: usize = 64 * 1024;

impl Relay {
    /// Relays the first connection it receives to `upstream`.
    pub fn start(upstream: SocketAddr, hold_after: u64) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let shared = Arc::new(RelayShared {
            passed: std::sync::atomic::AtomicU64::new(0),
            released: Mutex::new(false),
            wake: std::sync::Condvar::new(),
        });
        let state = Arc::clone(&shared);
        std::thread::spawn(move || relay_one(&listener, upstream, hold_after, &state));
        Relay {
            addr,
            hold_after,
            shared,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes from the server passed on to the client so far.
    pub fn passed(&self) -> u64 {
        self.shared.passed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until the relay has passed `hold_after` bytes and holds the rest.
    pub fn wait_holding(&self, within: Duration) -> bool {
        wait_until(within, || self.passed() >= self.hold_after)
    }

    pub fn release(&self) {
        *self.shared.released.lock().expect("relay lock") = true;
        self.shared.wake.notify_all();
    }
}

fn relay_one(
    listener: &std::net::TcpListener,
    upstream: SocketAddr,
    hold_after: u64,
    shared: &RelayShared,
) {
    use std::sync::atomic::Ordering;

    listener
        .set_nonblocking(true)
        .expect("non-blocking relay listener");
    let mut client = None;
    wait_until(PATIENCE * 3, || {
        client = listener.accept().ok().map(|(stream, _)| stream);
        client.is_some()
    });
    let Some(client) = client else { return };
    let server = RawPeer::connect_small_window(upstream, RELAY_WINDOW).stream;

    let mut from_client = client.try_clone().expect("clone the client side");
    let mut to_server = server.try_clone().expect("clone the server side");
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });

    let mut buffer = vec![0u8; RELAY_WINDOW];
    let mut released = false;
    loop {
        let passed = shared.passed.load(Ordering::SeqCst);
        if !released && passed >= hold_after {
            let guard = shared.released.lock().expect("relay lock");
            let _ = shared
                .wake
                .wait_timeout_while(guard, PATIENCE * 3, |released| !*released)
                .expect("relay lock");
            released = true;
            continue;
        }
        let room = if released {
            buffer.len()
        } else {
            usize::try_from(hold_after - passed).map_or(buffer.len(), |left| left.min(buffer.len()))
        };
        match (&server).read(&mut buffer[..room]) {
            Ok(0) => break,
            Ok(n) => {
                if (&client).write_all(&buffer[..n]).is_err() {
                    break;
                }
                shared.passed.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Write);
}

/// Sets the soft limit on open files of the running process `pid`, the way
/// prlimit(1) does, and returns the soft limit it had.
pub fn set_open_files_limit(pid: i32, soft: u64) -> u64 {
    let resource = libc::RLIMIT_NOFILE;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `old` is a valid rlimit to fill.
    let read = unsafe { libc::prlimit(pid, resource, std::ptr::null(), &mut old) };
    assert_eq!(
        read,
        0,
        "read the open files limit of {pid}: {}",
        std::io::Error::last_os_error()
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit; the old one is not asked for.
    let set = unsafe { libc::prlimit(pid, resource, &new, std::ptr::null_mut()) };
    assert_eq!(
        set,
        0,
        "set the open files limit of {pid}: {}",
        std::io::Error::last_os_error()
    );
    old.rlim_cur
}

/// The fields of /proc/PID/stat after the command name: the state is the
/// first (field 3 of proc(5)).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The device number of the controlling terminal of `pid`, 0 for none.
/// Panics when it cannot be read.
pub fn controlling_terminal(pid: i32) -> u64 {
    let fields = stat_fields(pid).unwrap_or_else(|| panic!("cannot read /proc/{pid}/stat"));
    // tty_nr is field 7 of proc(5).
    fields
        .get(4)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no tty_nr in /proc/{pid}/stat: {fields:?}"))
}

/// CPU time the process has used, user and system, in seconds. Panics when
/// it cannot be read.
pub fn cpu_seconds(pid: i32) -> f64 {
    let fields = stat_fields(pid).unwrap_or_else(|| panic!("cannot read /proc/{pid}/stat"));
    // utime and stime are fields 14 and 15 of proc(5).
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&index| {
            fields
                .get(index)
                .and_then(|field| field.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no CPU time in /proc/{pid}/stat: {fields:?}"))
        })
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_second as f64
}

/// A numeric field of /proc/PID/status, such as `VmRSS` (in KiB) or
/// `Threads`.
pub fn status_field(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The descriptor number the process would be given next: the lowest one it
/// does not use.
pub fn lowest_free_fd(pid: i32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the descriptors")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).unwrap_or(0)
}

impl ServerProcess {
    /// The server's process and its children.
    pub fn processes(&self) -> Vec<i32> {
        let mut all = vec![self.pid];
        all.extend(self.children());
        all
    }
}

/// Sends `signal` to each of `pids`.
pub fn signal_each(pids: &[i32], signal: nix::sys::signal::Signal) {
    for &pid in pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal a process");
    }
}

/// Whether the tests run as root, which some of them need.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Says that `test` skips a check it cannot make here, and why: on stderr,
/// and in the file `TCPFILE_SKIP_LOG` names, from which `ci/test.sh` counts
/// and lists the skips of each run.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("TCPFILE_SKIP_LOG") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut log| writeln!(log, "{line}"));
        if let Err(error) = written {
            panic!("cannot record the skip in {path}: {error}");
        }
    }
}

/// A system call made to fail in a process the tests start, the way a file
/// system, a kernel or a sandbox makes it fail somewhere.
#[derive(Debug, Clone, Copy)]
pub enum Denied {
    /// `openat` with `O_TMPFILE` fails with EOPNOTSUPP, as on vfat, NFS and
    /// many FUSE file systems.
    AnonymousTempFiles,
    /// `openat2` fails with ENOSYS, as before Linux 5.6 and under old
    /// container profiles.
    Openat2,
}

/// Installs a seccomp filter in the process `command` starts that makes
/// `denied` fail. A filter works for static binaries too (an `LD_PRELOAD`
/// shim would not). Returns false, and the test must skip, under an
/// emulator, whose own system calls a guest's filter must not judge.
pub fn deny(command: &mut Command, denied: Denied) -> bool {
    use std::os::unix::process::CommandExt;
    if under_emulation() {
        return false;
    }
    const LOAD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_IF_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JUMP_IF_ANY_BIT: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // seccomp_data: the call's number at byte 0; the low half of its third
    // argument (openat's flags) at byte 32, on little-endian.
    const NUMBER: u32 = 0;
    const THIRD_ARGUMENT: u32 = 32;
    // SAFETY: BPF_STMT and BPF_JUMP only build the structures.
    let filter: Vec<libc::sock_filter> = unsafe {
        match denied {
            Denied::AnonymousTempFiles => vec![
                libc::BPF_STMT(LOAD, NUMBER),
                libc::BPF_JUMP(JUMP_IF_EQUAL, libc::SYS_openat as u32, 0, 3),
                libc::BPF_STMT(LOAD, THIRD_ARGUMENT),
                libc::BPF_JUMP(
                    JUMP_IF_ANY_BIT,
                    (libc::O_TMPFILE & !libc::O_DIRECTORY) as u32,
                    0,
                    1,
                ),
                libc::BPF_STMT(RETURN, libc::SECCOMP_RET_ERRNO | libc::EOPNOTSUPP as u32),
                libc::BPF_STMT(RETURN, libc::SECCOMP_RET_ALLOW),
            ],
            Denied::Openat2 => vec![
                libc::BPF_STMT(LOAD, NUMBER),
                libc::BPF_JUMP(JUMP_IF_EQUAL, libc::SYS_openat2 as u32, 0, 1),
                libc::BPF_STMT(RETURN, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
                libc::BPF_STMT(RETURN, libc::SECCOMP_RET_ALLOW),
            ],
        }
    };
    // SAFETY: prctl is async-signal-safe; the filter is only read, and the
    // closure owns it.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    true
}

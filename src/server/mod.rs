//! What the server models share: start-up, the listening socket, the accept
//! step, and the bookkeeping of child processes. The models differ only in
//! how they schedule connections: the three lab models hand each to
//! [`Handler::serve`], the evented one keeps many in an event loop; every one
//! drives the same [`crate::conversation::Conversation`].

pub mod evented;
pub mod iterative;
pub mod parallel;
pub mod preforked;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cli::ServerArgs;
use crate::handler::Handler;
use crate::lifecycle::{Lifecycle, SignalsHeld};
use crate::served_dir::ServedDir;

/// A server that has checked its directory, bound its socket and announced
/// its address.
pub struct Server {
    pub listener: TcpListener,
    pub dir: ServedDir,
    pub lifecycle: Lifecycle,
    pub timeout: Duration,
}

impl Server {
    /// Checks DIR, installs the signal handling, binds, and prints the
    /// address (with the real port) as the first line on stdout.
    pub fn start(args: &ServerArgs, model: &str) -> anyhow::Result<Server> {
        let dir = ServedDir::open(&args.dir).context("cannot serve that directory")?;
        let lifecycle = Lifecycle::install(args.grace).context("cannot set up signal handling")?;
        let listener = bind_listener(&args.addr, args.port)?;
        lifecycle.stop_listening_on_stop(listener.as_raw_fd());
        let local = listener.local_addr()?;
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {local}")?;
        stdout.flush()?;
        log::info!(
            "{model} server listening on {local}, serving {}",
            dir.path().display()
        );
        Ok(Server {
            listener,
            dir,
            lifecycle,
            timeout: args.timeout,
        })
    }

    pub fn handler(&self) -> Handler<'_> {
        Handler {
            dir: &self.dir,
            lifecycle: &self.lifecycle,
            timeout: self.timeout,
        }
    }
}

fn bind_listener(addr: &str, port: u16) -> anyhow::Result<TcpListener> {
    let candidates: Vec<SocketAddr> = (addr, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .collect();
    let mut last_error = None;
    for candidate in &candidates {
        match bind_one(candidate) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) => Err(error).with_context(|| format!("cannot listen on {addr} port {port}")),
        None => anyhow::bail!("{addr} resolves to no address"),
    }
}

fn bind_one(addr: &SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let socket: OwnedFd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    bind(socket.as_raw_fd(), &SockaddrStorage::from(*addr))?;
    // The largest queue the kernel allows (net.core.somaxconn, 4096 by
    // default since Linux 5.4), so that a burst of hundreds of connects waits
    // in the queue instead of having SYNs dropped. libc's SOMAXCONN is 128 on
    // musl, which is why the size is not spelled out here.
    listen(&socket, Backlog::MAXALLOWABLE)?;
    Ok(TcpListener::from(socket))
}

/// What one step of the accept loop produced.
pub enum Accepted {
    Connection(TcpStream, SocketAddr),
    /// Nothing to serve this time: a signal, a connection that was aborted
    /// before it was taken, or a shed connection.
    Nothing,
    /// The listening socket no longer accepts: the server is stopping.
    ShutDown,
}

/// Accepts from a non-blocking listener, waiting in `poll` with the signals,
/// so that a stop signal ends the wait at once.
pub struct Acceptor<'a> {
    listener: &'a TcpListener,
    /// A spare descriptor, given up to take and close a connection when the
    /// process runs out of descriptors; otherwise the pending connection would
    /// keep the listener readable and the loop would spin.
    reserve: Option<OwnedFd>,
}

impl<'a> Acceptor<'a> {
    pub fn new(listener: &'a TcpListener) -> Acceptor<'a> {
        Acceptor {
            listener,
            reserve: listener.as_fd().try_clone_to_owned().ok(),
        }
    }

    pub fn accept(&mut self, lifecycle: &Lifecycle) -> io::Result<Accepted> {
        match self.listener.accept() {
            Ok((stream, peer)) => {
                log::info!("accepted connection from {peer}");
                Ok(Accepted::Connection(stream, peer))
            }
            Err(error) => match error.raw_os_error().map(Errno::from_raw) {
                Some(Errno::EAGAIN) => {
                    let readable = Some((self.listener.as_fd(), PollFlags::POLLIN));
                    lifecycle.wait(readable, None)?;
                    Ok(Accepted::Nothing)
                }
                Some(Errno::ECONNABORTED | Errno::EPROTO | Errno::EINTR) => Ok(Accepted::Nothing),
                // Another process of this server shut the shared socket down
                // because the server is stopping.
                Some(Errno::EINVAL) => Ok(Accepted::ShutDown),
                Some(Errno::EMFILE | Errno::ENFILE) => {
                    self.shed(lifecycle, &error)?;
                    Ok(Accepted::Nothing)
                }
                Some(Errno::ENOBUFS | Errno::ENOMEM | Errno::EPERM) => {
                    log::warn!("accept failed: {error}; retrying shortly");
                    lifecycle.pause(Duration::from_millis(100))?;
                    Ok(Accepted::Nothing)
                }
                _ => Err(error),
            },
        }
    }

    /// In a forked child that must not accept: closes the child's copies of
    /// the listening socket, so that once the parent closes its own, new
    /// connections are refused instead of queueing for nobody.
    pub fn close_in_child(&mut self) {
        self.reserve = None;
        // SAFETY: called only in a child that ends with `process::exit`
        // without returning, so the listener's owner never closes the
        // descriptor a second time.
        unsafe {
            libc::close(self.listener.as_raw_fd());
        }
    }

    fn shed(&mut self, lifecycle: &Lifecycle, cause: &io::Error) -> io::Result<()> {
        if shed_one(self.listener, &mut self.reserve, cause) == Shed::NobodyWaiting {
            // accept fails for want of a descriptor even when nobody is
            // waiting: sleep until somebody connects, rather than retry (and
            // log) on a clock.
            let readable = Some((self.listener.as_fd(), PollFlags::POLLIN));
            lifecycle.wait(readable, None)?;
            return Ok(());
        }
        // Descriptors come back as connections end; pausing keeps a burst
        // from turning into a busy loop of accept and close.
        lifecycle.pause(Duration::from_millis(10))?;
        Ok(())
    }
}

/// What giving up the spare descriptor to take one connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// A waiting connection was taken and closed unserved.
    Closed,
    /// Nobody was waiting after all.
    NobodyWaiting,
    /// There was no spare descriptor to give up.
    NoSpare,
}

/// Out of descriptors, with connections waiting: gives up `reserve`, a spare
/// descriptor, to take the first waiting connection and close it unserved,
/// then takes the spare back. Otherwise the pending connection would keep
/// the listener readable, and a loop around it would spin.
pub fn shed_one(listener: &TcpListener, reserve: &mut Option<OwnedFd>, cause: &io::Error) -> Shed {
    let Some(spare) = reserve.take() else {
        log::warn!("out of file descriptors ({cause}); waiting for some to be freed");
        return Shed::NoSpare;
    };
    drop(spare);
    let shed = match listener.accept() {
        Ok((stream, peer)) => {
            log::warn!(
                "out of file descriptors ({cause}): closed the connection from {peer} unserved"
            );
            drop(stream);
            Shed::Closed
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Shed::NobodyWaiting,
        Err(error) => {
            log::warn!("out of file descriptors ({cause}): {error}");
            Shed::Closed
        }
    };
    *reserve = listener.as_fd().try_clone_to_owned().ok();
    shed
}

/// A child process the parent is responsible for.
pub struct Child {
    pub started: Instant,
    pub label: String,
}

/// The parent's children, reaped as they exit.
#[derive(Default)]
pub struct Children {
    alive: HashMap<Pid, Child>,
}

/// A child that has exited and been reaped.
pub struct Reaped {
    pub pid: Pid,
    pub child: Child,
    pub status: WaitStatus,
}

impl Children {
    pub fn len(&self) -> usize {
        self.alive.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alive.is_empty()
    }

    pub fn add(&mut self, pid: Pid, label: String) {
        self.alive.insert(
            pid,
            Child {
                started: Instant::now(),
                label,
            },
        );
    }

    /// Collects every child that has exited, without waiting.
    pub fn reap(&mut self) -> Vec<Reaped> {
        let mut reaped = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    match self.alive.remove(&pid) {
                        Some(child) => reaped.push(Reaped { pid, child, status }),
                        None => log::debug!("reaped process {pid}, not one of ours: {status:?}"),
                    }
                }
            }
        }
        reaped
    }

    pub fn signal_all(&self, signal: Signal) {
        for pid in self.alive.keys() {
            let _ = kill(*pid, signal);
        }
    }

    /// Forwards the stop to every child, lets them finish within the grace
    /// period, kills what is left, and reaps them all.
    pub fn stop_all(&mut self, lifecycle: &Lifecycle) {
        if self.is_empty() {
            return;
        }
        log::info!("forwarding the stop to {} children", self.len());
        self.signal_all(Signal::SIGTERM);
        // Children enforce the grace period themselves; the margin covers
        // their exit before the parent steps in.
        let deadline = lifecycle
            .grace_deadline()
            .unwrap_or_else(Instant::now)
            .max(Instant::now())
            + Duration::from_secs(1);
        while !self.is_empty() {
            for reaped in self.reap() {
                log::info!(
                    "{} (PID {}) {}",
                    reaped.child.label,
                    reaped.pid,
                    describe_exit(reaped.status)
                );
            }
            if self.is_empty() {
                break;
            }
            if lifecycle.forced() || Instant::now() >= deadline {
                log::warn!("killing {} children that are still running", self.len());
                self.signal_all(Signal::SIGKILL);
                for (pid, child) in self.alive.drain() {
                    let status = waitpid(pid, None);
                    log::info!("{} (PID {pid}) killed: {status:?}", child.label);
                }
                break;
            }
            if let Err(error) = lifecycle.wait(None, Some(deadline)) {
                log::warn!("waiting for children failed: {error}");
            }
        }
        log::info!("all children have exited");
    }
}

/// "exited with status N" or "was killed by SIGNAL".
pub fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, core) => format!(
            "was killed by {signal}{}",
            if core { " (core dumped)" } else { "" }
        ),
        other => format!("changed state: {other:?}"),
    }
}

/// Serves connections one at a time, each completely, until a stop signal.
/// The iterative server runs this in its only process, the preforked server in
/// each worker.
pub fn serve_one_at_a_time(server: &Server) -> io::Result<()> {
    let handler = server.handler();
    let mut acceptor = Acceptor::new(&server.listener);
    while !server.lifecycle.stopping() {
        match acceptor.accept(&server.lifecycle)? {
            Accepted::Connection(stream, peer) => {
                handler.serve(stream, peer);
            }
            Accepted::Nothing => {}
            Accepted::ShutDown => break,
        }
    }
    Ok(())
}

/// Forks a child that runs `body` and exits with the code it returns; the
/// child never comes back into the parent's loop.
pub fn fork_child(lifecycle: &Lifecycle, body: impl FnOnce() -> i32) -> nix::Result<Pid> {
    let parent = nix::unistd::getpid();
    // Anything buffered would otherwise be written twice, once per process.
    let _ = io::stdout().flush();
    let held = SignalsHeld::new()
        .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EINVAL)))?;
    // SAFETY: the servers are single-threaded, so the child starts with a
    // consistent heap and no lock held by a thread that does not exist in it.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(held);
            Ok(child)
        }
        nix::unistd::ForkResult::Child => {
            let set_up = lifecycle.become_child(parent);
            // Only now, with the child's own wake-up pipe in place, may its
            // signals arrive: the stop its parent forwards, the parent's death.
            drop(held);
            let code = match set_up {
                Ok(()) => {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101)
                }
                Err(error) => {
                    log::error!("cannot set up the child process: {error}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// Exit code for a command line the server cannot use.
pub const USAGE_EXIT: u8 = 2;

/// Sets up logging, runs a server model, and maps its end to an exit code:
/// 0 after a stop signal, 1 when it could not start or had to give up.
pub fn exit(args: &ServerArgs, run: impl FnOnce(&ServerArgs) -> anyhow::Result<()>) -> ExitCode {
    crate::logging::init(args.verbosity.level(), crate::logging::Style::Server);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

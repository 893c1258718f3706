//! Event-driven workers, nginx's design: a fixed pool forked up front (and
//! supervised as the preforked server's is), each an epoll loop over many
//! non-blocking connections on the shared listening socket. An idle or slow
//! client costs a few hundred bytes and a descriptor, not a process.
//!
//! Each worker watches the listener with `EPOLLEXCLUSIVE`, so that a new
//! connection wakes one worker rather than all of them, and its connections
//! edge-triggered, driving each conversation until the socket would block.
//! Deadlines wait in a heap ordered by time, consulted once per turn of the
//! loop, never by a scan of the connections. A connection sending a large
//! file yields after [`SENDS_PER_TURN`] chunks, so the others get their turn.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{SockaddrLike, SockaddrStorage};

use crate::cli::ServerArgs;
use crate::conversation::{Broken, Conversation, Step};
use crate::lifecycle::poll_timeout;
use crate::server::{Server, Shed, preforked, shed_one};
use crate::transfer::{close_gracefully, send_chunk};

/// Connections accepted per wake-up at most, so that a flood of new ones
/// cannot starve those already open.
const ACCEPTS_PER_WAKE: usize = 64;
/// Chunks one connection sends before the others get their turn.
const SENDS_PER_TURN: usize = 16;
/// How long accepting pauses after a failure that retrying at once would
/// only repeat (no memory, no descriptor to spare).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const EVENTS_PER_WAIT: usize = 256;

/// Event tokens that are not connections.
const LISTENER: u64 = u64::MAX;
const SIGNALS: u64 = u64::MAX - 1;

pub fn run(args: &ServerArgs, workers: usize) -> anyhow::Result<()> {
    raise_open_files_limit();
    preforked::supervise(args, "evented", workers, |server| {
        EventLoop::new(server)?.run()
    })
}

/// Every connection costs a descriptor: the soft limit (often 1024) is raised
/// to the hard one.
fn raise_open_files_limit() {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => log::debug!("open files limit raised from {soft} to {hard}"),
            Err(error) => log::warn!("cannot raise the open files limit from {soft}: {error}"),
        },
        Ok(_) => {}
        Err(error) => log::warn!("cannot read the open files limit: {error}"),
    }
}

struct Connection {
    stream: TcpStream,
    conversation: Conversation<File>,
    /// The time of this connection's entry in the timer heap, if any.
    timer: Option<Instant>,
    /// Whether it waits in the queue of connections to drive.
    queued: bool,
}

/// A place for a connection. Its token carries the generation, so that an
/// event or a timer left over from a closed connection never reaches the
/// next one in the same place.
struct Slot {
    generation: u32,
    connection: Option<Connection>,
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

fn index_of(token: u64) -> usize {
    (token & u64::from(u32::MAX)) as usize
}

fn generation_of(token: u64) -> u32 {
    (token >> 32) as u32
}

/// What driving a connection left it waiting for.
enum Driven {
    /// The socket to turn ready, or this time to pass.
    Blocked(Instant),
    /// Its turn is over; more is ready to send.
    Yielded,
    Closed,
}

struct EventLoop<'a> {
    server: &'a Server,
    epoll: Epoll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    ready: VecDeque<u64>,
    /// A spare descriptor, given up to shed connections when none is left.
    reserve: Option<OwnedFd>,
    accepting: bool,
    /// When accepting resumes after a pause.
    resume_accepting: Option<Instant>,
}

impl<'a> EventLoop<'a> {
    fn new(server: &'a Server) -> io::Result<EventLoop<'a>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        server.lifecycle.with_signal_fd(|signals| {
            epoll.add(signals, EpollEvent::new(EpollFlags::EPOLLIN, SIGNALS))
        })?;
        let event_loop = EventLoop {
            server,
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            reserve: server.listener.as_fd().try_clone_to_owned().ok(),
            accepting: false,
            resume_accepting: None,
        };
        event_loop.watch_listener()?;
        Ok(EventLoop {
            accepting: true,
            ..event_loop
        })
    }

    fn watch_listener(&self) -> io::Result<()> {
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        self.epoll
            .add(&self.server.listener, EpollEvent::new(interest, LISTENER))?;
        Ok(())
    }

    fn run(mut self) -> io::Result<()> {
        let lifecycle = &self.server.lifecycle;
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        loop {
            if lifecycle.stopping() {
                self.stop_accepting();
            }
            if lifecycle.must_abort() {
                self.end_all(lifecycle.abort_reason());
            }
            if !self.accepting && self.resume_accepting.is_none() && self.live == 0 {
                return Ok(());
            }
            let timeout = self.wait_timeout(Instant::now());
            let count = match self.epoll.wait(&mut events, timeout) {
                Ok(count) => count,
                Err(Errno::EINTR) => 0,
                Err(errno) => return Err(errno.into()),
            };
            for event in &events[..count] {
                match event.data() {
                    SIGNALS => lifecycle.take_signals(),
                    LISTENER => self.accept_burst()?,
                    token => self.queue(token),
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            if self.resume_accepting.is_some_and(|at| now >= at) {
                self.resume_accepting = None;
                if !lifecycle.stopping() {
                    self.watch_listener()?;
                    self.accepting = true;
                }
            }
            self.drive_ready();
        }
    }

    /// Until the earliest deadline, the end of the grace period, or the end
    /// of a pause in accepting; no wait at all while connections are ready.
    fn wait_timeout(&self, now: Instant) -> EpollTimeout {
        if !self.ready.is_empty() {
            return EpollTimeout::ZERO;
        }
        let earliest = [
            self.timers.peek().map(|Reverse((at, _))| *at),
            self.server.lifecycle.grace_deadline(),
            self.resume_accepting,
        ]
        .into_iter()
        .flatten()
        .min();
        earliest.map_or(EpollTimeout::NONE, |at| {
            poll_timeout(at.saturating_duration_since(now))
        })
    }

    fn stop_accepting(&mut self) {
        if self.accepting {
            let _ = self.epoll.delete(&self.server.listener);
            self.accepting = false;
        }
        self.resume_accepting = None;
    }

    fn pause_accepting(&mut self, for_how_long: Duration) {
        self.stop_accepting();
        self.resume_accepting = Some(Instant::now() + for_how_long);
    }

    fn accept_burst(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPTS_PER_WAKE {
            if !self.accepting {
                return Ok(());
            }
            let error = match accept_nonblocking(&self.server.listener) {
                Ok((stream, peer)) => {
                    log::info!("accepted connection from {peer}");
                    self.open(stream, peer);
                    continue;
                }
                Err(error) => error,
            };
            match error.raw_os_error().map(Errno::from_raw) {
                Some(Errno::EAGAIN) => return Ok(()),
                Some(Errno::ECONNABORTED | Errno::EPROTO | Errno::EINTR) => {}
                // The main process shut the shared socket down: the server
                // is stopping.
                Some(Errno::EINVAL) => {
                    self.stop_accepting();
                    return Ok(());
                }
                Some(Errno::EMFILE | Errno::ENFILE) => {
                    self.shed(&error);
                    return Ok(());
                }
                Some(Errno::ENOBUFS | Errno::ENOMEM | Errno::EPERM) => {
                    log::warn!("accept failed: {error}; retrying shortly");
                    self.pause_accepting(ACCEPT_BACKOFF);
                    return Ok(());
                }
                _ => return Err(error),
            }
        }
        Ok(())
    }

    /// Out of descriptors: closes every waiting connection unserved, so that
    /// the listener does not stay readable for nothing. Without a spare
    /// descriptor even for that, accepting pauses.
    fn shed(&mut self, cause: &io::Error) {
        loop {
            match shed_one(&self.server.listener, &mut self.reserve, cause) {
                Shed::Closed => {}
                Shed::NobodyWaiting => return,
                Shed::NoSpare => {
                    self.pause_accepting(ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn open(&mut self, stream: TcpStream, peer: SocketAddr) {
        if let Err(error) = stream.set_nodelay(true) {
            log::warn!("{peer}: cannot set up the socket: {error}");
            close(stream, peer);
            return;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                connection: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        let token = token(index, slot.generation);
        let interest = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(error) = self.epoll.add(&stream, EpollEvent::new(interest, token)) {
            log::warn!("{peer}: cannot watch the connection: {error}");
            self.free.push(index);
            close(stream, peer);
            return;
        }
        slot.connection = Some(Connection {
            stream,
            conversation: Conversation::new(peer, self.server.timeout, Instant::now()),
            timer: None,
            queued: false,
        });
        self.live += 1;
        // The request is usually there already: no need to wait for epoll.
        self.drive(token);
    }

    fn connection(&mut self, token: u64) -> Option<&mut Connection> {
        let slot = self.slots.get_mut(index_of(token))?;
        if slot.generation != generation_of(token) {
            return None;
        }
        slot.connection.as_mut()
    }

    fn queue(&mut self, token: u64) {
        if let Some(connection) = self.connection(token) {
            if !connection.queued {
                connection.queued = true;
                self.ready.push_back(token);
            }
        }
    }

    fn drive_ready(&mut self) {
        // Those queued again meanwhile wait for the next turn.
        for _ in 0..self.ready.len() {
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            if let Some(connection) = self.connection(token) {
                connection.queued = false;
                self.drive(token);
            }
        }
    }

    fn drive(&mut self, token: u64) {
        let server = self.server;
        let Some(connection) = self.connection(token) else {
            return;
        };
        match drive(server, connection) {
            Driven::Blocked(until) => {
                if connection.timer.is_none_or(|armed| armed > until) {
                    connection.timer = Some(until);
                    self.timers.push(Reverse((until, token)));
                }
            }
            Driven::Yielded => self.queue(token),
            Driven::Closed => self.close(token),
        }
    }

    /// Queues the connections whose time has come: each looks at its own
    /// deadline when it next would block.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, token))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(connection) = self.connection(token) {
                if connection.timer == Some(at) {
                    connection.timer = None;
                    self.queue(token);
                }
            }
        }
    }

    fn close(&mut self, token: u64) {
        let index = index_of(token);
        let Some(connection) = self.slots[index].connection.take() else {
            return;
        };
        self.slots[index].generation = self.slots[index].generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        close(connection.stream, connection.conversation.peer());
    }

    /// The grace period is over, or a second stop signal came: every
    /// conversation ends now.
    fn end_all(&mut self, reason: &'static str) {
        self.stop_accepting();
        for index in 0..self.slots.len() {
            let token = token(index, self.slots[index].generation);
            if let Some(connection) = self.connection(token) {
                connection.conversation.broke(Broken::Stopped(reason));
                self.close(token);
            }
        }
        self.ready.clear();
        self.timers.clear();
    }
}

/// Drives one connection's conversation until its socket would block, its
/// turn is over, or it ends.
fn drive(server: &Server, connection: &mut Connection) -> Driven {
    let Connection {
        stream,
        conversation,
        ..
    } = connection;
    let mut sends = 0;
    loop {
        let now = Instant::now();
        let result = match conversation.step() {
            Step::Read { buffer } => {
                let read = (&*stream).read(buffer);
                if let Ok(n) = read {
                    conversation.received(n, now);
                }
                read
            }
            Step::Write { bytes } => {
                let written = (&*stream).write(bytes);
                if let Ok(n) = written {
                    conversation.wrote(n, now);
                }
                written
            }
            Step::Open(name) => {
                let opened = server.dir.open_file(name);
                conversation.opened(opened.map(|opened| (opened.file, opened.size)), now);
                continue;
            }
            Step::Send { file, offset, len } => {
                if sends == SENDS_PER_TURN {
                    return Driven::Yielded;
                }
                sends += 1;
                let sent = send_chunk(stream, file, offset, len);
                if let Ok(n) = sent {
                    conversation.sent(n, now);
                }
                sent
            }
            Step::Close(_) => return Driven::Closed,
        };
        match result {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if let Some(until) = conversation.blocked(now) {
                    return Driven::Blocked(until);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => conversation.broke(error.into()),
        }
    }
}

fn close(stream: TcpStream, peer: SocketAddr) {
    close_gracefully(stream);
    log::info!("closed connection from {peer}");
}

/// Accepts a connection as a non-blocking socket with its peer's address,
/// in one system call.
fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let mut address = std::mem::MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: accept4 writes at most `length` bytes of address into
    // `address`, which is that large, and sets `length` to what it wrote.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            address.as_mut_ptr().cast(),
            &mut length,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: the kernel filled `length` bytes of the address.
    let address = unsafe { SockaddrStorage::from_raw(address.as_ptr().cast(), Some(length)) };
    let peer = address
        .and_then(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
            } else {
                address
                    .as_sockaddr_in6()
                    .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
            }
        })
        .map_or_else(|| stream.peer_addr(), Ok)?;
    Ok((stream, peer))
}

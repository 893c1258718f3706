//! How a server process learns that it should stop, and how every wait in it
//! (for a connection, for request bytes, for room in the socket buffer, for a
//! child) is cut short when it must.
//!
//! The signal handlers only count what arrived and write a byte to a pipe;
//! every wait is a `poll` on the descriptor of interest plus that pipe, so a
//! signal that arrives between a check and a wait still ends the wait. (A
//! signalfd would be simpler, but qemu's user-mode emulation, which runs the
//! aarch64 builds in CI, does not deliver signals to one.)

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask,
};
use nix::sys::socket::{Shutdown, shutdown};

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The descriptor is ready.
    Ready,
    /// A signal arrived; the lifecycle's state has been updated.
    Signalled,
    /// The deadline passed.
    TimedOut,
}

/// Stop signals received by this process since it started (or was forked).
static STOP_SIGNALS: AtomicU32 = AtomicU32::new(0);
/// The last stop signal's number, for the log.
static LAST_STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
static CHILD_EXITED: AtomicBool = AtomicBool::new(false);
/// The write end of this process's wake-up pipe, or -1.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let saved = Errno::last_raw();
    if signal == libc::SIGCHLD {
        CHILD_EXITED.store(true, Ordering::SeqCst);
    } else {
        LAST_STOP_SIGNAL.store(signal, Ordering::SeqCst);
        STOP_SIGNALS.fetch_add(1, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // A full pipe loses nothing: the counters above hold the state, and
        // the bytes already in the pipe will wake the next wait.
        // SAFETY: write(2) is async-signal-safe; the byte lives on the stack.
        unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
    }
    Errno::set_raw(saved);
}

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the handled signals until dropped, so that a fork cannot split a
/// signal between the parent's state and the child's.
pub struct SignalsHeld {
    previous: SigSet,
}

impl SignalsHeld {
    pub fn new() -> io::Result<SignalsHeld> {
        let mut previous = SigSet::empty();
        sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&handled_signals()),
            Some(&mut previous),
        )?;
        Ok(SignalsHeld { previous })
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

struct WakePipe {
    read: OwnedFd,
    /// Owned here so it stays open; the handler writes to it through
    /// `WAKE_FD`.
    _write: OwnedFd,
}

impl WakePipe {
    fn new() -> io::Result<WakePipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(WakePipe {
            read,
            _write: write,
        })
    }

    fn drain(&self) {
        let mut scratch = [0u8; 64];
        while matches!(nix::unistd::read(&self.read, &mut scratch), Ok(n) if n > 0) {}
    }
}

pub struct Lifecycle {
    wake: std::cell::RefCell<WakePipe>,
    grace: Duration,
    stops_seen: Cell<u32>,
    stop_requested_at: Cell<Option<Instant>>,
    forced: Cell<bool>,
    listener: Cell<Option<RawFd>>,
}

impl Lifecycle {
    /// Installs the handlers for SIGINT, SIGTERM and SIGCHLD. `grace` is how
    /// long transfers in flight may go on after the first stop signal.
    pub fn install(grace: Duration) -> io::Result<Lifecycle> {
        let wake = WakePipe::new()?;
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in handled_signals().iter() {
            // SAFETY: the handler only touches atomics and calls write(2).
            unsafe { sigaction(signal, &action) }?;
        }
        Ok(Lifecycle {
            wake: std::cell::RefCell::new(wake),
            grace,
            stops_seen: Cell::new(0),
            stop_requested_at: Cell::new(None),
            forced: Cell::new(false),
            listener: Cell::new(None),
        })
    }

    /// Called in a freshly forked child, with the signals still held: gives
    /// it a wake-up pipe of its own, makes it stop on SIGTERM only, and makes
    /// the death of its parent send it SIGTERM, so no child outlives its server.
    /// A child never shuts the shared listening socket down: that would stop
    /// every process of the server, when only this one was told to stop.
    pub fn become_child(&self, parent: nix::unistd::Pid) -> io::Result<()> {
        *self.wake.borrow_mut() = WakePipe::new()?;
        self.listener.set(None);
        STOP_SIGNALS.store(0, Ordering::SeqCst);
        CHILD_EXITED.store(false, Ordering::SeqCst);
        self.stops_seen.set(0);
        self.stop_requested_at.set(None);
        self.forced.set(false);
        // A terminal's Ctrl-C reaches the whole process group: a child
        // ignores SIGINT and stops on the SIGTERM its parent forwards, or one
        // Ctrl-C would count twice in it and cut its transfer short.
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn) }?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
        if nix::unistd::getppid() != parent {
            // The parent died before the death signal was armed.
            self.stop_requested_at.set(Some(Instant::now()));
        }
        Ok(())
    }

    /// Makes the first stop signal shut the listening socket down at once.
    /// The socket is shared by every process that holds it, so this stops
    /// new connections for the whole server, even while workers still finish
    /// their transfers; connections still queued are reset rather than left
    /// waiting for a server that is going away.
    pub fn stop_listening_on_stop(&self, listener: RawFd) {
        self.listener.set(Some(listener));
    }

    /// A stop signal has arrived.
    pub fn stopping(&self) -> bool {
        self.stop_requested_at.get().is_some()
    }

    /// A second stop signal arrived, or the grace period is over: whatever is
    /// in flight must end now.
    pub fn must_abort(&self) -> bool {
        self.forced.get()
            || self
                .grace_deadline()
                .is_some_and(|end| Instant::now() >= end)
    }

    /// Whether the second stop signal (not the grace period) ended things.
    pub fn forced(&self) -> bool {
        self.forced.get()
    }

    /// Why connections in flight are being ended, once [`Lifecycle::must_abort`].
    pub fn abort_reason(&self) -> &'static str {
        if self.forced() {
            "second stop signal: connection ended"
        } else {
            "grace period over: connection ended"
        }
    }

    pub fn grace_deadline(&self) -> Option<Instant> {
        self.stop_requested_at.get().map(|at| at + self.grace)
    }

    /// Takes note of a SIGCHLD seen since the last call.
    pub fn take_child_exited(&self) -> bool {
        CHILD_EXITED.swap(false, Ordering::SeqCst)
    }

    /// Empties the wake-up pipe and acts on the stop signals counted since
    /// the last look.
    fn update(&self) {
        self.wake.borrow().drain();
        let stops = STOP_SIGNALS.load(Ordering::SeqCst);
        if stops == self.stops_seen.get() {
            return;
        }
        self.stops_seen.set(stops);
        let name = Signal::try_from(LAST_STOP_SIGNAL.load(Ordering::SeqCst))
            .map_or("a stop signal", Signal::as_str);
        if !self.stopping() {
            self.stop_requested_at.set(Some(Instant::now()));
            if let Some(listener) = self.listener.get() {
                let _ = shutdown(listener, Shutdown::Read);
            }
            log::info!(
                "{name} received: stopping; transfers in flight have {:.1} s to finish",
                self.grace.as_secs_f64()
            );
        }
        if stops >= 2 && !self.forced.get() {
            log::warn!("second stop signal ({name}) received: ending everything now");
            self.forced.set(true);
        }
    }

    /// Waits until `fd` is ready for `events`, a signal arrives, or `deadline`
    /// passes. With no `fd`, waits only for a signal or the deadline.
    pub fn wait(
        &self,
        fd: Option<(BorrowedFd<'_>, PollFlags)>,
        deadline: Option<Instant>,
    ) -> io::Result<Wake> {
        let wake = self.wake.borrow();
        let signals = || PollFd::new(wake.read.as_fd(), PollFlags::POLLIN);
        // Every wait of a transfer comes through here: a fixed array, not a
        // heap allocation per wait.
        let (mut fds, watched) = match fd {
            Some((fd, events)) => ([signals(), PollFd::new(fd, events)], 2),
            None => ([signals(), signals()], 1),
        };
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => poll_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        let polled = poll(&mut fds[..watched], timeout);
        let signalled = fds[0].any().unwrap_or(false);
        let ready = watched == 2 && fds[1].any().unwrap_or(false);
        drop(wake);
        match polled {
            Ok(0) => Ok(Wake::TimedOut),
            Ok(_) if signalled => {
                self.update();
                Ok(Wake::Signalled)
            }
            Ok(_) if ready => Ok(Wake::Ready),
            Ok(_) => Ok(Wake::TimedOut),
            Err(Errno::EINTR) => {
                self.update();
                Ok(Wake::Signalled)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Lends the descriptor that turns readable when a signal arrives, to a
    /// process that waits in a loop of its own (epoll) instead of
    /// [`Lifecycle::wait`]; it then calls [`Lifecycle::take_signals`].
    pub fn with_signal_fd<R>(&self, lend: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
        lend(self.wake.borrow().read.as_fd())
    }

    /// Acts on the signals that arrived since the last look.
    pub fn take_signals(&self) {
        self.update();
    }

    /// Sleeps for `duration` unless a signal arrives first.
    pub fn pause(&self, duration: Duration) -> io::Result<Wake> {
        self.wait(None, Some(Instant::now() + duration))
    }
}

/// Rounds up, so a wait never returns just before its deadline and spins.
pub fn poll_timeout(remaining: Duration) -> PollTimeout {
    PollTimeout::try_from(remaining.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
}

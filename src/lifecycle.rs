//! How a server process learns that it should stop, and how every wait in it
//! (for a connection, for request bytes, for room in the socket buffer, for a
//! child) is cut short when it must.
//!
//! The stop signals and SIGCHLD are blocked and read from a signalfd, so a
//! signal never interrupts a system call half-way and is never lost between a
//! check and a wait: each wait is a `poll` on the descriptor of interest plus
//! the signalfd.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
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

/// Which role a process plays, which decides what SIGINT means to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A server's main process: SIGINT and SIGTERM both stop it.
    Main,
    /// A forked child: a terminal's Ctrl-C reaches the whole process group, so
    /// a child ignores SIGINT and stops on the SIGTERM its parent forwards;
    /// otherwise one Ctrl-C would count twice in the child and cut its
    /// transfer short.
    Child,
}

pub struct Lifecycle {
    signals: SignalFd,
    grace: Duration,
    role: Cell<Role>,
    stop_requested_at: Cell<Option<Instant>>,
    forced: Cell<bool>,
    child_exited: Cell<bool>,
    listener: Cell<Option<RawFd>>,
}

impl Lifecycle {
    /// Blocks SIGINT, SIGTERM and SIGCHLD for this process and starts reading
    /// them from a signalfd. `grace` is how long transfers in flight may go on
    /// after the first stop signal.
    pub fn install(grace: Duration) -> io::Result<Lifecycle> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Lifecycle {
            signals,
            grace,
            role: Cell::new(Role::Main),
            stop_requested_at: Cell::new(None),
            forced: Cell::new(false),
            child_exited: Cell::new(false),
            listener: Cell::new(None),
        })
    }

    /// Called in a freshly forked child: it stops on SIGTERM only, and when
    /// its parent dies it gets SIGTERM too, so no child outlives its server.
    pub fn become_child(&self, parent: nix::unistd::Pid) -> io::Result<()> {
        self.role.set(Role::Child);
        self.stop_requested_at.set(None);
        self.forced.set(false);
        self.child_exited.set(false);
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }?;
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

    /// For a child that has closed its copy of the listening socket.
    pub fn forget_listener(&self) {
        self.listener.set(None);
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

    pub fn grace_deadline(&self) -> Option<Instant> {
        self.stop_requested_at.get().map(|at| at + self.grace)
    }

    /// Takes note of a SIGCHLD seen since the last call.
    pub fn take_child_exited(&self) -> bool {
        self.child_exited.replace(false)
    }

    /// Reads every pending signal and updates the state.
    fn drain(&self) -> io::Result<()> {
        while let Some(info) = self.signals.read_signal()? {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match signal {
                Signal::SIGCHLD => self.child_exited.set(true),
                Signal::SIGINT if self.role.get() == Role::Child => {}
                Signal::SIGINT | Signal::SIGTERM => {
                    if self.stopping() {
                        log::warn!("second {signal} received: ending everything now");
                        self.forced.set(true);
                    } else {
                        log::info!(
                            "{signal} received: stopping; transfers in flight have {:.1} s to finish",
                            self.grace.as_secs_f64()
                        );
                        self.stop_requested_at.set(Some(Instant::now()));
                        if let Some(listener) = self.listener.get() {
                            let _ = shutdown(listener, Shutdown::Read);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Waits until `fd` is ready for `events`, a signal arrives, or `deadline`
    /// passes. With no `fd`, waits only for a signal or the deadline.
    pub fn wait(
        &self,
        fd: Option<(BorrowedFd<'_>, PollFlags)>,
        deadline: Option<Instant>,
    ) -> io::Result<Wake> {
        let mut fds = Vec::with_capacity(2);
        fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
        if let Some((fd, events)) = fd {
            fds.push(PollFd::new(fd, events));
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => poll_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        match poll(&mut fds, timeout) {
            Ok(0) => Ok(Wake::TimedOut),
            Ok(_) => {
                let signalled = fds[0].any().unwrap_or(false);
                let ready = fds.get(1).is_some_and(|fd| fd.any().unwrap_or(false));
                if signalled {
                    self.drain()?;
                    Ok(Wake::Signalled)
                } else if ready {
                    Ok(Wake::Ready)
                } else {
                    Ok(Wake::TimedOut)
                }
            }
            Err(Errno::EINTR) => Ok(Wake::Signalled),
            Err(error) => Err(error.into()),
        }
    }

    /// Sleeps for `duration` unless a signal arrives first.
    pub fn pause(&self, duration: Duration) -> io::Result<Wake> {
        self.wait(None, Some(Instant::now() + duration))
    }
}

/// Rounds up, so a wait never returns just before its deadline and spins.
fn poll_timeout(remaining: Duration) -> PollTimeout {
    let millis = remaining.as_micros().div_ceil(1000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

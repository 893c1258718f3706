//! A fixed pool of workers forked up front, each an iterative server on the
//! shared listening socket. The parent serves nobody: it replaces workers that
//! die, at a limited rate, and stops them all on a stop signal. The evented
//! model's workers are supervised the same way.

use std::time::{Duration, Instant};

use anyhow::bail;
use nix::errno::Errno;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::cli::ServerArgs;
use crate::server::{Children, Server, describe_exit, fork_child, serve_one_at_a_time};

/// A worker that dies sooner than this after its start died "at once".
const QUICK_DEATH: Duration = Duration::from_secs(1);
/// After this many quick deaths in a row, something is wrong with every
/// worker, and replacing them again would only burn the machine.
const MAX_QUICK_DEATHS: u32 = 8;
/// The first replacement after a quick death waits this long; each further
/// quick death doubles the wait, up to [`MAX_RESPAWN_DELAY`].
const FIRST_RESPAWN_DELAY: Duration = Duration::from_millis(100);
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(1);

pub fn run(args: &ServerArgs, workers: usize) -> anyhow::Result<()> {
    supervise(args, "preforked", workers, serve_one_at_a_time)
}

/// What each worker does with the server, until it stops.
pub type Work = fn(&Server) -> std::io::Result<()>;

/// Starts `model`'s server and `workers` processes that `work` on it, and
/// supervises them until a stop signal.
pub fn supervise(args: &ServerArgs, model: &str, workers: usize, work: Work) -> anyhow::Result<()> {
    let server = Server::start(args, model)?;
    let lifecycle = &server.lifecycle;
    let mut children = Children::default();
    for number in 1..=workers {
        match spawn_worker(&server, work) {
            Ok(pid) => {
                children.add(pid, "worker".to_string());
                log::info!("worker {pid} started");
            }
            Err(errno) => {
                // The workers already started would serve on, unsupervised.
                children.stop_all(lifecycle);
                bail!(
                    "cannot start worker {number} of {workers}: fork failed: {errno}{}",
                    fork_failure_hint(errno)
                );
            }
        }
    }

    let mut quick_deaths = 0u32;
    let mut missing = Vec::<Pid>::new();
    let mut next_spawn = Instant::now();
    let mut failure = None;

    while !lifecycle.stopping() {
        let deadline = (!missing.is_empty()).then_some(next_spawn);
        lifecycle.wait(None, deadline)?;
        if lifecycle.take_child_exited() {
            for reaped in children.reap() {
                let lived = reaped.child.started.elapsed();
                // A worker that exits 0 was told to stop (by the stop of the
                // whole server, or by a SIGTERM of its own); anything else
                // is a crash.
                let level = match reaped.status {
                    WaitStatus::Exited(_, 0) => log::Level::Info,
                    _ => log::Level::Warn,
                };
                log::log!(
                    level,
                    "worker {} {} after {:.1} s",
                    reaped.pid,
                    describe_exit(reaped.status),
                    lived.as_secs_f64()
                );
                if lifecycle.stopping() {
                    continue;
                }
                if lived < QUICK_DEATH {
                    quick_deaths += 1;
                    let doublings = quick_deaths.saturating_sub(1).min(16);
                    next_spawn = Instant::now()
                        + (FIRST_RESPAWN_DELAY * 2u32.pow(doublings)).min(MAX_RESPAWN_DELAY);
                } else {
                    quick_deaths = 0;
                }
                missing.push(reaped.pid);
            }
        }
        if quick_deaths >= MAX_QUICK_DEATHS {
            failure = Some(format!(
                "{quick_deaths} workers in a row died within {:.0} s of their start; giving up",
                QUICK_DEATH.as_secs_f64()
            ));
            break;
        }
        while !lifecycle.stopping() && Instant::now() >= next_spawn {
            let Some(dead) = missing.pop() else { break };
            match spawn_worker(&server, work) {
                Ok(pid) => {
                    children.add(pid, "worker".to_string());
                    log::info!("worker {pid} started, replacing worker {dead}");
                }
                Err(error) => {
                    log::error!("cannot start a worker to replace {dead}: {error}; retrying");
                    missing.push(dead);
                    next_spawn = Instant::now() + MAX_RESPAWN_DELAY;
                }
            }
        }
    }

    drop(server.listener);
    children.stop_all(lifecycle);
    match failure {
        Some(reason) => {
            log::error!("{reason}");
            bail!(reason)
        }
        None => {
            log::info!("stopped");
            Ok(())
        }
    }
}

fn spawn_worker(server: &Server, work: Work) -> nix::Result<Pid> {
    fork_child(&server.lifecycle, || match work(server) {
        Ok(()) => 0,
        Err(error) => {
            log::error!("worker failed: {error}");
            1
        }
    })
}

/// What a failed fork most likely ran into.
fn fork_failure_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EAGAIN => {
            " (the limit on processes for this user, RLIMIT_NPROC, or the system's is reached)"
        }
        Errno::ENOMEM => " (out of memory)",
        _ => "",
    }
}

//! A process per connection: the parent accepts and forks, each child serves
//! one connection and exits. At most `max_children` children are alive; at
//! the limit the parent stops calling `accept`, so new connections wait in the
//! kernel's queue.

use std::time::Duration;

use crate::cli::ServerArgs;
use crate::server::{Accepted, Acceptor, Children, Server, describe_exit, fork_child};

/// How long the parent waits after a failed fork before it accepts again.
const FORK_FAILURE_BACKOFF: Duration = Duration::from_millis(100);

pub fn run(args: &ServerArgs, max_children: usize) -> anyhow::Result<()> {
    let server = Server::start(args, "parallel")?;
    let lifecycle = &server.lifecycle;
    let mut children = Children::default();
    let mut acceptor = Acceptor::new(&server.listener);
    let mut waiting_for_room = false;

    while !lifecycle.stopping() {
        if lifecycle.take_child_exited() {
            for reaped in children.reap() {
                log::info!(
                    "child {} ({}) {}; active children {}/{max_children}",
                    reaped.pid,
                    reaped.child.label,
                    describe_exit(reaped.status),
                    children.len()
                );
            }
        }
        if children.len() >= max_children {
            if !waiting_for_room {
                log::info!("limit reached ({max_children} children), waiting for a child to exit");
                waiting_for_room = true;
            }
            // Only a signal (SIGCHLD, or a stop) ends this wait.
            lifecycle.wait(None, None)?;
            continue;
        }
        waiting_for_room = false;

        let (stream, peer) = match acceptor.accept(lifecycle)? {
            Accepted::Connection(stream, peer) => (stream, peer),
            Accepted::Nothing => continue,
            Accepted::ShutDown => break,
        };
        let handler = server.handler();
        let acceptor = &mut acceptor;
        // The closure owns the connection: the child serves it, and in the
        // parent the unused closure is dropped, which closes the parent's copy.
        let forked = fork_child(lifecycle, move || {
            acceptor.close_in_child();
            i32::from(!handler.serve(stream, peer).completed())
        });
        match forked {
            Ok(pid) => {
                children.add(pid, format!("connection from {peer}"));
                log::info!(
                    "child {pid} created for {peer}; active children {}/{max_children}",
                    children.len()
                );
            }
            Err(errno) => {
                log::error!("cannot fork for {peer}: {errno}; connection closed unserved");
                lifecycle.pause(FORK_FAILURE_BACKOFF)?;
            }
        }
    }

    drop(acceptor);
    drop(server.listener);
    log::info!("stopped accepting");
    children.stop_all(lifecycle);
    log::info!("stopped");
    Ok(())
}

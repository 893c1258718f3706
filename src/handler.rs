//! The conversation driven over one blocking connection at a time: the three
//! lab models serve each connection with it, in a process that does nothing
//! else meanwhile. Every wait is one `poll` on the socket and the signals,
//! bounded by the conversation's deadline and the grace period of a stop.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

pub use crate::conversation::Outcome;
use crate::conversation::{Broken, Conversation, Step};
use crate::lifecycle::Lifecycle;
use crate::served_dir::ServedDir;
use crate::transfer::{close_gracefully, send_chunk};

pub struct Handler<'a> {
    pub dir: &'a ServedDir,
    pub lifecycle: &'a Lifecycle,
    /// Bounds the arrival of the request, of the reply, and every stall of
    /// the send.
    pub timeout: Duration,
}

impl Handler<'_> {
    pub fn serve(&self, stream: TcpStream, peer: SocketAddr) -> Outcome {
        let outcome = match stream
            .set_nonblocking(true)
            .and_then(|()| stream.set_nodelay(true))
        {
            Ok(()) => self.converse(&stream, peer),
            Err(error) => {
                log::warn!("{peer}: cannot set up the socket: {error}");
                Outcome::Dropped
            }
        };
        close_gracefully(stream);
        log::info!("closed connection from {peer}");
        outcome
    }

    fn converse(&self, stream: &TcpStream, peer: SocketAddr) -> Outcome {
        let mut conversation = Conversation::<File>::new(peer, self.timeout, Instant::now());
        loop {
            if self.lifecycle.must_abort() {
                conversation.broke(Broken::Stopped(self.lifecycle.abort_reason()));
            }
            let now = Instant::now();
            let (result, events) = match conversation.step() {
                Step::Read { buffer } => {
                    let read = (&*stream).read(buffer);
                    if let Ok(n) = read {
                        conversation.received(n, now);
                    }
                    (read, PollFlags::POLLIN)
                }
                Step::Write { bytes } => {
                    let written = (&*stream).write(bytes);
                    if let Ok(n) = written {
                        conversation.wrote(n, now);
                    }
                    (written, PollFlags::POLLOUT)
                }
                Step::Open(name) => {
                    let opened = self.dir.open_file(name);
                    conversation.opened(opened.map(|opened| (opened.file, opened.size)), now);
                    continue;
                }
                Step::Send { file, offset, len } => {
                    let sent = send_chunk(stream, file, offset, len);
                    if let Ok(n) = sent {
                        conversation.sent(n, now);
                    }
                    (sent, PollFlags::POLLOUT)
                }
                Step::Close(outcome) => return outcome,
            };
            match result {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(until) = conversation.blocked(now) {
                        self.wait(stream, &mut conversation, events, until);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => conversation.broke(error.into()),
            }
        }
    }

    /// Waits for `events` on the socket until `until`, a signal, or the end
    /// of the grace period.
    fn wait(
        &self,
        stream: &TcpStream,
        conversation: &mut Conversation<File>,
        events: PollFlags,
        until: Instant,
    ) {
        let limit = self
            .lifecycle
            .grace_deadline()
            .map_or(until, |grace| grace.min(until));
        if let Err(error) = self
            .lifecycle
            .wait(Some((stream.as_fd(), events)), Some(limit))
        {
            conversation.broke(error.into());
        }
    }
}

//! One connection's conversation, from the first byte of the request to the
//! close, as a state machine that does no I/O. Every server model drives it
//! the same way: it asks [`Conversation::step`] what to do, does that on its
//! socket (or opens the file, or sends a piece of it), and reports what
//! happened. The conversation judges what arrived, keeps the deadlines, and
//! logs each step, so that every model behaves and logs alike, whether it
//! waits in `poll` for one connection or in `epoll` for thousands.
//!
//! The handle of the opened file is whatever the driver uses (`F`): the
//! conversation only keeps it until the content has been sent.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::{
    ClientReply, Escaped, FileName, FileRequest, FileResponse, Hex, PROTOCOL_VERSION, REPLY_LEN,
    REQUEST_LEN, RESPONSE_LEN, Status,
};
use crate::served_dir::OpenError;
use crate::transfer::{CHUNK_SIZE, describe_rate};

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole file was sent.
    Sent { bytes: u64 },
    /// The client refused the file after seeing its size.
    Refused,
    /// The request was answered with an error status.
    Answered(Status),
    /// The connection ended early: timeout, a vanished peer, a stop.
    Dropped,
}

impl Outcome {
    /// Whether the connection ended the way the protocol means it to.
    pub fn completed(self) -> bool {
        self != Outcome::Dropped
    }
}

/// Why a conversation ended before it was complete.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("the peer closed the connection")]
    Closed,
    #[error("timed out after {0:?} without progress")]
    TimedOut(Duration),
    #[error("{0}")]
    Stopped(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What the driver must do next.
pub enum Step<'a, F> {
    /// Read what the socket has into `buffer`, then report it with
    /// [`Conversation::received`] (or [`Conversation::broke`] for an error);
    /// if nothing is there, report [`Conversation::blocked`].
    Read { buffer: &'a mut [u8] },
    /// Write `bytes`, then report with [`Conversation::wrote`]; if the socket
    /// takes nothing, report [`Conversation::blocked`].
    Write { bytes: &'a [u8] },
    /// Open `name` in the served directory and report with
    /// [`Conversation::opened`].
    Open(&'a FileName),
    /// Send at most `len` bytes of `file` from `offset`, then report with
    /// [`Conversation::sent`]; if the socket takes nothing, report
    /// [`Conversation::blocked`].
    Send {
        file: &'a F,
        offset: u64,
        len: usize,
    },
    /// Close the connection: the conversation is over.
    Close(Outcome),
}

enum Phase<F> {
    /// The whole request must arrive by `deadline`, however it trickles in.
    Request {
        filled: usize,
        deadline: Instant,
    },
    /// The request names a file, which the driver opens.
    Opening {
        name: FileName,
    },
    /// Each stall of the response's write ends at `deadline`.
    Responding {
        bytes: [u8; RESPONSE_LEN],
        written: usize,
        deadline: Instant,
        then: AfterResponse<F>,
    },
    /// The one-byte reply must arrive by `deadline`.
    Reply {
        opened: Opened<F>,
        byte: [u8; REPLY_LEN],
        deadline: Instant,
    },
    /// Each stall of the send ends at `deadline`.
    Sending {
        opened: Opened<F>,
        sent: u64,
        deadline: Instant,
        started: Instant,
    },
    Over(Outcome),
}

enum AfterResponse<F> {
    Close(Outcome),
    AwaitReply(Opened<F>),
}

struct Opened<F> {
    name: FileName,
    file: F,
    size: u64,
}

/// How long a send waits for room before it tries again. The kernel reports
/// room only once a third of the send buffer has drained, which over a slow
/// link takes seconds while the peer takes every byte it is sent; a send
/// takes whatever room there is, so trying again sees the peer's progress
/// when it happens, and a stall is timed from when the peer really stopped.
pub const PROGRESS_CHECK: Duration = Duration::from_millis(250);

/// The server's side of one connection.
pub struct Conversation<F> {
    peer: SocketAddr,
    /// Bounds the arrival of the request, of the reply, and every stall of a
    /// write or a send.
    timeout: Duration,
    /// The request as it arrives.
    request: [u8; REQUEST_LEN],
    phase: Phase<F>,
}

impl<F> Conversation<F> {
    /// A conversation with a client that connected at `now`.
    pub fn new(peer: SocketAddr, timeout: Duration, now: Instant) -> Conversation<F> {
        Conversation {
            peer,
            timeout,
            request: [0; REQUEST_LEN],
            phase: Phase::Request {
                filled: 0,
                deadline: now + timeout,
            },
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// What to do next.
    pub fn step(&mut self) -> Step<'_, F> {
        match &mut self.phase {
            Phase::Request { filled, .. } => Step::Read {
                buffer: &mut self.request[*filled..],
            },
            Phase::Opening { name } => Step::Open(name),
            Phase::Responding { bytes, written, .. } => Step::Write {
                bytes: &bytes[*written..],
            },
            Phase::Reply { byte, .. } => Step::Read { buffer: byte },
            Phase::Sending { opened, sent, .. } => Step::Send {
                file: &opened.file,
                offset: *sent,
                len: usize::try_from(opened.size - *sent)
                    .map_or(CHUNK_SIZE, |left| left.min(CHUNK_SIZE)),
            },
            Phase::Over(outcome) => Step::Close(*outcome),
        }
    }

    /// The step under way would block at `now`: the socket has nothing to
    /// read or no room. Returns when to try again at the latest, or ends the
    /// conversation if its deadline has passed. A deadline is judged only
    /// here, so that a process stopped past it (SIGSTOP) does not mistake its
    /// own absence for the peer's.
    pub fn blocked(&mut self, now: Instant) -> Option<Instant> {
        let deadline = self.deadline()?;
        if now >= deadline {
            self.broke(Broken::TimedOut(self.timeout));
            return None;
        }
        Some(if self.sending() {
            deadline.min(now + PROGRESS_CHECK)
        } else {
            deadline
        })
    }

    /// When the step under way must have made progress, if it waits for the
    /// peer at all.
    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Request { deadline, .. }
            | Phase::Responding { deadline, .. }
            | Phase::Reply { deadline, .. }
            | Phase::Sending { deadline, .. } => Some(*deadline),
            Phase::Opening { .. } | Phase::Over(_) => None,
        }
    }

    /// `n` bytes were read into the buffer of the last [`Step::Read`].
    pub fn received(&mut self, n: usize, now: Instant) {
        if n == 0 {
            self.broke(Broken::Closed);
            return;
        }
        match &mut self.phase {
            Phase::Request { filled, .. } => {
                *filled += n;
                if *filled == REQUEST_LEN {
                    let request = FileRequest::decode(&self.request);
                    self.judge(&request, now);
                }
            }
            Phase::Reply { byte, .. } => {
                let reply = ClientReply::decode(byte);
                self.answer_reply(reply, now);
            }
            _ => {}
        }
    }

    /// `n` bytes of the last [`Step::Write`] were written.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        if n == 0 {
            self.broke(Broken::Closed);
            return;
        }
        let peer = self.peer;
        let timeout = self.timeout;
        let Phase::Responding {
            bytes,
            written,
            deadline,
            ..
        } = &mut self.phase
        else {
            return;
        };
        *written += n;
        *deadline = now + timeout;
        if *written < RESPONSE_LEN {
            return;
        }
        let response = FileResponse::decode(bytes);
        log::info!(
            "{peer}: response: {}, file size {}",
            response.status,
            response.file_size
        );
        let Phase::Responding { then, .. } = self.take_phase() else {
            return;
        };
        self.phase = match then {
            AfterResponse::Close(outcome) => Phase::Over(outcome),
            AfterResponse::AwaitReply(opened) => Phase::Reply {
                opened,
                byte: [0; REPLY_LEN],
                deadline: now + timeout,
            },
        };
    }

    /// The file of the last [`Step::Open`] was opened (with its size), or
    /// could not be.
    pub fn opened(&mut self, result: Result<(F, u64), OpenError>, now: Instant) {
        let Phase::Opening { .. } = &self.phase else {
            return;
        };
        let Phase::Opening { name } = self.take_phase() else {
            return;
        };
        match result {
            Ok((file, size)) => {
                let opened = Opened { name, file, size };
                self.respond(
                    FileResponse::ok(size),
                    AfterResponse::AwaitReply(opened),
                    now,
                );
            }
            Err(error) => {
                // Asking for a file that is not there is routine (a health
                // check does it every few seconds); anything else is worth
                // a warning.
                let level = if error.status == Status::FileNotFound {
                    log::Level::Info
                } else {
                    log::Level::Warn
                };
                log::log!(level, "{}: {}", self.peer, error.reason);
                self.respond_error(error.status, now);
            }
        }
    }

    /// `n` bytes of the last [`Step::Send`] were sent; 0 means the file
    /// ended there.
    pub fn sent(&mut self, n: usize, now: Instant) {
        let peer = self.peer;
        let timeout = self.timeout;
        let Phase::Sending {
            opened,
            sent,
            deadline,
            started,
        } = &mut self.phase
        else {
            return;
        };
        if n == 0 {
            log::warn!(
                "{peer}: \"{}\" shrank while it was sent: it ended after {sent} of {} bytes; closing early",
                opened.name,
                opened.size
            );
            self.phase = Phase::Over(Outcome::Dropped);
            return;
        }
        *sent += n as u64;
        *deadline = now + timeout;
        if *sent == opened.size {
            let bytes = *sent;
            log::info!(
                "{peer}: transfer complete: {}",
                describe_rate(bytes, now - *started)
            );
            self.phase = Phase::Over(Outcome::Sent { bytes });
        }
    }

    /// Whether the step under way is a send.
    pub fn sending(&self) -> bool {
        matches!(self.phase, Phase::Sending { .. })
    }

    /// The conversation cannot go on: says why, for the step under way, and
    /// ends it.
    pub fn broke(&mut self, why: Broken) {
        let peer = self.peer;
        match &self.phase {
            Phase::Request { filled, .. } => {
                log::warn!("{peer}: no complete request ({filled} of {REQUEST_LEN} bytes): {why}")
            }
            Phase::Responding { .. } => log::warn!("{peer}: cannot send the response: {why}"),
            Phase::Reply { .. } => log::warn!("{peer}: no reply to the response: {why}"),
            Phase::Sending { opened, sent, .. } => log::warn!(
                "{peer}: transfer of \"{}\" broke off: {why} after {sent} bytes",
                opened.name
            ),
            Phase::Opening { .. } => log::warn!("{peer}: {why}"),
            Phase::Over(_) => return,
        }
        self.phase = Phase::Over(Outcome::Dropped);
    }

    fn take_phase(&mut self) -> Phase<F> {
        std::mem::replace(&mut self.phase, Phase::Over(Outcome::Dropped))
    }

    fn judge(&mut self, request: &FileRequest, now: Instant) {
        let peer = self.peer;
        log::debug!("{peer}: request header: {}", Hex(&request.encode()[..16]));
        log::info!(
            "{peer}: request for \"{}\" (protocol version {}, message type {}, name length {})",
            Escaped(request.name_bytes()),
            request.protocol_version,
            request.message_type,
            request.filename_length
        );
        match request.validate(PROTOCOL_VERSION) {
            Ok(name) => self.phase = Phase::Opening { name },
            Err(error) => {
                log::warn!("{peer}: {error}");
                self.respond_error(error.status(), now);
            }
        }
    }

    fn respond_error(&mut self, status: Status, now: Instant) {
        let then = AfterResponse::Close(Outcome::Answered(status));
        self.respond(FileResponse::error(status), then, now);
    }

    fn respond(&mut self, response: FileResponse, then: AfterResponse<F>, now: Instant) {
        let bytes = response.encode();
        log::debug!("{}: response header: {}", self.peer, Hex(&bytes));
        self.phase = Phase::Responding {
            bytes,
            written: 0,
            deadline: now + self.timeout,
            then,
        };
    }

    fn answer_reply(&mut self, reply: Result<ClientReply, u8>, now: Instant) {
        let peer = self.peer;
        let Phase::Reply { opened, .. } = self.take_phase() else {
            return;
        };
        self.phase = match reply {
            Ok(ClientReply::ReadyToReceive) => {
                log::info!("{peer}: client is ready to receive");
                if opened.size == 0 {
                    log::info!(
                        "{peer}: transfer complete: {}",
                        describe_rate(0, Duration::ZERO)
                    );
                    Phase::Over(Outcome::Sent { bytes: 0 })
                } else {
                    Phase::Sending {
                        opened,
                        sent: 0,
                        deadline: now + self.timeout,
                        started: now,
                    }
                }
            }
            Ok(ClientReply::RefuseToReceive) => {
                log::info!("{peer}: client refused the file ({} bytes)", opened.size);
                Phase::Over(Outcome::Refused)
            }
            Err(byte) => {
                log::warn!("{peer}: unknown client reply 0x{byte:02x}; closing");
                Phase::Over(Outcome::Dropped)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileRequest, RESPONSE_LEN};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().expect("an address")
    }

    fn request(name: &str) -> [u8; REQUEST_LEN] {
        let name = FileName::parse(name.as_bytes()).expect("a valid name");
        FileRequest::new(&name, PROTOCOL_VERSION).encode()
    }

    /// Feeds `bytes` as the peer sends them, `chunk` at a time.
    fn feed(
        conversation: &mut Conversation<&'static str>,
        bytes: &[u8],
        chunk: usize,
        now: Instant,
    ) {
        for piece in bytes.chunks(chunk) {
            let Step::Read { buffer } = conversation.step() else {
                panic!("the conversation does not read");
            };
            buffer[..piece.len()].copy_from_slice(piece);
            conversation.received(piece.len(), now);
        }
    }

    /// Takes the whole response the conversation writes.
    fn response(conversation: &mut Conversation<&'static str>, now: Instant) -> FileResponse {
        let Step::Write { bytes } = conversation.step() else {
            panic!("the conversation does not write a response");
        };
        let written: [u8; RESPONSE_LEN] = bytes.try_into().expect("16 bytes at once");
        conversation.wrote(RESPONSE_LEN, now);
        FileResponse::decode(&written)
    }

    fn open(conversation: &mut Conversation<&'static str>, size: u64, now: Instant) {
        let Step::Open(name) = conversation.step() else {
            panic!("the conversation does not open a file");
        };
        assert_eq!(name.as_str(), "a.bin");
        conversation.opened(Ok(("the file", size)), now);
    }

    #[test]
    fn a_fetch_goes_request_open_response_reply_content_close() {
        let now = Instant::now();
        let mut conversation = Conversation::new(peer(), TIMEOUT, now);
        feed(&mut conversation, &request("a.bin"), 7, now);
        let size = CHUNK_SIZE as u64 + 5;
        open(&mut conversation, size, now);
        assert_eq!(response(&mut conversation, now), FileResponse::ok(size));
        feed(&mut conversation, &[3], 1, now);
        let mut offsets = Vec::new();
        while let Step::Send { file, offset, len } = conversation.step() {
            assert_eq!(*file, "the file");
            offsets.push((offset, len));
            conversation.sent(len, now);
        }
        assert_eq!(offsets, [(0, CHUNK_SIZE), (CHUNK_SIZE as u64, 5)]);
        assert!(matches!(
            conversation.step(),
            Step::Close(Outcome::Sent { bytes }) if bytes == size
        ));
    }

    #[test]
    fn a_bad_request_is_answered_with_its_status_and_closed() {
        let now = Instant::now();
        let mut conversation = Conversation::<&'static str>::new(peer(), TIMEOUT, now);
        let mut bad = request("a.bin");
        bad[0] = 9;
        feed(&mut conversation, &bad, REQUEST_LEN, now);
        assert_eq!(
            response(&mut conversation, now),
            FileResponse::error(Status::ProtocolMismatch)
        );
        assert!(matches!(
            conversation.step(),
            Step::Close(Outcome::Answered(Status::ProtocolMismatch))
        ));
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_answered_with_its_status() {
        let now = Instant::now();
        let mut conversation = Conversation::<&'static str>::new(peer(), TIMEOUT, now);
        feed(&mut conversation, &request("a.bin"), REQUEST_LEN, now);
        let error = OpenError {
            status: Status::FileNotFound,
            reason: "a.bin: gone".to_string(),
        };
        conversation.opened(Err(error), now);
        assert_eq!(
            response(&mut conversation, now),
            FileResponse::error(Status::FileNotFound)
        );
        assert!(matches!(
            conversation.step(),
            Step::Close(Outcome::Answered(Status::FileNotFound))
        ));
    }

    #[test]
    fn the_reply_decides_what_follows() {
        let now = Instant::now();
        for (reply, size, outcome) in [
            (4u8, 10, Outcome::Refused),
            (9, 10, Outcome::Dropped),
            (3, 0, Outcome::Sent { bytes: 0 }),
        ] {
            let mut conversation = Conversation::new(peer(), TIMEOUT, now);
            feed(&mut conversation, &request("a.bin"), REQUEST_LEN, now);
            open(&mut conversation, size, now);
            response(&mut conversation, now);
            feed(&mut conversation, &[reply], 1, now);
            assert!(
                matches!(conversation.step(), Step::Close(o) if o == outcome),
                "reply {reply}"
            );
        }
    }

    #[test]
    fn the_request_must_arrive_whole_by_its_deadline() {
        let start = Instant::now();
        let mut conversation = Conversation::<&'static str>::new(peer(), TIMEOUT, start);
        feed(
            &mut conversation,
            &request("a.bin")[..100],
            10,
            start + TIMEOUT / 2,
        );
        // Bytes that trickle in do not move the deadline.
        assert_eq!(
            conversation.blocked(start + TIMEOUT / 2),
            Some(start + TIMEOUT)
        );
        assert_eq!(conversation.blocked(start + TIMEOUT), None);
        assert!(matches!(conversation.step(), Step::Close(Outcome::Dropped)));
    }

    #[test]
    fn the_reply_has_the_timeout_from_the_response_on() {
        let start = Instant::now();
        let mut conversation = Conversation::new(peer(), TIMEOUT, start);
        feed(&mut conversation, &request("a.bin"), REQUEST_LEN, start);
        open(&mut conversation, 10, start);
        let answered = start + Duration::from_secs(3);
        response(&mut conversation, answered);
        assert_eq!(conversation.blocked(answered), Some(answered + TIMEOUT));
        assert_eq!(conversation.blocked(answered + TIMEOUT), None);
    }

    fn sending(size: u64, now: Instant) -> Conversation<&'static str> {
        let mut conversation = Conversation::new(peer(), TIMEOUT, now);
        feed(&mut conversation, &request("a.bin"), REQUEST_LEN, now);
        open(&mut conversation, size, now);
        response(&mut conversation, now);
        feed(&mut conversation, &[3], 1, now);
        assert!(conversation.sending());
        conversation
    }

    #[test]
    fn a_send_waits_at_most_a_progress_check_and_each_stall_its_timeout() {
        let start = Instant::now();
        let mut conversation = sending(1 << 30, start);
        assert_eq!(conversation.blocked(start), Some(start + PROGRESS_CHECK));
        let later = start + Duration::from_secs(4);
        conversation.sent(1000, later);
        assert_eq!(
            conversation.blocked(later + TIMEOUT - PROGRESS_CHECK / 2),
            Some(later + TIMEOUT)
        );
        assert_eq!(conversation.blocked(later + TIMEOUT), None);
    }

    #[test]
    fn a_file_that_ends_early_ends_the_conversation() {
        let now = Instant::now();
        let mut conversation = sending(100, now);
        conversation.sent(40, now);
        conversation.sent(0, now);
        assert!(matches!(conversation.step(), Step::Close(Outcome::Dropped)));
    }

    #[test]
    fn a_peer_that_closes_or_breaks_ends_every_phase() {
        let now = Instant::now();
        let mut early = Conversation::<&'static str>::new(peer(), TIMEOUT, now);
        early.received(0, now);
        assert!(matches!(early.step(), Step::Close(Outcome::Dropped)));

        let mut late = sending(100, now);
        late.broke(Broken::Stopped("grace period over: connection ended"));
        assert!(matches!(late.step(), Step::Close(Outcome::Dropped)));
        assert_eq!(
            late.blocked(now),
            None,
            "an ended conversation waits for nothing"
        );
    }
}

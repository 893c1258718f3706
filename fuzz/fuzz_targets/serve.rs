//! Any byte stream a client can send, through the conversation that every
//! server model drives, with the input also choosing how the bytes arrive
//! (a few at a time or all at once), how much each write and each send
//! takes, and when the peer stalls past the timeout. The conversation never
//! panics, asks for nothing impossible, and answers exactly as the protocol
//! prescribes: nothing to a partial request; otherwise a well-formed response
//! with the right status, then exactly the file's content when, and only
//! when, the client said it is ready; or, after a stall, a prefix of that.
//!
//! The files: `g101.pdf` (1000 bytes), `empty`, `big` (three chunks and a
//! bit, so sends take several steps), `shrinks` (announced 2000 bytes, ends
//! after 1000); `subdir` and `pipe` are no regular files, `escape` and `loop`
//! links that are refused; every other valid name is missing.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tcpfile::conversation::{Conversation, Outcome, Step};
use tcpfile::protocol::{
    FileRequest, FileResponse, PROTOCOL_VERSION, REQUEST_LEN, RESPONSE_LEN, Status,
};
use tcpfile::served_dir::OpenError;
use tcpfile::transfer::CHUNK_SIZE;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest client stream tried: a request, a reply and some trailing bytes.
const MAX_CLIENT_BYTES: usize = 512;

/// What a name opens to: the content sent, and the size the file announces.
struct Served {
    content: Vec<u8>,
    size: u64,
}

fn files() -> &'static [(&'static str, Result<Served, Status>)] {
    static FILES: OnceLock<Vec<(&'static str, Result<Served, Status>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let pattern = |len: usize| (0..len).map(|index| (index * 7 % 251) as u8).collect();
        let whole = |content: Vec<u8>| {
            let size = content.len() as u64;
            Ok(Served { content, size })
        };
        vec![
            ("g101.pdf", whole(pattern(1000))),
            ("empty", whole(Vec::new())),
            ("big", whole(pattern(3 * CHUNK_SIZE + 17))),
            (
                "shrinks",
                Ok(Served {
                    content: pattern(1000),
                    size: 2000,
                }),
            ),
            ("subdir", Err(Status::FileNotFound)),
            ("pipe", Err(Status::FileNotFound)),
            ("escape", Err(Status::AccessDenied)),
            ("loop", Err(Status::AccessDenied)),
        ]
    })
}

fn lookup(name: &str) -> Result<&'static Served, Status> {
    files()
        .iter()
        .find(|(file, _)| *file == name)
        .map_or(Err(Status::FileNotFound), |(_, served)| {
            served.as_ref().map_err(|status| *status)
        })
}

/// The choices the input makes after the client's bytes, used in turn; an
/// exhausted schedule takes everything at once and never stalls.
struct Schedule<'a> {
    choices: std::slice::Iter<'a, u8>,
}

impl Schedule<'_> {
    /// How many of `available` bytes the next step moves (at least one).
    fn amount(&mut self, available: usize) -> usize {
        match self.choices.next() {
            Some(&choice) => available.min(usize::from(choice) * 1031 + 1),
            None => available,
        }
        .max(1)
    }

    /// Whether the peer stalls now: the socket has nothing, or no room.
    fn stall(&mut self) -> bool {
        matches!(self.choices.next(), Some(0))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&length, rest)) = data.split_first() else {
        return;
    };
    let client_len = (usize::from(length) * 2)
        .min(rest.len())
        .min(MAX_CLIENT_BYTES);
    let (client, choices) = rest.split_at(client_len);
    let mut schedule = Schedule {
        choices: choices.iter(),
    };
    let (outcome, answer, stalled) = converse(client, &mut schedule);
    judge(client, outcome, &answer, stalled);
});

/// Drives a conversation with a peer that sends `client` and then shuts its
/// writing half; returns how it ended, what it wrote, and whether a stall
/// past the timeout cut it short.
fn converse(client: &[u8], schedule: &mut Schedule<'_>) -> (Outcome, Vec<u8>, bool) {
    let peer: SocketAddr = "192.0.2.1:40000".parse().expect("an address");
    let mut clock = Instant::now();
    let mut conversation = Conversation::<&'static Served>::new(peer, TIMEOUT, clock);
    let mut fed = 0;
    let mut answer = Vec::new();
    let mut stalled = false;
    loop {
        if schedule.stall() {
            // Nothing moves until the time the conversation said to look
            // again; stalls in a row reach the timeout.
            if let Some(until) = conversation.blocked(clock) {
                assert!(until > clock, "a wait that ends before it starts");
                assert!(until <= clock + TIMEOUT, "a wait past the timeout");
                clock = until;
                stalled |= conversation.blocked(clock).is_none();
            }
            continue;
        }
        match conversation.step() {
            Step::Read { buffer } => {
                assert!(!buffer.is_empty(), "a read into nothing");
                let n = schedule.amount(buffer.len()).min(client.len() - fed);
                buffer[..n].copy_from_slice(&client[fed..fed + n]);
                fed += n;
                conversation.received(n, clock);
            }
            Step::Write { bytes } => {
                assert!(!bytes.is_empty(), "a write of nothing");
                let n = schedule.amount(bytes.len());
                answer.extend_from_slice(&bytes[..n]);
                conversation.wrote(n, clock);
            }
            Step::Open(name) => {
                let opened = lookup(name.as_str())
                    .map(|served| (served, served.size))
                    .map_err(|status| OpenError {
                        status,
                        reason: format!("{name}: {status:?}"),
                    });
                conversation.opened(opened, clock);
            }
            Step::Send { file, offset, len } => {
                assert!(len > 0 && len <= CHUNK_SIZE, "a send of {len} bytes");
                assert!(offset < file.size, "a send past the announced size");
                let left = file.content.len().saturating_sub(offset as usize);
                let n = schedule.amount(len).min(left);
                answer.extend_from_slice(&file.content[offset as usize..offset as usize + n]);
                conversation.sent(n, clock);
            }
            Step::Close(outcome) => return (outcome, answer, stalled),
        }
    }
}

fn judge(client: &[u8], outcome: Outcome, answer: &[u8], stalled: bool) {
    let Some(request) = client.get(..REQUEST_LEN) else {
        assert!(answer.is_empty(), "an answer to a partial request");
        assert_eq!(outcome, Outcome::Dropped);
        return;
    };
    let request = FileRequest::decode(request.try_into().expect("260 bytes"));
    let served = match request.validate(PROTOCOL_VERSION) {
        Err(error) => Err(error.status()),
        Ok(name) => lookup(name.as_str()),
    };
    let (expected, expected_outcome) = match served {
        Err(status) => (
            FileResponse::error(status).encode().to_vec(),
            Outcome::Answered(status),
        ),
        Ok(file) => {
            let mut expected = FileResponse::ok(file.size).encode().to_vec();
            let outcome = match client.get(REQUEST_LEN) {
                Some(3) => {
                    expected.extend_from_slice(&file.content);
                    if file.content.len() as u64 == file.size {
                        Outcome::Sent { bytes: file.size }
                    } else {
                        Outcome::Dropped
                    }
                }
                Some(4) => Outcome::Refused,
                _ => Outcome::Dropped,
            };
            (expected, outcome)
        }
    };
    if stalled {
        assert_eq!(
            outcome,
            Outcome::Dropped,
            "a stall past the timeout ends it"
        );
        assert!(
            expected.starts_with(answer),
            "a conversation cut short answered something else"
        );
    } else {
        assert!(answer.len() >= RESPONSE_LEN, "no complete response");
        assert!(answer == expected.as_slice(), "the answer differs");
        assert_eq!(outcome, expected_outcome);
    }
}

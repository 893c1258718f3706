//! Any byte stream a client can send, through the real connection handler
//! over a real loopback connection: the handler never panics or hangs, and it
//! either closes cleanly (fewer than 260 bytes arrived) or answers with a
//! well-formed response carrying the status the protocol prescribes, followed
//! by exactly the file's content when, and only when, the client said it is
//! ready.
//!
//! The served directory holds a regular file for the golden request
//! (`g101.pdf`), an empty file, a directory, a FIFO, a link out of the
//! directory and a link loop; every other valid name is missing.

#![no_main]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use tcpfile::handler::{Handler, Outcome};
use tcpfile::lifecycle::Lifecycle;
use tcpfile::protocol::{
    FileRequest, FileResponse, PROTOCOL_VERSION, REQUEST_LEN, RESPONSE_LEN, Status, StatusCode,
};
use tcpfile::served_dir::ServedDir;

/// Small enough to sit in the socket buffers whole, so the input can be sent
/// before the handler runs on the same thread.
const MAX_INPUT: usize = 4096;
/// Never reached: the client side has shut its writing half before the
/// handler starts, so every read ends at once. libFuzzer's `-timeout` reports
/// a handler that waits anyway.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(5);

static FIXTURE_PATH: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_fixture() {
    if let Some(path) = FIXTURE_PATH.get() {
        let _ = std::fs::remove_dir_all(path);
    }
}

struct Bench {
    listener: TcpListener,
    addr: SocketAddr,
    dir: ServedDir,
    lifecycle: Lifecycle,
    /// What each name in the directory must produce; other names are missing.
    expected: HashMap<&'static str, Result<Vec<u8>, Status>>,
}

thread_local! {
    static BENCH: Bench = Bench::new();
}

fuzz_target!(|data: &[u8]| {
    BENCH.with(|bench| bench.exchange(&data[..data.len().min(MAX_INPUT)]));
});

impl Bench {
    fn new() -> Bench {
        let path = std::env::temp_dir().join(format!("tcpfile-fuzz-serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create the served directory");
        FIXTURE_PATH
            .set(path.clone())
            .expect("one bench per process");
        // SAFETY: remove_fixture only reads a path that is set once above.
        unsafe { libc::atexit(remove_fixture) };

        let pdf: Vec<u8> = (0..1000u32).map(|index| (index * 7 % 251) as u8).collect();
        std::fs::write(path.join("g101.pdf"), &pdf).expect("write g101.pdf");
        std::fs::write(path.join("empty"), b"").expect("write empty");
        std::fs::create_dir(path.join("subdir")).expect("create subdir");
        nix::unistd::mkfifo(&path.join("pipe"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        symlink("/etc/passwd", path.join("escape")).expect("link out");
        symlink("loop", path.join("loop")).expect("link loop");
        let expected = HashMap::from([
            ("g101.pdf", Ok(pdf)),
            ("empty", Ok(Vec::new())),
            ("subdir", Err(Status::FileNotFound)),
            ("pipe", Err(Status::FileNotFound)),
            ("escape", Err(Status::AccessDenied)),
            ("loop", Err(Status::AccessDenied)),
        ]);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
        let addr = listener.local_addr().expect("listener address");
        Bench {
            listener,
            addr,
            dir: ServedDir::open(&path).expect("open the served directory"),
            lifecycle: lifecycle_leaving_the_fuzzer_its_signals(),
            expected,
        }
    }

    fn exchange(&self, input: &[u8]) {
        let client = TcpStream::connect(self.addr).expect("connect over loopback");
        let (server_side, peer) = self.listener.accept().expect("accept");
        (&client).write_all(input).expect("send the input");
        client
            .shutdown(Shutdown::Write)
            .expect("shut the writing half");

        let handler = Handler {
            dir: &self.dir,
            lifecycle: &self.lifecycle,
            timeout: HANDLER_TIMEOUT,
        };
        let outcome = handler.serve(server_side, peer);

        let mut answer = Vec::new();
        (&client)
            .read_to_end(&mut answer)
            .expect("the handler closes cleanly, without a reset");
        self.judge(input, outcome, &answer);
    }

    fn judge(&self, input: &[u8], outcome: Outcome, answer: &[u8]) {
        let Some(request) = input.get(..REQUEST_LEN) else {
            assert!(answer.is_empty(), "an answer to a partial request");
            assert_eq!(outcome, Outcome::Dropped);
            return;
        };
        let request = FileRequest::decode(request.try_into().expect("260 bytes"));
        let expected = match request.validate(PROTOCOL_VERSION) {
            Err(error) => Err(error.status()),
            Ok(name) => self
                .expected
                .get(name.as_str())
                .cloned()
                .unwrap_or(Err(Status::FileNotFound)),
        };

        assert!(answer.len() >= RESPONSE_LEN, "no complete response");
        let header: [u8; RESPONSE_LEN] = answer[..RESPONSE_LEN].try_into().expect("16 bytes");
        assert_eq!(header[3..8], [0u8; 5], "padding is zero");
        let response = FileResponse::decode(&header);
        assert_eq!(response.protocol_version, PROTOCOL_VERSION);
        assert_eq!(response.message_type, 2);
        let content = &answer[RESPONSE_LEN..];
        match expected {
            Err(status) => {
                assert_eq!(response.status, StatusCode::from(status));
                assert_eq!(response.file_size, 0);
                assert!(content.is_empty(), "content after an error status");
                assert_eq!(outcome, Outcome::Answered(status));
            }
            Ok(file) => {
                assert_eq!(response.status, StatusCode::from(Status::Ok));
                assert_eq!(response.file_size, file.len() as u64);
                match input.get(REQUEST_LEN) {
                    Some(3) => {
                        assert!(content == file, "the content differs from the file");
                        assert_eq!(
                            outcome,
                            Outcome::Sent {
                                bytes: file.len() as u64
                            }
                        );
                    }
                    Some(4) => {
                        assert!(content.is_empty(), "content after a refusal");
                        assert_eq!(outcome, Outcome::Refused);
                    }
                    _ => {
                        assert!(content.is_empty(), "content without a ready reply");
                        assert_eq!(outcome, Outcome::Dropped);
                    }
                }
            }
        }
    }
}

/// The handler waits through a [`Lifecycle`], whose installation takes over
/// SIGINT and SIGTERM; the fuzzer's own handlers are put back, so that it
/// still stops and reports its statistics on them.
fn lifecycle_leaving_the_fuzzer_its_signals() -> Lifecycle {
    let probe = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let stops = [Signal::SIGINT, Signal::SIGTERM];
    // SAFETY: the default action runs no code of ours; the fuzzer's handler
    // goes back in place right after.
    let saved = stops.map(|signal| unsafe { sigaction(signal, &probe) }.expect("read the handler"));
    let lifecycle = Lifecycle::install(Duration::from_secs(1)).expect("install signal handling");
    for (signal, previous) in stops.into_iter().zip(saved) {
        // SAFETY: this is the handler the fuzzer installed for the signal.
        unsafe { sigaction(signal, &previous) }.expect("restore the handler");
    }
    lifecycle
}

//! What every server model must do, proved against each of the three with
//! the real binaries: byte-exact transfers, every status, refusals, slow and
//! misbehaving peers, and a clean stop.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use tcpfile::protocol::{ClientReply, PROTOCOL_VERSION, Status};

for_each_model!(
    transfers_are_byte_exact,
    hand_made_requests_get_their_status,
    client_reports_server_errors_by_name,
    client_refuses_a_file_over_its_maximum,
    request_sent_one_byte_at_a_time_is_served,
    idle_connection_is_dropped_and_the_next_client_served,
    steady_slow_reader_is_served_past_the_timeout,
    reader_that_stops_is_dropped_at_the_timeout,
    vanished_client_does_not_stop_the_server,
    killed_client_does_not_stop_the_server,
    links_out_of_the_directory_are_refused,
    directories_and_fifos_are_not_files,
    bad_name_lengths_get_invalid_filename,
    sigterm_while_idle_exits_promptly,
    sigterm_mid_transfer_lets_it_finish,
    second_signal_ends_everything_at_once,
    many_requests_leave_no_zombie_and_no_descriptor,
    burst_of_connections_sees_no_syn_drop,
    unknown_reply_byte_closes_the_connection,
);

fn transfers_are_byte_exact(model: Model) {
    let fixture = Fixture::new();
    fixture.add("empty", b"");
    fixture.add("one", b"x");
    let big = fixture.add_random("big.bin", 8 * 1024 * 1024 + 123);
    let server = ServerProcess::start(model, fixture.path());

    server.fetch_expecting("empty", b"");
    server.fetch_expecting("one", b"x");
    server.fetch_expecting("big.bin", &big);
    assert!(server.wait_for_log("transfer complete: 8388731 bytes", PATIENCE));
}

fn status_for(server: &ServerProcess, request: &[u8]) -> u8 {
    let mut peer = RawPeer::connect(server);
    peer.send(request);
    let response = peer.response();
    assert_eq!(response.protocol_version, PROTOCOL_VERSION);
    assert_eq!(response.message_type, 2);
    assert_eq!(response.file_size, 0, "an error carries no size");
    assert!(
        peer.closed_within(PATIENCE),
        "the server closes after an error"
    );
    response.status.0
}

fn hand_made_requests_get_their_status(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let outside = Fixture::new();
    let secret = outside.add("secret", b"not for you");
    symlink(&secret, fixture.path().join("escape")).expect("symlink");
    let server = ServerProcess::start(model, fixture.path());

    assert_eq!(status_for(&server, &raw_request(2, 1, 5, b"a.txt")), 1);
    assert_eq!(status_for(&server, &raw_request(1, 1, 5, b"a/txt")), 2);
    assert_eq!(status_for(&server, &raw_request(1, 1, 5, b"nope!")), 3);
    assert_eq!(status_for(&server, &raw_request(1, 1, 6, b"escape")), 4);
    assert_eq!(status_for(&server, &raw_request(1, 7, 5, b"a.txt")), 6);

    let mut peer = RawPeer::connect(&server);
    peer.send(&raw_request(1, 1, 5, b"a.txt"));
    let response = peer.response();
    assert_eq!(response.status.known(), Some(Status::Ok));
    assert_eq!(response.file_size, 5);
    peer.send(&ClientReply::ReadyToReceive.encode());
    assert_eq!(peer.read_to_end(), b"hello");
}

fn client_reports_server_errors_by_name(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let outside = Fixture::new();
    let secret = outside.add("secret", b"not for you");
    symlink(&secret, fixture.path().join("escape")).expect("symlink");
    let server = ServerProcess::start(model, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");

    let missing = server.fetch("missing.txt", "1M", &out.path().join("missing.txt"));
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        stderr_of(&missing).contains("File not found"),
        "{}",
        stderr_of(&missing)
    );

    let denied = server.fetch("escape", "1M", &out.path().join("escape"));
    assert_eq!(denied.status.code(), Some(3));
    assert!(
        stderr_of(&denied).contains("Access denied"),
        "{}",
        stderr_of(&denied)
    );

    let mismatch = run_client(
        server.port(),
        "a.txt",
        "1M",
        &out.path().join("a.txt"),
        &["--protocol-version", "2"],
    );
    assert_eq!(mismatch.status.code(), Some(3));
    assert!(
        stderr_of(&mismatch).contains("Protocol version mismatch"),
        "{}",
        stderr_of(&mismatch)
    );
    assert_eq!(std::fs::read_dir(out.path()).expect("list").count(), 0);
}

fn client_refuses_a_file_over_its_maximum(model: Model) {
    let fixture = Fixture::new();
    fixture.add_random("big.bin", 2048);
    let server = ServerProcess::start(model, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");

    let fresh = out.path().join("big.bin");
    let refused = server.fetch("big.bin", "1K", &fresh);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("exceeds the maximum"));
    assert!(!fresh.exists(), "a refused file is not created");

    let existing = out.path().join("kept.bin");
    std::fs::write(&existing, b"precious").expect("write");
    let refused = server.fetch("big.bin", "2047", &existing);
    assert_eq!(refused.status.code(), Some(4));
    assert_eq!(std::fs::read(&existing).expect("read"), b"precious");
    assert_eq!(std::fs::read_dir(out.path()).expect("list").count(), 1);
    assert!(server.wait_for_log_count("client refused the file (2048 bytes)", 2, PATIENCE));
}

fn request_sent_one_byte_at_a_time_is_served(model: Model) {
    let fixture = Fixture::new();
    fixture.add("slow.txt", b"patience");
    let server = ServerProcess::start(model, fixture.path());

    let mut peer = RawPeer::connect(&server);
    peer.stream.set_nodelay(true).expect("nodelay");
    for byte in raw_request(1, 1, 8, b"slow.txt") {
        peer.send(&[byte]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(peer.response().file_size, 8);
    peer.send(&ClientReply::ReadyToReceive.encode());
    assert_eq!(peer.read_to_end(), b"patience");
}

fn idle_connection_is_dropped_and_the_next_client_served(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start_with(model, fixture.path(), &["--timeout", "1"]);

    let mut idle = RawPeer::connect(&server);
    let mut half = RawPeer::connect(&server);
    half.send(&raw_request(1, 1, 5, b"a.txt")[..100]);
    let started = Instant::now();
    server.fetch_expecting("a.txt", b"hello");
    assert!(
        idle.closed_within(PATIENCE),
        "the idle connection is dropped"
    );
    assert!(half.closed_within(PATIENCE), "the half request is dropped");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(server.wait_for_log("no complete request (0 of 260 bytes)", PATIENCE));
    assert!(server.wait_for_log("no complete request (100 of 260 bytes)", PATIENCE));
}

/// Asks for `name`, says it is ready, reads `keep` bytes of content, and
/// returns the connection still open.
fn start_transfer(server: &ServerProcess, name: &str, keep: usize) -> RawPeer {
    let mut peer = RawPeer::connect(server);
    peer.request(name);
    assert_eq!(peer.response().status.known(), Some(Status::Ok));
    peer.send(&ClientReply::ReadyToReceive.encode());
    let mut first = vec![0u8; keep];
    peer.stream
        .read_exact(&mut first)
        .expect("first content bytes");
    peer
}

/// A client that keeps reading, however slowly, keeps its connection: the
/// timeout bounds a stall of the send, never the whole transfer. The reader
/// takes far less per timeout than the server's send buffer holds, so a
/// server that waited for room in that buffer instead of for the client's
/// progress would give up on it.
fn steady_slow_reader_is_served_past_the_timeout(model: Model) {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 8 * 1024 * 1024);
    let server = ServerProcess::start_with(model, fixture.path(), &["--timeout", "1"]);

    let (mut peer, first) = begin_slow_transfer(&server, "big.bin", content.len());
    let started = Instant::now();
    let received = finish_slowly(&mut peer, first, Duration::from_secs(3));
    assert!(started.elapsed() > Duration::from_secs(3));
    assert_eq!(received.len(), content.len(), "{}", server.log_text());
    assert!(received == content, "the slow transfer is byte-exact");
}

/// A client that stops reading mid-transfer holds its serving process for
/// one timeout, counted from when the send stalls, and not much longer.
fn reader_that_stops_is_dropped_at_the_timeout(model: Model) {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 8 * 1024 * 1024);
    fixture.add("next.txt", b"next");
    let server = ServerProcess::start_with(model, fixture.path(), &["--timeout", "1"]);

    let (_stopped, _) = begin_slow_transfer(&server, "big.bin", content.len());
    let stopped_at = Instant::now();
    assert!(
        server.wait_for_log("timed out after 1s without progress", PATIENCE),
        "{}",
        server.log_text()
    );
    let held = stopped_at.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(3),
        "the stalled send was given up after {held:?}"
    );
    server.fetch_expecting("next.txt", b"next");
}

fn vanished_client_does_not_stop_the_server(model: Model) {
    let fixture = Fixture::new();
    let big = fixture.add_random("big.bin", 32 * 1024 * 1024);
    let server = ServerProcess::start(model, fixture.path());

    let peer = start_transfer(&server, "big.bin", 1024);
    // Closing with unread data makes the kernel send a reset.
    drop(peer);
    assert!(
        server.wait_for_log("broke off", PATIENCE),
        "{}",
        server.log_text()
    );
    server.fetch_expecting("big.bin", &big);
    assert!(process_exists(server.pid));
}

fn killed_client_does_not_stop_the_server(model: Model) {
    let fixture = Fixture::new();
    let big = fixture.add_random("big.bin", 32 * 1024 * 1024);
    let server = ServerProcess::start(model, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");

    let mut client = client_command(
        server.port(),
        "big.bin",
        "1G",
        &out.path().join("big.bin"),
        &[],
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start client");
    assert!(server.wait_for_log("request for \"big.bin\"", PATIENCE));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        Signal::SIGKILL,
    )
    .expect("kill client");
    client.wait().expect("reap client");
    assert_eq!(
        std::fs::read_dir(out.path()).expect("list").count(),
        0,
        "no partial file"
    );
    server.fetch_expecting("big.bin", &big);
}

fn links_out_of_the_directory_are_refused(model: Model) {
    let fixture = Fixture::new();
    fixture.add("inside.txt", b"fine");
    symlink("inside.txt", fixture.path().join("alias.txt")).expect("symlink");
    symlink("/etc/passwd", fixture.path().join("absolute")).expect("symlink");
    symlink(
        "../../../../../../etc/passwd",
        fixture.path().join("relative"),
    )
    .expect("symlink");
    let server = ServerProcess::start(model, fixture.path());

    assert_eq!(status_for(&server, &raw_request(1, 1, 8, b"absolute")), 4);
    assert_eq!(status_for(&server, &raw_request(1, 1, 8, b"relative")), 4);
    let alias = status_for_ok_or_error(&server, b"alias.txt");
    assert!(
        alias == 0 || alias == 4,
        "a link inside the directory is served, or refused where links are never followed"
    );
}

fn status_for_ok_or_error(server: &ServerProcess, name: &[u8]) -> u8 {
    let mut peer = RawPeer::connect(server);
    peer.send(&raw_request(1, 1, name.len() as u16, name));
    let response = peer.response();
    if response.status.known() == Some(Status::Ok) {
        peer.send(&ClientReply::RefuseToReceive.encode());
    }
    response.status.0
}

fn directories_and_fifos_are_not_files(model: Model) {
    let fixture = Fixture::new();
    std::fs::create_dir(fixture.path().join("subdir")).expect("mkdir");
    nix::unistd::mkfifo(&fixture.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU)
        .expect("mkfifo");
    let server = ServerProcess::start(model, fixture.path());

    let started = Instant::now();
    assert_eq!(status_for(&server, &raw_request(1, 1, 6, b"subdir")), 3);
    assert_eq!(status_for(&server, &raw_request(1, 1, 4, b"pipe")), 3);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered promptly"
    );
    assert!(server.wait_for_log("not a regular file (a FIFO)", PATIENCE));
}

fn bad_name_lengths_get_invalid_filename(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a", b"a");
    let server = ServerProcess::start(model, fixture.path());
    let full_field = [b'a'; 256];
    for length in [0u16, 256, 65535] {
        assert_eq!(
            status_for(&server, &raw_request(1, 1, length, &full_field)),
            2
        );
    }
    server.fetch_expecting("a", b"a");
}

fn sigterm_while_idle_exits_promptly(model: Model) {
    let fixture = Fixture::new();
    let mut server = ServerProcess::start(model, fixture.path());
    let workers = if matches!(model, Model::Preforked(_)) {
        wait_until(PATIENCE, || server.children().len() == 3);
        server.children()
    } else {
        Vec::new()
    };
    let sent = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(PATIENCE).expect("the server exits");
    let limit = if under_emulation() { 5 } else { 1 };
    assert!(
        sent.elapsed() < Duration::from_secs(limit),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert_all_exit(&workers);
}

/// Reads what is left of a transfer slowly, then everything, and returns all
/// content bytes including the `already` ones.
fn finish_slowly(peer: &mut RawPeer, mut already: Vec<u8>, slow_for: Duration) -> Vec<u8> {
    let until = Instant::now() + slow_for;
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < until {
        match peer.stream.read(&mut chunk) {
            Ok(0) => return already,
            Ok(n) => already.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("slow read failed: {error}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peer.stream
        .read_to_end(&mut already)
        .expect("read the rest");
    already
}

/// Asks for `name` through a small receive window, says it is ready, and
/// returns the connection with the first bytes of content read, so that the
/// rest of the transfer is still in flight.
fn begin_slow_transfer(server: &ServerProcess, name: &str, size: usize) -> (RawPeer, Vec<u8>) {
    let mut peer = RawPeer::connect_small_window(server.addr, 8192);
    peer.request(name);
    assert_eq!(peer.response().file_size, size as u64);
    peer.send(&ClientReply::ReadyToReceive.encode());
    let mut first = vec![0u8; 4096];
    peer.stream.read_exact(&mut first).expect("first bytes");
    (peer, first)
}

fn assert_all_exit(pids: &[i32]) {
    for &pid in pids {
        assert!(
            wait_until(PATIENCE, || !process_exists(pid)),
            "process {pid} remains"
        );
    }
}

fn sigterm_mid_transfer_lets_it_finish(model: Model) {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 4 * 1024 * 1024);
    let mut server = ServerProcess::start_with(model, fixture.path(), &["--grace", "10"]);

    let (mut peer, first) = begin_slow_transfer(&server, "big.bin", content.len());
    let serving = server.children();

    server.signal(Signal::SIGTERM);
    assert!(server.wait_for_log("SIGTERM received: stopping", PATIENCE));
    let refused_new = TcpStream::connect(server.addr).is_err();
    let received = finish_slowly(&mut peer, first, Duration::from_millis(500));
    assert!(
        received == content,
        "the transfer in flight completes byte-exact"
    );

    let status = server.wait_exit(PATIENCE).expect("the server exits");
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    assert_all_exit(&serving);
    assert!(refused_new, "the server stops accepting at once");
}

fn second_signal_ends_everything_at_once(model: Model) {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 4 * 1024 * 1024);
    let mut server = ServerProcess::start_with(model, fixture.path(), &["--grace", "60"]);

    let (mut peer, first) = begin_slow_transfer(&server, "big.bin", content.len());
    let serving = server.children();

    server.signal(Signal::SIGINT);
    assert!(server.wait_for_log("SIGINT received: stopping", PATIENCE));
    let sent = Instant::now();
    server.signal(Signal::SIGINT);
    let status = server.wait_exit(PATIENCE).expect("the server exits");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "not the 60 s grace period"
    );
    assert_eq!(status.code(), Some(0));
    let mut rest = Vec::new();
    let _ = peer.stream.read_to_end(&mut rest);
    assert!(
        first.len() + rest.len() < content.len(),
        "the transfer was cut short"
    );
    assert_all_exit(&serving);
}

fn many_requests_leave_no_zombie_and_no_descriptor(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(model, fixture.path());
    // One exchange first, so that everything the server opens once is open.
    assert_eq!(status_for_ok_or_error(&server, b"a.txt"), 0);
    assert!(server.wait_for_log("closed connection", PATIENCE));
    let settled = || wait_until(PATIENCE, || server.zombies().is_empty());
    settled();
    let fds_before = server.open_fds();

    for round in 0..200u16 {
        match round % 5 {
            0 => assert_eq!(status_for_ok_or_error(&server, b"a.txt"), 0),
            1 => assert_eq!(status_for(&server, &raw_request(1, 1, 7, b"missing")), 3),
            2 => assert_eq!(status_for(&server, &raw_request(9, 1, 5, b"a.txt")), 1),
            3 => {
                let mut peer = RawPeer::connect(&server);
                peer.send(&raw_request(1, 1, 5, b"a.txt"));
                assert_eq!(peer.response().file_size, 5);
                peer.send(&ClientReply::ReadyToReceive.encode());
                assert_eq!(peer.read_to_end(), b"hello");
            }
            _ => {
                let mut peer = RawPeer::connect(&server);
                peer.send(&[1, 1, 5]);
            }
        }
    }
    assert!(server.wait_for_log_count("closed connection", 201, PATIENCE));
    assert!(settled(), "zombies remain: {:?}", server.zombies());
    assert!(
        wait_until(PATIENCE, || server.open_fds() == fds_before),
        "descriptors: {} before, {} after",
        fds_before,
        server.open_fds()
    );
    if let Model::Parallel(_) = model {
        assert!(wait_until(PATIENCE, || server.children().is_empty()));
    }
}

fn burst_of_connections_sees_no_syn_drop(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(model, fixture.path());
    // All 256 handshakes start at once, from one thread, so that the time
    // measured is the kernel's and not a thread scheduler's (this suite also
    // runs under emulation).
    let started = Instant::now();
    let streams = connect_all_at_once(server.addr, 256);
    let took = started.elapsed();
    // A dropped SYN is retransmitted after a second at the earliest.
    assert!(took < Duration::from_millis(900), "the burst took {took:?}");
    drop(streams);
    server.fetch_expecting("a.txt", b"hello");
}

fn unknown_reply_byte_closes_the_connection(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(model, fixture.path());
    let mut peer = RawPeer::connect(&server);
    peer.request("a.txt");
    assert_eq!(peer.response().file_size, 5);
    peer.stream.write_all(&[9]).expect("send");
    assert!(
        peer.read_to_end().is_empty(),
        "no content after an unknown reply"
    );
    assert!(server.wait_for_log("unknown client reply 0x09", PATIENCE));
}

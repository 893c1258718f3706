//! What every server model must do, proved against each of the three with
//! the real binaries: byte-exact transfers, every status, refusals, slow and
//! misbehaving peers, and a clean stop.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
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
    vanished_client_does_not_stop_the_server,
    killed_client_does_not_stop_the_server,
    links_out_of_the_directory_are_refused,
    without_openat2_no_link_is_followed,
    only_regular_files_are_served,
    bad_name_lengths_get_invalid_filename,
    sigterm_while_idle_exits_promptly,
    sigterm_mid_transfer_lets_it_finish,
    second_signal_ends_everything_at_once,
    many_requests_leave_no_zombie_and_no_descriptor,
    burst_of_connections_sees_no_syn_drop,
    unknown_reply_byte_closes_the_connection,
    stop_ends_a_stalled_transfer_at_the_grace_period,
    withheld_reply_is_dropped_at_the_timeout,
    stalled_reader_is_dropped_at_the_timeout,
    ctrl_c_to_the_process_group_counts_once,
    health_probes_and_a_normal_stop_log_no_warning,
    files_over_4_gib_are_offered_with_their_size,
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

/// `--timeout` with `timeout` in seconds, as a server option.
fn timeout_option(timeout: Duration) -> String {
    format!("{}", timeout.as_secs_f64())
}

fn idle_connection_is_dropped_and_the_next_client_served(model: Model) {
    let (timeout, slack) = timeout_and_slack();
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let seconds = timeout_option(timeout);
    let server = ServerProcess::start_with(model, fixture.path(), &["--timeout", &seconds]);

    let connected = Instant::now();
    let mut idle = RawPeer::connect(&server);
    let mut half = RawPeer::connect(&server);
    half.send(&raw_request(1, 1, 5, b"a.txt")[..100]);
    let idle_closed = std::thread::spawn(move || idle.wait_closed());
    let half_closed = std::thread::spawn(move || half.wait_closed());
    server.fetch_expecting("a.txt", b"hello");

    let idle_at = idle_closed.join().expect("the idle connection");
    assert_took(
        "dropping the idle connection",
        idle_at - connected,
        timeout,
        slack,
    );
    // The iterative server reads the half request only once the idle
    // connection is gone; the others read both at once.
    let half_expected = if model == Model::Iterative {
        timeout * 2
    } else {
        timeout
    };
    let half_at = half_closed.join().expect("the half request");
    assert_took(
        "dropping the half request",
        half_at - connected,
        half_expected,
        slack,
    );
    assert!(server.wait_for_log("no complete request (0 of 260 bytes)", PATIENCE));
    assert!(server.wait_for_log("no complete request (100 of 260 bytes)", PATIENCE));
}

fn withheld_reply_is_dropped_at_the_timeout(model: Model) {
    let (timeout, slack) = timeout_and_slack();
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let seconds = timeout_option(timeout);
    let server = ServerProcess::start_with(model, fixture.path(), &["--timeout", &seconds]);

    let mut peer = RawPeer::connect(&server);
    peer.request("a.txt");
    assert_eq!(peer.response().file_size, 5);
    let answered = Instant::now();
    let closed = peer.wait_closed();
    assert_took("waiting for the reply", closed - answered, timeout, slack);
    assert!(
        server.wait_for_log("no reply to the response", PATIENCE),
        "{}",
        server.log_text()
    );
    server.fetch_expecting("a.txt", b"hello");
}

fn stalled_reader_is_dropped_at_the_timeout(model: Model) {
    let (timeout, slack) = timeout_and_slack();
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 16 * 1024 * 1024);
    let seconds = timeout_option(timeout);
    let server = ServerProcess::start_with(model, fixture.path(), &["--timeout", &seconds]);

    // Reads its first bytes through a small window, then nothing: the send
    // stalls as soon as the server's buffer is full.
    let (_peer, _first) = begin_slow_transfer(&server, "big.bin", content.len());
    let stalled = Instant::now();
    let needle = "broke off: timed out";
    assert!(
        server.wait_for_log(needle, PATIENCE),
        "{}",
        server.log_text()
    );
    assert_took(
        "giving up on a stalled reader",
        stalled.elapsed(),
        timeout,
        slack,
    );
    server.fetch_expecting("big.bin", &content);
}

fn ctrl_c_to_the_process_group_counts_once(model: Model) {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 4 * 1024 * 1024);
    let mut server = ServerProcess::start_with(model, fixture.path(), &["--grace", "10"]);
    let (mut peer, first) = begin_slow_transfer(&server, "big.bin", content.len());

    // What a terminal's Ctrl-C does: SIGINT to every process of the group.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(server.pid), Signal::SIGINT)
        .expect("SIGINT to the group");
    assert!(server.wait_for_log("SIGINT received: stopping", PATIENCE));
    let received = finish_slowly(&mut peer, first, Duration::from_millis(500));
    assert!(
        received == content,
        "one Ctrl-C lets the transfer in flight finish: {}",
        server.log_text()
    );
    let status = server.wait_exit(PATIENCE).expect("the server exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        server.count_in_log("second stop signal"),
        0,
        "{}",
        server.log_text()
    );
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

/// A directory with a file, a link to it, and links out by an absolute and by
/// a relative path.
fn directory_with_links() -> Fixture {
    let fixture = Fixture::new();
    fixture.add("inside.txt", b"fine");
    symlink("inside.txt", fixture.path().join("alias.txt")).expect("symlink");
    symlink("/etc/passwd", fixture.path().join("absolute")).expect("symlink");
    symlink(
        "../../../../../../etc/passwd",
        fixture.path().join("relative"),
    )
    .expect("symlink");
    fixture
}

const NO_OPENAT2: &str = "openat2 is not available here";
const LINK_OUT: &str = "a symbolic link leads outside the served directory";
const LINK_NOT_FOLLOWED: &str = "a symbolic link that is not followed";

/// Whether openat2 works for the tests, and so for the servers they start on
/// the same kernel, in the same sandbox, under the same emulator.
fn openat2_works_here() -> bool {
    use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH);
    openat2(AT_FDCWD, ".", how).is_ok()
}

/// Asks for `link`, expects ACCESS_DENIED, and checks that the server logged
/// `reason` for it. The reason is logged before the response is, so once the
/// response's line has arrived the reason's must have too.
fn assert_link_refused(server: &ServerProcess, link: &str, reason: &str) {
    const DENIED: &str = "response: Access denied (status 4)";
    let denied_before = server.count_in_log(DENIED);
    let request = raw_request(1, 1, link.len() as u16, link.as_bytes());
    assert_eq!(status_for(server, &request), 4, "{link}");
    assert!(server.wait_for_log_count(DENIED, denied_before + 1, PATIENCE));
    assert!(
        server.log_text().contains(&format!("{link}: {reason}")),
        "{}",
        server.log_text()
    );
}

fn links_out_of_the_directory_are_refused(model: Model) {
    let fixture = directory_with_links();
    let server = ServerProcess::start(model, fixture.path());
    // Where openat2 works, a link that stays inside is followed; qemu's
    // user-mode emulation has no openat2, and then no link is followed.
    let followed = openat2_works_here();
    let reason = if followed {
        LINK_OUT
    } else {
        LINK_NOT_FOLLOWED
    };

    for link in ["absolute", "relative"] {
        assert_link_refused(&server, link, reason);
    }
    let alias = status_for_ok_or_error(&server, b"alias.txt");
    assert_eq!(alias, if followed { 0 } else { 4 }, "{}", server.log_text());
    assert_eq!(
        server.log_text().contains(NO_OPENAT2),
        !followed,
        "the server finds openat2 where the tests find it: {}",
        server.log_text()
    );
    if !followed {
        skip(
            "links_out_of_the_directory_are_refused",
            "no openat2 here: a link inside the directory is not followed",
        );
    }
}

fn without_openat2_no_link_is_followed(model: Model) {
    let fixture = directory_with_links();
    let mut command = server_command(model, fixture.path(), &[]);
    if !deny(&mut command, Denied::Openat2) {
        skip(
            "without_openat2_no_link_is_followed",
            "no seccomp filter under an emulator (which has no openat2 anyway)",
        );
        return;
    }
    let server = ServerProcess::spawn(command);
    assert!(
        server.wait_for_log(NO_OPENAT2, PATIENCE),
        "{}",
        server.log_text()
    );
    for link in ["alias.txt", "absolute", "relative"] {
        assert_link_refused(&server, link, LINK_NOT_FOLLOWED);
    }
    server.fetch_expecting("inside.txt", b"fine");
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

fn only_regular_files_are_served(model: Model) {
    let fixture = Fixture::new();
    std::fs::create_dir(fixture.path().join("subdir")).expect("mkdir");
    nix::unistd::mkfifo(&fixture.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU)
        .expect("mkfifo");
    let _socket = std::os::unix::net::UnixListener::bind(fixture.path().join("socket"))
        .expect("bind a socket in the directory");
    let devices = running_as_root();
    if devices {
        // Major 1, minor 3: the null device, which reads as empty.
        nix::sys::stat::mknod(
            &fixture.path().join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .expect("mknod");
    } else {
        skip(
            "only_regular_files_are_served",
            "device nodes need root: a character device is not tried",
        );
    }
    let server = ServerProcess::start(model, fixture.path());

    let started = Instant::now();
    let mut kinds = vec![
        (&b"subdir"[..], "a directory"),
        (b"pipe", "a FIFO"),
        (b"socket", "a socket or an absent device"),
    ];
    if devices {
        kinds.push((b"null", "a character device"));
    }
    for (name, kind) in kinds {
        let status = status_for(&server, &raw_request(1, 1, name.len() as u16, name));
        assert_eq!(status, 3, "{kind}");
        let line = format!("not a regular file ({kind})");
        assert!(
            server.wait_for_log(&line, PATIENCE),
            "{}",
            server.log_text()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered promptly"
    );
}

/// A new pseudo-terminal: its master side, which hangs the terminal up when
/// closed, and the path of its terminal side, such as `/dev/pts/3`. `None`
/// where this system has no pseudo-terminals.
fn pseudo_terminal() -> Option<(std::fs::File, std::path::PathBuf)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .ok()?;
    let mut path = [0 as libc::c_char; 64];
    // SAFETY: the descriptor is open; ptsname_r writes at most the buffer's
    // length, NUL included.
    unsafe {
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), path.as_mut_ptr(), path.len()),
            0,
            "ptsname_r"
        );
    }
    // SAFETY: ptsname_r succeeded, so the buffer holds a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(path.as_ptr()) };
    let path = path.to_str().expect("a /dev/pts path").into();
    Some((master, path))
}

/// A server that leads its session (under systemd, as PID 1 in a container)
/// and opens a terminal without O_NOCTTY makes it its controlling terminal,
/// and dies of SIGHUP when that terminal hangs up. Here the server serves
/// /dev/pts and is asked for a terminal by its number. Only the iterative
/// server opens files in the process that leads the session; the others open
/// them in their children.
#[test]
fn a_terminal_asked_for_does_not_become_the_servers() {
    let Some((master, terminal)) = pseudo_terminal() else {
        skip(
            "a_terminal_asked_for_does_not_become_the_servers",
            "no pseudo-terminals here (/dev/ptmx)",
        );
        return;
    };
    let folder = terminal.parent().expect("/dev/pts");
    let name = terminal.file_name().expect("a number").as_bytes();
    let server = ServerProcess::spawn_session_leader(server_command(Model::Iterative, folder, &[]));

    let status = status_for(&server, &raw_request(1, 1, name.len() as u16, name));
    assert_eq!(status, 3, "{}", server.log_text());
    assert!(
        server.wait_for_log("not a regular file (a character device)", PATIENCE),
        "{}",
        server.log_text()
    );
    assert_eq!(
        controlling_terminal(server.pid),
        0,
        "the server has no terminal"
    );
    drop(master);
    assert_eq!(status_for(&server, &raw_request(2, 1, 1, b"a")), 1);
    assert!(
        process_exists(server.pid),
        "the hang-up did not end the server"
    );
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
    let workers = if let Some(workers) = model.workers() {
        assert!(wait_until(PATIENCE, || server.children().len() == workers as usize));
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
    // The processes that live on: the server, and a preforked server's
    // workers; each must hold what it held before.
    let long_lived = match model.workers() {
        Some(workers) => {
            assert!(wait_until(PATIENCE, || server.children().len() == workers as usize));
            server.processes()
        }
        None => vec![server.pid],
    };
    // Exchanges first, so that everything each process opens once is open.
    for _ in 0..long_lived.len() * 4 {
        assert_eq!(status_for_ok_or_error(&server, b"a.txt"), 0);
    }
    assert!(server.wait_for_log_count("closed connection", long_lived.len() * 4, PATIENCE));
    let settled = || wait_until(PATIENCE, || server.zombies().is_empty());
    assert!(settled(), "zombies remain: {:?}", server.zombies());
    let fds_before: Vec<usize> = long_lived.iter().map(|&pid| open_fds(pid)).collect();

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
    let exchanges = 200 + long_lived.len() * 4;
    assert!(server.wait_for_log_count("closed connection", exchanges, PATIENCE));
    assert!(settled(), "zombies remain: {:?}", server.zombies());
    let fds_after = || {
        long_lived
            .iter()
            .map(|&pid| open_fds(pid))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(PATIENCE, || fds_after() == fds_before),
        "descriptors of {long_lived:?}: {fds_before:?} before, {:?} after",
        fds_after()
    );
    assert_eq!(server.processes(), long_lived, "the same processes serve");
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

fn stop_ends_a_stalled_transfer_at_the_grace_period(model: Model) {
    // A grace period as long as the timing tests' timeout, with their slack.
    let (grace, slack) = timeout_and_slack();
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 16 * 1024 * 1024);
    let seconds = timeout_option(grace);
    let mut server = ServerProcess::start_with(model, fixture.path(), &["--grace", &seconds]);
    // The client reads its first bytes and then nothing more: the transfer
    // stalls, with most of the file unsent.
    let (_peer, _first) = begin_slow_transfer(&server, "big.bin", content.len());
    let serving = server.children();

    server.signal(Signal::SIGTERM);
    let sent = Instant::now();
    let status = server.wait_exit(PATIENCE).expect("the server exits");
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    assert_took(
        "stopping with a stalled transfer",
        sent.elapsed(),
        grace,
        slack,
    );
    assert!(
        server
            .log_text()
            .contains("grace period over: connection ended"),
        "{}",
        server.log_text()
    );
    assert_all_exit(&serving);
}

/// Serves a sparse file over 4 GiB on paper, with its last bytes known:
/// offsets past 2 and 4 GiB are where 32-bit file offsets and sizes break.
fn start_with_a_huge_file(model: Model, tail: &[u8]) -> (Fixture, ServerProcess, u64) {
    use std::os::unix::fs::FileExt;
    let fixture = Fixture::new();
    let size: u64 = (4 << 30) + 4097;
    let file = std::fs::File::create(fixture.path().join("huge.bin")).expect("create");
    file.set_len(size).expect("make it sparse");
    file.write_all_at(tail, size - tail.len() as u64)
        .expect("write the tail");
    drop(file);
    let server = ServerProcess::start(model, fixture.path());
    (fixture, server, size)
}

fn files_over_4_gib_are_offered_with_their_size(model: Model) {
    let (_fixture, server, size) = start_with_a_huge_file(model, b"end");
    let mut peer = RawPeer::connect(&server);
    peer.request("huge.bin");
    let response = peer.response();
    assert_eq!(
        response.status.known(),
        Some(Status::Ok),
        "{}",
        server.log_text()
    );
    assert_eq!(response.file_size, size);
    peer.send(&ClientReply::RefuseToReceive.encode());
    assert!(peer.read_to_end().is_empty());
}

/// One model is enough to move every byte: the send loop is the same for
/// the three, and over 4 GiB it is the slowest test.
#[test]
fn a_file_over_4_gib_arrives_whole() {
    let tail = b"the very end";
    let (_fixture, server, size) = start_with_a_huge_file(Model::Iterative, tail);
    let mut peer = RawPeer::connect(&server);
    peer.request("huge.bin");
    assert_eq!(peer.response().file_size, size);
    peer.send(&ClientReply::ReadyToReceive.encode());
    let mut received: u64 = 0;
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut last = Vec::new();
    loop {
        let n = peer.stream.read(&mut chunk).expect("read the content");
        if n == 0 {
            break;
        }
        received += n as u64;
        if n >= tail.len() {
            last.clear();
        }
        last.extend_from_slice(&chunk[..n]);
        let surplus = last.len().saturating_sub(tail.len());
        last.drain(..surplus);
    }
    assert_eq!(received, size, "every byte arrives, and no more");
    assert_eq!(last, tail, "the bytes past 4 GiB are the file's");
}

/// Lines a routine run must not log: warnings and errors.
fn alarms(server: &ServerProcess) -> Vec<String> {
    server
        .log_lines()
        .into_iter()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

fn health_probes_and_a_normal_stop_log_no_warning(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let mut server = ServerProcess::start(model, fixture.path());
    if let Some(workers) = model.workers() {
        assert!(server.wait_for_log_count(" started", workers as usize, PATIENCE));
    }
    // What the images' HEALTHCHECK runs, a few times over.
    for round in 1..=3 {
        let probe = command("tcpfile-client")
            .args(["--probe", "-q", "--timeout", "3", "127.0.0.1"])
            .arg(server.port().to_string())
            .args(["healthcheck", "0"])
            .output()
            .expect("run the probe");
        assert!(probe.status.success(), "{}", stderr_of(&probe));
        assert!(server.wait_for_log_count("closed connection", round, PATIENCE));
    }
    server.fetch_expecting("a.txt", b"hello");
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(PATIENCE).expect("the server exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        server
            .log_text()
            .contains("healthcheck: No such file or directory")
    );
    // Without openat2 (qemu user mode) the server warns once at start: that
    // is about the machine, not about probes or stops.
    let unexpected: Vec<String> = alarms(&server)
        .into_iter()
        .filter(|line| !line.contains("openat2 is not available"))
        .collect();
    assert_eq!(unexpected, Vec::<String>::new(), "{}", server.log_text());
}

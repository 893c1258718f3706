//! The client against real servers and against scripted misbehaving ones:
//! its arguments, its messages, its exit codes, and that a failed transfer
//! never leaves a file behind.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use tcpfile::protocol::{FileResponse, StatusCode};

/// A one-connection server that reads the request, sends `response`, and,
/// when the client is ready, `content`; then closes, or stalls if asked.
fn scripted_server(response: [u8; 16], content: Vec<u8>, stall: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut request = [0u8; 260];
        if stream.read_exact(&mut request).is_err() {
            return;
        }
        let _ = stream.write_all(&response);
        let mut reply = [0u8; 1];
        if stream.read_exact(&mut reply).is_ok() && reply[0] == 3 {
            let _ = stream.write_all(&content);
        }
        if stall {
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    port
}

fn fetch_from(port: u16, out: &Path, extra: &[&str]) -> Output {
    run_client(port, "file.bin", "1M", &out.join("file.bin"), extra)
}

fn assert_no_file(out: &Path) {
    let left: Vec<_> = std::fs::read_dir(out)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn short_transfer_is_reported_and_leaves_no_file() {
    let out = tempfile::tempdir().expect("temp dir");
    let short = || scripted_server(FileResponse::ok(1000).encode(), vec![7; 600], false);
    let assert_reported = |output: &Output| {
        assert_eq!(output.status.code(), Some(5), "{}", stderr_of(output));
        assert!(
            stderr_of(output).contains("closed the connection after 600 of 1000 bytes"),
            "{}",
            stderr_of(output)
        );
    };
    let output = fetch_from(short(), out.path(), &[]);
    assert_reported(&output);
    assert_no_file(out.path());

    // Where files cannot be anonymous, the named staging file goes too.
    let mut named = client_command(short(), "file.bin", "1M", &out.path().join("file.bin"), &[]);
    if !deny(&mut named, Denied::AnonymousTempFiles) {
        skip(
            "short_transfer_is_reported_and_leaves_no_file",
            "no seccomp filter under an emulator: the named staging file is not tested",
        );
        return;
    }
    assert_reported(&named.output().expect("run the client"));
    assert_no_file(out.path());
}

#[test]
fn extra_bytes_are_a_protocol_violation() {
    let out = tempfile::tempdir().expect("temp dir");
    let port = scripted_server(FileResponse::ok(10).encode(), vec![7; 11], false);
    let output = fetch_from(port, out.path(), &[]);
    assert_eq!(output.status.code(), Some(5));
    assert!(
        stderr_of(&output).contains("more than the 10 bytes"),
        "{}",
        stderr_of(&output)
    );
    assert_no_file(out.path());
}

#[test]
fn stalled_server_times_out_and_keeps_the_old_file() {
    let out = tempfile::tempdir().expect("temp dir");
    std::fs::write(out.path().join("file.bin"), b"old").expect("write");
    let port = scripted_server(FileResponse::ok(1000).encode(), vec![7; 10], true);
    let started = Instant::now();
    let output = fetch_from(port, out.path(), &["--timeout", "1"]);
    assert_eq!(output.status.code(), Some(5));
    assert!(
        stderr_of(&output).contains("timed out"),
        "{}",
        stderr_of(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        std::fs::read(out.path().join("file.bin")).expect("read"),
        b"old"
    );
    assert_eq!(std::fs::read_dir(out.path()).expect("list").count(), 1);
}

#[test]
fn wrong_message_type_is_a_protocol_violation() {
    let out = tempfile::tempdir().expect("temp dir");
    let mut response = FileResponse::ok(3);
    response.message_type = 1;
    let port = scripted_server(response.encode(), b"abc".to_vec(), false);
    let output = fetch_from(port, out.path(), &[]);
    assert_eq!(output.status.code(), Some(5));
    assert!(stderr_of(&output).contains("message type 1 is not FILE_RESPONSE"));
    assert_no_file(out.path());
}

#[test]
fn unknown_status_is_shown_by_its_code() {
    let out = tempfile::tempdir().expect("temp dir");
    let mut response = FileResponse::ok(0);
    response.status = StatusCode(42);
    let port = scripted_server(response.encode(), Vec::new(), false);
    let output = fetch_from(port, out.path(), &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr_of(&output).contains("unknown error (code 42)"),
        "{}",
        stderr_of(&output)
    );
    assert_no_file(out.path());
}

#[test]
fn internal_error_is_named() {
    let out = tempfile::tempdir().expect("temp dir");
    let port = scripted_server(
        FileResponse::error(tcpfile::protocol::Status::InternalError).encode(),
        Vec::new(),
        false,
    );
    let output = fetch_from(port, out.path(), &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr_of(&output).contains("Internal server error (status 5)"));
}

#[test]
fn nobody_listening_is_a_connect_failure() {
    let out = tempfile::tempdir().expect("temp dir");
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let output = fetch_from(port, out.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("cannot connect to 127.0.0.1"),
        "{}",
        stderr_of(&output)
    );
    assert_no_file(out.path());
}

#[test]
fn invalid_names_are_refused_before_connecting() {
    let out = tempfile::tempdir().expect("temp dir");
    // Port 1 has no server: a connection attempt would fail with code 2.
    let long = "a".repeat(256);
    for (name, complaint) in [
        ("a/b", "'/' at byte 1"),
        ("..", "\".\" or \"..\""),
        ("tab\there", "non-printable byte 0x09"),
        (long.as_str(), "256 bytes long"),
    ] {
        let output = run_client(1, name, "1M", &out.path().join("x"), &[]);
        assert_eq!(output.status.code(), Some(1), "{name:?}");
        assert!(
            stderr_of(&output).contains(complaint),
            "{name:?}: {}",
            stderr_of(&output)
        );
        assert!(!stderr_of(&output).contains("connecting"), "{name:?}");
    }
}

#[test]
fn usage_errors_exit_with_the_usage_code() {
    for args in [
        vec!["127.0.0.1", "0", "a", "1M"],
        vec!["127.0.0.1", "70000", "a", "1M"],
        vec!["127.0.0.1", "80", "a", "12Q"],
        vec!["127.0.0.1", "80", "a"],
    ] {
        let output = command("tcpfile-client").args(&args).output().expect("run");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(!stderr_of(&output).is_empty());
    }
    let help = command("tcpfile-client")
        .arg("--help")
        .output()
        .expect("run");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("MAX_SIZE"));
}

#[test]
fn version_names_target_and_commit() {
    for binary in [
        "tcpfile-client",
        "tcpfile-server-iterative",
        "tcpfile-server-parallel",
        "tcpfile-server-preforked",
        "tcpfile-server-evented",
    ] {
        let output = command(binary).arg("--version").output().expect("run");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            text.starts_with(&format!("{binary} {}", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(text.contains("-linux-"), "names the target: {text}");
        assert!(text.contains("commit "), "names the commit: {text}");
    }
}

#[test]
fn host_names_and_ipv6_literals_reach_the_server() {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");
    let by_name = command("tcpfile-client")
        .args(["localhost", &server.port().to_string(), "a.txt", "1K", "-o"])
        .arg(out.path().join("by-name"))
        .output()
        .expect("run");
    assert!(by_name.status.success(), "{}", stderr_of(&by_name));
    assert!(
        stderr_of(&by_name).contains(&format!("connecting to localhost:{}", server.port())),
        "{}",
        stderr_of(&by_name)
    );
    assert_eq!(
        std::fs::read(out.path().join("by-name")).expect("read"),
        b"hello"
    );

    let mut v6 = command("tcpfile-server-iterative");
    v6.args(["::1", "0"]).arg(fixture.path());
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let server6 = ServerProcess::spawn(v6);
        let output = command("tcpfile-client")
            .args(["::1", &server6.port().to_string(), "a.txt", "1K", "-o"])
            .arg(out.path().join("by-v6"))
            .output()
            .expect("run");
        assert!(output.status.success(), "{}", stderr_of(&output));
        assert!(stderr_of(&output).contains("connecting to [::1]:"));
        assert_eq!(
            std::fs::read(out.path().join("by-v6")).expect("read"),
            b"hello"
        );
    } else {
        skip(
            "host_names_and_ipv6_literals_reach_the_server",
            "[::1] cannot be bound here: the IPv6 literal is not tried",
        );
    }
}

#[test]
fn output_defaults_to_the_file_name_in_the_current_directory() {
    let fixture = Fixture::new();
    fixture.add("report.txt", b"numbers");
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let cwd = tempfile::tempdir().expect("temp dir");
    let output = command("tcpfile-client")
        .args([
            "127.0.0.1",
            &server.port().to_string(),
            "report.txt",
            "104857600",
        ])
        .current_dir(cwd.path())
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        std::fs::read(cwd.path().join("report.txt")).expect("read"),
        b"numbers"
    );
}

#[test]
fn output_may_be_a_bare_name_in_the_current_directory() {
    let fixture = Fixture::new();
    fixture.add("report.txt", b"numbers");
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let cwd = tempfile::tempdir().expect("temp dir");
    let output = client_command(
        server.port(),
        "report.txt",
        "1K",
        Path::new("copy.txt"),
        &[],
    )
    .current_dir(cwd.path())
    .output()
    .expect("run");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        std::fs::read(cwd.path().join("copy.txt")).expect("read"),
        b"numbers"
    );
}

#[test]
fn a_destination_name_too_long_is_refused_before_connecting() {
    let out = tempfile::tempdir().expect("temp dir");
    // Port 1 has no server: a connection attempt would fail with code 2.
    let destination = out.path().join("d".repeat(300));
    let output = run_client(1, "a.txt", "1M", &destination, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    // glibc and musl word ENAMETOOLONG differently; the number is the same.
    let name_too_long = format!("(os error {})", nix::errno::Errno::ENAMETOOLONG as i32);
    assert!(
        stderr_of(&output).contains(&name_too_long),
        "{}",
        stderr_of(&output)
    );
    assert!(!stderr_of(&output).contains("connecting"));
    assert_no_file(out.path());
}

#[test]
fn client_says_what_it_does_with_bounded_progress() {
    let fixture = Fixture::new();
    fixture.add_random("big.bin", 5 * 1024 * 1024);
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");
    let output = server.fetch("big.bin", "100M", &out.path().join("big.bin"));
    assert!(output.status.success());
    let text = stderr_of(&output);
    for step in [
        format!("connecting to 127.0.0.1:{}", server.port()),
        "connected to".to_string(),
        "sending the file request for \"big.bin\"".to_string(),
        "received header: protocol version 1, message type 2, status 0, file size 5242880"
            .to_string(),
        "receiving 5242880 bytes".to_string(),
        "transfer complete: 5242880 bytes in".to_string(),
    ] {
        assert!(text.contains(&step), "missing {step:?} in:\n{text}");
    }
    // "received N of 5242880 bytes (P%)", at most one per tenth.
    let progress: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("received ")?;
            let (got, rest) = rest.split_once(" of 5242880 bytes (")?;
            let percent = rest.strip_suffix("%)")?;
            Some((got.parse().ok()?, percent.parse().ok()?))
        })
        .collect();
    assert!(
        (1..=10).contains(&progress.len()),
        "{progress:?} in:\n{text}"
    );
    for pair in progress.windows(2) {
        assert!(
            pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1,
            "{progress:?}"
        );
    }
    for (got, percent) in &progress {
        assert_eq!(got * 100 / 5_242_880 / 10 * 10, *percent, "{progress:?}");
    }

    let quiet = run_client(
        server.port(),
        "big.bin",
        "100M",
        &out.path().join("q"),
        &["-q"],
    );
    assert!(quiet.status.success());
    assert!(quiet.stderr.is_empty(), "{}", stderr_of(&quiet));
}

#[test]
fn wait_retries_until_the_server_answers() {
    let fixture = Fixture::new();
    fixture.add("late.txt", b"worth the wait");
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let out = tempfile::tempdir().expect("temp dir");
    let client = client_command(
        port,
        "late.txt",
        "1K",
        &out.path().join("late.txt"),
        &["--wait", "20"],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start client");
    std::thread::sleep(Duration::from_millis(500));
    let mut server = command("tcpfile-server-iterative");
    server
        .args(["127.0.0.1", &port.to_string()])
        .arg(fixture.path());
    let _server = ServerProcess::spawn(server);
    let output = client.wait_with_output().expect("client");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("does not answer yet"));
    assert_eq!(
        std::fs::read(out.path().join("late.txt")).expect("read"),
        b"worth the wait"
    );
}

/// A name that does not resolve yet, such as a Swarm service's until its
/// first replica is healthy, is looked up again for the whole `--wait`; then
/// the client gives up with exit 2 and says that the name did not resolve.
/// `.invalid` never resolves (RFC 6761).
#[test]
fn wait_retries_a_name_that_does_not_resolve() {
    const NAME: &str = "tcpfile-no-such-host.invalid";
    let out = tempfile::tempdir().expect("temp dir");
    let fetch = |wait: &str| {
        let started = Instant::now();
        let output = command("tcpfile-client")
            .args([NAME, "7070", "file.bin", "1M", "--wait", wait, "-o"])
            .arg(out.path().join("file.bin"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the client");
        (output, started.elapsed())
    };
    let unresolved = format!("cannot resolve {NAME}");

    // One lookup and no retry: how long this machine's resolver takes to
    // say no, which the retries below may overrun by.
    let (once, lookup) = fetch("0");
    if once.status.code() != Some(2) || !stderr_of(&once).contains(&unresolved) {
        skip(
            "wait_retries_a_name_that_does_not_resolve",
            &format!(
                "the resolver here does not reject {NAME}: {}",
                stderr_of(&once).trim()
            ),
        );
        return;
    }

    let wait = Duration::from_secs(2);
    let (output, took) = fetch("2");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("does not answer yet ({unresolved}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: cannot connect to {NAME}:7070: {unresolved}"
        )),
        "{stderr}"
    );
    let (_, slack) = timeout_and_slack();
    assert_took("giving up on a name", took, wait, lookup + slack);
    assert_no_file(out.path());
}

#[test]
fn probe_checks_the_protocol_without_writing() {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let cwd = tempfile::tempdir().expect("temp dir");
    for name in ["a.txt", "missing"] {
        let output = command("tcpfile-client")
            .args([
                "127.0.0.1",
                &server.port().to_string(),
                name,
                "0",
                "--probe",
            ])
            .current_dir(cwd.path())
            .output()
            .expect("run");
        assert!(output.status.success(), "{}", stderr_of(&output));
        assert!(stderr_of(&output).contains("the server answers"));
    }
    assert_no_file(cwd.path());

    let silent = scripted_server([0; 16], Vec::new(), false);
    let output = command("tcpfile-client")
        .args(["127.0.0.1", &silent.to_string(), "a.txt", "0", "--probe"])
        .current_dir(cwd.path())
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(5),
        "a zeroed header is not a response"
    );
}

/// The staging files in `dir`: what a fetch writes before the file is whole,
/// on file systems without anonymous temporary files.
fn staging_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(".tcpfile-") && name.ends_with(".part"))
        .collect()
}

#[test]
fn the_longest_names_are_saved_with_and_without_anonymous_staging() {
    let fixture = Fixture::new();
    let name = "n".repeat(255);
    fixture.add(&name, b"a long name");
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");

    let anonymous = server.fetch(&name, "1K", &out.path().join(&name));
    assert!(anonymous.status.success(), "{}", stderr_of(&anonymous));
    std::fs::remove_file(out.path().join(&name)).expect("remove");

    let mut named = client_command(server.port(), &name, "1K", &out.path().join(&name), &[]);
    if !deny(&mut named, Denied::AnonymousTempFiles) {
        skip(
            "the_longest_names_are_saved_with_and_without_anonymous_staging",
            "no seccomp filter under an emulator: the named staging file is not tested",
        );
        return;
    }
    let output = named.output().expect("run the client");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        std::fs::read(out.path().join(&name)).expect("read"),
        b"a long name"
    );
    assert_eq!(std::fs::read_dir(out.path()).expect("list").count(), 1);
}

/// Starts the real client on `name` through a relay that holds the transfer
/// after its first MiB, writing into `out` with named staging files, and
/// returns it mid-transfer, with its staging file visible. `None` where
/// named staging cannot be forced.
fn client_held_mid_transfer(relay: &Relay, name: &str, out: &Path) -> Option<std::process::Child> {
    let mut command = client_command(relay.port(), name, "100M", &out.join(name), &[]);
    if !deny(&mut command, Denied::AnonymousTempFiles) {
        return None;
    }
    let client = command
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the client");
    assert!(relay.wait_holding(PATIENCE), "the transfer never started");
    assert_eq!(
        staging_files(out).len(),
        1,
        "the fetch stages into a named file"
    );
    Some(client)
}

#[test]
fn stop_signals_remove_the_named_staging_file() {
    let fixture = Fixture::new();
    fixture.add_random("big.bin", 8 * 1024 * 1024);
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let out = tempfile::tempdir().expect("temp dir");
        std::fs::write(out.path().join("big.bin"), b"the old version").expect("write");
        let relay = Relay::start(server.addr, 1024 * 1024);
        let Some(mut client) = client_held_mid_transfer(&relay, "big.bin", out.path()) else {
            skip(
                "stop_signals_remove_the_named_staging_file",
                "no seccomp filter under an emulator",
            );
            return;
        };
        signal_each(&[client.id() as i32], signal);
        let status = client.wait().expect("wait for the client");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal as i32), "ended by {signal}");
        assert!(
            staging_files(out.path()).is_empty(),
            "{signal} left the staging file"
        );
        assert_eq!(
            std::fs::read(out.path().join("big.bin")).expect("read"),
            b"the old version"
        );
        relay.release();
    }
}

#[test]
fn a_staging_file_left_by_sigkill_is_removed_by_the_next_fetch() {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 8 * 1024 * 1024);
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");
    let relay = Relay::start(server.addr, 1024 * 1024);
    let Some(mut client) = client_held_mid_transfer(&relay, "big.bin", out.path()) else {
        skip(
            "a_staging_file_left_by_sigkill_is_removed_by_the_next_fetch",
            "no seccomp filter under an emulator",
        );
        return;
    };
    client.kill().expect("SIGKILL the client");
    client.wait().expect("reap the client");
    relay.release();
    let left = staging_files(out.path());
    assert_eq!(left.len(), 1, "SIGKILL leaves the staging file: {left:?}");

    // A fetch soon after leaves it: it might still be some live fetch's.
    let next = |name: &str| {
        let mut command = client_command(
            server.port(),
            "big.bin",
            "100M",
            &out.path().join(name),
            &[],
        );
        assert!(deny(&mut command, Denied::AnonymousTempFiles));
        let output = command.output().expect("run the client");
        assert!(output.status.success(), "{}", stderr_of(&output));
        output
    };
    next("first.bin");
    assert_eq!(staging_files(out.path()), left);

    // Once it has not changed for a minute, and nobody holds it, it is gone.
    let then = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(out.path().join(&left[0]))
        .and_then(|file| file.set_modified(then))
        .expect("age the staging file");
    let output = next("second.bin");
    assert!(staging_files(out.path()).is_empty());
    assert!(
        stderr_of(&output).contains("left behind by an interrupted fetch"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(
        std::fs::read(out.path().join("second.bin")).expect("read"),
        content
    );
}

#[test]
fn output_to_stdout_on_a_pipe_streams_the_content() {
    let fixture = Fixture::new();
    let content = fixture.add_random("a.bin", 300_000);
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let output = client_command(server.port(), "a.bin", "1M", Path::new("/dev/stdout"), &[])
        .output()
        .expect("run the client");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        output.stdout == content,
        "stdout carries the file, byte-exact"
    );
}

#[test]
fn devices_are_written_or_refused_and_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let fixture = Fixture::new();
    fixture.add_random("a.bin", 100_000);
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");

    // Refused before connecting: to a port nobody listens on, the client
    // would otherwise fail to connect (exit 2).
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let socket = out.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let refused = run_client(closed_port, "a.bin", "1M", &socket, &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("is a socket"),
        "{}",
        stderr_of(&refused)
    );
    assert!(
        std::fs::metadata(&socket)
            .expect("stat")
            .file_type()
            .is_socket()
    );

    if !running_as_root() {
        skip(
            "devices_are_written_or_refused_and_never_replaced",
            "device nodes need root: the character and block device cases are not tested",
        );
        return;
    }
    let node = |name: &str, kind: nix::sys::stat::SFlag, major: u64, minor: u64| {
        let path = out.path().join(name);
        nix::sys::stat::mknod(
            &path,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .expect("mknod");
        path
    };
    // Major 1, minor 3: the null device.
    let null = node("null", nix::sys::stat::SFlag::S_IFCHR, 1, 3);
    let written = server.fetch("a.bin", "1M", &null);
    assert!(written.status.success(), "{}", stderr_of(&written));
    assert!(
        std::fs::metadata(&null)
            .expect("stat")
            .file_type()
            .is_char_device()
    );

    // Major 7: a loop device; nothing is ever written to a block device.
    let block = node("block", nix::sys::stat::SFlag::S_IFBLK, 7, 200);
    let refused = run_client(closed_port, "a.bin", "1M", &block, &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("is a block device"),
        "{}",
        stderr_of(&refused)
    );
    assert!(
        std::fs::metadata(&block)
            .expect("stat")
            .file_type()
            .is_block_device()
    );
}

#[test]
fn root_gives_what_it_saves_to_the_owner_of_the_folder() {
    use std::os::unix::fs::MetadataExt;
    if !running_as_root() {
        skip(
            "root_gives_what_it_saves_to_the_owner_of_the_folder",
            "only root saves into another user's folder",
        );
        return;
    }
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(Model::Iterative, fixture.path());
    let out = tempfile::tempdir().expect("temp dir");
    let (uid, gid) = (4_000_001, 4_000_002);
    nix::unistd::chown(
        out.path(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .expect("give the folder to another user");

    let output = server.fetch("a.txt", "1K", &out.path().join("a.txt"));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let saved = std::fs::metadata(out.path().join("a.txt")).expect("stat");
    assert_eq!((saved.uid(), saved.gid()), (uid, gid));

    // A folder of root's keeps root's files.
    let own = tempfile::tempdir().expect("temp dir");
    let output = server.fetch("a.txt", "1K", &own.path().join("a.txt"));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let saved = std::fs::metadata(own.path().join("a.txt")).expect("stat");
    assert_eq!((saved.uid(), saved.gid()), (0, 0));
}

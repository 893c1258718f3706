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
    let port = scripted_server(FileResponse::ok(1000).encode(), vec![7; 600], false);
    let output = fetch_from(port, out.path(), &[]);
    assert_eq!(output.status.code(), Some(5));
    assert!(
        stderr_of(&output).contains("closed the connection after 600 of 1000 bytes"),
        "{}",
        stderr_of(&output)
    );
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
    let progress = text
        .lines()
        .filter(|line| line.starts_with("received "))
        .count();
    assert!((1..=10).contains(&progress), "{progress} progress lines");

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

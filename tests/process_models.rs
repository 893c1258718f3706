//! What distinguishes the parallel and preforked models: bounded children,
//! workers that overlap, replacement of dead workers, and the usage rules.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use tcpfile::protocol::ClientReply;

/// A client that asks for `name` and reads it at about 30 MB/s through a
/// fixed receive buffer. With a file several times the largest send buffer
/// (4 MiB by default), the server's side of the transfer stays in flight for
/// a good part of a second.
fn slow_fetch(addr: std::net::SocketAddr, name: &'static str) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut peer = RawPeer::connect_small_window(addr, 256 * 1024);
        peer.request(name);
        let size = peer.response().file_size as usize;
        peer.send(&ClientReply::ReadyToReceive.encode());
        let mut content = Vec::with_capacity(size);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match peer.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => content.extend_from_slice(&chunk[..n]),
                Err(error) => panic!("slow read failed: {error}"),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        content
    })
}

/// Samples the server's children until every handle has finished; returns the
/// most seen at once.
fn sample_children_until_done<T>(
    server: &ServerProcess,
    handles: &[std::thread::JoinHandle<T>],
) -> usize {
    let mut most = 0;
    let deadline = Instant::now() + PATIENCE * 3;
    while handles.iter().any(|handle| !handle.is_finished()) {
        assert!(Instant::now() < deadline, "the transfers never finished");
        let alive = server
            .children()
            .into_iter()
            .filter(|pid| process_exists(*pid))
            .count();
        most = most.max(alive);
        std::thread::sleep(Duration::from_millis(2));
    }
    most
}

#[test]
fn parallel_never_exceeds_max_children() {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 12 * 1024 * 1024);
    let server = ServerProcess::start(Model::Parallel(2), fixture.path());

    let handles: Vec<_> = (0..5).map(|_| slow_fetch(server.addr, "big.bin")).collect();
    let most_children = sample_children_until_done(&server, &handles);
    for handle in handles {
        assert!(
            handle.join().expect("client thread") == content,
            "byte-exact"
        );
    }
    assert!(most_children <= 2, "saw {most_children} children at once");
    assert!(server.wait_for_log_count("transfer complete", 5, PATIENCE));
    let overlap = max_concurrent_transfers(&server.log_lines());
    assert_eq!(overlap, 2, "two transfers in flight at once, never more");
    let waits = server.count_in_log("limit reached (2 children), waiting for a child to exit");
    // One line per wait: a wait ends only when a child exits, at most once
    // per connection.
    assert!(
        (1..=5).contains(&waits),
        "one log line per wait, saw {waits}"
    );
    assert!(server.count_in_log("active children 2/2") >= 1);
}

#[test]
fn parallel_serves_a_burst_beyond_its_limit() {
    let fixture = Fixture::new();
    let content = fixture.add_random("mid.bin", 256 * 1024);
    let server = ServerProcess::start(Model::Parallel(4), fixture.path());
    let port = server.port();
    let out = tempfile::tempdir().expect("temp dir");

    let clients: Vec<_> = (0..64)
        .map(|index| {
            let destination = out.path().join(format!("copy-{index}"));
            client_command(port, "mid.bin", "1M", &destination, &["-q"])
                .spawn()
                .expect("start client")
        })
        .collect();
    for mut client in clients {
        assert!(client.wait().expect("client").success());
    }
    for index in 0..64 {
        let copy = std::fs::read(out.path().join(format!("copy-{index}"))).expect("copy");
        assert!(copy == content, "copy {index} differs");
    }
    assert!(server.wait_for_log_count("transfer complete", 64, PATIENCE));
    assert!(wait_until(PATIENCE, || server.children().is_empty()));
}

#[test]
fn parallel_children_log_with_their_own_pid() {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(Model::Parallel(2), fixture.path());
    let out = tempfile::tempdir().expect("temp dir");
    assert!(
        server
            .fetch("a.txt", "1K", &out.path().join("a.txt"))
            .status
            .success()
    );
    assert!(server.wait_for_log("exited with status 0", PATIENCE));

    let lines = server.log_lines();
    let line_with = |needle: &str| {
        lines
            .iter()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log"))
            .clone()
    };
    let accepted = line_with("accepted connection from");
    let transfer = line_with("transfer complete");
    assert_eq!(log_pid(&accepted), Some(server.pid), "the parent accepts");
    let child = log_pid(&transfer).expect("a PID on every line");
    assert_ne!(child, server.pid, "the child serves");
    assert!(line_with("created for").contains(&format!("child {child} created")));
    assert_eq!(
        server.count_in_log("accepted connection from"),
        1,
        "no double logging"
    );
}

#[test]
fn preforked_workers_serve_at_the_same_time() {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 12 * 1024 * 1024);
    let server = ServerProcess::start(Model::Preforked(3), fixture.path());
    assert!(wait_until(PATIENCE, || server.children().len() == 3));
    assert!(server.wait_for_log_count("started", 3, PATIENCE));

    let handles: Vec<_> = (0..3).map(|_| slow_fetch(server.addr, "big.bin")).collect();
    for handle in handles {
        assert!(
            handle.join().expect("client thread") == content,
            "byte-exact"
        );
    }
    assert!(server.wait_for_log_count("transfer complete", 3, PATIENCE));
    assert_eq!(max_concurrent_transfers(&server.log_lines()), 3);
    assert_eq!(server.children().len(), 3, "the pool is unchanged");
}

#[test]
fn preforked_replaces_a_killed_worker() {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(Model::Preforked(3), fixture.path());
    assert!(wait_until(PATIENCE, || server.children().len() == 3));
    let before = server.children();
    // A worker that has served for a while dies like any crash.
    std::thread::sleep(Duration::from_millis(1100));
    let victim = before[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).expect("kill");

    assert!(server.wait_for_log(&format!("replacing worker {victim}"), PATIENCE));
    assert!(wait_until(PATIENCE, || {
        let now = server.children();
        now.len() == 3 && !now.contains(&victim)
    }));
    assert!(
        server
            .log_text()
            .contains(&format!("worker {victim} was killed by SIGKILL"))
    );
    let out = tempfile::tempdir().expect("temp dir");
    for round in 0..6 {
        let destination = out.path().join(format!("a-{round}"));
        assert!(server.fetch("a.txt", "1K", &destination).status.success());
    }
}

#[test]
fn preforked_gives_up_when_every_worker_dies_at_once() {
    let fixture = Fixture::new();
    let mut server = ServerProcess::start(Model::Preforked(2), fixture.path());
    let started = Instant::now();
    let status = loop {
        for pid in server.children() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(status) = server.wait_exit(Duration::from_millis(5)) {
            break status;
        }
        assert!(
            started.elapsed() < PATIENCE * 2,
            "the server kept replacing workers"
        );
    };
    assert_eq!(status.code(), Some(1));
    assert!(
        server
            .log_text()
            .contains("died within 1 s of their start; giving up")
    );
    // The rate limit spaces replacements out instead of forking in a loop.
    let replacements = server.count_in_log("replacing worker");
    assert!(replacements < 12, "{replacements} replacements");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "replacements were spaced out"
    );
}

#[test]
fn process_counts_must_be_positive_numbers() {
    let fixture = Fixture::new();
    for (binary, count) in [
        ("tcpfile-server-parallel", "0"),
        ("tcpfile-server-parallel", "many"),
        ("tcpfile-server-preforked", "0"),
        ("tcpfile-server-preforked", "-3"),
    ] {
        let output = command(binary)
            .args(["127.0.0.1", "0"])
            .arg(fixture.path())
            .arg(count)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{binary} {count}");
        assert!(
            output.stdout.is_empty(),
            "nothing bound for {binary} {count}"
        );
    }
}

#[test]
fn missing_directory_fails_before_binding() {
    let fixture = Fixture::new();
    let file = fixture.add("plain", b"not a directory");
    for dir in [fixture.path().join("absent"), file] {
        for (binary, count) in [
            ("tcpfile-server-iterative", None),
            ("tcpfile-server-parallel", Some("2")),
            ("tcpfile-server-preforked", Some("2")),
        ] {
            let output = command(binary)
                .args(["127.0.0.1", "0"])
                .arg(&dir)
                .args(count)
                .output()
                .expect("run");
            assert_eq!(output.status.code(), Some(1), "{binary} {}", dir.display());
            assert!(output.stdout.is_empty(), "no address line");
            let stderr = stderr_of(&output);
            assert!(
                stderr.contains("cannot serve that directory"),
                "{binary}: {stderr}"
            );
        }
    }
}

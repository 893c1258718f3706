//! What distinguishes the models with several processes: the parallel one's
//! bounded children; the preforked and evented ones' pools of workers, which
//! overlap, are replaced when they die and never outlive their parent; and
//! the usage rules of all of them.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use tcpfile::protocol::ClientReply;

/// Makes a test of each listed function for each model with a pool of
/// workers forked at start: `preforked::name` and `evented::name`.
macro_rules! for_each_pool {
    ($($test:ident),* $(,)?) => {
        mod preforked {
            $( #[test] fn $test() { super::$test(super::Model::Preforked(3)) } )*
        }
        mod evented {
            $( #[test] fn $test() { super::$test(super::Model::Evented(3)) } )*
        }
    };
}

for_each_pool!(
    workers_serve_at_the_same_time,
    a_killed_worker_is_replaced,
    gives_up_when_every_worker_dies_at_once,
    killed_parent_leaves_nothing_behind,
    sigterm_to_one_worker_stops_only_that_worker,
);

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

fn workers_serve_at_the_same_time(model: Model) {
    let fixture = Fixture::new();
    let content = fixture.add_random("big.bin", 12 * 1024 * 1024);
    let server = ServerProcess::start(model, fixture.path());
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

fn a_killed_worker_is_replaced(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(model, fixture.path());
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

fn gives_up_when_every_worker_dies_at_once(model: Model) {
    let fixture = Fixture::new();
    let mut server = ServerProcess::start(model, fixture.path());
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
    // Without the back-off it would give up within milliseconds; with it,
    // at least one replacement waits the longest delay, a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "replacements were spaced out: gave up after {:?}",
        started.elapsed()
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
        ("tcpfile-server-evented", "0"),
        ("tcpfile-server-evented", "many"),
    ] {
        let output = output_promptly(
            command(binary)
                .args(["127.0.0.1", "0"])
                .arg(fixture.path())
                .arg(count),
        );
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
    for (dir, why) in [
        (fixture.path().join("absent"), "No such file or directory"),
        (file, "plain is not a directory"),
    ] {
        for (binary, count) in [
            ("tcpfile-server-iterative", None),
            ("tcpfile-server-parallel", Some("2")),
            ("tcpfile-server-preforked", Some("2")),
            ("tcpfile-server-evented", Some("2")),
        ] {
            let output = output_promptly(
                command(binary)
                    .args(["127.0.0.1", "0"])
                    .arg(&dir)
                    .args(count),
            );
            assert_eq!(output.status.code(), Some(1), "{binary} {}", dir.display());
            assert!(output.stdout.is_empty(), "no address line");
            let stderr = stderr_of(&output);
            assert!(
                stderr.contains("cannot serve that directory") && stderr.contains(why),
                "{binary}: {stderr}"
            );
        }
    }
}

/// A connection that asked for `name`, said it is ready, read a little and
/// then stopped reading, through a small receive window: the transfer stalls
/// in the middle, holding its serving process.
fn stalled_transfer(addr: std::net::SocketAddr, name: &str) -> RawPeer {
    let mut peer = RawPeer::connect_small_window(addr, 8192);
    peer.request(name);
    assert!(peer.response().file_size > 0);
    peer.send(&ClientReply::ReadyToReceive.encode());
    let mut first = [0u8; 4096];
    peer.stream.read_exact(&mut first).expect("first bytes");
    peer
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The parent killed by SIGKILL cannot stop its children: they must notice
/// its death themselves, let transfers finish within `--grace`, and go,
/// giving the port back.
fn killed_parent_leaves_nothing_behind(model: Model) {
    let fixture = Fixture::new();
    fixture.add_random("big.bin", 16 * 1024 * 1024);
    let mut server = ServerProcess::start_with(model, fixture.path(), &["--grace", "1"]);
    let _stalled = stalled_transfer(server.addr, "big.bin");
    assert!(wait_until(PATIENCE, || !server.children().is_empty()));
    if let Some(workers) = model.workers() {
        assert!(wait_until(PATIENCE, || server.children().len() == workers as usize));
    }
    let children = server.children();

    let killed = Instant::now();
    server.signal(Signal::SIGKILL);
    server.wait_exit(PATIENCE).expect("the parent dies");
    let within = Duration::from_secs(if under_emulation() { 4 } else { 2 });
    let gone = wait_until(within.saturating_sub(killed.elapsed()), || {
        children.iter().all(|&pid| !process_exists(pid))
    });
    let left: Vec<i32> = children
        .iter()
        .copied()
        .filter(|&pid| process_exists(pid))
        .collect();
    assert!(
        gone,
        "children {left:?} outlived their parent by {within:?}"
    );
    assert!(
        wait_until(
            within.saturating_sub(killed.elapsed()) + Duration::from_millis(200),
            || { port_is_free(server.port()) }
        ),
        "port {} is still taken after the parent's death",
        server.port()
    );
}

#[test]
fn killed_parallel_server_leaves_nothing_behind() {
    killed_parent_leaves_nothing_behind(Model::Parallel(4));
}

fn sigterm_to_one_worker_stops_only_that_worker(model: Model) {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let server = ServerProcess::start(model, fixture.path());
    assert!(wait_until(PATIENCE, || server.children().len() == 3));
    let before = server.children();
    let victim = before[0];

    signal_each(&[victim], Signal::SIGTERM);
    assert!(
        server.wait_for_log(&format!("replacing worker {victim}"), PATIENCE),
        "the worker is replaced: {}",
        server.log_text()
    );
    assert!(wait_until(PATIENCE, || {
        let now = server.children();
        now.len() == 3 && !now.contains(&victim)
    }));
    let now = server.children();
    assert!(
        before[1..].iter().all(|pid| now.contains(pid)),
        "the other workers go on: {before:?} became {now:?}"
    );
    let exit_line = server
        .log_lines()
        .into_iter()
        .find(|line| line.contains(&format!("worker {victim} exited with status 0")))
        .expect("the worker's exit is logged");
    assert!(
        exit_line.contains(" INFO "),
        "a requested stop is no warning: {exit_line}"
    );
    assert_eq!(
        server.count_in_log("SIGTERM received"),
        1,
        "only the worker stopped"
    );

    let out = tempfile::tempdir().expect("temp dir");
    for round in 0..6 {
        let destination = out.path().join(format!("a-{round}"));
        let output = server.fetch("a.txt", "1K", &destination);
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
}

#[test]
fn durations_beyond_a_day_or_nonsense_are_usage_errors() {
    let fixture = Fixture::new();
    for (option, value) in [
        ("--timeout", "1e19"),
        ("--timeout", "86401"),
        ("--timeout", "0"),
        ("--grace", "1e19"),
        ("--grace", "-1"),
        ("--grace", "NaN"),
    ] {
        let output = output_promptly(
            command("tcpfile-server-iterative")
                .args(["127.0.0.1", "0"])
                .arg(fixture.path())
                .arg(format!("{option}={value}")),
        );
        assert_eq!(output.status.code(), Some(2), "{option} {value}");
        assert!(
            output.stdout.is_empty(),
            "nothing bound for {option} {value}"
        );
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{option}")),
            "{stderr}"
        );
    }
    for (option, value) in [
        ("--timeout", "1e19"),
        ("--timeout", "0"),
        ("--wait", "1e19"),
    ] {
        let output = command("tcpfile-client")
            .args(["127.0.0.1", "9", "a.txt", "1K", option, value])
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(1), "client {option} {value}");
        assert!(
            stderr_of(&output).contains(&format!("'{value}'")),
            "{}",
            stderr_of(&output)
        );
    }
}

#[test]
fn evented_workers_serve_past_hundreds_of_idle_connections() {
    let fixture = Fixture::new();
    fixture.add("a.txt", b"hello");
    let timeout = Duration::from_secs(10);
    let seconds = timeout.as_secs().to_string();
    let server =
        ServerProcess::start_with(Model::Evented(2), fixture.path(), &["--timeout", &seconds]);
    // Far more idle connections than workers: each of the other models would
    // make the fetch wait for a timeout per process.
    let idle = connect_all_at_once(server.addr, 300);
    let started = Instant::now();
    server.fetch_expecting("a.txt", b"hello");
    let took = started.elapsed();
    assert!(
        took < timeout / 4,
        "the fetch behind 300 idle connections took {took:?}"
    );
    drop(idle);
}

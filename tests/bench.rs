//! tcpfile-bench against real servers and against peers that break the
//! protocol on purpose, in tcpfile and in HTTP: every response is checked and
//! every failure lands in the right kind. Correctness only; no speed is
//! asserted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use tcpfile::protocol::{FileResponse, REQUEST_LEN};

fn bench(addr: SocketAddr, args: &[&str]) -> Output {
    let output = command("tcpfile-bench")
        .args(["127.0.0.1", &addr.port().to_string()])
        .args(args)
        .arg("--json")
        .output()
        .expect("run tcpfile-bench");
    assert!(
        output.stderr.is_empty(),
        "tcpfile-bench wrote to stderr: {}",
        stderr_of(&output)
    );
    output
}

fn json(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("the report is UTF-8")
}

/// The unsigned integer after `"name": ` in the report.
fn number(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\": ");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a count in {json}"))
}

fn errors(json: &str) -> &str {
    let start = json.find("\"errors\": {").expect("an errors object") + "\"errors\": ".len();
    let end = start + json[start..].find('}').expect("the errors object ends");
    &json[start..=end]
}

#[test]
fn every_model_serves_a_run_with_every_byte_counted() {
    let fixture = Fixture::new();
    fixture.add_random("page.bin", 4096);
    for model in [Model::Iterative, Model::Parallel(4), Model::Preforked(2)] {
        let server = ServerProcess::start(model, fixture.path());
        let output = bench(
            server.addr,
            &["page.bin", "-c", "8", "-n", "300", "--expect-size", "4K"],
        );
        let report = json(&output);
        assert_eq!(output.status.code(), Some(0), "{model:?}: {report}");
        assert_eq!(number(&report, "completed"), 300, "{model:?}: {report}");
        assert_eq!(number(&report, "failed"), 0, "{model:?}: {report}");
        assert_eq!(number(&report, "bytes"), 300 * 4096, "{model:?}: {report}");
        assert_eq!(errors(&report), "{}");
    }
}

#[test]
fn a_list_of_files_is_requested_in_turn_and_each_size_is_learnt() {
    let fixture = Fixture::new();
    fixture.add_random("one.bin", 1000);
    fixture.add_random("two.bin", 3000);
    fixture.add("empty.bin", b"");
    let server = ServerProcess::start(Model::Preforked(2), fixture.path());
    let output = bench(
        server.addr,
        &["one.bin", "two.bin", "empty.bin", "-c", "4", "-n", "90"],
    );
    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(number(&report, "completed"), 90);
    assert_eq!(number(&report, "bytes"), 30 * 1000 + 30 * 3000);
}

#[test]
fn error_statuses_and_wrong_sizes_are_counted_by_kind() {
    let fixture = Fixture::new();
    fixture.add_random("page.bin", 4096);
    let server = ServerProcess::start(Model::Preforked(2), fixture.path());

    let missing = bench(server.addr, &["missing.bin", "-c", "2", "-n", "20"]);
    let report = json(&missing);
    assert_eq!(missing.status.code(), Some(3), "{report}");
    assert_eq!(number(&report, "completed"), 0);
    assert_eq!(errors(&report), r#"{"status_FILE_NOT_FOUND": 20}"#);

    let mismatch = bench(
        server.addr,
        &["page.bin", "-n", "10", "--expect-size", "4095"],
    );
    let report = json(&mismatch);
    assert_eq!(mismatch.status.code(), Some(3), "{report}");
    assert_eq!(errors(&report), r#"{"size_mismatch": 10}"#);
}

/// What a misbehaving peer sends after it has read a request.
enum Answer {
    /// This header, then this content once the reply byte arrives.
    Full(FileResponse, Vec<u8>),
    /// Half a header, then the close.
    HalfHeader,
}

/// How a misbehaving peer answers its n-th request.
type Misbehaviour = fn(usize) -> Answer;

/// A peer that answers each of `connections` requests with
/// `answer(request_number)` and closes.
fn misbehaving_server(
    connections: usize,
    answer: impl Fn(usize) -> Answer + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for number in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; REQUEST_LEN];
            if stream.read_exact(&mut request).is_err() {
                continue;
            }
            match answer(number) {
                Answer::Full(response, content) => {
                    let mut reply = [0u8; 1];
                    if stream.write_all(&response.encode()).is_ok()
                        && stream.read_exact(&mut reply).is_ok()
                    {
                        let _ = stream.write_all(&content);
                    }
                }
                Answer::HalfHeader => {
                    let _ = stream.write_all(&FileResponse::ok(10).encode()[..8]);
                }
            }
        }
    });
    addr
}

#[test]
fn broken_answers_are_counted_by_kind() {
    let cases: [(&str, Misbehaviour); 4] = [
        ("short_content", |_| {
            Answer::Full(FileResponse::ok(100), vec![7; 50])
        }),
        ("extra_content", |_| {
            Answer::Full(FileResponse::ok(10), vec![7; 20])
        }),
        ("protocol", |_| {
            let mut response = FileResponse::ok(10);
            response.message_type = 9;
            Answer::Full(response, vec![7; 10])
        }),
        ("short_response", |_| Answer::HalfHeader),
    ];
    for (kind, answer) in cases {
        let addr = misbehaving_server(5, answer);
        let output = bench(addr, &["any.bin", "-n", "5"]);
        let report = json(&output);
        assert_eq!(output.status.code(), Some(3), "{kind}: {report}");
        assert_eq!(errors(&report), format!("{{\"{kind}\": 5}}"), "{kind}");
    }
}

#[test]
fn a_size_that_changes_between_responses_is_a_mismatch() {
    let addr = misbehaving_server(4, |number| {
        let size = if number == 2 { 11 } else { 10 };
        Answer::Full(FileResponse::ok(size), vec![1; size as usize])
    });
    let output = bench(addr, &["any.bin", "-n", "4"]);
    let report = json(&output);
    assert_eq!(number(&report, "completed"), 3, "{report}");
    assert_eq!(errors(&report), r#"{"size_mismatch": 1}"#);
}

#[test]
fn refused_connections_are_connect_errors() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local address")
    };
    let output = bench(port, &["any.bin", "-c", "3", "-n", "12"]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(errors(&report), r#"{"connect": 12}"#);
}

#[test]
fn a_silent_server_ends_in_timeouts_and_the_time_limit_ends_the_run() {
    // Never accepts: the kernel completes the handshakes and keeps the
    // requests, and no response ever comes. The first four requests time out
    // at 1 s, the four that replace them are still waiting at 1.6 s.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");

    let started = Instant::now();
    let output = bench(
        addr,
        &[
            "any.bin",
            "-c",
            "4",
            "-n",
            "1000000",
            "-d",
            "1.6",
            "--timeout",
            "1",
        ],
    );
    let report = json(&output);
    assert!(started.elapsed() < Duration::from_secs(10), "{report}");
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(number(&report, "completed"), 0);
    assert_eq!(errors(&report), r#"{"timeout": 4}"#, "{report}");
    assert_eq!(number(&report, "abandoned"), 4, "{report}");

    let output = bench(addr, &["any.bin", "-c", "2", "-n", "1000000", "-d", "0.3"]);
    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(number(&report, "abandoned"), 2, "{report}");
    drop(listener);
}

#[test]
fn the_text_report_names_the_rates_and_percentiles() {
    let fixture = Fixture::new();
    fixture.add_random("page.bin", 4096);
    let server = ServerProcess::start(Model::Preforked(2), fixture.path());
    let output = command("tcpfile-bench")
        .args([
            "127.0.0.1",
            &server.port().to_string(),
            "page.bin",
            "-n",
            "20",
        ])
        .output()
        .expect("run tcpfile-bench");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    for needle in [
        "served       20 requests",
        "requests/s",
        "MB/s",
        "p50",
        "p90",
        "p99",
        "max",
        "errors       none",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    let usage = command("tcpfile-bench")
        .args(["127.0.0.1", "1", "a/b"])
        .output()
        .expect("run tcpfile-bench");
    assert_eq!(usage.status.code(), Some(2));
}

/// A hand-made web server that answers each of `connections` requests with
/// `answer(request_number)` and closes. Each request it read, up to its blank
/// line, comes out of the receiver.
fn web_server(
    connections: usize,
    answer: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (requests, received) = mpsc::channel();
    std::thread::spawn(move || {
        for number in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            stream
                .set_read_timeout(Some(PATIENCE))
                .expect("set a read timeout");
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).is_ok() {
                request.push(byte[0]);
            }
            let _ = requests.send(request);
            let _ = stream.write_all(&answer(number));
        }
    });
    (addr, received)
}

fn ok_response(content_length: usize, body_length: usize) -> Vec<u8> {
    let mut response =
        format!("HTTP/1.1 200 OK\r\nServer: test\r\nContent-Length: {content_length}\r\n\r\n")
            .into_bytes();
    response.extend(std::iter::repeat_n(b'x', body_length));
    response
}

#[test]
fn http_mode_sends_a_get_per_connection_and_checks_every_response() {
    let (addr, requests) = web_server(40, |_| ok_response(4096, 4096));
    let output = bench(
        addr,
        &[
            "--protocol",
            "http",
            "page.bin",
            "-c",
            "4",
            "-n",
            "40",
            "--expect-size",
            "4K",
        ],
    );
    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(report.contains(r#""protocol": "http""#), "{report}");
    assert_eq!(number(&report, "completed"), 40, "{report}");
    assert_eq!(number(&report, "bytes"), 40 * 4096, "{report}");
    assert_eq!(errors(&report), "{}");
    let expected = format!(
        "GET /page.bin HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
        addr.port()
    );
    for _ in 0..40 {
        let request = requests.recv_timeout(PATIENCE).expect("a request");
        assert_eq!(String::from_utf8_lossy(&request), expected);
    }
}

#[test]
fn broken_http_answers_are_counted_by_kind() {
    type Answer = fn(usize) -> Vec<u8>;
    let cases: [(&str, Answer); 7] = [
        ("http_status_404", |_| {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_vec()
        }),
        ("short_content", |_| ok_response(100, 50)),
        ("extra_content", |_| ok_response(10, 20)),
        ("no_content_length", |_| {
            b"HTTP/1.0 200 OK\r\nServer: test\r\n\r\nbody to the close".to_vec()
        }),
        ("protocol", |_| b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        ("protocol", |_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n".to_vec()
        }),
        ("short_response", |_| {
            b"HTTP/1.1 200 OK\r\nContent-Len".to_vec()
        }),
    ];
    for (kind, answer) in cases {
        let (addr, _requests) = web_server(5, answer);
        let output = bench(addr, &["--protocol", "http", "any.bin", "-n", "5"]);
        let report = json(&output);
        assert_eq!(output.status.code(), Some(3), "{kind}: {report}");
        assert_eq!(number(&report, "completed"), 0, "{kind}: {report}");
        assert_eq!(errors(&report), format!("{{\"{kind}\": 5}}"), "{kind}");
    }
}

#[test]
fn an_http_length_that_is_not_the_expected_size_is_a_mismatch() {
    let (addr, _requests) = web_server(6, |number| {
        let size = if number % 2 == 0 { 4096 } else { 4095 };
        ok_response(size, size)
    });
    let output = bench(
        addr,
        &[
            "--protocol",
            "http",
            "any.bin",
            "-n",
            "6",
            "--expect-size",
            "4096",
        ],
    );
    let report = json(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(number(&report, "completed"), 3, "{report}");
    assert_eq!(errors(&report), r#"{"size_mismatch": 3}"#);
}

#[test]
fn http_paths_that_would_break_the_request_line_are_usage_errors() {
    let output = command("tcpfile-bench")
        .args(["127.0.0.1", "1", "--protocol", "http", "a b"])
        .output()
        .expect("run tcpfile-bench");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("invalid path"),
        "{}",
        stderr_of(&output)
    );
}

/// nginx serving `root` on a free loopback port, from a configuration of its
/// own in `dir`; stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(binary: &Path, dir: &Path, root: &Path) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; client_body_temp_path {dir}/body;\n\
             proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;\n\
             uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            dir = dir.display(),
            root = root.display(),
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, port };
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx on the PATH or where Debian puts it, if installed.
fn nginx_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([Path::new("/usr/sbin").to_path_buf()])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

#[test]
fn http_mode_loads_nginx() {
    let Some(binary) = nginx_binary() else {
        skip(
            "http_mode_loads_nginx",
            "nginx is not installed (Debian: nginx-light; ci/setup.sh installs it)",
        );
        return;
    };
    let served = Fixture::new();
    served.add_random("page.bin", 4096);
    let state = Fixture::new();
    let nginx = Nginx::start(&binary, state.path(), served.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], nginx.port));

    let output = bench(
        addr,
        &[
            "--protocol",
            "http",
            "page.bin",
            "-c",
            "8",
            "-n",
            "200",
            "--expect-size",
            "4096",
        ],
    );
    let report = json(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(number(&report, "completed"), 200, "{report}");
    assert_eq!(number(&report, "bytes"), 200 * 4096, "{report}");

    let missing = bench(addr, &["--protocol", "http", "missing.bin", "-n", "10"]);
    let report = json(&missing);
    assert_eq!(missing.status.code(), Some(3), "{report}");
    assert_eq!(errors(&report), r#"{"http_status_404": 10}"#);
}

//! The HTTP side of the load generator: an HTTP/1.0 GET per connection, so
//! that a web server is measured by the same client as the tcpfile servers,
//! one request per connection and the response read to the server's close.

use std::fmt;

/// A request target: an absolute path of visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPath(String);

impl HttpPath {
    /// `text` as a path, with a leading `/` added when it has none. Spaces,
    /// control characters and anything beyond ASCII are refused: they would
    /// break the request line.
    pub fn parse(text: &[u8]) -> Result<HttpPath, String> {
        if text.is_empty() {
            return Err("the path is empty".into());
        }
        if let Some(position) = text.iter().position(|byte| !byte.is_ascii_graphic()) {
            return Err(format!(
                "byte {position} is not a visible ASCII character; percent-encode it"
            ));
        }
        let text = String::from_utf8_lossy(text);
        Ok(HttpPath(if text.starts_with('/') {
            text.into_owned()
        } else {
            format!("/{text}")
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Host header's value for a server named `addr` on `port`: an IPv6
/// literal goes in brackets.
pub fn host_header(addr: &str, port: u16) -> String {
    let host = addr.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The bytes of a GET of `path`. HTTP/1.0 without keep-alive: the server
/// closes the connection after the response, as a tcpfile server does.
pub fn request(path: &HttpPath, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// A response head longer than this is not one a file server sends.
pub const HEAD_LIMIT: usize = 16 * 1024;

/// Headers looked at in a response; more is a malformed head.
const MAX_HEADERS: usize = 64;

/// What a complete response head says.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// `None` when the response has no Content-Length.
    pub content_length: Option<u64>,
    /// Bytes of the head, the blank line included; the body follows.
    pub len: usize,
}

/// A response head that is not HTTP/1.x, or whose Content-Length is not a
/// number or disagrees with another one.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// The head at the start of `bytes`, `Ok(None)` while it is incomplete.
pub fn parse_head(bytes: &[u8]) -> Result<Option<Head>, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Malformed),
    };
    let status = response.code.ok_or(Malformed)?;
    let mut content_length = None;
    for header in response.headers.iter() {
        if !header.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let value = std::str::from_utf8(header.value)
            .ok()
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or(Malformed)?;
        if content_length.is_some_and(|earlier| earlier != value) {
            return Err(Malformed);
        }
        content_length = Some(value);
    }
    Ok(Some(Head {
        status,
        content_length,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_a_leading_slash_and_refuse_what_breaks_the_request_line() {
        assert_eq!(
            HttpPath::parse(b"small.bin").map(|path| path.to_string()),
            Ok("/small.bin".into())
        );
        assert_eq!(
            HttpPath::parse(b"/a/b.bin?x=1").map(|path| path.to_string()),
            Ok("/a/b.bin?x=1".into())
        );
        for bad in [
            &b""[..],
            b"a b",
            b"a\r\nHost: x",
            b"caf\xc3\xa9",
            b"tab\there",
        ] {
            assert!(HttpPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_request_is_an_http_1_0_get_with_a_host() {
        let path = HttpPath::parse(b"small.bin").expect("valid path");
        assert_eq!(
            request(&path, &host_header("127.0.0.1", 8080)),
            b"GET /small.bin HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
        assert_eq!(host_header("::1", 80), "[::1]:80");
        assert_eq!(host_header("[::1]", 80), "[::1]:80");
        assert_eq!(host_header("localhost", 80), "localhost:80");
    }

    #[test]
    fn a_head_gives_its_status_length_and_size() {
        let response = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length:  4096 \r\n\r\nbody";
        assert_eq!(
            parse_head(response),
            Ok(Some(Head {
                status: 200,
                content_length: Some(4096),
                len: response.len() - 4,
            }))
        );
        let head = parse_head(b"HTTP/1.0 404 Not Found\r\n\r\n").expect("a head");
        assert_eq!(
            head.map(|head| (head.status, head.content_length)),
            Some((404, None))
        );
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        assert_eq!(parse_head(b""), Ok(None));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n\r"), Ok(None));
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert_eq!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(Malformed));
        assert_eq!(parse_head(b"HTTP/2 200\r\n\r\n"), Err(Malformed));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"),
            Err(Malformed)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(Malformed)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .map(|head| head.and_then(|head| head.content_length)),
            Ok(Some(3))
        );
    }
}

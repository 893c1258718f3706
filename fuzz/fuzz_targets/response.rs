//! Any response header as the client meets it: decoding never panics, and
//! what the client decides (receive the announced bytes, or stop with which
//! failure and exit code) follows from the header's fields alone.
//!
//! Input: the 16 header bytes, then optionally the client's MAX_SIZE as 8
//! little-endian bytes and the protocol version it sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpfile::client::{Failure, exit_code, judge_response};
use tcpfile::protocol::{FileResponse, PROTOCOL_VERSION, RESPONSE_LEN, StatusCode};

/// The tests' and README's usual limit, when the input does not choose one.
const DEFAULT_MAX_SIZE: u64 = 100 << 20;

fuzz_target!(|data: &[u8]| {
    let mut header = [0u8; RESPONSE_LEN];
    let used = data.len().min(RESPONSE_LEN);
    header[..used].copy_from_slice(&data[..used]);
    let rest = &data[used..];
    let max_size = rest
        .get(..8)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(DEFAULT_MAX_SIZE, u64::from_le_bytes);
    let sent_version = rest.get(8).copied().unwrap_or(PROTOCOL_VERSION);

    let response = FileResponse::decode(&header);
    let mut without_padding = header;
    without_padding[3..8].fill(0);
    assert_eq!(response.encode(), without_padding);

    let shown = response.status.to_string();
    match response.status.known() {
        Some(_) => assert!(
            shown.ends_with(&format!("(status {})", header[2])),
            "{shown}"
        ),
        None => assert_eq!(shown, format!("unknown error (code {})", header[2])),
    }

    let size = u64::from_le_bytes(header[8..].try_into().expect("eight bytes"));
    let verdict = judge_response(&response, sent_version, max_size);
    // Message type first, then status, then version, then size.
    let (expected_code, consistent) = if header[1] != 2 {
        (
            exit_code::TRANSFER_BROKE,
            matches!(verdict, Err(Failure::Broken(_))),
        )
    } else if header[2] != 0 {
        (
            exit_code::SERVER_ERROR,
            matches!(verdict, Err(Failure::Server(StatusCode(code))) if code == header[2]),
        )
    } else if header[0] != sent_version {
        (
            exit_code::TRANSFER_BROKE,
            matches!(verdict, Err(Failure::Broken(_))),
        )
    } else if size > max_size {
        (
            exit_code::TOO_LARGE,
            matches!(verdict, Err(Failure::TooLarge { size: s, max }) if s == size && max == max_size),
        )
    } else {
        (exit_code::SUCCESS, matches!(verdict, Ok(s) if s == size))
    };
    assert!(consistent, "header {header:02x?}: {verdict:?}");
    if let Err(failure) = verdict {
        assert_eq!(failure.exit_code(), expected_code);
        assert!(!failure.to_string().is_empty());
    }
});

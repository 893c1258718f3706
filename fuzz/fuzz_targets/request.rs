//! Any bytes as a file request and as a file name: decoding never panics,
//! encoding what was decoded gives the same 260 bytes back, and the server's
//! judgement of a request agrees with the protocol's rules, written out here a
//! second time independently of `FileName::parse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpfile::protocol::{
    Escaped, FileName, FileRequest, MAX_NAME_LEN, NAME_FIELD_LEN, PROTOCOL_VERSION, REQUEST_LEN,
    Status,
};

const NAME_OFFSET: usize = 4;

fuzz_target!(|data: &[u8]| {
    check_name(data);
    let mut bytes = [0u8; REQUEST_LEN];
    let used = data.len().min(REQUEST_LEN);
    bytes[..used].copy_from_slice(&data[..used]);
    check_request(&bytes);
});

/// The name rules of PROTOCOL.md as one plain predicate.
fn follows_the_name_rules(name: &[u8]) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name != b"."
        && name != b".."
        && name
            .iter()
            .all(|&byte| (0x20..=0x7e).contains(&byte) && byte != b'/')
}

fn check_name(candidate: &[u8]) {
    match FileName::parse(candidate) {
        Ok(name) => {
            assert!(
                follows_the_name_rules(candidate),
                "accepted a name that breaks the rules: {}",
                Escaped(candidate)
            );
            assert_eq!(name.as_str().as_bytes(), candidate);
        }
        Err(error) => {
            assert!(
                !follows_the_name_rules(candidate),
                "refused a valid name {}: {error}",
                Escaped(candidate)
            );
        }
    }
}

fn check_request(bytes: &[u8; REQUEST_LEN]) {
    let request = FileRequest::decode(bytes);
    assert_eq!(
        request.encode(),
        *bytes,
        "decoding then encoding changed bytes"
    );

    let length = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
    let designated = &bytes[NAME_OFFSET..NAME_OFFSET + length.min(NAME_FIELD_LEN)];
    assert_eq!(request.name_bytes(), designated);
    let shown = Escaped(request.name_bytes()).to_string();
    assert!(
        shown.bytes().all(|byte| (0x20..=0x7e).contains(&byte)),
        "a log line would carry a control byte: {shown:?}"
    );

    // Version first, then message type, then the name.
    let expected = if bytes[0] != PROTOCOL_VERSION {
        Err(Status::ProtocolMismatch)
    } else if bytes[1] != 1 {
        Err(Status::BadRequest)
    } else if length > MAX_NAME_LEN || !follows_the_name_rules(designated) {
        Err(Status::InvalidFilename)
    } else {
        Ok(designated)
    };
    match request.validate(PROTOCOL_VERSION) {
        Ok(name) => {
            assert_eq!(Ok(name.as_str().as_bytes()), expected);
            let remade = FileRequest::new(&name, PROTOCOL_VERSION);
            assert_eq!(remade.validate(PROTOCOL_VERSION), Ok(name));
        }
        Err(error) => {
            assert_eq!(Err(error.status()), expected, "{error}");
        }
    }
}

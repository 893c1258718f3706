//! The tcpfile v1 wire format: typed messages and their exact byte layout.
//!
//! Pure: bytes in, typed messages out. Nothing here touches a socket or a file,
//! so every rule can be tested (and fuzzed) in isolation.

use std::fmt;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of a [`FileRequest`] on the wire.
pub const REQUEST_LEN: usize = 260;
/// Size of a [`FileResponse`] on the wire.
pub const RESPONSE_LEN: usize = 16;
/// Size of a [`ClientReply`] on the wire.
pub const REPLY_LEN: usize = 1;
/// Size of the request's fixed name field.
pub const NAME_FIELD_LEN: usize = 256;
/// The longest valid file name.
pub const MAX_NAME_LEN: usize = 255;

const NAME_OFFSET: usize = 4;

/// The `message_type` byte of each message that carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    FileRequest = 1,
    FileResponse = 2,
}

/// A status the server reports in a [`FileResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    ProtocolMismatch = 1,
    InvalidFilename = 2,
    FileNotFound = 3,
    AccessDenied = 4,
    InternalError = 5,
    BadRequest = 6,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::ProtocolMismatch,
        Status::InvalidFilename,
        Status::FileNotFound,
        Status::AccessDenied,
        Status::InternalError,
        Status::BadRequest,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.code() == code)
    }

    /// The contract's name for the status, as it appears in logs.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::ProtocolMismatch => "PROTOCOL_MISMATCH",
            Status::InvalidFilename => "INVALID_FILENAME",
            Status::FileNotFound => "FILE_NOT_FOUND",
            Status::AccessDenied => "ACCESS_DENIED",
            Status::InternalError => "INTERNAL_ERROR",
            Status::BadRequest => "BAD_REQUEST",
        }
    }

    /// What the status means to a person reading the client's output.
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::ProtocolMismatch => "Protocol version mismatch",
            Status::InvalidFilename => "Invalid filename",
            Status::FileNotFound => "File not found",
            Status::AccessDenied => "Access denied",
            Status::InternalError => "Internal server error",
            Status::BadRequest => "Bad request",
        }
    }
}

/// A status byte as received: a known [`Status`] or a code this version does
/// not know, kept so that it can be reported and re-encoded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode(pub u8);

impl StatusCode {
    pub fn known(self) -> Option<Status> {
        Status::from_code(self.0)
    }
}

impl From<Status> for StatusCode {
    fn from(status: Status) -> Self {
        StatusCode(status.code())
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(status) => write!(f, "{} (status {})", status.message(), self.0),
            None => write!(f, "unknown error (code {})", self.0),
        }
    }
}

/// Why a name is not a valid file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {0} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    #[error("the name may not be \".\" or \"..\"")]
    DotName,
    #[error("the name contains '/' at byte {0}: it must be a name, not a path")]
    Slash(usize),
    #[error("the name contains the non-printable byte 0x{byte:02x} at byte {index}")]
    NonPrintable { byte: u8, index: usize },
}

/// A valid file name: 1 to 255 bytes of printable ASCII, no `/`, not `.` or
/// `..`. Being printable ASCII, it is always valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    pub fn parse(bytes: &[u8]) -> Result<FileName, NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(bytes.len()));
        }
        if bytes == b"." || bytes == b".." {
            return Err(NameError::DotName);
        }
        for (index, &byte) in bytes.iter().enumerate() {
            if byte == b'/' {
                return Err(NameError::Slash(index));
            }
            if !(0x20..=0x7e).contains(&byte) {
                return Err(NameError::NonPrintable { byte, index });
            }
        }
        let text = bytes.iter().map(|&byte| char::from(byte)).collect();
        Ok(FileName(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes shown with every non-printable byte escaped (`\n`, `\x00`, ...), so a
/// peer's bytes never reach a log as raw control characters.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            write!(f, "{}", std::ascii::escape_default(byte))?;
        }
        Ok(())
    }
}

/// Bytes as space-separated lowercase hex, for debug logs of headers.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A FileRequest exactly as it travels: every field kept as sent, including
/// whatever follows the name inside the 256-byte field, so that decoding any
/// 260 bytes and encoding the result gives the same bytes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    pub protocol_version: u8,
    pub message_type: u8,
    pub filename_length: u16,
    pub filename: [u8; NAME_FIELD_LEN],
}

impl FileRequest {
    /// A well-formed request for `name`, zero-filled after the name.
    pub fn new(name: &FileName, protocol_version: u8) -> FileRequest {
        let bytes = name.as_str().as_bytes();
        let mut filename = [0u8; NAME_FIELD_LEN];
        filename[..bytes.len()].copy_from_slice(bytes);
        FileRequest {
            protocol_version,
            message_type: MessageType::FileRequest as u8,
            filename_length: u16::try_from(bytes.len()).expect("a FileName is at most 255 bytes"),
            filename,
        }
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut bytes = [0u8; REQUEST_LEN];
        bytes[0] = self.protocol_version;
        bytes[1] = self.message_type;
        bytes[2..4].copy_from_slice(&self.filename_length.to_le_bytes());
        bytes[NAME_OFFSET..].copy_from_slice(&self.filename);
        bytes
    }

    pub fn decode(bytes: &[u8; REQUEST_LEN]) -> FileRequest {
        let mut filename = [0u8; NAME_FIELD_LEN];
        filename.copy_from_slice(&bytes[NAME_OFFSET..]);
        FileRequest {
            protocol_version: bytes[0],
            message_type: bytes[1],
            filename_length: u16::from_le_bytes([bytes[2], bytes[3]]),
            filename,
        }
    }

    /// The name bytes the length field designates, clamped to the field, for
    /// logging what a peer asked for even when the request is invalid.
    pub fn name_bytes(&self) -> &[u8] {
        let len = usize::from(self.filename_length).min(NAME_FIELD_LEN);
        &self.filename[..len]
    }

    /// Judges the request the way a server speaking `server_version` must:
    /// version first, then message type, then the name.
    pub fn validate(&self, server_version: u8) -> Result<FileName, RequestError> {
        if self.protocol_version != server_version {
            return Err(RequestError::VersionMismatch {
                requested: self.protocol_version,
            });
        }
        if self.message_type != MessageType::FileRequest as u8 {
            return Err(RequestError::UnexpectedMessageType(self.message_type));
        }
        let len = usize::from(self.filename_length);
        if len == 0 || len > MAX_NAME_LEN {
            return Err(RequestError::BadName(if len == 0 {
                NameError::Empty
            } else {
                NameError::TooLong(len)
            }));
        }
        FileName::parse(&self.filename[..len]).map_err(RequestError::BadName)
    }
}

/// Why a server turns a request down before looking for the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("protocol version {requested} requested, server speaks {PROTOCOL_VERSION}")]
    VersionMismatch { requested: u8 },
    #[error("message type {0} is not FILE_REQUEST")]
    UnexpectedMessageType(u8),
    #[error("invalid file name: {0}")]
    BadName(NameError),
}

impl RequestError {
    pub fn status(&self) -> Status {
        match self {
            RequestError::VersionMismatch { .. } => Status::ProtocolMismatch,
            RequestError::UnexpectedMessageType(_) => Status::BadRequest,
            RequestError::BadName(_) => Status::InvalidFilename,
        }
    }
}

/// A FileResponse. Padding is not kept: it is sent as zeros and ignored when
/// received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileResponse {
    pub protocol_version: u8,
    pub message_type: u8,
    pub status: StatusCode,
    pub file_size: u64,
}

impl FileResponse {
    pub fn ok(file_size: u64) -> FileResponse {
        FileResponse {
            protocol_version: PROTOCOL_VERSION,
            message_type: MessageType::FileResponse as u8,
            status: Status::Ok.into(),
            file_size,
        }
    }

    /// An error response: the status, and no size.
    pub fn error(status: Status) -> FileResponse {
        FileResponse {
            protocol_version: PROTOCOL_VERSION,
            message_type: MessageType::FileResponse as u8,
            status: status.into(),
            file_size: 0,
        }
    }

    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut bytes = [0u8; RESPONSE_LEN];
        bytes[0] = self.protocol_version;
        bytes[1] = self.message_type;
        bytes[2] = self.status.0;
        bytes[8..].copy_from_slice(&self.file_size.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8; RESPONSE_LEN]) -> FileResponse {
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[8..]);
        FileResponse {
            protocol_version: bytes[0],
            message_type: bytes[1],
            status: StatusCode(bytes[2]),
            file_size: u64::from_le_bytes(size),
        }
    }
}

/// The client's one-byte answer to a successful response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientReply {
    ReadyToReceive = 3,
    RefuseToReceive = 4,
}

impl ClientReply {
    pub fn encode(self) -> [u8; REPLY_LEN] {
        [self as u8]
    }

    /// The reply, or the unknown byte that was sent instead.
    pub fn decode(bytes: &[u8; REPLY_LEN]) -> Result<ClientReply, u8> {
        match bytes[0] {
            3 => Ok(ClientReply::ReadyToReceive),
            4 => Ok(ClientReply::RefuseToReceive),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|pair| u8::from_str_radix(pair, 16).expect("test vectors are hex"))
            .collect()
    }

    #[test]
    fn golden_request_for_g101_pdf() {
        let name = FileName::parse(b"g101.pdf").expect("valid name");
        let bytes = FileRequest::new(&name, PROTOCOL_VERSION).encode();
        assert_eq!(
            bytes[..16],
            hex("01 01 08 00 67 31 30 31 2e 70 64 66 00 00 00 00")[..]
        );
        assert!(bytes[16..].iter().all(|&byte| byte == 0));
        assert_eq!(bytes.len(), 260);
    }

    #[test]
    fn golden_ok_response() {
        let bytes = FileResponse::ok(1_156_958).encode();
        assert_eq!(
            bytes[..],
            hex("01 02 00 00 00 00 00 00 5e a7 11 00 00 00 00 00")[..]
        );
    }

    #[test]
    fn golden_not_found_response() {
        let bytes = FileResponse::error(Status::FileNotFound).encode();
        assert_eq!(
            bytes[..],
            hex("01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00")[..]
        );
    }

    #[test]
    fn golden_vectors_decode_to_their_meaning() {
        let mut request = [0u8; REQUEST_LEN];
        request[..16].copy_from_slice(&hex("01 01 08 00 67 31 30 31 2e 70 64 66 00 00 00 00"));
        let request = FileRequest::decode(&request);
        assert_eq!(
            request
                .validate(PROTOCOL_VERSION)
                .map(|name| name.to_string()),
            Ok("g101.pdf".to_string())
        );

        let mut response = [0u8; RESPONSE_LEN];
        response.copy_from_slice(&hex("01 02 00 00 00 00 00 00 5e a7 11 00 00 00 00 00"));
        let response = FileResponse::decode(&response);
        assert_eq!(response.status.known(), Some(Status::Ok));
        assert_eq!(response.file_size, 1_156_958);
    }

    #[test]
    fn client_reply_bytes() {
        assert_eq!(ClientReply::ReadyToReceive.encode(), [3]);
        assert_eq!(ClientReply::RefuseToReceive.encode(), [4]);
        assert_eq!(ClientReply::decode(&[5]), Err(5));
    }

    #[test]
    fn status_codes_match_the_contract() {
        let codes: Vec<(u8, &str)> = Status::ALL.iter().map(|s| (s.code(), s.name())).collect();
        assert_eq!(
            codes,
            [
                (0, "OK"),
                (1, "PROTOCOL_MISMATCH"),
                (2, "INVALID_FILENAME"),
                (3, "FILE_NOT_FOUND"),
                (4, "ACCESS_DENIED"),
                (5, "INTERNAL_ERROR"),
                (6, "BAD_REQUEST"),
            ]
        );
        assert_eq!(StatusCode(3).to_string(), "File not found (status 3)");
        assert_eq!(StatusCode(42).to_string(), "unknown error (code 42)");
    }

    fn request_with(version: u8, message_type: u8, len: u16, name: &[u8]) -> FileRequest {
        let mut filename = [0u8; NAME_FIELD_LEN];
        filename[..name.len()].copy_from_slice(name);
        FileRequest {
            protocol_version: version,
            message_type,
            filename_length: len,
            filename,
        }
    }

    #[test]
    fn validation_order_and_statuses() {
        let status = |r: FileRequest| r.validate(PROTOCOL_VERSION).map_err(|e| e.status());
        assert_eq!(
            status(request_with(2, 9, 0, b"")),
            Err(Status::ProtocolMismatch)
        );
        assert_eq!(status(request_with(1, 9, 0, b"")), Err(Status::BadRequest));
        assert_eq!(
            status(request_with(1, 1, 0, b"")),
            Err(Status::InvalidFilename)
        );
        assert_eq!(
            status(request_with(1, 1, 256, b"a")),
            Err(Status::InvalidFilename)
        );
        assert_eq!(
            status(request_with(1, 1, 65535, b"a")),
            Err(Status::InvalidFilename)
        );
        assert_eq!(
            status(request_with(1, 1, 2, b"..")),
            Err(Status::InvalidFilename)
        );
        assert_eq!(
            status(request_with(1, 1, 3, b"a/b")),
            Err(Status::InvalidFilename)
        );
        assert_eq!(
            status(request_with(1, 1, 2, b"a\0")),
            Err(Status::InvalidFilename)
        );
        assert!(status(request_with(1, 1, 3, b"...")).is_ok());
        assert!(status(request_with(1, 1, 255, &[b'a'; 255])).is_ok());
    }

    #[test]
    fn a_bad_length_is_named_in_the_error() {
        let error = |len: u16| request_with(1, 1, len, b"a").validate(PROTOCOL_VERSION);
        assert_eq!(error(0), Err(RequestError::BadName(NameError::Empty)));
        assert_eq!(
            error(256),
            Err(RequestError::BadName(NameError::TooLong(256)))
        );
        assert_eq!(
            error(0).map_err(|error| error.to_string()),
            Err("invalid file name: the name is empty".to_string())
        );
    }

    #[test]
    fn name_bytes_are_the_designated_ones_clamped_to_the_field() {
        assert_eq!(request_with(1, 1, 3, b"abcdef").name_bytes(), b"abc");
        assert_eq!(request_with(1, 1, 0, b"abc").name_bytes(), b"");
        let whole_field = request_with(1, 1, 65535, &[b'x'; NAME_FIELD_LEN]);
        assert_eq!(whole_field.name_bytes(), &[b'x'; NAME_FIELD_LEN][..]);
    }

    #[test]
    fn only_the_designated_name_bytes_are_judged() {
        let request = request_with(1, 1, 5, b"a.txt\x01garbage/..");
        assert_eq!(
            request.validate(PROTOCOL_VERSION).map(|n| n.to_string()),
            Ok("a.txt".to_string())
        );
    }

    #[test]
    fn name_errors_say_what_is_wrong() {
        assert_eq!(
            FileName::parse(b"x/y").unwrap_err().to_string(),
            "the name contains '/' at byte 1: it must be a name, not a path"
        );
        assert_eq!(
            FileName::parse(b"a\tb").unwrap_err().to_string(),
            "the name contains the non-printable byte 0x09 at byte 1"
        );
        assert_eq!(FileName::parse(&[b'a'; 256]), Err(NameError::TooLong(256)));
        assert_eq!(
            FileName::parse(&[b'a'; 1000]),
            Err(NameError::TooLong(1000))
        );
        assert_eq!(
            FileName::parse(&[b'a'; 255]).map(|n| n.as_str().len()),
            Ok(255)
        );
    }

    #[test]
    fn escaped_never_shows_control_bytes() {
        assert_eq!(
            Escaped(b"a\n\x00\x7f\xff").to_string(),
            "a\\n\\x00\\x7f\\xff"
        );
    }

    #[test]
    fn hex_is_space_separated_lowercase_pairs() {
        assert_eq!(Hex(&[0x01, 0x02, 0xab, 0x00]).to_string(), "01 02 ab 00");
        assert_eq!(Hex(&[0x7f]).to_string(), "7f");
        assert_eq!(Hex(&[]).to_string(), "");
    }

    proptest! {
        #[test]
        fn request_decode_encode_is_identity(bytes in proptest::collection::vec(any::<u8>(), REQUEST_LEN)) {
            let array: [u8; REQUEST_LEN] = bytes.clone().try_into().expect("length fixed above");
            let request = FileRequest::decode(&array);
            let _ = request.validate(PROTOCOL_VERSION);
            prop_assert_eq!(request.encode().to_vec(), bytes);
        }

        #[test]
        fn response_encode_decode_roundtrip(
            version in any::<u8>(), message_type in any::<u8>(),
            status in any::<u8>(), file_size in any::<u64>(),
        ) {
            let response = FileResponse { protocol_version: version, message_type, status: StatusCode(status), file_size };
            prop_assert_eq!(FileResponse::decode(&response.encode()), response);
        }

        #[test]
        fn response_decode_never_panics(bytes in proptest::array::uniform16(any::<u8>())) {
            let response = FileResponse::decode(&bytes);
            let _ = response.status.to_string();
        }

        #[test]
        fn reply_decode_encode_roundtrip(byte in any::<u8>()) {
            match ClientReply::decode(&[byte]) {
                Ok(reply) => prop_assert_eq!(reply.encode(), [byte]),
                Err(unknown) => prop_assert_eq!(unknown, byte),
            }
        }

        #[test]
        fn valid_names_roundtrip_through_requests(name in "[ -.0-~]{1,255}") {
            prop_assume!(name != "." && name != "..");
            let name = FileName::parse(name.as_bytes()).expect("generated from the valid alphabet");
            let request = FileRequest::new(&name, PROTOCOL_VERSION);
            let decoded = FileRequest::decode(&request.encode());
            prop_assert_eq!(decoded.validate(PROTOCOL_VERSION), Ok(name));
        }

        #[test]
        fn accepted_names_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(name) = FileName::parse(&bytes) {
                let text = name.as_str();
                prop_assert!(!text.contains('/'));
                prop_assert!(!text.contains('\0'));
                prop_assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)));
                prop_assert!(text != "." && text != "..");
                prop_assert!((1..=MAX_NAME_LEN).contains(&text.len()));
            }
        }

        #[test]
        fn accepted_names_from_printable_heavy_input_are_safe(name in "[\\x00-\\x7f./]{0,8}") {
            if let Ok(name) = FileName::parse(name.as_bytes()) {
                prop_assert!(name.as_str() != "." && name.as_str() != "..");
                prop_assert!(!name.as_str().contains('/'));
            }
        }

        #[test]
        fn every_valid_name_is_accepted_as_sent(bytes in valid_name()) {
            let expected = String::from_utf8(bytes.clone()).expect("printable ASCII");
            prop_assert_eq!(FileName::parse(&bytes).map(|name| name.to_string()), Ok(expected.clone()));
            let request = request_with(1, 1, bytes.len() as u16, &bytes);
            prop_assert_eq!(request.validate(PROTOCOL_VERSION).map(|name| name.to_string()), Ok(expected));
        }

        #[test]
        fn a_slash_at_any_position_is_refused(mut bytes in valid_name(), at in any::<proptest::sample::Index>()) {
            let position = at.index(bytes.len());
            bytes[position] = b'/';
            prop_assert_eq!(FileName::parse(&bytes), Err(NameError::Slash(position)));
            let request = request_with(1, 1, bytes.len() as u16, &bytes);
            prop_assert_eq!(
                request.validate(PROTOCOL_VERSION).map_err(|error| error.status()),
                Err(Status::InvalidFilename)
            );
        }

        #[test]
        fn an_unprintable_byte_at_any_position_is_refused(
            mut bytes in valid_name(),
            at in any::<proptest::sample::Index>(),
            byte in prop_oneof![0u8..0x20, 0x7fu8..=0xff],
        ) {
            let position = at.index(bytes.len());
            bytes[position] = byte;
            prop_assert_eq!(
                FileName::parse(&bytes),
                Err(NameError::NonPrintable { byte, index: position })
            );
        }

        #[test]
        fn dots_make_a_name_unless_there_are_one_or_two(count in 1usize..=MAX_NAME_LEN) {
            let dots = vec![b'.'; count];
            let parsed = FileName::parse(&dots);
            if count <= 2 {
                prop_assert_eq!(parsed, Err(NameError::DotName));
            } else {
                prop_assert!(parsed.is_ok());
            }
        }

        #[test]
        fn lengths_past_the_limit_are_refused_whatever_the_bytes(bytes in proptest::collection::vec(0x20u8..=0x7e, MAX_NAME_LEN + 1..=NAME_FIELD_LEN)) {
            prop_assert_eq!(FileName::parse(&bytes), Err(NameError::TooLong(bytes.len())));
            let request = request_with(1, 1, bytes.len() as u16, &bytes);
            prop_assert_eq!(
                request.validate(PROTOCOL_VERSION).map_err(|error| error.status()),
                Err(Status::InvalidFilename)
            );
        }
    }

    /// Valid names on purpose: 1 to 255 printable bytes other than '/', of
    /// every length, with dots anywhere (but not "." or "..").
    fn valid_name() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => 0x20u8..=0x2e,
            3 => 0x30u8..=0x7e,
            1 => Just(b'.'),
        ];
        proptest::collection::vec(byte, 1..=MAX_NAME_LEN)
            .prop_filter("not . or ..", |bytes| bytes != b"." && bytes != b"..")
    }
}

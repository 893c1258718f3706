//! The one connection handler that all three server models share: read the
//! request, answer it, send the file if the client is ready, close.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::lifecycle::Lifecycle;
use crate::protocol::{
    ClientReply, Escaped, FileRequest, FileResponse, Hex, PROTOCOL_VERSION, REPLY_LEN, REQUEST_LEN,
    Status,
};
use crate::served_dir::ServedDir;
use crate::transfer::{self, SendError, close_gracefully, read_full, send_file, write_all};

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole file was sent.
    Sent { bytes: u64 },
    /// The client refused the file after seeing its size.
    Refused,
    /// The request was answered with an error status.
    Answered(Status),
    /// The connection ended early: timeout, a vanished peer, a stop.
    Dropped,
}

impl Outcome {
    /// Whether the connection ended the way the protocol means it to.
    pub fn completed(self) -> bool {
        self != Outcome::Dropped
    }
}

pub struct Handler<'a> {
    pub dir: &'a ServedDir,
    pub lifecycle: &'a Lifecycle,
    /// Bounds the arrival of the request, of the reply, and every stall of
    /// the send.
    pub timeout: Duration,
}

impl Handler<'_> {
    pub fn serve(&self, stream: TcpStream, peer: SocketAddr) -> Outcome {
        let outcome = match stream
            .set_nonblocking(true)
            .and_then(|()| stream.set_nodelay(true))
        {
            Ok(()) => self.exchange(&stream, peer),
            Err(error) => {
                log::warn!("{peer}: cannot set up the socket: {error}");
                Outcome::Dropped
            }
        };
        close_gracefully(stream);
        log::info!("closed connection from {peer}");
        outcome
    }

    fn exchange(&self, stream: &TcpStream, peer: SocketAddr) -> Outcome {
        let mut bytes = [0u8; REQUEST_LEN];
        if let Err((got, error)) = read_full(stream, &mut bytes, self.lifecycle, self.timeout) {
            log::warn!("{peer}: no complete request ({got} of {REQUEST_LEN} bytes): {error}");
            return Outcome::Dropped;
        }
        log::debug!("{peer}: request header: {}", Hex(&bytes[..16]));
        let request = FileRequest::decode(&bytes);
        log::info!(
            "{peer}: request for \"{}\" (protocol version {}, message type {}, name length {})",
            Escaped(request.name_bytes()),
            request.protocol_version,
            request.message_type,
            request.filename_length
        );

        let name = match request.validate(PROTOCOL_VERSION) {
            Ok(name) => name,
            Err(error) => {
                log::warn!("{peer}: {error}");
                return self.answer_error(stream, peer, error.status());
            }
        };
        let opened = match self.dir.open_file(&name) {
            Ok(opened) => opened,
            Err(error) => {
                log::warn!("{peer}: {}", error.reason);
                return self.answer_error(stream, peer, error.status);
            }
        };

        if !self.respond(stream, peer, FileResponse::ok(opened.size)) {
            return Outcome::Dropped;
        }
        let mut reply = [0u8; REPLY_LEN];
        if let Err((_, error)) = read_full(stream, &mut reply, self.lifecycle, self.timeout) {
            log::warn!("{peer}: no reply to the response: {error}");
            return Outcome::Dropped;
        }
        match ClientReply::decode(&reply) {
            Ok(ClientReply::ReadyToReceive) => log::info!("{peer}: client is ready to receive"),
            Ok(ClientReply::RefuseToReceive) => {
                log::info!("{peer}: client refused the file ({} bytes)", opened.size);
                return Outcome::Refused;
            }
            Err(byte) => {
                log::warn!("{peer}: unknown client reply 0x{byte:02x}; closing");
                return Outcome::Dropped;
            }
        }

        let started = Instant::now();
        match send_file(
            stream,
            &opened.file,
            opened.size,
            self.lifecycle,
            self.timeout,
        ) {
            Ok(bytes) => {
                log::info!(
                    "{peer}: transfer complete: {}",
                    transfer::describe_rate(bytes, started.elapsed())
                );
                Outcome::Sent { bytes }
            }
            Err(SendError::FileShrank { sent }) => {
                log::warn!(
                    "{peer}: \"{name}\" shrank while it was sent: it ended after {sent} of {} bytes; closing early",
                    opened.size
                );
                Outcome::Dropped
            }
            Err(error) => {
                log::warn!("{peer}: transfer of \"{name}\" broke off: {error}");
                Outcome::Dropped
            }
        }
    }

    fn answer_error(&self, stream: &TcpStream, peer: SocketAddr, status: Status) -> Outcome {
        if self.respond(stream, peer, FileResponse::error(status)) {
            Outcome::Answered(status)
        } else {
            Outcome::Dropped
        }
    }

    fn respond(&self, stream: &TcpStream, peer: SocketAddr, response: FileResponse) -> bool {
        let bytes = response.encode();
        log::debug!("{peer}: response header: {}", Hex(&bytes));
        match write_all(stream, &bytes, self.lifecycle, self.timeout) {
            Ok(()) => {
                log::info!(
                    "{peer}: response: {}, file size {}",
                    response.status,
                    response.file_size
                );
                true
            }
            Err(error) => {
                log::warn!("{peer}: cannot send the response: {error}");
                false
            }
        }
    }
}

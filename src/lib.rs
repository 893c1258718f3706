//! tcpfile: a client and three Unix server models for a small file-transfer
//! protocol over TCP.
//!
//! - [`protocol`]: the wire format, pure.
//! - [`transfer`]: exact reads, the chunked `sendfile` loop, atomic files.
//! - [`served_dir`]: opening names safely inside the served directory.
//! - [`handler`]: the connection handler every server model shares.
//! - [`server`]: the three models, which differ only in scheduling.
//! - [`client`]: the client's side of the conversation.

pub mod bench;
pub mod cli;
pub mod client;
pub mod destination;
pub mod handler;
pub mod lifecycle;
pub mod logging;
pub mod protocol;
pub mod served_dir;
pub mod server;
pub mod transfer;

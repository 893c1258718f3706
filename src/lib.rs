//! tcpfile: a client and three Unix server models for a small file-transfer
//! protocol over TCP.
//!
//! - [`protocol`]: the wire format, pure.
//! - [`transfer`]: exact reads, the chunked `sendfile` loop, atomic files.
//! - [`served_dir`]: opening names safely inside the served directory.
//! - [`conversation`]: one connection's conversation, a state machine that
//!   does no I/O, which every server model drives.
//! - [`handler`]: the conversation driven over one blocking connection.
//! - [`server`]: the three models, which differ only in scheduling.
//! - [`client`]: the client's side of the conversation.

pub mod bench;
pub mod cli;
pub mod client;
pub mod conversation;
pub mod destination;
pub mod handler;
pub mod lifecycle;
pub mod logging;
pub mod protocol;
pub mod served_dir;
pub mod server;
pub mod transfer;

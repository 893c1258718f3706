//! One process, one connection at a time, each served completely.

use crate::cli::ServerArgs;
use crate::server::{Server, serve_one_at_a_time};

pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let server = Server::start(args, "iterative")?;
    serve_one_at_a_time(&server)?;
    log::info!("stopped");
    Ok(())
}

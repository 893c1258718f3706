//! Log output: `RUST_LOG` when it is set, otherwise the level `-q`/`-v` ask
//! for.

use std::io::Write;

/// How log lines look.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// Timestamp, level and the process ID, so lines from a server's children
    /// can be told apart.
    Server,
    /// Plain sentences for a person at a terminal.
    Client,
}

pub fn init(level: log::LevelFilter, style: Style) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    match style {
        Style::Server => builder.format(|out, record| {
            writeln!(
                out,
                "{} {:<5} [PID {}] {}",
                out.timestamp_millis(),
                record.level(),
                std::process::id(),
                record.args()
            )
        }),
        Style::Client => builder.format(|out, record| match record.level() {
            log::Level::Error => writeln!(out, "error: {}", record.args()),
            log::Level::Warn => writeln!(out, "warning: {}", record.args()),
            _ => writeln!(out, "{}", record.args()),
        }),
    };
    builder.init();
}

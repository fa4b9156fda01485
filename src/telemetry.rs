//! Logging set-up shared by every subcommand.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: human-readable by default, JSON
/// lines when `TRACTOR_LOG_FORMAT=json`; levels from `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: logs written to files (pods,
    // `tractor up`'s children) must stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let json = std::env::var("TRACTOR_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A second initialisation (tests) is harmless, so its error is ignored.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

//! The binary's own log lines: human-readable by default, one JSON object a line with
//! `--log-format json`, on standard error. Colour codes only when standard error is a terminal
//! (and `NO_COLOR` is unset), so a log file or a journal never holds escape sequences.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per record, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Install the process's log subscriber. `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("hearth=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests that start several servers) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Whether to colour: a terminal on stderr, and no `NO_COLOR` (see no-color.org).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

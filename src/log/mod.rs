//! The event log and its fan-out: what was committed, in order, and who is told.
//!
//! - `event`: one committed change (`Event`) and its stored record;
//! - `store`: the log's LMDB tables (the events by sequence, the `by_user` index, the last
//!   sequence in `meta`), the appends the writer's ops make inside their transaction, and the
//!   scans readers use (`replay`: borrowed records, the whole log or some users' events);
//! - `subscriptions`: patterns and the tables that find an event's subscribers by its key;
//! - `hub`: the fan-out thread (it owns the tables and the mailboxes, and the keep-alive clock),
//!   and feeds, live events joined to replay without a gap;
//! - `frame`: the bytes of an event on the wire, encoded once;
//! - `writer`: the one writer thread. Every change, whoever makes it, is an `Op` applied in a
//!   group commit; the events an op appends get their sequence numbers in that transaction.
//!
//! A panic in the writer or the fan-out thread stops the process (`fatal`).
//!
//! The log knows no files and no HTTP: file writes and (later) source ingest both append to
//! it, and the HTTP layer serves it. Below it is only the store's environment.

pub(crate) mod event;
pub(crate) mod frame;
pub(crate) mod hub;
pub mod retention;
pub(crate) mod store;
pub mod subscriptions;
mod writer;

pub use event::{hash_base64, Event, EventKind, Origin};
pub use store::{EventLog, PositionError};
pub use writer::{CommitListener, Op, WriteTxn, Writer, WriterThread};

use crate::store::StoreError;

/// A thread the log cannot do without (the writer, the fan-out) panicked or could not start:
/// say so and stop the process, non-zero, for its supervisor to restart it. Carrying on would
/// leave a server that refuses every write (503) or delivers nothing, for ever. Committed
/// writes are durable; an uncommitted batch was never acknowledged.
pub(crate) fn fatal(what: &str, panic: &(dyn std::any::Any + Send)) -> ! {
    let reason = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    tracing::error!("{what} failed ({reason}): stopping the server");
    eprintln!("hearth: {what} failed ({reason}): stopping the server");
    std::process::exit(EXIT_FATAL)
}

/// The exit status of a server stopped by `fatal` (EX_SOFTWARE).
pub const EXIT_FATAL: i32 = 70;

/// Why reading the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A position the log cannot serve (ahead of it, or dropped by retention).
    #[error(transparent)]
    Position(#[from] PositionError),
    /// A blocking read of the store did not finish (it panicked or was cancelled).
    #[error("a store read task failed: {0}")]
    Task(String),
}

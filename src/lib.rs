//! Hearth: a Pubky-compatible homeserver on LMDB, with an exactly-resumable SSE firehose.
//!
//! Layers, each importing only those below it:
//!
//! - `cli`, `config`, `server`, `datadir`: the binary's surface; how a server is configured,
//!   started and stopped, and the lock that keeps one server per data directory;
//! - `http`: the routes, and the only place that knows status codes (`http::error`);
//! - `pkarr`: being found: the server's pkarr record, users' records republished, resolving
//!   a homeserver's key;
//! - `files`: the homeserver's state (users, sessions, grants, files, quota) and the ops that
//!   change it;
//! - `relay`: beside `files`, the relay's sources: following other servers' event streams and
//!   appending their events to the log (`hearth relay`);
//! - `log`: the event log, the one group-committing writer that runs ops from any producer
//!   (their events get their sequence numbers in the commit), and the fan-out (subscriptions,
//!   hub, frames); knows no files or HTTP;
//! - `store`: the LMDB environment and its migrations runner; knows no layer above it;
//! - `keys`, `ids`, `path`, `clock`, `identity`: user keys, event ids, path rules, time, the
//!   server's keypair;
//! - `telemetry`: metric names and the one-line calls any layer records through;
//! - `backup`, `verify`, `logging`: the operator's tools (`hearth backup`, `hearth verify`) and
//!   the binary's log lines.
//!
//! `migrations` (the `migrations/` directory) is the schema's history: it creates the tables
//! of every layer, and the server hands it to `store` at open.

pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod files;
pub mod http;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod log;
pub mod logging;
#[path = "../migrations/mod.rs"]
pub mod migrations;
pub mod path;
pub mod pkarr;
pub mod relay;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod verify;

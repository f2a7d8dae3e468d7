//! Hearth: a Pubky-compatible homeserver on LMDB, with an exactly-resumable SSE firehose.
//!
//! Layers, each importing only those below it:
//!
//! - `cli`, `config`, `server`: the binary's surface; how a server is configured, started and
//!   stopped;
//! - `http`: the routes, and the only place that knows status codes (`http::error`);
//! - `files`: the homeserver's state (users, sessions, grants, files, quota) and the ops that
//!   change it;
//! - `relay`: beside `files`, the relay's sources: following other servers' event streams and
//!   appending their events to the log (`hearth relay`);
//! - `log`: the event log, the one group-committing writer that runs ops from any producer
//!   (their events get their sequence numbers in the commit), and the fan-out (subscriptions,
//!   hub, frames); knows no files or HTTP;
//! - `store`: the LMDB environment and its migrations runner; knows no layer above it;
//! - `keys`, `ids`, `path`, `clock`, `identity`: user keys, event ids, path rules, time, the
//!   server's keypair.
//!
//! `migrations` (the `migrations/` directory) is the schema's history: it creates the tables
//! of every layer, and the server hands it to `store` at open.

pub mod cli;
pub mod clock;
pub mod config;
pub mod files;
pub mod http;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod log;
#[path = "../migrations/mod.rs"]
pub mod migrations;
pub mod path;
pub mod relay;
pub mod server;
pub mod store;

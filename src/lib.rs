//! Hearth: a Pubky-compatible homeserver on LMDB, with an exactly-resumable SSE firehose.
//!
//! - `storage`: the LMDB store, its migrations, and the single group-committing writer;
//! - `events`: committed changes, their ids, and the firehose's subscription tables and fan-out;
//! - `http`: the HTTP surface, routes grouped by concern;
//! - `config`, `server`, `datadir`: how a server is configured, started and stopped, and the
//!   lock that keeps one server per data directory;
//! - `load`: the load generator behind `hearth load`, which measures a server over HTTP.

pub mod cli;
pub mod config;
pub mod datadir;
pub mod error;
pub mod events;
pub mod http;
pub mod identity;
pub mod load;
pub mod path;
pub mod server;
pub mod storage;

pub use error::{Error, Result};

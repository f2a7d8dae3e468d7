//! Hearth: a Pubky-compatible homeserver on LMDB, with an exactly-resumable SSE firehose.
//!
//! - `storage`: the LMDB store, its migrations, and the single group-committing writer;
//! - `events`: committed changes, their ids, and the firehose's subscription tables and fan-out;
//! - `http`: the HTTP surface, routes grouped by concern;
//! - `pkarr`: being found: the server's pkarr record, users' records republished, resolving;
//! - `config`, `server`: how a server is configured, started and stopped;
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
pub mod pkarr;
pub mod server;
pub mod storage;

pub use error::{Error, Result};

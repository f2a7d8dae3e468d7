//! Hearth: a Pubky-compatible homeserver on LMDB, with an exactly-resumable SSE firehose.
//!
//! - `storage`: the LMDB store, its migrations, and the single group-committing writer;
//! - `events`: committed changes, their ids, and the firehose's subscription tables and fan-out;
//! - `http`: the HTTP surface, routes grouped by concern;
//! - `config`, `server`: how a server is configured, started and stopped.

pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod identity;
pub mod path;
pub mod server;
pub mod storage;

pub use error::{Error, Result};

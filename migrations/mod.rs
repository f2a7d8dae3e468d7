//! The schema's history: one file per version, applied in order, never edited once released.
//!
//! A migration gets the environment and a write transaction of its own; if it fails, nothing
//! of it is committed and the server does not start. To change the schema, add a file
//! `mNNNN_what.rs` with the next version and append it to `ALL`.

use heed::{Env, RwTxn, WithoutTls};

mod m0001_initial;
mod m0002_grants;

/// One step of the schema.
pub struct Migration {
    /// The schema version after this step; versions count up from 1 without gaps.
    pub version: u32,
    pub name: &'static str,
    pub apply: fn(&Env<WithoutTls>, &mut RwTxn) -> heed::Result<()>,
}

/// Every migration this build knows, in order.
pub const ALL: &[Migration] = &[m0001_initial::MIGRATION, m0002_grants::MIGRATION];

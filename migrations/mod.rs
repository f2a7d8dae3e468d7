//! The schema's history: one file per version, applied in order, never edited once released.
//!
//! A migration gets the environment and a write transaction of its own; if it fails, nothing
//! of it is committed and the server does not start. To change the schema, add a file
//! `mNNNN_what.rs` with the next version and append it to `ALL`.

//! The steps create every layer's tables (`log`, `files`, `relay`), so this list lives at the top of
//! the crate; the runner in `store::migrate` only applies what it is given.

use crate::store::migrate::Migration;

mod m0001_initial;
mod m0002_grants;
mod m0003_event_log_v2;
mod m0004_relay;
mod m0005_user_admin;
mod m0006_file_tree;

/// Every migration this build knows, in order.
pub const ALL: &[Migration] = &[
    m0001_initial::MIGRATION,
    m0002_grants::MIGRATION,
    m0003_event_log_v2::MIGRATION,
    m0004_relay::MIGRATION,
    m0005_user_admin::MIGRATION,
    m0006_file_tree::MIGRATION,
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    ALL.last().map_or(0, |m| m.version)
}

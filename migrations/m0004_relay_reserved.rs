//! Version 4: reserved for the relay's tables (the `relay` branch brings the real step). A
//! no-op here so that version 5 follows without a gap; replace it with the relay's m0004 when
//! both are merged.

use heed::RwTxn;

use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 4,
    name: "reserved for the relay tables",
    apply,
};

fn apply(_env: &Env, _txn: &mut RwTxn) -> heed::Result<()> {
    Ok(())
}

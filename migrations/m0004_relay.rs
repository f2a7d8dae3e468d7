//! Version 4: the relay's tables. Each source's record (its key, cursor and counters) and
//! each homeserver's mark (the newest of its events stored), both written in the transaction
//! of the events they cover (see `relay::tables`).

use heed::types::{Bytes, Str};
use heed::RwTxn;

use crate::relay::tables::names;
use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 4,
    name: "relay: sources and homeserver marks",
    apply,
};

fn apply(env: &Env, txn: &mut RwTxn) -> heed::Result<()> {
    env.create_database::<Str, Bytes>(txn, Some(names::RELAY_SOURCES))?;
    env.create_database::<Str, Bytes>(txn, Some(names::RELAY_HS_MARKS))?;
    Ok(())
}

//! Version 2: the grant flow's tables. Grants a user signed for a client, the bearer token
//! each live grant currently has, and the PoP proofs already spent (to refuse replays).

use heed::types::{Bytes, Str, U64};
use heed::{byteorder::BigEndian, RwTxn};

use crate::files::tables::names;
use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 2,
    name: "grants, bearer sessions, PoP nonces",
    apply,
};

fn apply(env: &Env, txn: &mut RwTxn) -> heed::Result<()> {
    env.create_database::<Str, Bytes>(txn, Some(names::GRANTS))?;
    env.create_database::<Bytes, Bytes>(txn, Some(names::BEARER_SESSIONS))?;
    env.create_database::<Bytes, U64<BigEndian>>(txn, Some(names::POP_NONCES))?;
    Ok(())
}

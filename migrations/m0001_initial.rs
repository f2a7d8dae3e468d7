//! Version 1: the initial schema. Users, sessions, used auth tokens, signup tokens, files,
//! their content in chunks, and the event log.

use heed::types::{Bytes, Str, U64};
use heed::{byteorder::BigEndian, RwTxn};

use crate::files::tables::names;
use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 1,
    name: "initial schema",
    apply,
};

fn apply(env: &Env, txn: &mut RwTxn) -> heed::Result<()> {
    env.create_database::<Str, Bytes>(txn, Some(names::USERS))?;
    env.create_database::<Str, Bytes>(txn, Some(names::SESSIONS))?;
    env.create_database::<Bytes, U64<BigEndian>>(txn, Some(names::USED_AUTH_TOKENS))?;
    env.create_database::<Str, Bytes>(txn, Some(names::SIGNUP_TOKENS))?;
    env.create_database::<Bytes, Bytes>(txn, Some(names::FILES))?;
    env.create_database::<Bytes, Bytes>(txn, Some(names::CHUNKS))?;
    env.create_database::<U64<BigEndian>, Bytes>(txn, Some(crate::log::store::names::EVENTS))?;
    Ok(())
}

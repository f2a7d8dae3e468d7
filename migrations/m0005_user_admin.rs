//! Version 5: what the admin needs on users and signup tokens. A user record gains
//! `disabled` and its own limits (`quota`); a signup token gains when it was used and the
//! limits it gives its user. Records are postcard (not self-describing), so every one is
//! re-encoded here, in this migration's one transaction: users start enabled with the
//! server's default limits, tokens with default limits (a used token's time is unknown).

use heed::types::{Bytes, Str};
use heed::RwTxn;
use serde::Deserialize;

use crate::files::quota::UserQuota;
use crate::files::tables::{encode, names, SignupTokenRecord, UserRecord};
use crate::store::migrate::Migration;
use crate::store::Env;

pub const MIGRATION: Migration = Migration {
    version: 5,
    name: "user admin fields: disabled, per-user limits",
    apply,
};

/// A user record before version 5.
#[derive(Deserialize)]
struct UserV1 {
    created_ms: u64,
    used_bytes: u64,
}

/// A signup token record before version 5.
#[derive(Deserialize)]
struct SignupTokenV1 {
    created_ms: u64,
    used_by: Option<String>,
}

fn apply(env: &Env, txn: &mut RwTxn) -> heed::Result<()> {
    let users = table(env, txn, names::USERS)?;
    for (key, bytes) in entries(users, txn)? {
        let old: UserV1 = decode(&key, &bytes)?;
        let record = UserRecord {
            created_ms: old.created_ms,
            used_bytes: old.used_bytes,
            disabled: false,
            quota: UserQuota::default(),
        };
        users.put(txn, &key, &reencode(&record)?)?;
    }
    let tokens = table(env, txn, names::SIGNUP_TOKENS)?;
    for (key, bytes) in entries(tokens, txn)? {
        let old: SignupTokenV1 = decode(&key, &bytes)?;
        let record = SignupTokenRecord {
            created_ms: old.created_ms,
            used_by: old.used_by,
            used_ms: None,
            quota: UserQuota::default(),
        };
        tokens.put(txn, &key, &reencode(&record)?)?;
    }
    Ok(())
}

fn table(env: &Env, txn: &RwTxn, name: &str) -> heed::Result<heed::Database<Str, Bytes>> {
    env.open_database::<Str, Bytes>(txn, Some(name))?
        .ok_or_else(|| decoding(format!("the store has no {name} table")))
}

/// Every record of a table (users and tokens of one server fit in memory).
fn entries(table: heed::Database<Str, Bytes>, txn: &RwTxn) -> heed::Result<Vec<(String, Vec<u8>)>> {
    table
        .iter(txn)?
        .map(|entry| entry.map(|(key, bytes)| (key.to_string(), bytes.to_vec())))
        .collect()
}

fn decode<'a, T: Deserialize<'a>>(key: &str, bytes: &'a [u8]) -> heed::Result<T> {
    postcard::from_bytes(bytes).map_err(|err| decoding(format!("record {key:?}: {err}")))
}

fn reencode<T: serde::Serialize>(value: &T) -> heed::Result<Vec<u8>> {
    encode(value).map_err(|err| decoding(err.to_string()))
}

fn decoding(message: String) -> heed::Error {
    heed::Error::Decoding(message.into())
}

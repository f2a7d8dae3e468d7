//! Bringing a store's schema up to this build's version.
//!
//! The version lives in the `meta` table. On open, every migration the store lacks is applied
//! in order, each in its own write transaction together with the new version number, so a crash
//! leaves the store at a version it really has. A store newer than this build is refused: old
//! code must not write into a layout it does not understand.

use heed::types::{Bytes, Str};
use heed::{Env, WithoutTls};

#[path = "../../migrations/mod.rs"]
mod steps;

pub use steps::{Migration, ALL};

use super::schema::{meta_keys, names, Meta};
use crate::error::{Error, Result};

/// The schema version this build writes.
pub fn current_version() -> u32 {
    ALL.last().map_or(0, |m| m.version)
}

/// Apply the migrations in `steps` that the store lacks. Returns the version the store is at.
pub fn migrate(env: &Env<WithoutTls>, steps: &[Migration]) -> Result<u32> {
    let known = steps.last().map_or(0, |m| m.version);
    let meta = {
        let mut txn = env.write_txn()?;
        let meta: Meta = env.create_database::<Str, Bytes>(&mut txn, Some(names::META))?;
        txn.commit()?;
        meta
    };
    let mut version = read_version(env, meta)?;
    if version > known {
        return Err(Error::Corrupt(format!(
            "the store's schema is version {version}, newer than the {known} this hearth knows; \
             run a newer hearth, or restore a backup made by this one"
        )));
    }
    let start = version;
    for step in steps.iter().filter(|m| m.version > start) {
        if step.version != version + 1 {
            return Err(Error::Corrupt(format!(
                "migration {} ({}) does not follow version {version}",
                step.version, step.name
            )));
        }
        let mut txn = env.write_txn()?;
        (step.apply)(env, &mut txn)?;
        meta.put(
            &mut txn,
            meta_keys::SCHEMA_VERSION,
            &step.version.to_be_bytes(),
        )?;
        txn.commit()?;
        tracing::info!(
            version = step.version,
            name = step.name,
            "applied migration"
        );
        version = step.version;
    }
    Ok(version)
}

fn read_version(env: &Env<WithoutTls>, meta: Meta) -> Result<u32> {
    let txn = env.read_txn()?;
    match meta.get(&txn, meta_keys::SCHEMA_VERSION)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 4] = bytes
                .try_into()
                .map_err(|_| Error::Corrupt("the schema version is not 4 bytes".into()))?;
            Ok(u32::from_be_bytes(raw))
        }
    }
}

//! Bringing a store's schema up to this build's version.
//!
//! The version lives in the `meta` table. On open, every migration the store lacks is applied
//! in order, each in its own write transaction together with the new version number, so a crash
//! leaves the store at a version it really has. A store newer than this build is refused: old
//! code must not write into a layout it does not understand. The steps themselves are the
//! schema's history, in `migrations/` (`crate::migrations`): this runner knows none of them.

use heed::types::{Bytes, Str};
use heed::RwTxn;

use super::{meta_keys, names, Env, Meta, StoreError};

/// One step of the schema.
pub struct Migration {
    /// The schema version after this step; versions count up from 1 without gaps.
    pub version: u32,
    pub name: &'static str,
    pub apply: fn(&Env, &mut RwTxn) -> heed::Result<()>,
}

/// Apply the migrations in `steps` that the store lacks. Returns the version the store is at.
pub fn migrate(env: &Env, steps: &[Migration]) -> Result<u32, StoreError> {
    let known = steps.last().map_or(0, |m| m.version);
    let meta = {
        let mut txn = env.write_txn()?;
        let meta: Meta = env.create_database::<Str, Bytes>(&mut txn, Some(names::META))?;
        txn.commit()?;
        meta
    };
    let mut version = read_version(env, meta)?;
    if version > known {
        return Err(StoreError::Schema(format!(
            "the store's schema is version {version}, newer than the {known} this hearth knows; \
             run a newer hearth, or restore a backup made by this one"
        )));
    }
    let start = version;
    for step in steps.iter().filter(|m| m.version > start) {
        if step.version != version + 1 {
            return Err(StoreError::Schema(format!(
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

fn read_version(env: &Env, meta: Meta) -> Result<u32, StoreError> {
    let txn = env.read_txn()?;
    match meta.get(&txn, meta_keys::SCHEMA_VERSION)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 4] = bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt("the schema version is not 4 bytes".into()))?;
            Ok(u32::from_be_bytes(raw))
        }
    }
}

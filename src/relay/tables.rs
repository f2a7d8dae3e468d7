//! The relay's LMDB tables (migration m0004), written only by the ingest op, in the same
//! transaction as the events they cover:
//!
//! - `relay_sources`: source spec (canonical text) -> `SourceRecord`: the source's key, its
//!   cursor as the source writes it, its counters, and whether the admin API added it;
//! - `relay_hs_marks`: homeserver key (z32) -> the ordering key (`order`, 16 bytes
//!   big-endian) of the newest of its events stored. An event of that homeserver at or below
//!   its mark is one the relay has already, whichever source brought it.

use heed::types::{Bytes, Str};
use heed::{Database, RoTxn, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};

use crate::ids;
use crate::store::{Env, Store, StoreError};

/// Names of the relay's databases, as migrations create them.
pub mod names {
    pub const RELAY_SOURCES: &str = "relay_sources";
    pub const RELAY_HS_MARKS: &str = "relay_hs_marks";
}

/// The format byte of `SourceRecord`s.
const FORMAT_V1: u8 = 1;

/// What the relay remembers of a source. The field order is the format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The key of the server the source answered as (its `GET /`, or the key its spec names).
    pub hs: Option<String>,
    /// The id of the last event taken from the source (stored, skipped or a duplicate), as the
    /// source writes it; where the next read resumes.
    pub cursor: Option<String>,
    /// Events stored.
    pub ingested: u64,
    /// Events that could not be read, passed over.
    pub skipped: u64,
    /// Events already stored from another source (a diamond), passed over.
    pub duplicates: u64,
    /// Added on the admin listener: followed again at every start until removed there.
    pub admin: bool,
}

impl SourceRecord {
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_extend(self, vec![FORMAT_V1])
            .map_err(|err| StoreError::Invalid(format!("a source record: {err}")))
    }

    fn decode(bytes: &[u8]) -> Result<SourceRecord, StoreError> {
        match bytes.split_first() {
            Some((&FORMAT_V1, rest)) => Ok(postcard::from_bytes(rest)?),
            _ => Err(StoreError::Corrupt(
                "a relay source record of an unknown format".into(),
            )),
        }
    }
}

/// An event's place in its homeserver's order, from its id as the homeserver writes it.
///
/// Hearth ids and Pubky 0.5 cursors are 13 Crockford characters (Pubky's are timestamps;
/// both start with `0` for centuries to come); Pubky 0.17 ids are decimals without leading
/// zeros. Both become numbers, and a decimal orders after every Crockford id, so a Pubky
/// homeserver upgraded from 0.5 to 0.17 keeps one order. Anything else is not an id.
pub fn order(id: &str) -> Option<u128> {
    if id.len() == ids::ID_LEN && id.starts_with('0') {
        return ids::decode(id).ok().map(u128::from);
    }
    let decimal = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id.len() == 1 || !id.starts_with('0'));
    if !decimal {
        return None;
    }
    id.parse::<u64>()
        .ok()
        .map(|n| (1u128 << 64) | u128::from(n))
}

/// The relay's tables: a cheap clone over the store's environment.
#[derive(Clone)]
pub struct RelayTables {
    env: Env,
    sources: Database<Str, Bytes>,
    marks: Database<Str, Bytes>,
}

impl RelayTables {
    pub fn open(store: &Store) -> Result<RelayTables, StoreError> {
        Ok(RelayTables {
            env: store.env().clone(),
            sources: store.table(names::RELAY_SOURCES)?,
            marks: store.table(names::RELAY_HS_MARKS)?,
        })
    }

    /// A source's record, if it was ever followed.
    pub fn source(&self, spec: &str) -> Result<Option<SourceRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        self.read_source(&txn, spec)
    }

    /// The sources the admin API added (and did not remove), in spec order.
    pub fn admin_sources(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut specs = Vec::new();
        for entry in self.sources.iter(&txn)? {
            let (spec, bytes) = entry?;
            if SourceRecord::decode(bytes)?.admin {
                specs.push(spec.to_string());
            }
        }
        Ok(specs)
    }

    /// The ordering key of the newest event of `hs` stored, if any.
    pub fn mark(&self, hs: &str) -> Result<Option<u128>, StoreError> {
        let txn = self.env.read_txn()?;
        self.read_mark(&txn, hs)
    }

    pub(crate) fn read_source(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        spec: &str,
    ) -> Result<Option<SourceRecord>, StoreError> {
        self.sources
            .get(txn, spec)?
            .map(SourceRecord::decode)
            .transpose()
    }

    pub(crate) fn put_source(
        &self,
        txn: &mut RwTxn,
        spec: &str,
        record: &SourceRecord,
    ) -> Result<(), StoreError> {
        Ok(self.sources.put(txn, spec, &record.encode()?)?)
    }

    pub(crate) fn delete_source(&self, txn: &mut RwTxn, spec: &str) -> Result<(), StoreError> {
        self.sources.delete(txn, spec)?;
        Ok(())
    }

    pub(crate) fn read_mark(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        hs: &str,
    ) -> Result<Option<u128>, StoreError> {
        match self.marks.get(txn, hs)? {
            None => Ok(None),
            Some(bytes) => {
                let raw: [u8; 16] = bytes.try_into().map_err(|_| {
                    StoreError::Corrupt(format!("the relay mark of {hs} is not 16 bytes"))
                })?;
                Ok(Some(u128::from_be_bytes(raw)))
            }
        }
    }

    pub(crate) fn put_mark(&self, txn: &mut RwTxn, hs: &str, mark: u128) -> Result<(), StoreError> {
        Ok(self.marks.put(txn, hs, &mark.to_be_bytes())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_their_homeserver_wrote_them() {
        let hearth = |seq| order(&ids::encode(seq)).unwrap();
        assert!(hearth(1) < hearth(2));
        assert!(hearth(31) < hearth(32));
        // A Pubky 0.5 cursor: a timestamp in microseconds.
        let ts = order("0033F9K3ZJ1E0").unwrap();
        assert!(hearth(5) < ts);
        // Pubky 0.17 decimals: numeric, and after every Crockford id.
        let dec = |s: &str| order(s).unwrap();
        assert!(dec("9") < dec("10"));
        assert!(dec("99") < dec("100"));
        assert!(ts < dec("1"));
        assert!(hearth(u64::MAX >> 4) < dec("0"));
        for bad in [
            "",
            "01",
            "1a",
            "-1",
            "000000000000a",
            "00000000000001",
            "18446744073709551616",
        ] {
            assert_eq!(order(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn records_round_trip() {
        let record = SourceRecord {
            hs: Some("k".into()),
            cursor: Some("42".into()),
            ingested: 3,
            skipped: 1,
            duplicates: 2,
            admin: true,
        };
        let bytes = record.encode().unwrap();
        assert_eq!(SourceRecord::decode(&bytes).unwrap(), record);
        assert!(SourceRecord::decode(&[9, 0]).is_err());
    }
}

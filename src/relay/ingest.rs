//! The ingest op: one batch of one source's events, appended to the log in one transaction
//! together with the source's new cursor and counters and the homeservers' marks.
//!
//! A source task reads events, checks each (a bad one is counted in `skipped` and passed
//! over), and submits the batch to the writer as an `Ingest`. In the transaction, each event
//! is compared with its homeserver's mark: at or below it, the relay has it already (another
//! source brought it: a diamond) and it is passed over; above it, it is appended with its
//! origin and becomes the mark. The cursor is the id of the batch's last event, whatever
//! became of it. Whether the commit lands or not, the cursor and the events it covers land
//! together: a relay killed at any instant resumes each source exactly where its log ends.
//!
//! A batch names the cursor it follows, and is refused unless that is the stored one: a
//! source may have several batches in the writer's queue, and if one fails, the next must
//! not move the cursor past the events that did not land.

use std::sync::Mutex;

use super::tables::{RelayTables, SourceRecord};
use crate::log::{Event, EventKind, Op, Origin, WriteTxn};
use crate::store::StoreError;

/// One event read from a source, checked and ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub kind: EventKind,
    /// `<user z32><path>`.
    pub key: String,
    /// The homeserver's commit time, when the source gave it.
    pub ts_ms: Option<u64>,
    pub hash: Option<[u8; 32]>,
    pub size: Option<u64>,
    /// The homeserver where the change was committed, when the source names it (an upstream
    /// relay's event); otherwise the source's own key.
    pub hs: Option<String>,
    /// That homeserver's id of the event, as it writes it.
    pub hs_seq: String,
    /// `tables::order(hs_seq)`.
    pub order: u128,
}

/// A batch of one source's events, for the writer.
pub struct Ingest {
    tables: RelayTables,
    /// The source's canonical spec: its row.
    source: String,
    /// The key the source answers as: the `hs` of events that name none.
    hs: String,
    /// Taken (not cloned) when applied: the writer applies an op once.
    events: Mutex<Vec<Incoming>>,
    skipped: u64,
    /// The stored cursor this batch continues from.
    follows: Option<String>,
    /// The cursor after the batch; None when it moves none (only messages without an id).
    cursor: Option<String>,
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source's stored cursor is not the one the batch follows (an earlier batch failed).
    #[error("the batch follows cursor {follows:?}, but the stored cursor is {stored:?}")]
    Stale {
        follows: Option<String>,
        stored: Option<String>,
    },
}

/// What an ingest changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    pub stored: u64,
    pub duplicates: u64,
    pub skipped: u64,
}

impl Ingest {
    pub fn new(
        tables: RelayTables,
        source: String,
        hs: String,
        events: Vec<Incoming>,
        skipped: u64,
        follows: Option<String>,
        cursor: Option<String>,
    ) -> Ingest {
        Ingest {
            tables,
            source,
            hs,
            events: Mutex::new(events),
            skipped,
            follows,
            cursor,
        }
    }
}

impl Op for Ingest {
    type Output = Ingested;
    type Error = IngestError;

    fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<Ingested, IngestError> {
        let mut record = self
            .tables
            .read_source(txn, &self.source)?
            .unwrap_or_default();
        if record.cursor != self.follows {
            return Err(IngestError::Stale {
                follows: self.follows.clone(),
                stored: record.cursor,
            });
        }
        let events = std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        // The marks this batch reads and moves: a batch names one homeserver, or a few.
        let mut marks: Vec<(String, Option<u128>, bool)> = Vec::new();
        let mut done = Ingested {
            skipped: self.skipped,
            ..Ingested::default()
        };
        for incoming in events {
            let hs = incoming.hs.as_deref().unwrap_or(&self.hs);
            let slot = match marks.iter().position(|(known, _, _)| known == hs) {
                Some(slot) => slot,
                None => {
                    let mark = self.tables.read_mark(txn, hs)?;
                    marks.push((hs.to_string(), mark, false));
                    marks.len() - 1
                }
            };
            if marks[slot].1.is_some_and(|mark| incoming.order <= mark) {
                done.duplicates += 1;
                continue;
            }
            let ts_ms = incoming.ts_ms.unwrap_or_else(|| txn.ts_ms());
            let origin = Origin {
                hs: marks[slot].0.clone(),
                hs_seq: incoming.hs_seq,
            };
            txn.append(Event {
                seq: 0,
                kind: incoming.kind,
                key: incoming.key,
                ts_ms,
                hash: incoming.hash,
                size: incoming.size,
                origin: Some(origin),
            })?;
            marks[slot].1 = Some(incoming.order);
            marks[slot].2 = true;
            done.stored += 1;
        }
        for (hs, mark, moved) in &marks {
            if let (Some(mark), true) = (mark, moved) {
                self.tables.put_mark(txn, hs, *mark)?;
            }
        }
        record.hs = Some(self.hs.clone());
        if self.cursor.is_some() {
            record.cursor = self.cursor.clone();
        }
        record.ingested += done.stored;
        record.skipped += done.skipped;
        record.duplicates += done.duplicates;
        self.tables.put_source(txn, &self.source, &record)?;
        Ok(done)
    }
}

/// Mark a source as added on the admin API (followed at every start) or not; `forget` drops
/// its row altogether (its cursor and counters: a later add starts from the beginning).
pub struct SetAdmin {
    pub tables: RelayTables,
    pub source: String,
    pub admin: bool,
    pub forget: bool,
}

impl Op for SetAdmin {
    type Output = ();
    type Error = StoreError;

    fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<(), StoreError> {
        if self.forget {
            return self.tables.delete_source(txn, &self.source);
        }
        let mut record: SourceRecord = self
            .tables
            .read_source(txn, &self.source)?
            .unwrap_or_default();
        record.admin = self.admin;
        self.tables.put_source(txn, &self.source, &record)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids;
    use crate::log::store::testing::temp_log;
    use crate::log::{CommitListener, Writer};
    use crate::relay::tables::order;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";
    const HS_A: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn incoming(hs: Option<&str>, seq: u64) -> Incoming {
        let hs_seq = ids::encode(seq);
        Incoming {
            kind: EventKind::Put,
            key: format!("{ALICE}/pub/{seq}"),
            ts_ms: Some(seq),
            hash: None,
            size: None,
            hs: hs.map(str::to_string),
            order: order(&hs_seq).unwrap(),
            hs_seq,
        }
    }

    #[tokio::test]
    async fn two_sources_of_one_homeserver_store_each_event_once() {
        let (_dir, store, log) = temp_log();
        let tables = RelayTables::open(&store).unwrap();
        let listener: CommitListener = Arc::new(|_| {});
        let (writer, thread) = Writer::start(&store, log.clone(), listener).unwrap();
        let ingest = |source: &str, seqs: std::ops::RangeInclusive<u64>, skipped| {
            let events: Vec<Incoming> = seqs.clone().map(|s| incoming(Some(HS_A), s)).collect();
            let cursor = ids::encode(*seqs.end());
            let follows = tables
                .source(source)
                .unwrap()
                .and_then(|record| record.cursor);
            writer.submit(Ingest::new(
                tables.clone(),
                source.into(),
                "relaykey".into(),
                events,
                skipped,
                follows,
                Some(cursor),
            ))
        };
        let r1 = ingest("r1", 1..=5, 0).await.unwrap();
        assert_eq!((r1.stored, r1.duplicates), (5, 0));
        let r2 = ingest("r2", 1..=3, 1).await.unwrap();
        assert_eq!((r2.stored, r2.duplicates, r2.skipped), (0, 3, 1));
        let r2 = ingest("r2", 4..=8, 0).await.unwrap();
        assert_eq!((r2.stored, r2.duplicates), (3, 2));
        let r1 = ingest("r1", 6..=8, 0).await.unwrap();
        assert_eq!((r1.stored, r1.duplicates), (0, 3));

        let mut stored = Vec::new();
        log.scan(0, usize::MAX, |e| {
            stored.push((e.seq, e.origin.expect("an origin").hs_seq));
            true
        })
        .unwrap();
        let expected: Vec<(u64, String)> = (1..=8).map(|s| (s, ids::encode(s))).collect();
        assert_eq!(stored, expected);
        let r2 = tables.source("r2").unwrap().unwrap();
        assert_eq!(
            r2,
            SourceRecord {
                hs: Some("relaykey".into()),
                cursor: Some(ids::encode(8)),
                ingested: 3,
                skipped: 1,
                duplicates: 5,
                admin: false,
            }
        );
        assert_eq!(tables.mark(HS_A).unwrap(), order(&ids::encode(8)));

        // Events that name no homeserver are the source's own.
        let own = writer
            .submit(Ingest::new(
                tables.clone(),
                "hs".into(),
                ALICE.into(),
                vec![incoming(None, 1)],
                0,
                None,
                Some(ids::encode(1)),
            ))
            .await
            .unwrap();
        assert_eq!(own.stored, 1);
        assert_eq!(tables.mark(ALICE).unwrap(), order(&ids::encode(1)));
        // A batch that does not follow the stored cursor changes nothing.
        let stale = writer
            .submit(Ingest::new(
                tables.clone(),
                "hs".into(),
                ALICE.into(),
                vec![incoming(None, 3)],
                0,
                Some(ids::encode(2)),
                Some(ids::encode(3)),
            ))
            .await;
        assert!(matches!(stale, Err(IngestError::Stale { .. })), "{stale:?}");
        assert_eq!(tables.mark(ALICE).unwrap(), order(&ids::encode(1)));
        assert_eq!(log.last_seq().unwrap(), 9);

        writer
            .submit(SetAdmin {
                tables: tables.clone(),
                source: "r2".into(),
                admin: true,
                forget: false,
            })
            .await
            .unwrap();
        assert_eq!(tables.admin_sources().unwrap(), vec!["r2".to_string()]);
        assert_eq!(tables.source("r2").unwrap().unwrap().ingested, 3);
        writer
            .submit(SetAdmin {
                tables: tables.clone(),
                source: "r2".into(),
                admin: false,
                forget: true,
            })
            .await
            .unwrap();
        assert_eq!(tables.source("r2").unwrap(), None);
        drop(writer);
        thread.join();
    }
}

//! The log's LMDB tables and their API: `events` (sequence, big-endian, -> record), the
//! `by_user` index (`<user z32><sequence BE>` -> nothing), and the last sequence ever assigned
//! (`last_seq` in the store's `meta` table).
//!
//! The writer's batch appends inside its transaction: each event's record and index entry
//! (a secondary index in the record's transaction, as strfry keeps its own) as ops append
//! them, and the new last sequence once, before the commit; an op that rolls back gives its
//! sequence numbers back and a committed one never reuses any. Readers scan in either
//! direction, or some users' events (`replay`), in one read transaction each.

use std::ops::Bound;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Unit, U64};
use heed::{Database, RoTxn, RwTxn, WithoutTls};

use super::event::{decode, decode_ref, encode, Event, EventRef};
use crate::ids::Id;
use crate::keys::USER_KEY_LEN;
use crate::store::{meta_keys, Env, Meta, Store, StoreError};

/// Names of the log's databases, as migrations create them.
pub mod names {
    pub const EVENTS: &str = "events";
    pub const BY_USER: &str = "by_user";
}

/// The `by_user` key of a user's event: `<user z32><seq BE>`, so one user's events are one
/// key range, in sequence order.
pub(crate) fn user_key(user: &str, seq: u64) -> [u8; USER_KEY_LEN + 8] {
    let mut key = [0u8; USER_KEY_LEN + 8];
    let user = user.as_bytes();
    let len = user.len().min(USER_KEY_LEN);
    key[..len].copy_from_slice(&user[..len]);
    key[USER_KEY_LEN..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// A resume position the log cannot serve. The messages name the ids a client can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Never assigned: perhaps another server's id, or a replaced data directory.
    #[error("event id {} is ahead of the newest event, {}", Id(*after), Id(*newest))]
    Ahead { after: u64, newest: u64 },
    /// Retention dropped the events right after it.
    #[error(
        "event id {} is older than the oldest retained event, {}; resume from lastSeq={} \
         to read what is retained",
        Id(*after),
        Id(*oldest),
        Id(oldest.saturating_sub(1))
    )]
    Dropped { after: u64, oldest: u64 },
    /// Retention dropped everything.
    #[error(
        "event id {} is older than the oldest retained event: none is retained, the newest \
         was {}",
        Id(*after),
        Id(*newest)
    )]
    NoneRetained { after: u64, newest: u64 },
}

/// The event log: a cheap clone over the store's environment.
#[derive(Clone)]
pub struct EventLog {
    env: Env,
    events: Database<U64<BigEndian>, Bytes>,
    by_user: Database<Bytes, Unit>,
    meta: Meta,
}

impl EventLog {
    /// The log of an open store (whose migrations created its tables).
    pub fn open(store: &Store) -> Result<EventLog, StoreError> {
        Ok(EventLog {
            env: store.env().clone(),
            events: store.table(names::EVENTS)?,
            by_user: store.table(names::BY_USER)?,
            meta: store.meta_table(),
        })
    }

    /// Append `event` in `txn` under the next sequence number, which is set in the event.
    /// Its key must start with a user key (52 bytes of z32).
    #[cfg(test)]
    pub(crate) fn append(&self, txn: &mut RwTxn, mut event: Event) -> Result<Event, StoreError> {
        event.seq = self.read_last_seq(txn)? + 1;
        self.put_event(txn, &event)?;
        self.set_last_seq(txn, event.seq)?;
        Ok(event)
    }

    /// Write `event` (its sequence set) and its index entry in `txn`; the writer keeps the last
    /// sequence itself and writes it once per batch (`set_last_seq`).
    pub(crate) fn put_event(&self, txn: &mut RwTxn, event: &Event) -> Result<(), StoreError> {
        let user = event.key.get(..USER_KEY_LEN).ok_or_else(|| {
            StoreError::Invalid(format!(
                "an event key must start with a user key: {:?}",
                event.key
            ))
        })?;
        self.by_user.put(txn, &user_key(user, event.seq), &())?;
        self.events.put(txn, &event.seq, &encode(event)?)?;
        Ok(())
    }

    /// The last sequence assigned, as `txn` sees it.
    pub(crate) fn last_seq_in(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<u64, StoreError> {
        self.read_last_seq(txn)
    }

    pub(crate) fn set_last_seq(&self, txn: &mut RwTxn, seq: u64) -> Result<(), StoreError> {
        Ok(self
            .meta
            .put(txn, meta_keys::LAST_SEQ, &seq.to_be_bytes())?)
    }

    /// The last sequence ever assigned (0 for a new store).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let txn = self.env.read_txn()?;
        self.read_last_seq(&txn)
    }

    /// The oldest event still in the log, if any.
    pub fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.events.first(&txn)?.map(|(seq, _)| seq))
    }

    /// How many events the log holds (retention may have trimmed the oldest).
    pub fn count(&self) -> Result<u64, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.events.len(&txn)?)
    }

    /// The LMDB map's use and size (see `store::map_usage`).
    pub fn map_usage(&self) -> Result<(u64, u64), StoreError> {
        crate::store::map_usage(&self.env)
    }

    /// Trim, in `txn`, at most `max` of the oldest events: those with a sequence at or below
    /// `keep_after`, or (when `older_than_ms` is given) committed before it; their `by_user`
    /// entries go with them. `last_seq` is untouched, so sequences are never reused. Returns
    /// how many were trimmed.
    pub(crate) fn trim(
        &self,
        txn: &mut RwTxn,
        keep_after: u64,
        older_than_ms: Option<u64>,
        max: usize,
    ) -> Result<u64, StoreError> {
        let mut doomed = Vec::new();
        for entry in self.events.iter(txn)?.take(max) {
            let (seq, bytes) = entry?;
            let event = decode(seq, bytes)?;
            let old = older_than_ms.is_some_and(|limit| event.ts_ms < limit);
            if seq > keep_after && !old {
                break;
            }
            doomed.push((seq, event.user().to_string()));
        }
        for (seq, user) in &doomed {
            self.events.delete(txn, seq)?;
            self.by_user.delete(txn, &user_key(user, *seq))?;
        }
        Ok(doomed.len() as u64)
    }

    /// Visit events after `after`, in sequence order, at most `max` of them, in one read
    /// transaction. `visit` returns false to stop early. Returns the last sequence visited.
    pub fn scan(
        &self,
        after: u64,
        max: usize,
        visit: impl FnMut(Event) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        let txn = self.env.read_txn()?;
        let Some(start) = after.checked_add(1) else {
            return Ok(None);
        };
        let visited = visit_events(self.events.range(&txn, &(start..))?.take(max), visit);
        visited
    }

    /// Events before `before`, newest first, at most `max`: for reverse reads.
    pub fn scan_rev(
        &self,
        before: u64,
        max: usize,
        visit: impl FnMut(Event) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        let txn = self.env.read_txn()?;
        let visited = visit_events(self.events.rev_range(&txn, &(..before))?.take(max), visit);
        visited
    }

    /// Visit `user`'s events after `after`, in sequence order, at most `max` of them, in one
    /// read transaction, through the `by_user` index: the cost is that user's events, not the
    /// log's. `user` is a canonical z32 key (anything else has no events). `visit` returns
    /// false to stop early. Returns the last sequence visited.
    pub fn scan_user(
        &self,
        user: &str,
        after: u64,
        max: usize,
        mut visit: impl FnMut(Event) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        let (Some(start), USER_KEY_LEN) = (after.checked_add(1), user.len()) else {
            return Ok(None);
        };
        let txn = self.env.read_txn()?;
        let (lower, upper) = (user_key(user, start), user_key(user, u64::MAX));
        let range = (Bound::Included(&lower[..]), Bound::Included(&upper[..]));
        let mut last = None;
        for entry in self.by_user.range(&txn, &range)?.take(max) {
            let (key, ()) = entry?;
            let seq = key
                .get(USER_KEY_LEN..)
                .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt(format!("by_user key {key:?}")))?;
            let bytes = self.events.get(&txn, &seq)?.ok_or_else(|| {
                StoreError::Corrupt(format!("by_user names event {seq}, which the log lacks"))
            })?;
            let event = decode(seq, bytes)?;
            last = Some(seq);
            if !visit(event) {
                break;
            }
        }
        Ok(last)
    }

    /// Replay: visit the events after `after`, in sequence order, borrowed from the store
    /// (nothing is allocated per event), in one read transaction, until `visit` returns false
    /// or `max` events were visited. With `users`, only those users' events are read, each
    /// after its own floor as well, through the `by_user` index, merged by sequence: the cost
    /// is those users' events, not the log's.
    ///
    /// Returns the position the read reached: every event of the scope up to it was visited.
    /// When the read ran out of events (`done`), that is the newest sequence of the snapshot it
    /// read, so a caller that follows live events from there misses nothing.
    pub(crate) fn replay(
        &self,
        after: u64,
        users: Option<&[(&str, u64)]>,
        max: usize,
        visit: impl FnMut(EventRef<'_>) -> bool,
    ) -> Result<Replayed, StoreError> {
        let txn = self.env.read_txn()?;
        let newest = self.read_last_seq(&txn)?;
        let first = self.events.first(&txn)?.map(|(seq, _)| seq);
        let mut progress = Progress {
            visit,
            max,
            visited: 0,
            reached: after,
        };
        let Some(start) = after.checked_add(1) else {
            return Ok(Replayed {
                reached: after,
                done: true,
                first,
            });
        };
        let stopped = |reached| {
            Ok(Replayed {
                reached,
                done: false,
                first,
            })
        };
        match users {
            None => {
                for entry in self.events.range(&txn, &(start..))? {
                    let (seq, bytes) = entry?;
                    if !progress.step(seq, bytes)? {
                        return stopped(progress.reached);
                    }
                }
            }
            Some(users) => {
                // One cursor per user, merged: the heap holds each cursor's next sequence.
                let mut cursors = Vec::with_capacity(users.len());
                let mut heads = std::collections::BinaryHeap::with_capacity(users.len());
                for &(user, floor) in users {
                    if user.len() != USER_KEY_LEN {
                        continue;
                    }
                    let from = start.max(floor.saturating_add(1));
                    let (lower, upper) = (user_key(user, from), user_key(user, u64::MAX));
                    let range = (Bound::Included(&lower[..]), Bound::Included(&upper[..]));
                    let mut cursor = self.by_user.range(&txn, &range)?;
                    if let Some(seq) = next_indexed(&mut cursor)? {
                        heads.push(std::cmp::Reverse((seq, cursors.len())));
                    }
                    cursors.push(cursor);
                }
                while let Some(std::cmp::Reverse((seq, at))) = heads.pop() {
                    if progress.full() {
                        return stopped(progress.reached);
                    }
                    let bytes = self.events.get(&txn, &seq)?.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "by_user names event {seq}, which the log lacks"
                        ))
                    })?;
                    if !progress.step(seq, bytes)? {
                        return stopped(progress.reached);
                    }
                    if let Some(next) = next_indexed(&mut cursors[at])? {
                        heads.push(std::cmp::Reverse((next, at)));
                    }
                }
            }
        }
        Ok(Replayed {
            reached: progress.reached.max(newest),
            done: true,
            first,
        })
    }

    /// Whether `user` has any event in the log (one lookup in the `by_user` index).
    pub fn has_events_of(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.scan_user(user, 0, 1, |_| false)?.is_some())
    }

    /// Refuse a resume position the log cannot serve: ahead of the newest event, or before
    /// the oldest one retained.
    pub fn check_position(&self, after: u64) -> Result<(), super::LogError> {
        match position_error(after, self.last_seq()?, self.first_seq()?) {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    pub(crate) fn read_last_seq(&self, txn: &RoTxn<'_, WithoutTls>) -> Result<u64, StoreError> {
        match self.meta.get(txn, meta_keys::LAST_SEQ)? {
            None => Ok(0),
            Some(bytes) => {
                let raw: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("last_seq is not 8 bytes".into()))?;
                Ok(u64::from_be_bytes(raw))
            }
        }
    }
}

/// Where a `replay` stands: how many events it visited, the last one, and the visitor.
struct Progress<V> {
    visit: V,
    max: usize,
    visited: usize,
    reached: u64,
}

impl<V: FnMut(EventRef<'_>) -> bool> Progress<V> {
    /// Whether `max` events were visited: the replay stops before the next one.
    fn full(&self) -> bool {
        self.visited == self.max
    }

    /// Visit event `seq`; false when the replay must stop here (it was full, and the event
    /// was not visited, or the visitor said so, and it was).
    fn step(&mut self, seq: u64, bytes: &[u8]) -> Result<bool, StoreError> {
        if self.full() {
            return Ok(false);
        }
        self.visited += 1;
        self.reached = seq;
        Ok((self.visit)(decode_ref(seq, bytes)?))
    }
}

/// How far a `replay` read got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Every event of the read's scope up to this sequence was visited.
    pub reached: u64,
    /// The snapshot had nothing more: `reached` is its newest sequence.
    pub done: bool,
    /// The oldest event of the snapshot read (retention may have trimmed below it): a reader
    /// whose position is below `first - 1` has missed events it can no longer read.
    pub first: Option<u64>,
}

/// The sequence of the next `by_user` entry of a cursor.
fn next_indexed<'t>(
    cursor: &mut impl Iterator<Item = heed::Result<(&'t [u8], ())>>,
) -> Result<Option<u64>, StoreError> {
    let Some(entry) = cursor.next() else {
        return Ok(None);
    };
    let (key, ()) = entry?;
    key.get(USER_KEY_LEN..)
        .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
        .map(u64::from_be_bytes)
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt(format!("by_user key {key:?}")))
}

/// The rule of `check_position`, given the newest sequence ever assigned and the oldest one
/// still in the log. With no retention the log starts at 1 and only the first check can fail.
pub(crate) fn position_error(
    after: u64,
    newest: u64,
    oldest: Option<u64>,
) -> Option<PositionError> {
    if after > newest {
        return Some(PositionError::Ahead { after, newest });
    }
    match oldest {
        Some(oldest) if after.saturating_add(1) < oldest => {
            Some(PositionError::Dropped { after, oldest })
        }
        None if after < newest => Some(PositionError::NoneRetained { after, newest }),
        _ => None,
    }
}

/// Decode events from a log iterator (either direction) and hand them to `visit` until it
/// returns false. Returns the last sequence visited.
fn visit_events<'t>(
    entries: impl Iterator<Item = heed::Result<(u64, &'t [u8])>>,
    mut visit: impl FnMut(Event) -> bool,
) -> Result<Option<u64>, StoreError> {
    let mut last = None;
    for entry in entries {
        let (seq, bytes) = entry?;
        let event = decode(seq, bytes)?;
        last = Some(seq);
        if !visit(event) {
            break;
        }
    }
    Ok(last)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A fresh store (every migration applied) in a temp dir, and its log.
    pub fn temp_log() -> (tempfile::TempDir, Store, EventLog) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = crate::store::StoreOptions {
            map_size: 64 << 20,
            sync: false,
        };
        let store = Store::open(dir.path(), &options, crate::migrations::ALL).expect("store opens");
        let log = EventLog::open(&store).expect("log opens");
        (dir, store, log)
    }

    /// Append one event in a transaction of its own, as a writer batch of one would.
    pub fn append(store: &Store, log: &EventLog, event: Event) -> Event {
        let mut txn = store.env().write_txn().expect("write txn");
        let event = log.append(&mut txn, event).expect("append");
        txn.commit().expect("commit");
        event
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{append, temp_log};
    use super::*;
    use crate::log::EventKind;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";
    const BOB: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    fn del(path: &str) -> Event {
        del_of(ALICE, path)
    }

    fn del_of(user: &str, path: &str) -> Event {
        Event {
            seq: 0,
            kind: EventKind::Del,
            key: format!("{user}{path}"),
            ts_ms: 9,
            hash: None,
            size: None,
            origin: None,
        }
    }

    fn seqs(log: &EventLog, after: u64, max: usize) -> Vec<u64> {
        let mut seen = Vec::new();
        log.scan(after, max, |e| {
            seen.push(e.seq);
            true
        })
        .expect("scan");
        seen
    }

    #[test]
    fn append_assigns_the_next_sequence_and_scans_read_it_back() {
        let (_dir, store, log) = temp_log();
        assert_eq!(
            (log.last_seq().unwrap(), log.first_seq().unwrap()),
            (0, None)
        );
        for i in 1..=5u64 {
            assert_eq!(append(&store, &log, del(&format!("/pub/{i}"))).seq, i);
        }
        assert_eq!(
            (log.last_seq().unwrap(), log.first_seq().unwrap()),
            (5, Some(1))
        );
        assert_eq!(seqs(&log, 0, usize::MAX), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(&log, 2, 2), vec![3, 4]);
        assert_eq!(seqs(&log, 5, 10), Vec::<u64>::new());
        assert_eq!(seqs(&log, u64::MAX, 10), Vec::<u64>::new());
        let mut back = Vec::new();
        let last = log
            .scan_rev(5, 3, |e| {
                back.push((e.seq, e.path().to_string()));
                true
            })
            .unwrap();
        assert_eq!(
            back,
            vec![
                (4, "/pub/4".into()),
                (3, "/pub/3".into()),
                (2, "/pub/2".into())
            ]
        );
        assert_eq!(last, Some(2));
        let mut first = None;
        log.scan(0, usize::MAX, |e| {
            first = Some(e);
            false
        })
        .unwrap();
        assert_eq!(
            first,
            Some(Event {
                seq: 1,
                ..del("/pub/1")
            })
        );
    }

    fn user_seqs(log: &EventLog, user: &str, after: u64, max: usize) -> Vec<u64> {
        let mut seen = Vec::new();
        log.scan_user(user, after, max, |e| {
            assert_eq!(e.user(), user);
            seen.push(e.seq);
            true
        })
        .expect("scan_user");
        seen
    }

    #[test]
    fn scan_user_reads_one_users_events_in_order() {
        let (_dir, store, log) = temp_log();
        for i in 1..=9u64 {
            let user = if i % 3 == 0 { BOB } else { ALICE };
            append(&store, &log, del_of(user, &format!("/pub/{i}")));
        }
        assert_eq!(
            user_seqs(&log, ALICE, 0, usize::MAX),
            vec![1, 2, 4, 5, 7, 8]
        );
        assert_eq!(user_seqs(&log, BOB, 0, usize::MAX), vec![3, 6, 9]);
        assert_eq!(user_seqs(&log, ALICE, 4, 2), vec![5, 7]);
        assert_eq!(user_seqs(&log, BOB, 9, 10), Vec::<u64>::new());
        assert_eq!(user_seqs(&log, BOB, u64::MAX, 10), Vec::<u64>::new());
        assert_eq!(user_seqs(&log, "short", 0, 10), Vec::<u64>::new());
        let mut first = None;
        let last = log
            .scan_user(BOB, 0, usize::MAX, |e| {
                first = Some(e.path().to_string());
                false
            })
            .unwrap();
        assert_eq!((last, first.as_deref()), (Some(3), Some("/pub/3")));
        // An aborted append leaves no index entry behind.
        let mut txn = store.env().write_txn().unwrap();
        log.append(&mut txn, del_of(BOB, "/pub/gone")).unwrap();
        txn.abort();
        assert_eq!(user_seqs(&log, BOB, 0, usize::MAX), vec![3, 6, 9]);
        // A key without a user key is refused before anything is written.
        let mut txn = store.env().write_txn().unwrap();
        let bad = Event {
            key: "/pub/x".into(),
            ..del("")
        };
        assert!(matches!(
            log.append(&mut txn, bad),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn an_aborted_append_gives_its_sequence_back() {
        let (_dir, store, log) = temp_log();
        append(&store, &log, del("/pub/a"));
        {
            let mut txn = store.env().write_txn().unwrap();
            assert_eq!(log.append(&mut txn, del("/pub/b")).unwrap().seq, 2);
            txn.abort();
        }
        assert_eq!(log.last_seq().unwrap(), 1);
        assert_eq!(append(&store, &log, del("/pub/c")).seq, 2);
        assert_eq!(seqs(&log, 0, 10), vec![1, 2]);
    }

    const CAROL: &str = "pxnu33x7jtpx9ar1ytsi4yxbp6a5o36gwhffs8zoxmbuptici1jy";

    /// Replay in batches of `max` until done, as a feed does; what it visited, in order.
    fn replayed(
        log: &EventLog,
        after: u64,
        users: Option<&[(&str, u64)]>,
        max: usize,
    ) -> (Vec<u64>, u64) {
        let mut seen = Vec::new();
        let mut position = after;
        loop {
            let read = log
                .replay(position, users, max, |e| {
                    seen.push(e.seq);
                    true
                })
                .expect("replay");
            assert!(read.reached >= position, "a read never goes back");
            position = read.reached;
            if read.done {
                return (seen, position);
            }
        }
    }

    proptest::proptest! {
        /// Per-user replay visits exactly what a scan of the whole log filtered by user and
        /// floor visits, in the same order, whatever the batch size; and a done read reaches
        /// the newest sequence.
        #[test]
        fn per_user_replay_is_a_filtered_full_scan(
            writers in proptest::collection::vec(0..3usize, 1..80),
            chosen in proptest::collection::vec(proptest::option::of(0..90u64), 3),
            after in 0..90u64,
            max in 1..20usize,
        ) {
            let (_dir, store, log) = temp_log();
            let users = [ALICE, BOB, CAROL];
            for (i, &w) in writers.iter().enumerate() {
                append(&store, &log, del_of(users[w], &format!("/pub/{i}")));
            }
            let newest = writers.len() as u64;
            let after = after.min(newest);
            let scope: Vec<(&str, u64)> = chosen
                .iter()
                .zip(users)
                .filter_map(|(floor, user)| floor.map(|f| (user, f)))
                .collect();
            let mut expected = Vec::new();
            log.scan(after, usize::MAX, |e| {
                if scope.iter().any(|&(u, f)| u == e.user() && e.seq > f) {
                    expected.push(e.seq);
                }
                true
            }).expect("scan");
            let (seen, reached) = replayed(&log, after, Some(&scope), max);
            proptest::prop_assert_eq!(seen, expected);
            proptest::prop_assert_eq!(reached, newest.max(after));
            let (all, reached) = replayed(&log, after, None, max);
            proptest::prop_assert_eq!(all, ((after + 1)..=newest).collect::<Vec<_>>());
            proptest::prop_assert_eq!(reached, newest.max(after));
        }
    }

    #[test]
    fn replay_stops_where_the_visitor_says() {
        let (_dir, store, log) = temp_log();
        for i in 1..=6u64 {
            let user = if i % 2 == 0 { BOB } else { ALICE };
            append(&store, &log, del_of(user, &format!("/pub/{i}")));
        }
        let mut seen = Vec::new();
        let read = log
            .replay(0, Some(&[(ALICE, 0), (BOB, 3)]), 100, |e| {
                seen.push(e.seq);
                e.seq < 4
            })
            .unwrap();
        assert_eq!(seen, vec![1, 3, 4]);
        assert_eq!((read.reached, read.done), (4, false));
        let read = log.replay(6, None, 100, |_| true).unwrap();
        assert_eq!((read.reached, read.done), (6, true));
    }
}

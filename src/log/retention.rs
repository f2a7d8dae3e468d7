//! Retention: keeping the log bounded. Off by default; with `retain_events` and/or
//! `retain_days` a background task trims the oldest events, in transactions of at most
//! `TRIM_BATCH` events run by the writer like any other op, so a trim never holds up writes
//! for long. The `by_user` index is trimmed in the same transactions; `last_seq` is not, so
//! sequences are never reused. Readers asking for a trimmed position get the log's
//! `PositionError::Dropped` (410 over HTTP), which names the oldest id still there.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{EventLog, Op, WriteTxn, Writer};
use crate::clock::now_ms;
use crate::store::StoreError;

/// Events trimmed per transaction.
pub const TRIM_BATCH: usize = 1000;
/// How often the task looks for something to trim.
const INTERVAL: Duration = Duration::from_secs(1);
const DAY_MS: f64 = 86_400_000.0;

/// What the log keeps; `None` in both is no retention.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    /// Keep the newest this many sequence numbers.
    pub events: Option<u64>,
    /// Keep events committed within this many days (fractions allowed).
    pub days: Option<f64>,
}

impl Policy {
    pub fn is_off(&self) -> bool {
        self.events.is_none() && self.days.is_none()
    }

    /// The sequence at or below which events go, given the newest.
    fn keep_after(&self, last_seq: u64) -> u64 {
        self.events.map_or(0, |keep| last_seq.saturating_sub(keep))
    }

    /// The commit time before which events go, given now.
    fn older_than(&self, now_ms: u64) -> Option<u64> {
        self.days
            .map(|days| now_ms.saturating_sub((days * DAY_MS) as u64))
    }

    /// Whether the log has something this policy trims (a read, no write).
    pub fn has_work(&self, log: &EventLog) -> Result<bool, StoreError> {
        let Some(first) = log.first_seq()? else {
            return Ok(false);
        };
        if first <= self.keep_after(log.last_seq()?) {
            return Ok(true);
        }
        let Some(limit) = self.older_than(now_ms()) else {
            return Ok(false);
        };
        let mut old = false;
        log.scan(first - 1, 1, |event| {
            old = event.ts_ms < limit;
            false
        })?;
        Ok(old)
    }
}

/// One trim transaction: at most `TRIM_BATCH` of the oldest events the policy drops.
pub struct Trim {
    pub log: EventLog,
    pub policy: Policy,
}

impl Op for Trim {
    type Output = u64;
    type Error = StoreError;

    fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<u64, StoreError> {
        let keep_after = self.policy.keep_after(self.log.read_last_seq(txn)?);
        let older_than = self.policy.older_than(txn.ts_ms());
        self.log.trim(txn, keep_after, older_than, TRIM_BATCH)
    }
}

/// Trim in the background until `shutdown` flips; nothing is started when `policy` is off.
pub fn spawn(
    writer: Writer,
    log: EventLog,
    policy: Policy,
    mut shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if policy.is_off() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(err) = trim_all(&writer, &log, policy).await {
                tracing::warn!(error = %err, "retention could not trim the log");
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }))
}

/// Trim batch after batch while there is something to trim.
async fn trim_all(writer: &Writer, log: &EventLog, policy: Policy) -> Result<(), StoreError> {
    loop {
        let check = log.clone();
        let work = tokio::task::spawn_blocking(move || policy.has_work(&check))
            .await
            .map_err(|err| StoreError::Unavailable(format!("retention check failed: {err}")))??;
        if !work {
            return Ok(());
        }
        let trimmed = writer
            .submit(Trim {
                log: log.clone(),
                policy,
            })
            .await?;
        crate::telemetry::trimmed(trimmed);
        tracing::debug!(trimmed, "retention trimmed the oldest events");
        if trimmed == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::store::testing::{append, temp_log};
    use crate::log::{Event, EventKind};

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    fn event(path: &str, ts_ms: u64) -> Event {
        Event {
            seq: 0,
            kind: EventKind::Del,
            key: format!("{ALICE}{path}"),
            ts_ms,
            hash: None,
            size: None,
            origin: None,
        }
    }

    fn trim(store: &crate::store::Store, log: &EventLog, policy: Policy) -> u64 {
        let mut txn = store.env().write_txn().unwrap();
        let keep_after = policy.keep_after(log.read_last_seq(&txn).unwrap());
        let n = log
            .trim(
                &mut txn,
                keep_after,
                policy.older_than(now_ms()),
                TRIM_BATCH,
            )
            .unwrap();
        txn.commit().unwrap();
        n
    }

    #[test]
    fn trims_by_count_and_by_age_and_the_index_with_them() {
        let (_dir, store, log) = temp_log();
        let now = now_ms();
        for i in 0..5 {
            append(
                &store,
                &log,
                event(&format!("/pub/old{i}"), now - 3 * 86_400_000),
            );
        }
        for i in 0..5 {
            append(&store, &log, event(&format!("/pub/new{i}"), now));
        }
        let by_age = Policy {
            events: None,
            days: Some(1.0),
        };
        assert!(by_age.has_work(&log).unwrap());
        assert_eq!(trim(&store, &log, by_age), 5);
        assert!(!by_age.has_work(&log).unwrap());
        assert_eq!(log.first_seq().unwrap(), Some(6));
        let by_count = Policy {
            events: Some(2),
            days: None,
        };
        assert_eq!(trim(&store, &log, by_count), 3);
        assert_eq!(
            (log.first_seq().unwrap(), log.last_seq().unwrap()),
            (Some(9), 10)
        );
        let mut seen = Vec::new();
        log.scan_user(ALICE, 0, usize::MAX, |e| {
            seen.push(e.seq);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![9, 10], "the index is trimmed with the events");
        assert!(log.check_position(7).is_err());
        assert!(log.check_position(8).is_ok());
    }
}

//! The one writer: every change to the store goes through this thread, whoever makes it.
//!
//! A producer (file writes today, source ingest later) submits an `Op`: something that applies
//! itself to a write transaction and may append events to the log there. The writer knows no
//! op in particular. It takes what has queued up (one op or many, at most `MAX_BATCH` ops and
//! about `MAX_BATCH_BYTES` of their weight), applies each in a nested transaction of one write
//! transaction, and commits once: one fsync for the whole group. An op that would take a batch
//! over its bytes waits for the next one (alone, if it is that big), so one huge body never
//! holds up a batch of small ones. An op that fails rolls back its own nested transaction only,
//! with any sequence numbers it took: the batch keeps the last sequence in memory and writes it
//! to the log once, before the commit. Each op still gets its own all-or-nothing answer, and
//! sequence order is commit order. Answers go out only after the commit is durable, and the
//! committed events, in sequence order, go to the `CommitListener` just before them (it only
//! queues them for the fan-out).
//!
//! A panic in the writer stops the process (`log::fatal`): a server that can no longer write
//! must not go on answering 503s.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::thread::JoinHandle;

use heed::RwTxn;
use tokio::sync::{mpsc, oneshot};

use super::{Event, EventLog};
use crate::clock::now_ms;
use crate::store::{Store, StoreError};

/// The most ops one commit takes: bounds the transaction's size and a batch's latency.
const MAX_BATCH: usize = 1024;
/// About how much op weight (bytes of content) one commit takes; an op heavier than this
/// commits alone.
const MAX_BATCH_BYTES: u64 = 8 << 20;
/// How many ops may wait for the writer before submitters wait too.
const QUEUE_DEPTH: usize = 4096;

/// A change to the store, from any producer.
pub trait Op: Send + 'static {
    /// What a committed op answers.
    type Output: Send + 'static;
    /// What a refused op answers; a failed commit arrives as `StoreError::Batch`.
    type Error: From<StoreError> + Send + 'static;

    /// Apply the change to `txn`. An error rolls back everything this op did, and only that.
    fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<Self::Output, Self::Error>;

    /// About how many bytes this op writes (a file's content): what bounds a batch besides
    /// its count. Small ops need not say.
    fn weight(&self) -> u64 {
        0
    }
}

/// One op's view of the batch's write transaction: the transaction itself (through `Deref`),
/// the batch's commit time, and the event log to append to.
pub struct WriteTxn<'t> {
    txn: RwTxn<'t>,
    log: &'t EventLog,
    ts_ms: u64,
    events: Vec<Event>,
    /// The last sequence assigned in the batch so far, this op's appends included.
    last_seq: u64,
}

impl WriteTxn<'_> {
    /// The commit time of the batch, Unix milliseconds: the `ts` of every event it makes.
    pub fn ts_ms(&self) -> u64 {
        self.ts_ms
    }

    /// Append `event` to the log in this transaction; its sequence number (assigned here,
    /// the next after the last ever assigned) is returned and set in the event.
    pub fn append(&mut self, mut event: Event) -> Result<u64, StoreError> {
        let seq = self.last_seq + 1;
        event.seq = seq;
        self.log.put_event(&mut self.txn, &event)?;
        self.last_seq = seq;
        self.events.push(event);
        Ok(seq)
    }
}

impl<'t> Deref for WriteTxn<'t> {
    type Target = RwTxn<'t>;

    fn deref(&self) -> &RwTxn<'t> {
        &self.txn
    }
}

impl<'t> DerefMut for WriteTxn<'t> {
    fn deref_mut(&mut self) -> &mut RwTxn<'t> {
        &mut self.txn
    }
}

/// Receives the events of each commit, in sequence order, after the commit is durable.
pub type CommitListener = Arc<dyn Fn(Vec<Arc<Event>>) + Send + Sync>;

/// An op waiting in the queue, its type erased: applied, perhaps failed with the batch, then
/// answered.
trait Job: Send {
    fn weight(&self) -> u64;
    /// Apply; whether it succeeded (the outcome is kept for the answer).
    fn apply(&mut self, txn: &mut WriteTxn<'_>) -> bool;
    /// The batch did not commit: whatever the op did, it answers this.
    fn fail(&mut self, err: &Arc<StoreError>);
    fn answer(self: Box<Self>);
}

struct Pending<O: Op> {
    op: O,
    reply: oneshot::Sender<Result<O::Output, O::Error>>,
    outcome: Option<Result<O::Output, O::Error>>,
}

impl<O: Op> Job for Pending<O> {
    fn weight(&self) -> u64 {
        self.op.weight()
    }

    fn apply(&mut self, txn: &mut WriteTxn<'_>) -> bool {
        let outcome = self.op.apply(txn);
        let applied = outcome.is_ok();
        self.outcome = Some(outcome);
        applied
    }

    fn fail(&mut self, err: &Arc<StoreError>) {
        self.outcome = Some(Err(StoreError::Batch(Arc::clone(err)).into()));
    }

    fn answer(self: Box<Self>) {
        if let Some(outcome) = self.outcome {
            // A submitter that went away no longer needs its answer.
            let _ = self.reply.send(outcome);
        }
    }
}

/// The submitting side of the writer; clone freely.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

/// Owns the writer thread; dropping every `Writer` and then calling `join` stops it.
pub struct WriterThread {
    handle: JoinHandle<()>,
}

impl WriterThread {
    /// Wait for the writer to finish what is queued and exit.
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("the writer thread panicked");
        }
    }
}

impl Writer {
    /// Start the writer thread over `store`, appending events to `log`.
    pub fn start(
        store: &Store,
        log: EventLog,
        on_commit: CommitListener,
    ) -> Result<(Writer, WriterThread), StoreError> {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let env = store.env().clone();
        let handle = std::thread::Builder::new()
            .name("hearth-writer".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| run(&env, &log, queue, on_commit));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    super::fatal("the writer thread", panic.as_ref());
                }
            })?;
        Ok((Writer { jobs }, WriterThread { handle }))
    }

    /// Submit an op and wait until it is committed (or refused).
    pub async fn submit<O: Op>(&self, op: O) -> Result<O::Output, O::Error> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            op,
            reply,
            outcome: None,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }
}

fn run(
    env: &crate::store::Env,
    log: &EventLog,
    mut queue: mpsc::Receiver<Box<dyn Job>>,
    on_commit: CommitListener,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    // Ops taken from the queue that did not fit their batch's bytes: first in the next ones.
    let mut deferred: VecDeque<Box<dyn Job>> = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(job) => job,
            None => match queue.blocking_recv() {
                Some(job) => job,
                None => break,
            },
        };
        fill_batch(first, &mut batch, &mut deferred, &mut queue);
        failpoint_panic();
        let events = match commit_batch(env, log, &mut batch) {
            Ok(events) => events,
            Err(err) => {
                // Nothing of the batch is committed: every op gets the failure.
                tracing::error!(error = %err, "group commit failed");
                let err = Arc::new(err);
                for job in &mut batch {
                    job.fail(&err);
                }
                Vec::new()
            }
        };
        if !events.is_empty() {
            on_commit(events);
        }
        for job in batch.drain(..) {
            job.answer();
        }
    }
}

/// Form a batch from `first`, the deferred ops that fit, then what has queued: at most
/// `MAX_BATCH` ops and `MAX_BATCH_BYTES` of weight (beyond `first`'s own). An op that does
/// not fit is deferred to a later batch, in order.
fn fill_batch(
    first: Box<dyn Job>,
    batch: &mut Vec<Box<dyn Job>>,
    deferred: &mut VecDeque<Box<dyn Job>>,
    queue: &mut mpsc::Receiver<Box<dyn Job>>,
) {
    let mut bytes = first.weight();
    batch.push(first);
    let mut at = 0;
    while at < deferred.len() && batch.len() < MAX_BATCH {
        let weight = deferred[at].weight();
        if bytes.saturating_add(weight) <= MAX_BATCH_BYTES {
            bytes += weight;
            if let Some(job) = deferred.remove(at) {
                batch.push(job);
            }
        } else {
            at += 1;
        }
    }
    while batch.len() < MAX_BATCH && deferred.len() < MAX_BATCH {
        let Ok(job) = queue.try_recv() else {
            break;
        };
        let weight = job.weight();
        if bytes.saturating_add(weight) <= MAX_BATCH_BYTES {
            bytes += weight;
            batch.push(job);
        } else {
            deferred.push_back(job);
        }
    }
}

/// Tests of the fatal path make the writer panic on its first batch (debug builds only).
fn failpoint_panic() {
    #[cfg(debug_assertions)]
    if std::env::var_os("HEARTH_TEST_WRITER_PANIC").is_some() {
        panic!("HEARTH_TEST_WRITER_PANIC is set");
    }
}

fn commit_batch(
    env: &crate::store::Env,
    log: &EventLog,
    jobs: &mut [Box<dyn Job>],
) -> Result<Vec<Arc<Event>>, StoreError> {
    let mut txn = env.write_txn()?;
    let ts_ms = now_ms();
    let first_seq = log.last_seq_in(&txn)?;
    let mut last_seq = first_seq;
    let mut events = Vec::new();
    for job in jobs.iter_mut() {
        let mut op_txn = WriteTxn {
            txn: env.nested_write_txn(&mut txn)?,
            log,
            ts_ms,
            events: Vec::new(),
            last_seq,
        };
        if job.apply(&mut op_txn) {
            let WriteTxn {
                txn: nested,
                events: made,
                last_seq: op_last,
                ..
            } = op_txn;
            nested.commit()?;
            last_seq = op_last;
            events.extend(made.into_iter().map(Arc::new));
        } else {
            op_txn.txn.abort();
        }
    }
    if last_seq != first_seq {
        log.set_last_seq(&mut txn, last_seq)?;
    }
    let committing = std::time::Instant::now();
    txn.commit()?;
    crate::telemetry::commit(jobs.len(), events.len(), committing.elapsed());
    Ok(events)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::sync::Mutex;

    use super::*;
    use crate::log::store::testing::temp_log;
    use crate::log::EventKind;
    use crate::store::Meta;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    /// A test op: appends an event for `path`, writes `mark` into `meta`, then fails if asked.
    /// A gated op tells `started` it runs, then waits for `gate` (to hold the writer busy).
    struct Append {
        meta: Meta,
        path: &'static str,
        mark: Vec<u8>,
        fail: bool,
        gate: Option<(std_mpsc::Sender<()>, Mutex<std_mpsc::Receiver<()>>)>,
        weight: u64,
    }

    impl Append {
        fn new(meta: Meta, path: &'static str, fail: bool) -> Append {
            Append {
                meta,
                path,
                mark: vec![1],
                fail,
                gate: None,
                weight: 0,
            }
        }
    }

    impl Op for Append {
        type Output = u64;
        type Error = StoreError;

        fn apply(&self, txn: &mut WriteTxn<'_>) -> Result<u64, StoreError> {
            if let Some((started, gate)) = &self.gate {
                let _ = started.send(());
                let _ = gate.lock().expect("gate").recv();
            }
            let seq = txn.append(Event {
                seq: 0,
                kind: EventKind::Del,
                key: format!("{ALICE}{}", self.path),
                ts_ms: txn.ts_ms(),
                hash: None,
                size: None,
                origin: None,
            })?;
            self.meta.put(txn, self.path, &self.mark)?;
            if self.fail {
                return Err(StoreError::Unavailable("refused on purpose".into()));
            }
            Ok(seq)
        }

        fn weight(&self) -> u64 {
            self.weight
        }
    }

    /// A writer over `log` whose commits are recorded: the sequences each one carried.
    fn recorded_writer(
        store: &Store,
        log: &EventLog,
    ) -> (Writer, WriterThread, Arc<Mutex<Vec<Vec<u64>>>>) {
        let commits: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
        let seen = Arc::clone(&commits);
        let listener: CommitListener = Arc::new(move |events: Vec<Arc<Event>>| {
            let seqs = events.iter().map(|e| e.seq).collect();
            seen.lock().expect("commits").push(seqs);
        });
        let (writer, thread) = Writer::start(store, log.clone(), listener).expect("writer");
        (writer, thread, commits)
    }

    /// Hold the writer busy with a gated first op (at `/pub/blocker`), once it runs: its
    /// answer, and the sender that releases it.
    async fn hold_busy(
        writer: &Writer,
        meta: Meta,
    ) -> (
        tokio::task::JoinHandle<Result<u64, StoreError>>,
        std_mpsc::Sender<()>,
    ) {
        let (started_tx, started) = std_mpsc::channel();
        let (release, gate) = std_mpsc::channel();
        let mut blocker = Append::new(meta, "/pub/blocker", false);
        blocker.gate = Some((started_tx, Mutex::new(gate)));
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.submit(blocker).await }
        });
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .expect("join")
            .expect("the blocker runs");
        (first, release)
    }

    /// Wait until `ops` ops wait in the writer's queue.
    async fn until_queued(writer: &Writer, ops: usize) {
        while writer.jobs.max_capacity() - writer.jobs.capacity() < ops {
            tokio::task::yield_now().await;
        }
    }

    /// Ops queued behind a busy writer: the small ones commit together, and one heavier than
    /// a batch's bytes waits for the next batch, alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_heavy_op_commits_alone_after_the_small_ones() {
        let (_dir, store, log) = temp_log();
        let meta = store.meta_table();
        let (writer, thread, commits) = recorded_writer(&store, &log);
        let (first, release) = hold_busy(&writer, meta).await;
        let mut heavy = Append::new(meta, "/pub/heavy", false);
        heavy.weight = MAX_BATCH_BYTES + 1;
        let queued = tokio::spawn({
            let writer = writer.clone();
            async move {
                futures_util::future::join_all([
                    writer.submit(Append::new(meta, "/pub/a", false)),
                    writer.submit(heavy),
                    writer.submit(Append::new(meta, "/pub/b", false)),
                    writer.submit(Append::new(meta, "/pub/c", false)),
                ])
                .await
            }
        });
        until_queued(&writer, 4).await;
        release.send(()).expect("release the blocker");
        assert_eq!(first.await.expect("join").expect("blocker commits"), 1);
        let results: Vec<u64> = queued
            .await
            .expect("join")
            .into_iter()
            .map(|r| r.expect("commits"))
            .collect();
        assert_eq!(results, vec![2, 5, 3, 4], "a, heavy, b, c");
        assert_eq!(
            *commits.lock().expect("commits"),
            vec![vec![1], vec![2, 3, 4], vec![5]]
        );
        assert_eq!(log.last_seq().expect("last seq"), 5);
        drop(writer);
        thread.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_op_rolls_back_only_itself_and_its_sequence() {
        let (_dir, store, log) = temp_log();
        let meta = store.meta_table();
        let (writer, thread, commits) = recorded_writer(&store, &log);

        // Hold the writer busy with a first op, so that the next ones queue into one batch.
        let (first, release) = hold_busy(&writer, meta).await;

        let mut full = Append::new(meta, "/pub/full", false);
        full.mark = vec![0; 80 << 20];
        let batch = tokio::spawn({
            let writer = writer.clone();
            async move {
                // join_all polls in order, so the ops queue in this order.
                futures_util::future::join_all([
                    writer.submit(Append::new(meta, "/pub/a", false)),
                    writer.submit(Append::new(meta, "/pub/b", true)),
                    writer.submit(full),
                    writer.submit(Append::new(meta, "/pub/c", false)),
                ])
                .await
            }
        });
        until_queued(&writer, 4).await;
        release.send(()).expect("release the blocker");

        assert_eq!(first.await.expect("join").expect("blocker commits"), 1);
        let results = batch.await.expect("join");
        assert_eq!(results[0].as_ref().ok(), Some(&2));
        assert!(
            matches!(results[1], Err(StoreError::Unavailable(_))),
            "{:?}",
            results[1]
        );
        assert!(
            results[2].as_ref().is_err_and(StoreError::is_full),
            "a full map refuses that op only: {:?}",
            results[2]
        );
        // b and the full op took sequence 3 and gave it back: c has it.
        assert_eq!(results[3].as_ref().ok(), Some(&3));

        let mut logged = Vec::new();
        log.scan(0, usize::MAX, |e| {
            logged.push((e.seq, e.path().to_string()));
            true
        })
        .expect("scan");
        let expected: Vec<(u64, String)> = vec![
            (1, "/pub/blocker".into()),
            (2, "/pub/a".into()),
            (3, "/pub/c".into()),
        ];
        assert_eq!(logged, expected);
        assert_eq!(log.last_seq().expect("last seq"), 3);
        assert_eq!(store.meta("/pub/a").expect("meta"), Some(vec![1]));
        assert_eq!(
            store.meta("/pub/b").expect("meta"),
            None,
            "b's own write rolled back"
        );
        assert_eq!(store.meta("/pub/full").expect("meta"), None);
        // One commit for the blocker, one for the whole batch; events after commit, in order.
        assert_eq!(*commits.lock().expect("commits"), vec![vec![1], vec![2, 3]]);

        drop(writer);
        thread.join();
    }
}

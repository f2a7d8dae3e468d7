//! The event log in LMDB: appending through the real group-committing `Writer`, and reading a
//! range back with `EventLog::scan`.
//!
//! Appends are measured per commit of a batch of 1, 16 or 256 PUTs (each a file, a user
//! record, a content chunk and an event), durable (fsync) and not. To make the writer form a
//! batch of exactly that size, each round first submits a "pilot" PUT (durable: its fsync keeps
//! the writer busy; without fsync: 4 MiB of chunks do) and, once the writer is busy committing
//! it, submits the batch: everything queued while the writer is busy
//! goes into its next commit. The clock runs from the pilot's answer to the batch's last
//! answer, which is one group commit. The sizes the writer really formed are counted through
//! its commit listener and printed, so a split batch would show.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hearth::files::content::Spooled;
use hearth::files::{FileOp, FileWrite, Files, UsedToken};
use hearth::log::{Event, EventLog};
use hearth::log::{Writer, WriterThread};
use hearth::migrations::ALL;
use hearth::store::{Store, StoreOptions};

/// How big the pilot is without fsync: enough chunks to keep the writer busy for a few
/// milliseconds while the batch queues. A durable pilot's fsync is enough on its own, and a
/// big one would leave the disk busy flushing into the measured commit.
const NOSYNC_PILOT_SIZE: usize = 4 << 20;
const DURABLE_PILOT_SIZE: usize = 256;

struct Bench {
    _dir: tempfile::TempDir,
    files: Files,
    log: EventLog,
    writer: Writer,
    thread: WriterThread,
    user: String,
    pilot_size: usize,
    /// How long to let the writer take the pilot alone: shorter than the pilot's commit.
    pilot_lead: Duration,
    batches: Arc<Mutex<Vec<usize>>>,
    runtime: tokio::runtime::Runtime,
}

impl Bench {
    fn new(sync: bool) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions {
            map_size: 8 << 30,
            sync,
        };
        let store = Store::open(dir.path(), &options, ALL).expect("open store");
        let files = Files::open(&store).expect("files");
        let log = EventLog::open(&store).expect("log");
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let listener = Arc::new(move |events: Vec<Arc<Event>>| {
            if let Ok(mut sizes) = seen.lock() {
                sizes.push(events.len());
            }
        });
        let (writer, thread) = Writer::start(&store, log.clone(), listener).expect("writer");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let user = pubky_common::crypto::Keypair::random().public_key().z32();
        let signup = files.write(FileOp::Signup {
            user: user.clone(),
            auth: UsedToken {
                signature: [7; 64],
                timestamp_us: 1,
            },
            signup_token: None,
            session_secret: "bench-session".into(),
            session: vec![0; 16],
        });
        runtime.block_on(writer.submit(signup)).expect("signup");
        Bench {
            _dir: dir,
            files,
            log,
            writer,
            thread,
            user,
            pilot_size: if sync {
                DURABLE_PILOT_SIZE
            } else {
                NOSYNC_PILOT_SIZE
            },
            pilot_lead: Duration::from_micros(if sync { 80 } else { 300 }),
            batches,
            runtime,
        }
    }

    fn put(&self, path: String, body: Bytes) -> FileWrite {
        let hash = *blake3::hash(&body).as_bytes();
        self.files.write(FileOp::PutFile {
            user: self.user.clone(),
            path,
            size: body.len() as u64,
            body: Spooled::Memory(body),
            hash,
            content_type: "application/octet-stream".into(),
            quota: None,
        })
    }

    /// One pilot, then `batch` PUTs while the writer commits it; the time of the batch only.
    fn round(&self, round: u64, batch: usize) -> Duration {
        let pilot = self.put(
            "/pub/bench/pilot".into(),
            Bytes::from(vec![1u8; self.pilot_size]),
        );
        let ops: Vec<FileWrite> = (0..batch)
            .map(|i| {
                self.put(
                    format!("/pub/bench/{round}/{i}"),
                    Bytes::from(vec![b'x'; 256]),
                )
            })
            .collect();
        self.runtime.block_on(async {
            let writer = self.writer.clone();
            let pilot = tokio::spawn(async move {
                writer.submit(pilot).await.expect("pilot");
                Instant::now()
            });
            // Let the pilot task send its job, then give the writer time to take it alone and
            // start on it (blocking this thread on purpose: nothing else may be sent meanwhile).
            tokio::task::yield_now().await;
            std::thread::sleep(self.pilot_lead);
            let answers =
                futures_util::future::join_all(ops.into_iter().map(|op| self.writer.submit(op)))
                    .await;
            let done = Instant::now();
            for answer in answers {
                answer.expect("put");
            }
            let started = pilot.await.expect("pilot task");
            done.saturating_duration_since(started)
        })
    }

    fn finish(self) {
        let Bench { writer, thread, .. } = self;
        drop(writer);
        thread.join();
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_log_append");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for sync in [true, false] {
        let mode = if sync { "durable" } else { "nosync" };
        for batch in [1usize, 16, 256] {
            let bench = Bench::new(sync);
            let mut round = 0u64;
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(mode, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        total += bench.round(round, batch);
                    }
                    total
                })
            });
            report_batches(&bench, batch);
            bench.finish();
        }
    }
    group.finish();
}

/// Print how the writer really grouped the measured batches.
fn report_batches(bench: &Bench, batch: usize) {
    let Ok(sizes) = bench.batches.lock() else {
        return;
    };
    // Pilots commit alone (size 1 for a batch of 1 too); count the commits of `batch` events.
    let exact = sizes.iter().filter(|&&s| s == batch).count();
    let other = sizes.iter().filter(|&&s| s != batch && s != 1).count();
    eprintln!(
        "  writer commits: {} in all, {exact} of exactly {batch} events, {other} of another size",
        sizes.len()
    );
}

fn scan(c: &mut Criterion) {
    // `cargo test --all-targets` runs benches once as a smoke test: keep that quick.
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let events: u64 = if measuring { 200_000 } else { 20_000 };
    let bench = Bench::new(false);
    bench.runtime.block_on(async {
        for chunk in 0..events / 1000 {
            let ops = (0..1000).map(|i| {
                bench.writer.submit(bench.put(
                    format!("/pub/scan/{chunk}/{i}.json"),
                    Bytes::from(vec![b'y'; 256]),
                ))
            });
            for answer in futures_util::future::join_all(ops).await {
                answer.expect("fill");
            }
        }
    });
    let last = bench.log.last_seq().expect("last seq");
    let mut group = c.benchmark_group("event_log_scan");
    for range in [100usize, 1_000, 10_000] {
        group.throughput(Throughput::Elements(range as u64));
        group.bench_with_input(BenchmarkId::from_parameter(range), &range, |b, &range| {
            let mut after = 0u64;
            b.iter(|| {
                let mut count = 0usize;
                bench
                    .log
                    .scan(after, range, |event| {
                        black_box(&event);
                        count += 1;
                        true
                    })
                    .expect("scan");
                after = (after + 7919) % (last - range as u64);
                count
            })
        });
    }
    group.finish();
    bench.finish();
}

criterion_group!(benches, append, scan);
criterion_main!(benches);

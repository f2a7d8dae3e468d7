//! `load live`: K subscribers follow the stream live while a writer PUTs at R writes/s.
//!
//! Every write goes to a path that names its number, so each subscriber can tell which write
//! an event is, and whether it saw it twice. A write's clock starts just before its PUT is
//! sent; an event's clock stops when the read that brought it returns. Delivery latency is the
//! difference, for every (subscriber, write) pair. Missed = writes the server acknowledged
//! that a subscriber never saw by the end of the grace period.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::sync::{mpsc, watch, Mutex};

use super::client::{signup_many, Conn, Target, User};
use super::sse::SseStream;
use super::stats::{nanos, per_second, Latency, ServerCost};
use super::{body_for, bounded, seconds, Context, LoadError, Report, StreamKind};

#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Live subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Writes per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// How long to write, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Connections the writes are spread over (a slow PUT must not hold back the schedule).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Which stream the subscribers follow.
    #[arg(long, value_enum, default_value = "firehose")]
    pub stream: StreamKind,
    /// After the last write, how long subscribers may take to receive everything.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
}

/// Not yet sent, in the table of send times.
pub(crate) const UNSENT: u64 = u64::MAX;
pub(crate) const PENDING: u8 = 0;
pub(crate) const ACKED: u8 = 1;
const REFUSED: u8 = 2;

/// What one subscriber saw.
pub(crate) struct Seen {
    /// (write number, arrival in ns since the run's start), in arrival order.
    pub arrivals: Vec<(u32, u64)>,
    /// Whether its stream failed or ended before it was told to stop.
    pub broke: Option<String>,
}

pub(crate) async fn run(context: &Context, args: &LiveArgs) -> Result<Report, LoadError> {
    let subscribers = bounded("subscribers", args.subscribers, 1, 100_000)?;
    let writers = bounded("writers", args.writers, 1, 1024)?;
    let size = bounded("size", args.size, 0, 1 << 20)?;
    let rate = bounded("rate", args.rate, 0.1, 1_000_000.0)?;
    let duration = seconds("seconds", args.seconds, 3600.0)?;
    let grace = seconds("grace", args.grace, 600.0)?;
    let total = (rate * duration.as_secs_f64()).ceil() as u64;
    let total = bounded("rate x seconds", total, 1, 10_000_000)?;
    if subscribers as u64 * total > 100_000_000 {
        return Err(LoadError::Usage(format!(
            "{subscribers} subscribers x {total} writes is too many samples to keep (at most 1e8)"
        )));
    }
    super::ensure_fd_limit(subscribers as u64 + writers as u64 + 64)?;

    let writer = signup_many(&context.target, 1, 1, &context.admission)
        .await?
        .pop()
        .ok_or_else(|| LoadError::Http("signup returned no user".into()))?;
    let prefix = context.prefix("live");
    let path = match args.stream {
        StreamKind::Firehose => "/firehose".to_string(),
        StreamKind::EventsStream => format!("/events-stream?user={}&live=true", writer.z32),
    };

    let start = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let streams = open_many(&context.target, &path, subscribers).await?;
    let connect_elapsed = start.elapsed();
    let stop_by = start + connect_elapsed + duration + grace + Duration::from_secs(30);
    let mut readers = tokio::task::JoinSet::new();
    for stream in streams {
        readers.spawn(follow(
            stream,
            prefix.clone(),
            total,
            start,
            stop_by,
            stop_rx.clone(),
            delivered.clone(),
        ));
    }
    // Let every subscription settle before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = context.sample()?;
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(UNSENT)).collect());
    let state: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(PENDING)).collect());
    let write_started = Instant::now();
    let mut put_latencies = write_at_rate(
        &context.target,
        writer,
        &prefix,
        WritePlan {
            first: 0,
            total,
            rate,
            writers,
            size,
        },
        start,
        sent_at.clone(),
        state.clone(),
        stop_by,
    )
    .await?;
    let write_elapsed = write_started.elapsed();
    let acked = state
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) == ACKED)
        .count() as u64;

    // Wait until every subscriber has every acknowledged write, or the grace period ends.
    let expected = acked * subscribers as u64;
    let grace_ends = Instant::now() + grace;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < grace_ends {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = context.sample()?;
    let _ = stop_tx.send(true);

    let Tally {
        mut latencies,
        missed,
        duplicated,
        unexpected,
        broken,
    } = tally(join_all(readers).await?, total, &sent_at, &state);

    let delivery = Latency::from_nanos(&mut latencies);
    let put = Latency::from_nanos(&mut put_latencies);
    let write_rate = per_second(acked, write_elapsed);
    let server = before.zip(after).map(|(b, a)| ServerCost::between(b, a));
    let stream_name = match args.stream {
        StreamKind::Firehose => "firehose",
        StreamKind::EventsStream => "events-stream",
    };
    let line = json!({
        "scenario": "live",
        "stream": stream_name,
        "url": context.target.authority,
        "subscribers": subscribers,
        "rate": rate,
        "seconds": duration.as_secs_f64(),
        "writes": total,
        "acked": acked,
        "refused": total - acked,
        "achieved_writes_per_s": write_rate,
        "delivery": delivery,
        "missed": missed,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "broken_subscribers": broken.len(),
        "put_latency": put,
        "connect_seconds": connect_elapsed.as_secs_f64(),
        "server": server,
    });
    let mut summary = format!(
        "live on {stream_name}: {subscribers} subscribers, {acked}/{total} writes acked at \
         {write_rate}/s: delivery {}, {missed} missed, {duplicated} duplicated\n  PUT {}\n",
        delivery.human(),
        put.human(),
    );
    if unexpected > 0 {
        summary.push_str(&format!(
            "  {unexpected} events for writes the server refused\n"
        ));
    }
    if let Some(first) = broken.first() {
        summary.push_str(&format!(
            "  {} subscriber streams broke, first: {first}\n",
            broken.len()
        ));
    }
    if let Some(server) = server {
        summary.push_str(&server.describe("server", "while writing"));
    }
    Ok(Report {
        lines: vec![line],
        summary,
    })
}

/// What the subscribers saw, write by write.
pub(crate) struct Tally {
    /// Delivery latencies (ns) of first sightings of acknowledged writes.
    pub latencies: Vec<u64>,
    pub missed: u64,
    pub duplicated: u64,
    /// Events of writes the server refused (or whose answer was lost).
    pub unexpected: u64,
    /// Why subscriber streams broke.
    pub broken: Vec<String>,
}

/// Wait for every subscriber to finish.
pub(crate) async fn join_all(
    mut readers: tokio::task::JoinSet<Seen>,
) -> Result<Vec<Seen>, LoadError> {
    let mut seen = Vec::with_capacity(readers.len());
    while let Some(done) = readers.join_next().await {
        seen.push(done.map_err(|err| LoadError::Http(format!("a subscriber died: {err}")))?);
    }
    Ok(seen)
}

/// Collect the subscribers' arrivals against the writes' send times and outcomes.
pub(crate) fn tally(
    readers: Vec<Seen>,
    total: u64,
    sent_at: &[AtomicU64],
    state: &[AtomicU8],
) -> Tally {
    let mut latencies = Vec::new();
    let mut missed = 0u64;
    let mut duplicated = 0u64;
    let mut unexpected = 0u64;
    let mut broken = Vec::new();
    let mut seen = vec![false; total as usize];
    for one in readers {
        if let Some(why) = one.broke {
            broken.push(why);
        }
        seen.iter_mut().for_each(|s| *s = false);
        for (index, at) in one.arrivals {
            let i = index as usize;
            if seen[i] {
                duplicated += 1;
                continue;
            }
            seen[i] = true;
            if state[i].load(Ordering::Relaxed) != ACKED {
                unexpected += 1;
                continue;
            }
            let sent = sent_at[i].load(Ordering::Relaxed);
            latencies.push(at.saturating_sub(sent));
        }
        missed += (0..total as usize)
            .filter(|&i| !seen[i] && state[i].load(Ordering::Relaxed) == ACKED)
            .count() as u64;
    }
    Tally {
        latencies,
        missed,
        duplicated,
        unexpected,
        broken,
    }
}

/// Open `count` streams, 128 at a time; every one must open.
pub(crate) async fn open_many(
    target: &Target,
    path: &str,
    count: usize,
) -> Result<Vec<SseStream>, LoadError> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(128));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let target = target.clone();
        let path = path.to_string();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore
                .acquire_owned()
                .await
                .map_err(|_| LoadError::Http("connect limiter closed".into()))?;
            SseStream::open(&target, &path, &[], None, Duration::from_secs(30)).await
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        streams.push(done.map_err(|err| LoadError::Http(format!("a connect died: {err}")))??);
    }
    Ok(streams)
}

/// The write number an event is about, if it is one of this run's.
fn write_number(path: &str, prefix: &str, total: u64) -> Option<u32> {
    let index: u64 = path.strip_prefix(prefix)?.parse().ok()?;
    if index < total {
        u32::try_from(index).ok()
    } else {
        None
    }
}

/// One subscriber: read until told to stop, noting when each of this run's events arrived.
pub(crate) async fn follow(
    mut stream: SseStream,
    prefix: String,
    total: u64,
    start: Instant,
    stop_by: Instant,
    mut stop: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
) -> Seen {
    let mut arrivals = Vec::new();
    let mut first_sight = vec![false; total as usize];
    let mut broke = None;
    // One timer for the whole run, not one per read.
    let time_limit = tokio::time::sleep_until(stop_by.into());
    tokio::pin!(time_limit);
    loop {
        let mut fresh = 0u64;
        tokio::select! {
            _ = stop.changed() => break,
            _ = &mut time_limit => {
                broke = Some("the scenario's time limit passed".to_string());
                break;
            }
            read = stream.next_frames(|frame| {
                let Some(index) = frame.path().and_then(|p| write_number(p, &prefix, total)) else {
                    return;
                };
                arrivals.push((index, nanos(start.elapsed())));
                let slot = &mut first_sight[index as usize];
                if !*slot {
                    *slot = true;
                    fresh += 1;
                }
            }) => {
                match read {
                    Ok(true) => {}
                    Ok(false) => {
                        broke = Some("the server ended the stream".to_string());
                        break;
                    }
                    Err(err) => {
                        broke = Some(err.to_string());
                        break;
                    }
                }
            }
        }
        if fresh > 0 {
            delivered.fetch_add(fresh, Ordering::Relaxed);
        }
    }
    Seen { arrivals, broke }
}

/// How the writes are paced.
pub(crate) struct WritePlan {
    /// This writer's writes are `first..first + total`.
    pub first: u64,
    pub total: u64,
    pub rate: f64,
    pub writers: usize,
    pub size: usize,
}

/// PUT writes first..first+total on schedule (the n-th at n/rate), over `writers`
/// connections. Records each write's send time and outcome; returns the PUT latencies.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_at_rate(
    target: &Target,
    user: User,
    prefix: &str,
    plan: WritePlan,
    start: Instant,
    sent_at: Arc<Vec<AtomicU64>>,
    state: Arc<Vec<AtomicU8>>,
    stop_by: Instant,
) -> Result<Vec<u64>, LoadError> {
    let (jobs, queue) = mpsc::channel::<u64>(4096);
    let queue = Arc::new(Mutex::new(queue));
    let user = Arc::new(user);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.writers {
        let mut conn = Conn::connect(target).await?;
        let queue = queue.clone();
        let user = user.clone();
        let sent_at = sent_at.clone();
        let state = state.clone();
        let prefix = prefix.to_string();
        let target = target.clone();
        let size = plan.size;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().await.recv().await;
                let Some(index) = next else { break };
                let path = format!("{prefix}{index}");
                let body = body_for(index, size);
                let i = index as usize;
                let sent = Instant::now();
                sent_at[i].store(nanos(sent.duration_since(start)), Ordering::Relaxed);
                let outcome = match conn.put(&user, &path, body).await {
                    Ok(answer) if answer.status.is_success() => ACKED,
                    Ok(_) => REFUSED,
                    Err(_) => {
                        // Unknown whether it committed: count it as refused and reconnect;
                        // if its event shows up it is reported as unexpected.
                        conn = Conn::connect(&target).await?;
                        REFUSED
                    }
                };
                latencies.push(nanos(sent.elapsed()));
                state[i].store(outcome, Ordering::Relaxed);
            }
            Ok::<_, LoadError>(latencies)
        });
    }
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let first = tokio::time::Instant::now();
    for index in plan.first..plan.first + plan.total {
        if Instant::now() >= stop_by {
            break;
        }
        let due = first + period.mul_f64((index - plan.first) as f64);
        tokio::time::sleep_until(due).await;
        if jobs.send(index).await.is_err() {
            break;
        }
    }
    drop(jobs);
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let mut some = done.map_err(|err| LoadError::Http(format!("a writer died: {err}")))??;
        latencies.append(&mut some);
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_this_runs_writes() {
        let prefix = "/pub/hearth-load/ab/live/";
        assert_eq!(
            write_number("/pub/hearth-load/ab/live/7", prefix, 10),
            Some(7)
        );
        assert_eq!(
            write_number("/pub/hearth-load/ab/live/10", prefix, 10),
            None
        );
        assert_eq!(write_number("/pub/hearth-load/cd/live/1", prefix, 10), None);
        assert_eq!(write_number("/pub/hearth-load/ab/live/x", prefix, 10), None);
    }
}

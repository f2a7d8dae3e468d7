//! `load slow`: one subscriber stops reading while W events are written, then resumes.
//!
//! The subscriber's socket gets a small receive buffer and is not read at all while the
//! writers run, so the kernel's buffers fill and the server feels back-pressure early. The
//! server's memory is sampled all along (`RssAnon`: `VmRSS` also counts the LMDB pages of
//! the data being written); a server that queues events per subscriber grows
//! with W, one that serves a lagging subscriber from the store does not. On resuming, the
//! subscriber must get every acknowledged write, once each, in id order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::client::signup_many;
use super::put::write_files;
use super::sse::SseStream;
use super::stats::{per_second, Process};
use super::{bounded, seconds, Context, LoadError, Report, StreamKind};

#[derive(Debug, Clone, Args)]
pub struct SlowArgs {
    /// Events written while the subscriber is stalled.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// The stalled subscriber's socket receive buffer, bytes.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer: u32,
    /// Which stream the subscriber follows.
    #[arg(long, value_enum, default_value = "firehose")]
    pub stream: StreamKind,
    /// Bound on each phase (writing, catching up), in seconds.
    #[arg(long, default_value_t = 300.0)]
    pub max_seconds: f64,
}

pub(crate) async fn run(context: &Context, args: &SlowArgs) -> Result<Report, LoadError> {
    let events = bounded("events", args.events, 1, 10_000_000)?;
    let writers = bounded("writers", args.writers, 1, 4096)?;
    let size = bounded("size", args.size, 0, 1 << 20)?;
    let recv_buffer = bounded("recv-buffer", args.recv_buffer, 1, 64 << 20)?;
    let limit = seconds("max-seconds", args.max_seconds, 3600.0)?;
    super::ensure_fd_limit(writers as u64 + 64)?;

    let users = signup_many(&context.target, 4, 4, &context.admission).await?;
    let prefix = context.prefix("slow");
    let path = match args.stream {
        StreamKind::Firehose => "/firehose".to_string(),
        StreamKind::EventsStream => {
            let query: Vec<String> = users.iter().map(|u| format!("user={}", u.z32)).collect();
            format!("/events-stream?{}&live=true", query.join("&"))
        }
    };
    let mut stream = SseStream::open(
        &context.target,
        &path,
        &[],
        Some(recv_buffer),
        Duration::from_secs(30),
    )
    .await?;
    // Let the subscription settle, then stop reading.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = context.sample()?;
    let peak = Arc::new(Peak {
        rss_kib: AtomicU64::new(before.map_or(0, |s| s.rss_kib)),
        anon_kib: AtomicU64::new(before.map_or(0, |s| s.anon_kib)),
    });
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = context
        .process
        .map(|process| tokio::spawn(sample_peak(process, peak.clone(), sampling.clone())));
    let written = write_files(
        &context.target,
        Arc::new(users),
        &prefix,
        writers,
        events,
        size,
        limit,
    )
    .await?;
    // Stay stalled a moment longer: a server that buffers would still be filling up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let stalled = context.sample()?;

    // Resume: read until every acknowledged write has arrived, the stream ends, nothing has
    // come for 10 s, or the phase's bound passes.
    let resumed_at = Instant::now();
    let deadline = resumed_at + limit;
    let mut seen: HashSet<u64> = HashSet::with_capacity(events as usize);
    let mut duplicated = 0u64;
    let mut out_of_order = 0u64;
    let mut last_id: Vec<u8> = Vec::new();
    let mut ended = None;
    while (seen.len() as u64) < written.ok {
        let left = deadline.saturating_duration_since(Instant::now());
        let quiet = Duration::from_secs(10).min(left);
        let read = tokio::time::timeout(
            quiet,
            stream.next_frames(|frame| {
                let Some(index) = frame
                    .path()
                    .and_then(|p| p.strip_prefix(prefix.as_str()))
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    return;
                };
                if !seen.insert(index) {
                    duplicated += 1;
                }
                if let Some(id) = frame.field("id") {
                    if id <= last_id.as_slice() {
                        out_of_order += 1;
                    }
                    last_id.clear();
                    last_id.extend_from_slice(id);
                }
            }),
        )
        .await;
        match read {
            Err(_) => {
                ended = Some("nothing arrived for 10 s".to_string());
                break;
            }
            Ok(Err(err)) => {
                ended = Some(err.to_string());
                break;
            }
            Ok(Ok(false)) => {
                ended = Some("the server ended the stream".to_string());
                break;
            }
            Ok(Ok(true)) => {}
        }
    }
    let catch_up = resumed_at.elapsed();
    let after = context.sample()?;

    let received = seen.len() as u64;
    let missed = written.ok.saturating_sub(received);
    let errors: u64 = written.errors.values().sum();
    let peak_rss = peak.rss_kib.load(Ordering::Relaxed);
    let peak_anon = peak.anon_kib.load(Ordering::Relaxed);
    let growth_kib = before.map(|b| peak_rss.saturating_sub(b.rss_kib));
    let anon_growth_kib = before.map(|b| peak_anon.saturating_sub(b.anon_kib));
    let complete = missed == 0 && duplicated == 0 && out_of_order == 0;
    let line = json!({
        "scenario": "slow",
        "url": context.target.authority,
        "events": events,
        "acked": written.ok,
        "put_errors": errors,
        "received": received,
        "missed": missed,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "complete": complete,
        "ended": ended,
        "write_seconds": written.elapsed.as_secs_f64(),
        "catch_up_seconds": catch_up.as_secs_f64(),
        "catch_up_events_per_s": per_second(received, catch_up),
        "rss_before_kib": before.map(|s| s.rss_kib),
        "rss_peak_stalled_kib": before.map(|_| peak_rss),
        "rss_end_stalled_kib": stalled.map(|s| s.rss_kib),
        "rss_after_kib": after.map(|s| s.rss_kib),
        "rss_growth_kib": growth_kib,
        "anon_before_kib": before.map(|s| s.anon_kib),
        "anon_peak_stalled_kib": before.map(|_| peak_anon),
        "anon_end_stalled_kib": stalled.map(|s| s.anon_kib),
        "anon_growth_kib": anon_growth_kib,
    });
    let mut summary = format!(
        "slow: stalled while {} of {events} writes were acked ({errors} errors) in {:.2} s; \
         resumed and received {received} in {:.2} s: {missed} missed, {duplicated} duplicated, \
         {out_of_order} out of order{}\n",
        written.ok,
        written.elapsed.as_secs_f64(),
        catch_up.as_secs_f64(),
        ended
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
    );
    if let (Some(b), Some(s), Some(growth), Some(anon_growth)) =
        (before, stalled, growth_kib, anon_growth_kib)
    {
        summary.push_str(&format!(
            "  server memory while stalled: anonymous {} KiB before, peak {peak_anon} KiB \
             (+{anon_growth} KiB), {} KiB at the end; VmRSS {} -> peak {peak_rss} KiB \
             (+{growth} KiB, mostly LMDB pages of the data written)\n",
            b.anon_kib, s.anon_kib, b.rss_kib,
        ));
    }
    Ok(Report {
        lines: vec![line],
        summary,
    })
}

/// The highest memory figures seen while the subscriber was stalled.
struct Peak {
    rss_kib: AtomicU64,
    anon_kib: AtomicU64,
}

/// Keep the highest memory figures seen, every 50 ms, until told to stop.
async fn sample_peak(process: Process, peak: Arc<Peak>, running: Arc<AtomicBool>) {
    // Bounded: the writing phase it watches is bounded, and so is this loop.
    for _ in 0..(3600 * 20) {
        if !running.load(Ordering::Relaxed) {
            break;
        }
        if let Ok(sample) = process.sample() {
            peak.rss_kib.fetch_max(sample.rss_kib, Ordering::Relaxed);
            peak.anon_kib.fetch_max(sample.anon_kib, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

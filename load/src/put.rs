//! `load put`: U users sign up, then C concurrent writers PUT N files of S bytes.
//!
//! Each writer owns one keep-alive connection and takes the next file number from a shared
//! counter, so the writers stay busy until N files are written or the time limit passes. A
//! latency is one PUT's round trip: request sent to answer read. The server's group commit is
//! what lets C writers share one fsync, so C is the knob that shows it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::client::{signup_many, Conn, Target, User};
use super::stats::{nanos, per_second, Latency, ServerCost};
use super::{body_for, bounded, seconds, Context, LoadError, Report};

#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Users to sign up (files are spread over them round-robin).
    #[arg(long, default_value_t = 32)]
    pub users: usize,
    /// Concurrent writers, each on its own connection.
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    /// Files to write in all.
    #[arg(long, default_value_t = 50_000)]
    pub files: u64,
    /// Bytes per file.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Stop writing after this many seconds even if not all files are written.
    #[arg(long, default_value_t = 120.0)]
    pub max_seconds: f64,
}

/// What writing produced: counts and latencies.
pub(crate) struct Outcome {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub latencies_ns: Vec<u64>,
}

pub(crate) async fn run(context: &Context, args: &PutArgs) -> Result<Report, LoadError> {
    let users = bounded("users", args.users, 1, 100_000)?;
    let writers = bounded("writers", args.writers, 1, 4096)?;
    let files = bounded("files", args.files, 1, 100_000_000)?;
    let size = bounded("size", args.size, 0, 64 << 20)?;
    let limit = seconds("max-seconds", args.max_seconds, 3600.0)?;
    super::ensure_fd_limit(writers as u64 + 64)?;

    let signup_started = Instant::now();
    let accounts = signup_many(&context.target, users, writers.min(32), &context.admission).await?;
    let signup_elapsed = signup_started.elapsed();

    let before = context.sample()?;
    let outcome = write_files(
        &context.target,
        Arc::new(accounts),
        &context.prefix("put"),
        writers,
        files,
        size,
        limit,
    )
    .await?;
    let after = context.sample()?;

    let mut latencies = outcome.latencies_ns;
    let latency = Latency::from_nanos(&mut latencies);
    let error_count: u64 = outcome.errors.values().sum();
    let rate = per_second(outcome.ok, outcome.elapsed);
    let server = before.zip(after).map(|(b, a)| ServerCost::between(b, a));
    let line = json!({
        "scenario": "put",
        "url": context.target.authority,
        "users": users,
        "writers": writers,
        "files": files,
        "size": size,
        "ok": outcome.ok,
        "errors": error_count,
        "error_kinds": outcome.errors,
        "seconds": outcome.elapsed.as_secs_f64(),
        "puts_per_s": rate,
        "latency": latency,
        "signups_per_s": per_second(users as u64, signup_elapsed),
        "server": server,
    });
    let mut summary = format!(
        "put: {} PUTs of {size} B by {writers} writers for {users} users in {:.2} s: \
         {rate} PUT/s, latency {}, {error_count} errors\n",
        outcome.ok,
        outcome.elapsed.as_secs_f64(),
        latency.human(),
    );
    for (kind, count) in &outcome.errors {
        summary.push_str(&format!("  error {kind}: {count}\n"));
    }
    if let Some(server) = server {
        summary.push_str(&format!(
            "  server: {:.2} CPU s ({:.0}% of one core), RSS {} -> {} KiB\n",
            server.cpu_ms as f64 / 1000.0,
            server.cpu_ms as f64 / 10.0 / outcome.elapsed.as_secs_f64().max(1e-9),
            server.rss_before_kib,
            server.rss_after_kib
        ));
    }
    Ok(Report {
        lines: vec![line],
        summary,
    })
}

/// PUT `files` files of `size` bytes under `prefix` with `writers` concurrent connections,
/// file i by user i mod U, until all are written or `limit` passes.
pub(crate) async fn write_files(
    target: &Target,
    users: Arc<Vec<User>>,
    prefix: &str,
    writers: usize,
    files: u64,
    size: usize,
    limit: Duration,
) -> Result<Outcome, LoadError> {
    if users.is_empty() {
        return Err(LoadError::Usage("no users to write as".into()));
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let target = target.clone();
        let users = users.clone();
        let next = next.clone();
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let mut conn = Conn::connect(&target).await?;
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= files || Instant::now() >= deadline {
                    break;
                }
                let user = &users[(index % users.len() as u64) as usize];
                let path = format!("{prefix}{index}");
                let body = body_for(index, size);
                let sent = Instant::now();
                match conn.put(user, &path, body).await {
                    Ok(answer) if answer.status.is_success() => {
                        latencies.push(nanos(sent.elapsed()));
                        ok += 1;
                    }
                    Ok(answer) => {
                        latencies.push(nanos(sent.elapsed()));
                        *errors
                            .entry(answer.status.as_u16().to_string())
                            .or_default() += 1;
                    }
                    Err(err) => {
                        *errors.entry(transport_kind(&err)).or_default() += 1;
                        // The connection may be gone: start a new one (bounded by the loop).
                        conn = Conn::connect(&target).await?;
                    }
                }
            }
            Ok::<_, LoadError>((ok, errors, latencies))
        });
    }
    let mut outcome = Outcome {
        ok: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latencies_ns: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (ok, errors, mut latencies) =
            done.map_err(|err| LoadError::Http(format!("a writer died: {err}")))??;
        outcome.ok += ok;
        for (kind, count) in errors {
            *outcome.errors.entry(kind).or_default() += count;
        }
        outcome.latencies_ns.append(&mut latencies);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// A short name for a transport failure, to count failures by kind.
fn transport_kind(err: &LoadError) -> String {
    let text = err.to_string();
    if text.contains("timed out") {
        "timeout".into()
    } else {
        "connection".into()
    }
}

//! `load idle`: open N SSE connections that never see an event, and weigh them.
//!
//! The server's resident memory (`VmRSS` of `--pid`) is read before the first connection and
//! after the last one has been open for a while; the difference over N is the cost of one
//! idle subscriber. On the client each connection is only a socket: nothing is read while
//! they are held (keep-alive comments wait in the kernel's buffer).

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::live::open_many;
use super::{bounded, seconds, Context, LoadError, Report, StreamKind};

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// How long to hold them open before measuring, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
    /// Which stream the connections subscribe to.
    #[arg(long, value_enum, default_value = "firehose")]
    pub stream: StreamKind,
}

pub(crate) async fn run(context: &Context, args: &IdleArgs) -> Result<Report, LoadError> {
    let connections = bounded("connections", args.connections, 1, 200_000)?;
    let hold = seconds("hold", args.hold, 600.0)?;
    super::ensure_fd_limit(connections as u64 + 64)?;
    let path = match args.stream {
        StreamKind::Firehose => "/firehose".to_string(),
        StreamKind::EventsStream => {
            // A fresh user with no events: the stream stays idle.
            let user = super::client::signup_many(&context.target, 1, 1, &context.admission)
                .await?
                .pop()
                .ok_or_else(|| LoadError::Http("signup returned no user".into()))?;
            format!("/events-stream?user={}&live=true", user.z32)
        }
    };

    let before = context.sample()?;
    let started = Instant::now();
    let mut streams = open_many(&context.target, &path, connections).await?;
    for stream in &mut streams {
        stream.shrink();
    }
    let open_elapsed = started.elapsed();
    tokio::time::sleep(hold).await;
    let held = context.sample()?;
    drop(streams);
    // Give the server a moment to notice the closed sockets.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed = context.sample()?;

    let per_connection = before
        .zip(held)
        .map(|(b, h)| (h.rss_kib.saturating_sub(b.rss_kib) * 1024) / connections as u64);
    let anon_per_connection = before
        .zip(held)
        .map(|(b, h)| (h.anon_kib.saturating_sub(b.anon_kib) * 1024) / connections as u64);
    let line = json!({
        "scenario": "idle",
        "url": context.target.authority,
        "connections": connections,
        "open_seconds": open_elapsed.as_secs_f64(),
        "rss_before_kib": before.map(|s| s.rss_kib),
        "rss_held_kib": held.map(|s| s.rss_kib),
        "rss_after_close_kib": closed.map(|s| s.rss_kib),
        "anon_before_kib": before.map(|s| s.anon_kib),
        "anon_held_kib": held.map(|s| s.anon_kib),
        "bytes_per_connection": per_connection,
        "anon_bytes_per_connection": anon_per_connection,
    });
    let summary = match (before, held, closed, per_connection) {
        (Some(b), Some(h), Some(c), Some(per)) => format!(
            "idle: {connections} connections opened in {:.2} s; server RSS {} KiB -> {} KiB \
             held -> {} KiB after close: {per} bytes ({:.2} KiB) per connection \
             (anonymous memory: {} bytes)\n",
            open_elapsed.as_secs_f64(),
            b.rss_kib,
            h.rss_kib,
            c.rss_kib,
            per as f64 / 1024.0,
            anon_per_connection.unwrap_or(0),
        ),
        _ => format!(
            "idle: {connections} connections opened in {:.2} s (pass --pid to weigh them)\n",
            open_elapsed.as_secs_f64()
        ),
    };
    Ok(Report {
        lines: vec![line],
        summary,
    })
}

//! `load replay`: one client reads the whole event log from the start.
//!
//! Three ways, each timed on its own: Hearth's `/firehose?lastSeq=0000000000000&live=false`
//! (one stream), Pubky's `/events/?cursor=&limit=` (paging), and Pubky's `/events-stream`
//! (which needs users: they are taken from the `/events/` pass, 50 per stream). Fill the
//! log first (`load put`); the figure is events per second of wall time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::json;

use super::client::Conn;
use super::sse::SseStream;
use super::stats::{per_second, ServerCost};
use super::{bounded, seconds, Context, LoadError, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Firehose,
    Events,
    EventsStream,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Which endpoints to replay through (repeatable; default: all three).
    #[arg(long, value_enum)]
    pub via: Vec<Via>,
    /// Page size for `/events/`.
    #[arg(long, default_value_t = 1000)]
    pub page: u32,
    /// Stop after this many events per endpoint.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_events: u64,
    /// Stop an endpoint's pass after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub max_seconds: f64,
    /// Users per `/events-stream` request (1 to 50): 1 measures one user's replay, which
    /// costs that user's events on a server with a per-user index.
    #[arg(long, default_value_t = 50)]
    pub per_stream: usize,
}

/// What one pass read.
struct Pass {
    events: u64,
    bytes: u64,
    requests: u64,
    elapsed: Duration,
    complete: bool,
}

pub(crate) async fn run(context: &Context, args: &ReplayArgs) -> Result<Report, LoadError> {
    let page = bounded("page", args.page, 1, 1000)?;
    let max_events = bounded("max-events", args.max_events, 1, 1_000_000_000)?;
    let limit = seconds("max-seconds", args.max_seconds, 3600.0)?;
    let per_stream = bounded("per-stream", args.per_stream, 1, 50)?;
    let via = if args.via.is_empty() {
        vec![Via::Firehose, Via::Events, Via::EventsStream]
    } else {
        args.via.clone()
    };

    let mut lines = Vec::new();
    let mut summary = String::new();
    let mut users: Option<BTreeSet<String>> = None;
    for &how in &via {
        let before = context.sample()?;
        let (name, pass) = match how {
            Via::Firehose => ("firehose", firehose(context, max_events, limit).await?),
            Via::Events => {
                let (pass, seen) = events(context, page, max_events, limit).await?;
                users = Some(seen);
                ("events", pass)
            }
            Via::EventsStream => {
                let known = match users.take() {
                    Some(known) => known,
                    // The users come from /events/; read it (untimed) if it was not asked for.
                    None => events(context, 1000, max_events, limit).await?.1,
                };
                let pass = events_stream(context, &known, per_stream, max_events, limit).await?;
                users = Some(known);
                ("events-stream", pass)
            }
        };
        let after = context.sample()?;
        let server = before.zip(after).map(|(b, a)| ServerCost::between(b, a));
        let rate = per_second(pass.events, pass.elapsed);
        lines.push(json!({
            "scenario": "replay",
            "via": name,
            "url": context.target.authority,
            "events": pass.events,
            "bytes": pass.bytes,
            "requests": pass.requests,
            "complete": pass.complete,
            "seconds": pass.elapsed.as_secs_f64(),
            "events_per_s": rate,
            "mib_per_s": per_second(pass.bytes, pass.elapsed) / (1 << 20) as f64,
            "server": server,
        }));
        summary.push_str(&format!(
            "replay via {name}: {} events ({:.1} MiB, {} requests) in {:.2} s: {rate} events/s{}\n",
            pass.events,
            pass.bytes as f64 / (1 << 20) as f64,
            pass.requests,
            pass.elapsed.as_secs_f64(),
            if pass.complete {
                ""
            } else {
                " (stopped at a limit)"
            }
        ));
        if let Some(server) = server {
            summary.push_str(&format!(
                "  server: {:.2} CPU s\n",
                server.cpu_ms as f64 / 1000.0
            ));
        }
    }
    Ok(Report { lines, summary })
}

/// Read one SSE stream to its end (or a bound), counting events and body bytes.
async fn drain_stream(
    context: &Context,
    path: &str,
    max_events: u64,
    deadline: Instant,
) -> Result<(u64, u64, bool), LoadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut stream = SseStream::open(&context.target, path, &[], None, left).await?;
    let mut events = 0u64;
    let mut bytes = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(
            left,
            stream.next_frames(|frame| {
                bytes += frame.size() as u64 + 2;
                if frame.is_event() {
                    events += 1;
                }
            }),
        )
        .await;
        match read {
            Err(_) => return Ok((events, bytes, false)),
            Ok(more) => {
                if !more? {
                    return Ok((events, bytes, true));
                }
            }
        }
        if events >= max_events {
            return Ok((events, bytes, false));
        }
    }
}

async fn firehose(context: &Context, max_events: u64, limit: Duration) -> Result<Pass, LoadError> {
    let started = Instant::now();
    let (events, bytes, complete) = drain_stream(
        context,
        "/firehose?lastSeq=0000000000000&live=false",
        max_events,
        started + limit,
    )
    .await?;
    Ok(Pass {
        events,
        bytes,
        requests: 1,
        elapsed: started.elapsed(),
        complete,
    })
}

/// Page through `/events/`; also returns the users seen (for `/events-stream`).
async fn events(
    context: &Context,
    page: u32,
    max_events: u64,
    limit: Duration,
) -> Result<(Pass, BTreeSet<String>), LoadError> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut conn = Conn::connect(&context.target).await?;
    let mut users = BTreeSet::new();
    // No cursor on the first page: Pubky 0.5 refuses `cursor=0` (its cursors are timestamps).
    let mut cursor: Option<String> = None;
    let mut pass = Pass {
        events: 0,
        bytes: 0,
        requests: 0,
        elapsed: Duration::ZERO,
        complete: false,
    };
    // Each page returns at least one event or ends the loop, so this is bounded by max_events.
    while pass.events < max_events && Instant::now() < deadline {
        let target = match &cursor {
            Some(cursor) => format!("/events/?cursor={cursor}&limit={page}"),
            None => format!("/events/?limit={page}"),
        };
        let answer = conn.get(&target).await?;
        pass.requests += 1;
        if !answer.status.is_success() {
            return Err(LoadError::Protocol(format!(
                "/events/ answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            )));
        }
        pass.bytes += answer.body.len() as u64;
        let text = String::from_utf8_lossy(&answer.body);
        let mut next = None;
        let mut count = 0u64;
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("cursor: ") {
                next = Some(value.trim().to_string());
            } else if let Some((_, uri)) = line.split_once(' ') {
                count += 1;
                if let Some(user) = uri
                    .strip_prefix("pubky://")
                    .and_then(|u| u.split('/').next())
                {
                    if !users.contains(user) {
                        users.insert(user.to_string());
                    }
                }
            }
        }
        pass.events += count;
        match next {
            Some(next) if count > 0 => cursor = Some(next),
            _ => {
                pass.complete = true;
                break;
            }
        }
    }
    pass.elapsed = started.elapsed();
    Ok((pass, users))
}

/// Read `/events-stream?live=false` for every user, `per_stream` users per stream.
async fn events_stream(
    context: &Context,
    users: &BTreeSet<String>,
    per_stream: usize,
    max_events: u64,
    limit: Duration,
) -> Result<Pass, LoadError> {
    let started = Instant::now();
    let deadline = started + limit;
    let users: Vec<&String> = users.iter().collect();
    let mut pass = Pass {
        events: 0,
        bytes: 0,
        requests: 0,
        elapsed: Duration::ZERO,
        complete: true,
    };
    for group in users.chunks(per_stream) {
        let query: Vec<String> = group.iter().map(|u| format!("user={u}")).collect();
        let path = format!("/events-stream?{}&live=false", query.join("&"));
        let (events, bytes, complete) =
            drain_stream(context, &path, max_events - pass.events, deadline).await?;
        pass.events += events;
        pass.bytes += bytes;
        pass.requests += 1;
        if !complete || pass.events >= max_events {
            pass.complete = complete;
            break;
        }
    }
    pass.elapsed = started.elapsed();
    Ok(pass)
}

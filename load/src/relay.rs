//! `load relay-catchup` and `load relay-live`: a Hearth relay (`--url`, its admin listener at
//! `--relay-admin`) following Hearth homeservers (`--source`, repeatable).
//!
//! - `relay-catchup`: optionally fills each homeserver first (`--fill N` PUTs each), then adds
//!   every source to a fresh relay at once and times until each source's cursor is its
//!   homeserver's newest id: events/s into the relay.
//! - `relay-live`: makes sure the relay follows every source and has caught up, opens
//!   subscribers on the relay's `/firehose`, and PUTs at R writes/s spread evenly over the
//!   homeservers. A write's clock starts when its PUT is sent to its homeserver and stops
//!   when the relay's subscriber reads the event: homeserver commit, the relay's read, its
//!   commit and its fan-out, all included. One more subscriber on each homeserver's own
//!   `/firehose` sees the same writes directly: the difference, write by write, is what the
//!   relay adds (`relay_added`).
//!
//! Newest ids come from the homeserver itself: `/firehose` refuses a resume position ahead
//! of its newest event with a 400 that names that event's id.

use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::sync::watch;

use super::client::{signup_many, Admission, Conn, Target};
use super::live::{
    follow, join_all, open_many, tally, write_at_rate, Seen, Tally, WritePlan, ACKED, PENDING,
    UNSENT,
};
use super::put::write_files;
use super::stats::{per_second, Latency, ServerCost};
use super::{bounded, seconds, Context, LoadError, Report};

/// Where the relay and its sources are.
#[derive(Debug, Clone, Args)]
pub struct RelayTargets {
    /// A homeserver the relay follows (Hearth, `http://…`); repeatable.
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// The relay's admin listener, where sources are added.
    #[arg(long)]
    pub relay_admin: String,
    /// The relay's admin password.
    #[arg(long, env = "HEARTH_RELAY_ADMIN_PASSWORD", default_value = "admin")]
    pub relay_password: String,
}

#[derive(Debug, Clone, Args)]
pub struct CatchupArgs {
    #[command(flatten)]
    pub targets: RelayTargets,
    /// PUT this many files into each homeserver before the relay starts reading.
    #[arg(long, default_value_t = 0)]
    pub fill: u64,
    /// Writers per homeserver while filling.
    #[arg(long, default_value_t = 16)]
    pub fill_writers: usize,
    /// Bytes per file written while filling.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Give up after this many seconds of catching up.
    #[arg(long, default_value_t = 600.0)]
    pub max_seconds: f64,
}

#[derive(Debug, Clone, Args)]
pub struct RelayLiveArgs {
    #[command(flatten)]
    pub targets: RelayTargets,
    /// Subscribers on the relay's `/firehose`.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Writes per second, over all homeservers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to write, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Connections per homeserver the writes are spread over.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// After the last write, how long the subscribers may take to receive everything.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
}

/// The relay, its admin listener and the homeservers, parsed (loopback only).
struct Setup {
    relay: Target,
    admin: Target,
    password: String,
    sources: Vec<Target>,
    /// Each source as the relay names it (`http://host:port`).
    specs: Vec<String>,
}

impl Setup {
    fn new(context: &Context, targets: &RelayTargets) -> Result<Setup, LoadError> {
        bounded("source count", targets.sources.len(), 1, 10_000)?;
        let sources: Vec<Target> = targets
            .sources
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<_, _>>()?;
        let specs = sources
            .iter()
            .map(|source| format!("http://{}", source.authority))
            .collect();
        Ok(Setup {
            relay: context.target.clone(),
            admin: Target::parse(&targets.relay_admin)?,
            password: targets.relay_password.clone(),
            sources,
            specs,
        })
    }

    /// Each homeserver's newest event id (its sequence number).
    async fn newest(&self) -> Result<Vec<u64>, LoadError> {
        let mut newest = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            newest.push(newest_id(source).await?);
        }
        Ok(newest)
    }

    /// Ask the relay to follow every source; true for each that was not followed already.
    async fn add_all(&self) -> Result<Vec<bool>, LoadError> {
        let mut conn = Conn::connect(&self.admin).await?;
        let mut added = Vec::with_capacity(self.sources.len());
        for spec in &self.specs {
            let answer = conn
                .call(
                    Method::POST,
                    "/relay/sources",
                    &[("x-admin-password", self.password.as_str())],
                    Bytes::from(spec.clone()),
                )
                .await?;
            match answer.status {
                StatusCode::CREATED => added.push(true),
                StatusCode::OK => added.push(false),
                status => {
                    return Err(LoadError::Http(format!(
                        "adding {spec} answered {status}: {}",
                        String::from_utf8_lossy(&answer.body).trim()
                    )))
                }
            }
        }
        Ok(added)
    }

    /// Poll `/relay/sources` until every source's cursor is at least its `newest`; returns
    /// the events the relay stored from them meanwhile (by the `ingested` counters).
    async fn until_caught_up(
        &self,
        newest: &[u64],
        deadline: Instant,
    ) -> Result<(u64, Vec<serde_json::Value>), LoadError> {
        let mut conn = Conn::connect(&self.relay).await?;
        loop {
            let answer = conn.get("/relay/sources").await?;
            let listed: Vec<serde_json::Value> = serde_json::from_slice(&answer.body)
                .map_err(|err| LoadError::Protocol(format!("/relay/sources: {err}")))?;
            let mut done = true;
            for (spec, &want) in self.specs.iter().zip(newest) {
                let entry = listed.iter().find(|s| s["source"] == spec.as_str());
                let at = entry
                    .and_then(|s| s["cursor"].as_str())
                    .and_then(decode_id)
                    .unwrap_or(0);
                done &= at >= want;
            }
            if done {
                let ingested = listed.iter().filter_map(|s| s["ingested"].as_u64()).sum();
                return Ok((ingested, listed));
            }
            if Instant::now() >= deadline {
                return Err(LoadError::Http(format!(
                    "the relay did not catch up in time: {listed:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub(crate) async fn catchup(context: &Context, args: &CatchupArgs) -> Result<Report, LoadError> {
    let setup = Setup::new(context, &args.targets)?;
    let fill = bounded("fill", args.fill, 0, 100_000_000)?;
    let fill_writers = bounded("fill-writers", args.fill_writers, 1, 1024)?;
    let size = bounded("size", args.size, 0, 1 << 20)?;
    let limit = seconds("max-seconds", args.max_seconds, 3600.0)?;
    super::ensure_fd_limit(setup.sources.len() as u64 * (fill_writers as u64 + 2) + 64)?;

    if fill > 0 {
        let mut fills = tokio::task::JoinSet::new();
        for source in &setup.sources {
            let source = source.clone();
            let prefix = context.prefix("relay-fill");
            fills.spawn(async move {
                let users = signup_many(&source, 8, 8, &Admission::Open).await?;
                let limit = Duration::from_secs(3600);
                let out = write_files(
                    &source,
                    Arc::new(users),
                    &prefix,
                    fill_writers,
                    fill,
                    size,
                    limit,
                )
                .await?;
                Ok::<_, LoadError>(out.ok)
            });
        }
        while let Some(done) = fills.join_next().await {
            done.map_err(|err| LoadError::Http(format!("a fill died: {err}")))??;
        }
    }

    let newest = setup.newest().await?;
    let total: u64 = newest.iter().sum();
    let before = context.sample()?;
    let started = Instant::now();
    let added = setup.add_all().await?;
    if added.iter().any(|added| !added) {
        return Err(LoadError::Usage(
            "the relay follows some of these sources already: catch-up needs a fresh relay".into(),
        ));
    }
    let (ingested, _) = setup.until_caught_up(&newest, started + limit).await?;
    let elapsed = started.elapsed();
    let after = context.sample()?;
    let rate = per_second(ingested, elapsed);
    let relay = before.zip(after).map(|(b, a)| ServerCost::between(b, a));
    let cpu_us_per_event = relay
        .as_ref()
        .map(|cost| cost.cpu_ms as f64 * 1000.0 / ingested.max(1) as f64);
    let line = json!({
        "scenario": "relay-catchup",
        "relay_url": context.target.authority,
        "sources": setup.sources.len(),
        "events_at_sources": total,
        "ingested": ingested,
        "seconds": elapsed.as_secs_f64(),
        "events_per_s": rate,
        "relay_cpu_us_per_event": cpu_us_per_event,
        "relay": relay,
    });
    let mut summary = format!(
        "relay-catchup: {ingested} events from {} sources in {:.2} s: {rate} events/s\n",
        setup.sources.len(),
        elapsed.as_secs_f64()
    );
    if let (Some(cost), Some(per)) = (relay, cpu_us_per_event) {
        summary.push_str(&cost.describe("relay", &format!("({per:.2} us/event)")));
    }
    Ok(Report {
        lines: vec![line],
        summary,
    })
}

pub(crate) async fn live(context: &Context, args: &RelayLiveArgs) -> Result<Report, LoadError> {
    let setup = Setup::new(context, &args.targets)?;
    let subscribers = bounded("subscribers", args.subscribers, 1, 10_000)?;
    let writers = bounded("writers", args.writers, 1, 256)?;
    let size = bounded("size", args.size, 0, 1 << 20)?;
    let rate = bounded("rate", args.rate, 0.1, 1_000_000.0)?;
    let duration = seconds("seconds", args.seconds, 3600.0)?;
    let grace = seconds("grace", args.grace, 600.0)?;
    let hosts = setup.sources.len() as u64;
    let total = (rate * duration.as_secs_f64()).ceil() as u64;
    let total = bounded("rate x seconds", total, hosts, 10_000_000)?;
    super::ensure_fd_limit(hosts * (writers as u64 + 2) + subscribers as u64 + 64)?;

    // The relay follows every source and has read what they hold.
    setup.add_all().await?;
    let newest = setup.newest().await?;
    setup
        .until_caught_up(&newest, Instant::now() + Duration::from_secs(600))
        .await?;

    let mut users = Vec::with_capacity(setup.sources.len());
    for source in &setup.sources {
        let user = signup_many(source, 1, 1, &Admission::Open)
            .await?
            .pop()
            .ok_or_else(|| LoadError::Http("signup returned no user".into()))?;
        users.push(user);
    }
    let prefix = context.prefix("relay-live");
    let start = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let streams = open_many(&setup.relay, "/firehose", subscribers).await?;
    let stop_by = start + duration + grace + Duration::from_secs(60);
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
    // The same writes, seen directly on each homeserver.
    let mut direct = tokio::task::JoinSet::new();
    for source in &setup.sources {
        for stream in open_many(source, "/firehose", 1).await? {
            direct.spawn(follow(
                stream,
                prefix.clone(),
                total,
                start,
                stop_by,
                stop_rx.clone(),
                Arc::new(AtomicU64::new(0)),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = context.sample()?;
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(UNSENT)).collect());
    let state: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(PENDING)).collect());
    let write_started = Instant::now();
    let mut writing = tokio::task::JoinSet::new();
    for (k, (source, user)) in setup.sources.iter().zip(users).enumerate() {
        // Source k writes its contiguous share of the numbers, at its share of the rate.
        let first = total * k as u64 / hosts;
        let share = total * (k as u64 + 1) / hosts - first;
        let plan = WritePlan {
            first,
            total: share,
            rate: rate / hosts as f64,
            writers,
            size,
        };
        let (source, prefix) = (source.clone(), prefix.clone());
        let (sent_at, state) = (sent_at.clone(), state.clone());
        writing.spawn(async move {
            write_at_rate(&source, user, &prefix, plan, start, sent_at, state, stop_by).await
        });
    }
    let mut put_latencies = Vec::new();
    while let Some(done) = writing.join_next().await {
        let mut some = done.map_err(|err| LoadError::Http(format!("a writer died: {err}")))??;
        put_latencies.append(&mut some);
    }
    let write_elapsed = write_started.elapsed();
    let acked = state
        .iter()
        .filter(|s| s.load(std::sync::atomic::Ordering::Relaxed) == ACKED)
        .count() as u64;
    let expected = acked * subscribers as u64;
    let grace_ends = Instant::now() + grace;
    while delivered.load(std::sync::atomic::Ordering::Relaxed) < expected
        && Instant::now() < grace_ends
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = context.sample()?;
    let _ = stop_tx.send(true);
    let relayed = join_all(readers).await?;
    let mut added = relay_added(&relayed[0].arrivals, &join_all(direct).await?, total);
    let Tally {
        mut latencies,
        missed,
        duplicated,
        unexpected,
        broken,
    } = tally(relayed, total, &sent_at, &state);

    let delivery = Latency::from_nanos(&mut latencies);
    let added = Latency::from_nanos(&mut added);
    let put = Latency::from_nanos(&mut put_latencies);
    let write_rate = per_second(acked, write_elapsed);
    let relay = before.zip(after).map(|(b, a)| ServerCost::between(b, a));
    let line = json!({
        "scenario": "relay-live",
        "relay_url": context.target.authority,
        "sources": hosts,
        "subscribers": subscribers,
        "rate": rate,
        "seconds": duration.as_secs_f64(),
        "writes": total,
        "acked": acked,
        "achieved_writes_per_s": write_rate,
        "lag": delivery,
        "relay_added": added,
        "missed": missed,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "broken_subscribers": broken.len(),
        "put_latency": put,
        "relay": relay,
    });
    let mut summary = format!(
        "relay-live: {acked}/{total} writes over {hosts} homeservers at {write_rate}/s, \
         {subscribers} relay subscribers: lag {}, {missed} missed, {duplicated} duplicated\n  \
         added by the relay (vs. a subscriber on the homeserver) {}\n  PUT {}\n",
        delivery.human(),
        added.human(),
        put.human(),
    );
    if let Some(first) = broken.first() {
        summary.push_str(&format!(
            "  {} subscriber streams broke, first: {first}\n",
            broken.len()
        ));
    }
    if let Some(cost) = relay {
        summary.push_str(&cost.describe("relay", "while writing"));
    }
    Ok(Report {
        lines: vec![line],
        summary,
    })
}

/// For each write seen both on the relay and directly on its homeserver, how much later
/// the relay's subscriber read it (ns; 0 when the direct subscriber was the later one).
fn relay_added(relayed: &[(u32, u64)], direct: &[Seen], total: u64) -> Vec<u64> {
    let mut direct_at = vec![None; total as usize];
    for seen in direct {
        for &(index, at) in &seen.arrivals {
            direct_at[index as usize].get_or_insert(at);
        }
    }
    let mut relay_at = vec![None; total as usize];
    for &(index, at) in relayed {
        relay_at[index as usize].get_or_insert(at);
    }
    relay_at
        .iter()
        .zip(&direct_at)
        .filter_map(|(relay, direct)| Some(relay.as_ref()?.saturating_sub(*direct.as_ref()?)))
        .collect()
}

/// A Hearth server's newest event id: `/firehose` names it when refusing a position ahead.
async fn newest_id(source: &Target) -> Result<u64, LoadError> {
    const PROBE: &str = "FZZZZZZZZZZZZ";
    let mut conn = Conn::connect(source).await?;
    let answer = conn
        .get(&format!("/firehose?lastSeq={PROBE}&live=false"))
        .await?;
    let text = String::from_utf8_lossy(&answer.body);
    if answer.status != StatusCode::BAD_REQUEST {
        return Err(LoadError::Protocol(format!(
            "{}: expected a 400 naming the newest event, got {}",
            source.authority, answer.status
        )));
    }
    text.rsplit(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| word.len() == 13 && *word != PROBE)
        .find_map(decode_id)
        .ok_or_else(|| {
            LoadError::Protocol(format!("{}: no event id in {text:?}", source.authority))
        })
}

/// A 13-character Crockford base32 event id.
fn decode_id(id: &str) -> Option<u64> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    if id.len() != 13 {
        return None;
    }
    id.bytes().try_fold(0u64, |value, byte| {
        let digit = ALPHABET.iter().position(|&c| c == byte)? as u64;
        value.checked_mul(32).map(|v| v | digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ids() {
        assert_eq!(decode_id("0000000000000"), Some(0));
        assert_eq!(decode_id("0000000000010"), Some(32));
        assert_eq!(decode_id("000000000001B"), Some(43));
        assert_eq!(decode_id("000000000000I"), None);
        assert_eq!(decode_id("12"), None);
    }
}

//! Metrics: what the server counts, and their Prometheus text on `--metrics-listen`.
//!
//! Code anywhere records through the `metrics` facade with the one-line functions below (a
//! no-op until a recorder is installed, so a server without a metrics listener pays almost
//! nothing). The Prometheus recorder (`metrics-exporter-prometheus`) is installed once per
//! process, when the first server with a metrics listener starts; every server in the process
//! then reports into it. Values that are cheaper to read than to track (the log's head, the
//! LMDB map) are set as gauges when scraped.
//!
//! A relay's sources are read from its registry at scrape time too, each set through
//! `relay_source`: a source's state, lag and counts are whatever its task last wrote.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Every metric's name, with its help text (`# HELP`).
pub mod names {
    pub const HTTP_REQUESTS: &str = "hearth_http_requests_total";
    pub const HTTP_DURATION: &str = "hearth_http_request_duration_seconds";
    pub const PUT_BYTES: &str = "hearth_put_bytes_total";
    pub const COMMITS: &str = "hearth_commits_total";
    pub const COMMIT_OPS: &str = "hearth_commit_batch_ops";
    pub const COMMIT_EVENTS: &str = "hearth_commit_batch_events";
    pub const COMMIT_DURATION: &str = "hearth_commit_duration_seconds";
    pub const LOG_HEAD: &str = "hearth_log_head_seq";
    pub const LOG_FIRST: &str = "hearth_log_first_seq";
    pub const LOG_EVENTS: &str = "hearth_log_events";
    pub const STREAMS: &str = "hearth_event_streams";
    pub const STREAMS_LAGGED: &str = "hearth_event_streams_lagged_total";
    pub const EVENTS_DELIVERED: &str = "hearth_events_delivered_total";
    pub const MAP_USED: &str = "hearth_lmdb_map_used_bytes";
    pub const MAP_SIZE: &str = "hearth_lmdb_map_size_bytes";
    pub const RATE_LIMITED: &str = "hearth_rate_limited_total";
    pub const TRIMMED: &str = "hearth_retention_trimmed_events_total";
    pub const RELAY_STATE: &str = "hearth_relay_source_state";
    pub const RELAY_LAG: &str = "hearth_relay_source_lag_events";
    pub const RELAY_INGESTED: &str = "hearth_relay_source_ingested_total";
    pub const RELAY_SKIPPED: &str = "hearth_relay_source_skipped_total";

    pub const HELP: &[(&str, &str)] = &[
        (
            HTTP_REQUESTS,
            "HTTP requests answered, by listener, route, method and status",
        ),
        (
            HTTP_DURATION,
            "Time to answer an HTTP request (to its headers), by route and method",
        ),
        (PUT_BYTES, "Bytes of file content committed by PUTs"),
        (COMMITS, "Group commits of the writer"),
        (COMMIT_OPS, "Ops in one group commit"),
        (COMMIT_EVENTS, "Events appended by one group commit"),
        (COMMIT_DURATION, "Time of one LMDB commit, fsync included"),
        (LOG_HEAD, "The newest event sequence"),
        (
            LOG_FIRST,
            "The oldest event sequence retained (0 when none)",
        ),
        (LOG_EVENTS, "Events retained in the log"),
        (STREAMS, "Open event streams (/firehose and /events-stream)"),
        (
            STREAMS_LAGGED,
            "Times a stream fell behind live and was served from the store",
        ),
        (EVENTS_DELIVERED, "Events handed to event streams"),
        (
            MAP_USED,
            "Bytes of the LMDB map in use (its high-water mark)",
        ),
        (
            MAP_SIZE,
            "Size of the LMDB map: the most the store can grow to",
        ),
        (
            RATE_LIMITED,
            "Requests refused with 429 by a rate limit, by rule path and method",
        ),
        (TRIMMED, "Events trimmed by retention"),
        (
            RELAY_STATE,
            "1 for a relay source's current state, 0 for the others",
        ),
        (
            RELAY_LAG,
            "Events a relay source's newest is ahead of what was ingested",
        ),
        (RELAY_INGESTED, "Events ingested from a relay source"),
        (
            RELAY_SKIPPED,
            "Events of a relay source that could not be read, passed over",
        ),
    ];
}

/// Histogram buckets: seconds for durations, counts for batch sizes.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the Prometheus recorder (once per process); the handle that renders it. `None`
/// if another recorder was installed first (then nothing is exported).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(names::COMMIT_OPS.into()), COUNTS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(names::COMMIT_EVENTS.into()), COUNTS)
                });
            let handle = match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(handle)) => handle,
                Ok(Err(err)) | Err(err) => {
                    tracing::error!(error = %err, "cannot install the metrics recorder");
                    return None;
                }
            };
            for (name, help) in names::HELP {
                metrics::describe_counter!(*name, *help);
            }
            Some(handle)
        })
        .clone()
}

/// The values read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub head_seq: u64,
    pub first_seq: u64,
    pub events: u64,
    pub map_used: u64,
    pub map_size: u64,
}

/// The Prometheus text: `snapshot` set as gauges, then everything recorded so far.
pub fn render(handle: &PrometheusHandle, snapshot: Snapshot) -> String {
    gauge!(names::LOG_HEAD).set(snapshot.head_seq as f64);
    gauge!(names::LOG_FIRST).set(snapshot.first_seq as f64);
    gauge!(names::LOG_EVENTS).set(snapshot.events as f64);
    gauge!(names::MAP_USED).set(snapshot.map_used as f64);
    gauge!(names::MAP_SIZE).set(snapshot.map_size as f64);
    handle.run_upkeep();
    handle.render()
}

/// One HTTP answer.
pub fn request(listener: &'static str, route: &str, method: &str, status: u16, took: Duration) {
    let labels = [
        ("listener", listener.to_string()),
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    counter!(names::HTTP_REQUESTS, &labels).increment(1);
    let labels = [("route", route.to_string()), ("method", method.to_string())];
    histogram!(names::HTTP_DURATION, &labels).record(took.as_secs_f64());
}

/// A PUT of `bytes` was committed.
pub fn put_bytes(bytes: u64) {
    counter!(names::PUT_BYTES).increment(bytes);
}

/// The writer committed a batch of `ops` making `events`, the commit taking `took`.
pub fn commit(ops: usize, events: usize, took: Duration) {
    counter!(names::COMMITS).increment(1);
    histogram!(names::COMMIT_OPS).record(ops as f64);
    histogram!(names::COMMIT_EVENTS).record(events as f64);
    histogram!(names::COMMIT_DURATION).record(took.as_secs_f64());
}

/// An event stream opened (`+1`) or closed (`-1`).
pub fn stream_open(delta: i8) {
    gauge!(names::STREAMS).increment(f64::from(delta));
}

/// A stream's mailbox overflowed: it is served from the store until it catches up.
pub fn stream_lagged() {
    counter!(names::STREAMS_LAGGED).increment(1);
}

/// Events handed to a stream (counted once per batch the stream writes, never per event).
pub fn events_delivered(events: u64) {
    counter!(names::EVENTS_DELIVERED).increment(events);
}

/// A rate limit refused a request.
pub fn rate_limited(path: &str, method: &str) {
    let labels = [("path", path.to_string()), ("method", method.to_string())];
    counter!(names::RATE_LIMITED, &labels).increment(1);
}

/// Retention trimmed `n` events.
pub fn trimmed(n: u64) {
    counter!(names::TRIMMED).increment(n);
}

/// A relay source as its registry shows it at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    /// The source as configured (its spec).
    pub source: String,
    /// `connecting`, `following`, `backoff` or `failed`.
    pub state: &'static str,
    /// Events behind the source's newest, where known (else the gauge keeps its last value).
    pub lag: Option<u64>,
    /// Events ingested from it so far.
    pub ingested: u64,
    /// Events of it that could not be read, passed over.
    pub skipped: u64,
}

/// The states a relay source can be in (`hearth_relay_source_state{state=...}`).
pub const SOURCE_STATES: &[&str] = &["connecting", "following", "backoff", "failed"];

/// Set one relay source's gauges and counters, labelled by its spec.
pub fn relay_source(report: SourceReport) {
    for state in SOURCE_STATES {
        let labels = [
            ("source", report.source.clone()),
            ("state", state.to_string()),
        ];
        gauge!(names::RELAY_STATE, &labels).set(if *state == report.state { 1.0 } else { 0.0 });
    }
    let labels = [("source", report.source)];
    if let Some(lag) = report.lag {
        gauge!(names::RELAY_LAG, &labels).set(lag as f64);
    }
    counter!(names::RELAY_INGESTED, &labels).absolute(report.ingested);
    counter!(names::RELAY_SKIPPED, &labels).absolute(report.skipped);
}

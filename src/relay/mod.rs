//! The relay: follows sources (homeservers and other relays) and appends their events to this
//! server's log, which it then serves like a homeserver's: one merged, resumable firehose.
//!
//! - `source`: what a source spec says (protocol, URL, key) and its canonical text;
//! - `tables`: the relay's LMDB tables (each source's cursor and counters, each homeserver's
//!   mark) and the order of a homeserver's ids;
//! - `ingest`: the writer op that stores one batch of one source, cursor and marks included;
//! - `follow`: one task per source: find it, check its key, read it, back off when it fails;
//! - `locate`: where a source named only by its key is (its pkarr record) and what it speaks;
//! - `hearth`: reading a Hearth `/firehose` (SSE, resumed with `Last-Event-ID`);
//! - `pubky`: reading a Pubky homeserver's `/events/` pages, with each event's exact id.
//!
//! `Relay` is the runtime: the registry of running sources (their states, for
//! `/relay/sources`), and adding or removing one while the server runs. It sits beside
//! `files` above the log, and knows no HTTP status: its errors are `RelayError`s.

mod follow;
mod hearth;
pub mod ingest;
mod locate;
mod pubky;
pub mod source;
pub mod tables;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use source::{SourceSpec, SpecError};
pub use tables::RelayTables;

use crate::log::Writer;
use crate::pkarr::Network;
use crate::store::StoreError;
use ingest::SetAdmin;

/// Why a relay request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Not a source spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// No such source.
    #[error("{0}")]
    NotFound(String),
    /// The relay is stopping.
    #[error("{0}")]
    Stopping(String),
    /// The HTTP client for the sources could not be built (its TLS roots, say).
    #[error("cannot build the HTTP client for the sources: {0}")]
    Client(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Locating it, checking its key, opening its stream.
    Connecting,
    /// Reading it.
    Following,
    /// It failed (`last_error` says how); retried after a delay that grows to ~30 s.
    Backoff,
    /// It cannot be followed as specified (`last_error` says why); not retried until it is
    /// removed and added again.
    Failed,
}

impl State {
    /// The state as `/relay/sources` and the metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Following => "following",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One source as `GET /relay/sources` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// The canonical spec.
    pub source: String,
    /// The key the source answers as (or its spec names).
    pub hs: Option<String>,
    pub state: State,
    /// The source's id of the last event taken, as the source writes it.
    pub cursor: Option<String>,
    /// Events stored.
    pub ingested: u64,
    /// Events that could not be read, passed over.
    pub skipped: u64,
    /// Events behind the source's newest, where known.
    pub lag: Option<u64>,
    pub last_error: Option<String>,
    /// Events another source had brought already (a diamond), passed over.
    pub duplicates: u64,
}

impl SourceStatus {
    fn new(source: String, record: Option<tables::SourceRecord>) -> SourceStatus {
        let record = record.unwrap_or_default();
        SourceStatus {
            source,
            hs: record.hs,
            state: State::Connecting,
            cursor: record.cursor,
            ingested: record.ingested,
            skipped: record.skipped,
            lag: None,
            last_error: None,
            duplicates: record.duplicates,
        }
    }
}

/// A source's status, shared by its task (which writes it) and the readers of the registry.
#[derive(Clone)]
pub(crate) struct StatusCell(Arc<Mutex<SourceStatus>>);

impl StatusCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SourceStatus> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get(&self) -> SourceStatus {
        self.lock().clone()
    }
}

/// How sources are read; the defaults suit a relay in production and in tests alike.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the records of sources named by key are looked up (the homeserver's
    /// `--pkarr-bootstrap` and `--pkarr-relay`).
    pub network: Network,
    /// How long a caught-up Pubky source waits before asking for new events.
    pub poll: Duration,
    /// The first retry delay after a failure; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            network: Network::default(),
            poll: Duration::from_secs(1),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What every source task shares.
#[derive(Clone)]
pub(crate) struct Context {
    pub writer: Writer,
    pub tables: RelayTables,
    /// One HTTP client (one connection pool) for every source reached by URL.
    pub client: reqwest::Client,
    /// Finds the sources named by key.
    pub resolver: Arc<locate::Resolver>,
    pub settings: Arc<Settings>,
    pub shutdown: watch::Receiver<bool>,
}

/// How the relay's HTTP clients are made: the shared one, and one per PubkyTLS source.
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("hearth-relay/", env!("CARGO_PKG_VERSION")))
}

struct Running {
    status: StatusCell,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The relay's runtime; a cheap clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    context: Context,
    running: Mutex<BTreeMap<String, Running>>,
}

/// Whether `add` started a source or found it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Started,
    AlreadyFollowed,
}

impl Relay {
    /// Start following `sources` and the sources the admin API added before; every task
    /// ends when `shutdown` flips.
    pub fn start(
        writer: Writer,
        tables: RelayTables,
        sources: &[SourceSpec],
        settings: Settings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Relay, RelayError> {
        let client = client_builder()
            .build()
            .map_err(|err| RelayError::Client(err.to_string()))?;
        let resolver = Arc::new(locate::Resolver::new(settings.network.clone()));
        let relay = Relay {
            inner: Arc::new(Inner {
                context: Context {
                    writer,
                    tables: tables.clone(),
                    client,
                    resolver,
                    settings: Arc::new(settings),
                    shutdown,
                },
                running: Mutex::new(BTreeMap::new()),
            }),
        };
        let mut all: Vec<SourceSpec> = sources.to_vec();
        for text in tables.admin_sources()? {
            match SourceSpec::parse(&text) {
                Ok(spec) => all.push(spec),
                Err(err) => tracing::warn!(error = %err, "a stored source is not a spec; skipped"),
            }
        }
        for spec in all {
            relay.spawn(spec)?;
        }
        Ok(relay)
    }

    fn running(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Start a task for `spec` unless one runs.
    fn spawn(&self, spec: SourceSpec) -> Result<Added, RelayError> {
        let text = spec.to_string();
        let record = self.inner.context.tables.source(&text)?;
        let mut running = self.running();
        if running.contains_key(&text) {
            return Ok(Added::AlreadyFollowed);
        }
        if *self.inner.context.shutdown.borrow() {
            return Err(RelayError::Stopping("the relay is shutting down".into()));
        }
        let status = StatusCell(Arc::new(Mutex::new(SourceStatus::new(
            text.clone(),
            record,
        ))));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow::run(
            self.inner.context.clone(),
            spec,
            status.clone(),
            stop_rx,
        ));
        tracing::info!(source = %text, "following");
        running.insert(text, Running { status, stop, task });
        Ok(Added::Started)
    }

    /// Follow `spec` from now on, and at every start (until `remove`).
    pub async fn add(&self, spec: SourceSpec) -> Result<(Added, SourceStatus), RelayError> {
        let text = spec.to_string();
        let set = SetAdmin {
            tables: self.inner.context.tables.clone(),
            source: text.clone(),
            admin: true,
            forget: false,
        };
        self.inner.context.writer.submit(set).await?;
        let added = self.spawn(spec)?;
        let status = self
            .status(&text)
            .ok_or_else(|| RelayError::NotFound(format!("source {text} stopped at once")))?;
        Ok((added, status))
    }

    /// Stop following `spec`; it is no longer followed at start, unless the configuration
    /// names it. Its cursor is kept (adding it again resumes there) unless `forget`.
    pub async fn remove(&self, spec: &SourceSpec, forget: bool) -> Result<(), RelayError> {
        let text = spec.to_string();
        let running = self.running().remove(&text);
        // A source no longer followed can still have its cursor forgotten.
        let forgettable = forget && self.inner.context.tables.source(&text)?.is_some();
        if running.is_none() && !forgettable {
            return Err(RelayError::NotFound(format!(
                "source {text} is not followed here"
            )));
        }
        if let Some(running) = running {
            let _ = running.stop.send(true);
            // Its last batch, if one is in the writer, commits or not: either way the cursor
            // matches the log. Once it has ended, nothing of it writes again.
            if let Err(err) = running.task.await {
                tracing::error!(source = %text, error = %err, "a source task failed");
            }
        }
        let set = SetAdmin {
            tables: self.inner.context.tables.clone(),
            source: text.clone(),
            admin: false,
            forget,
        };
        self.inner.context.writer.submit(set).await?;
        tracing::info!(source = %text, forget, "no longer following");
        Ok(())
    }

    /// Every running source's status, in spec order.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.running()
            .values()
            .map(|running| running.status.get())
            .collect()
    }

    /// One running source's status.
    pub fn status(&self, spec: &str) -> Option<SourceStatus> {
        self.running().get(spec).map(|running| running.status.get())
    }

    /// Wait for every source task to end (they end when the server's shutdown flips).
    pub async fn stopped(&self) {
        let running = std::mem::take(&mut *self.running());
        for (text, running) in running {
            let _ = running.stop.send(true);
            if let Err(err) = running.task.await {
                tracing::error!(source = %text, error = %err, "a source task failed");
            }
        }
    }
}

//! One task per source: locate it, check who it is, read it (`hearth` or `pubky`), and when
//! that fails, say why and try again later. A source's troubles stay in its own task: the
//! others go on.
//!
//! States: `connecting` (locating, checking the key, opening), `following` (reading),
//! `backoff` (failed; retried after a delay growing from `min_backoff` to `max_backoff`, with
//! jitter, reset once the source makes progress again), `failed` (cannot work as specified:
//! a key that does not match, a key that cannot be learnt; stays so until removed).

use std::time::Duration;

use tokio::sync::watch;

use super::ingest::{Incoming, Ingest, Ingested};
use super::locate::locate;
use super::source::{Endpoint, Protocol, SourceSpec};
use super::{Context, State, StatusCell};
use crate::keys;

/// Why reading a source stopped.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth trying again later.
    Retry(String),
    /// Cannot work as specified.
    Fatal(String),
}

pub(crate) type Outcome = Result<(), Failure>;

/// How long a request other than a stream may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The run of one source, until `stop` or the server's shutdown.
pub(crate) async fn run(
    context: Context,
    spec: SourceSpec,
    status: StatusCell,
    mut stop: watch::Receiver<bool>,
) {
    let mut shutdown = context.shutdown.clone();
    let text = spec.to_string();
    let mut delay = context.settings.min_backoff;
    let mut again = false;
    loop {
        let mut session = Session {
            context: &context,
            client: context.client.clone(),
            source: &text,
            status: &status,
            progressed: false,
            again,
        };
        let failure = tokio::select! {
            outcome = session.follow(&spec) => match outcome {
                Ok(()) => Failure::Retry("the source ended the stream".into()),
                Err(failure) => failure,
            },
            _ = stop.wait_for(|stop| *stop) => return,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if session.progressed {
            delay = context.settings.min_backoff;
        }
        again = true;
        let (state, reason) = match failure {
            Failure::Retry(reason) => (State::Backoff, reason),
            Failure::Fatal(reason) => (State::Failed, reason),
        };
        tracing::warn!(source = %text, state = ?state, "{reason}");
        {
            let mut status = status.lock();
            status.state = state;
            status.last_error = Some(reason);
            status.lag = None;
        }
        // A failed source waits for its removal; one in backoff for its next try.
        let wait = jittered(delay);
        let retry = async move {
            match state {
                State::Failed => std::future::pending().await,
                _ => tokio::time::sleep(wait).await,
            }
        };
        delay = (delay * 2).min(context.settings.max_backoff);
        tokio::select! {
            () = retry => {}
            _ = stop.wait_for(|stop| *stop) => return,
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Between half of `delay` and all of it, so that sources failing together retry apart.
fn jittered(delay: Duration) -> Duration {
    let random = u64::from_be_bytes(pubky_common::crypto::random_bytes::<8>());
    let half = delay / 2;
    let spread = half.as_millis().max(1) as u64;
    half + Duration::from_millis(random % spread)
}

/// One attempt at following a source.
pub(crate) struct Session<'a> {
    pub context: &'a Context,
    /// The HTTP client that reaches the source (the shared one, or a PubkyTLS client).
    pub client: reqwest::Client,
    /// The canonical spec: the source's row.
    pub source: &'a str,
    pub status: &'a StatusCell,
    /// Whether a batch committed in this attempt.
    pub progressed: bool,
    /// Whether an attempt failed before this one.
    pub again: bool,
}

impl Session<'_> {
    async fn follow(&mut self, spec: &SourceSpec) -> Outcome {
        self.set_state(State::Connecting);
        let endpoint = match (&spec.endpoint, spec.key.as_deref()) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(key)) => {
                let located = locate(self.context, key, self.again).await?;
                self.client = located.client;
                located.endpoint
            }
            (None, None) => return Err(Failure::Fatal("a source names a key or a URL".into())),
        };
        let record = self
            .context
            .tables
            .source(self.source)
            .map_err(|err| Failure::Retry(format!("reading the source's record: {err}")))?
            .unwrap_or_default();
        let (hs, hearth) = self
            .identify(&endpoint, spec.key.as_deref(), record.hs.as_deref())
            .await?;
        self.status.lock().hs = Some(hs.clone());
        match endpoint.protocol {
            Protocol::Hearth => super::hearth::follow(self, &endpoint, &hs, record.cursor).await,
            Protocol::Pubky => {
                super::pubky::follow(self, &endpoint, &hs, hearth, record.cursor).await
            }
        }
    }

    pub(crate) fn set_state(&self, state: State) {
        self.status.lock().state = state;
    }

    /// The key the source's events are from: what its `GET /` answers, checked against the
    /// key its spec names and the key it answered before; and whether it answered one (only
    /// Hearth does).
    async fn identify(
        &self,
        endpoint: &Endpoint,
        named: Option<&str>,
        before: Option<&str>,
    ) -> Result<(String, bool), Failure> {
        let response = self
            .client
            .get(endpoint.url("/"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|err| Failure::Retry(format!("GET {}/: {}", endpoint.base, describe(&err))))?;
        let ok = response.status().is_success();
        let body = response.text().await.unwrap_or_default();
        let answered = ok.then(|| keys::canonical(body.trim()).ok()).flatten();
        let hearth = answered.is_some();
        let hs = match (named, answered) {
            (Some(named), Some(answered)) if named != answered => {
                return Err(Failure::Fatal(format!(
                    "{} answers key {answered} on GET /, not {named} as the source names it",
                    endpoint.base
                )))
            }
            (Some(key), _) => key.to_string(),
            (None, Some(key)) => key,
            (None, None) => {
                return Err(Failure::Fatal(match endpoint.protocol {
                    Protocol::Hearth => format!(
                        "{} does not answer a key on GET / as Hearth does; if it is a Pubky \
                         homeserver, follow it as <its key>@pubky+{}",
                        endpoint.base, endpoint.base
                    ),
                    Protocol::Pubky => format!(
                        "a Pubky homeserver's key cannot be learnt from its URL: name it, \
                         as <its key>@{endpoint}"
                    ),
                }))
            }
        };
        if let Some(before) = before.filter(|before| *before != hs) {
            return Err(Failure::Fatal(format!(
                "this source's events so far came from key {before}, and it now answers as \
                 {hs}: another server behind the same address? Its cursor means nothing there; \
                 remove the source with forget=true to start it over"
            )));
        }
        Ok((hs, hearth))
    }

    /// Store a batch that follows the stored cursor `follows`; its cursor and counters land
    /// with it.
    pub(crate) async fn commit(
        &mut self,
        hs: &str,
        events: Vec<Incoming>,
        skipped: u64,
        follows: Option<String>,
        cursor: Option<String>,
    ) -> Result<Ingested, Failure> {
        let ingest = self.ingest(hs, events, skipped, follows, cursor.clone());
        let done = self
            .context
            .writer
            .submit(ingest)
            .await
            .map_err(|err| Failure::Retry(format!("storing a batch failed: {err}")))?;
        self.committed(&done, cursor);
        Ok(done)
    }

    pub(crate) fn ingest(
        &self,
        hs: &str,
        events: Vec<Incoming>,
        skipped: u64,
        follows: Option<String>,
        cursor: Option<String>,
    ) -> Ingest {
        Ingest::new(
            self.context.tables.clone(),
            self.source.to_string(),
            hs.to_string(),
            events,
            skipped,
            follows,
            cursor,
        )
    }

    /// Reflect a committed batch in the status.
    pub(crate) fn committed(&mut self, done: &Ingested, cursor: Option<String>) {
        self.progressed = true;
        let mut status = self.status.lock();
        if cursor.is_some() {
            status.cursor = cursor;
        }
        status.ingested += done.stored;
        status.skipped += done.skipped;
        status.duplicates += done.duplicates;
        status.last_error = None;
    }
}

/// A client error in words, with its cause (reqwest's own message is terse).
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

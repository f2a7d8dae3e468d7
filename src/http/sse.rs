//! SSE plumbing shared by `/firehose` and `/events-stream`: how a stream runs once its request
//! is accepted (`Plan`, `stream_body`), its headers, the `Last-Event-ID` header, and the check
//! that a resume position is one the log can serve.
//!
//! The body yields one buffer per wake-up holding every frame that was ready (a replay batch,
//! or all the live events a mailbox had), so a busy stream is one write per wake-up rather than
//! one per event. Keep-alives come from the hub's one clock, not a timer per stream.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use super::error::{Error, Result};
use crate::ids;
use crate::log::hub::{Feed, Step};
use crate::log::{EventLog, LogError};

/// What a browser's `EventSource` waits before reconnecting, in milliseconds.
pub const RETRY_MS: u64 = 2000;

/// How a stream runs, once its request is accepted.
pub(crate) struct Plan {
    pub feed: Feed,
    /// Close after this many events.
    pub limit: Option<u64>,
    /// Go on with live events after the replay; otherwise close once caught up.
    pub live: bool,
    /// Written once, first (the `retry:` line).
    pub preamble: Option<Bytes>,
    /// Written when idle for the keep-alive interval.
    pub keepalive_frame: &'static [u8],
}

/// The response body of a stream: the feed's buffers as it yields them, no copies.
pub(crate) fn stream_body(plan: Plan) -> Body {
    struct State {
        plan: Plan,
        sent: u64,
    }
    let state = State { plan, sent: 0 };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(preamble) = state.plan.preamble.take() {
            return Some((Ok::<Bytes, Infallible>(preamble), state));
        }
        loop {
            let left = match state.plan.limit {
                Some(limit) if state.sent >= limit => return None,
                Some(limit) => limit - state.sent,
                None => u64::MAX,
            };
            match state.plan.feed.next(left).await {
                Ok(Step::Frames { bytes, events }) => {
                    state.sent += events;
                    crate::telemetry::events_delivered(events);
                    return Some((Ok(bytes), state));
                }
                Ok(Step::CaughtUp) if !state.plan.live => return None,
                Ok(Step::CaughtUp) => continue,
                Ok(Step::Idle) => {
                    let bytes = Bytes::from_static(state.plan.keepalive_frame);
                    return Some((Ok(bytes), state));
                }
                Ok(Step::Closed) => return None,
                // Retention trimmed events this stream had not read yet: it ends, and the
                // client's resume from its last id is answered 410, as any resume past them.
                Err(LogError::Position(err)) => {
                    tracing::info!(error = %err, "event stream overtaken by retention");
                    return None;
                }
                Err(err) => {
                    // Headers are gone; ending the stream is all that is left. The client
                    // resumes from the last id it saw.
                    tracing::error!(error = %err, "event stream failed");
                    return None;
                }
            }
        }
    });
    Body::from_stream(stream)
}

/// Headers of every event stream: no caching, no buffering by proxies on the way.
pub(crate) fn sse_headers(cache_control: &'static str) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ),
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ]
}

/// The `Last-Event-ID` header, if any (an empty one means none, as `EventSource` intends).
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::bad_request("Last-Event-ID is not an event id (not ASCII)"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    ids::decode(text)
        .map(Some)
        .map_err(|err| Error::bad_request(format!("Last-Event-ID {text:?}: {err}")))
}

/// Refuse a resume position the log cannot serve: ahead of the newest event (400), or
/// before the oldest one retained (410).
pub(crate) fn check_position(log: &EventLog, after: u64) -> Result<()> {
    Ok(log.check_position(after)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::store::position_error;
    use crate::log::LogError;

    #[test]
    fn positions_the_store_cannot_serve() {
        let status = |after, newest, oldest| {
            position_error(after, newest, oldest).map(|e| Error::from(LogError::from(e)).status())
        };
        // No retention: the log starts at 1.
        assert_eq!(status(0, 5, Some(1)), None);
        assert_eq!(status(5, 5, Some(1)), None);
        assert_eq!(
            status(6, 5, Some(1)),
            Some(axum::http::StatusCode::BAD_REQUEST)
        );
        assert_eq!(status(0, 0, None), None);
        // Retention dropped 1..=9.
        assert_eq!(status(9, 20, Some(10)), None);
        assert_eq!(status(8, 20, Some(10)), Some(axum::http::StatusCode::GONE));
        assert_eq!(status(0, 20, Some(10)), Some(axum::http::StatusCode::GONE));
        // Retention dropped everything.
        assert_eq!(status(20, 20, None), None);
        assert_eq!(status(19, 20, None), Some(axum::http::StatusCode::GONE));
        let message = position_error(8, 20, Some(10))
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("000000000000A"), "{message}");
    }
}

//! `GET /firehose`: the native event stream (spec section 4), and the SSE plumbing it shares
//! with Pubky's `/events-stream`.
//!
//! A request is checked in full before anything streams (patterns, ids, limits), so every
//! mistake is a plain 400/410 rather than a broken stream. Then the connection subscribes to
//! the hub, and only after that reads the store: replay and live join without a gap.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::tenant::query_pairs;
use super::AppState;
use crate::error::{Error, Result};
use crate::events::frame;
use crate::events::hub::{Feed, SharedEvent, Step};
use crate::events::id::{self, Id};
use crate::events::subscriptions::{Pattern, PatternSet};
use crate::storage::Store;

/// What a browser's `EventSource` waits before reconnecting, in milliseconds.
pub const RETRY_MS: u64 = 2000;
/// The subscription when a request names none: every public event.
pub const DEFAULT_PATTERN: &str = "*/pub/*";

/// What a stream writes for each event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Format {
    Native,
    Pubky,
}

impl Format {
    fn frame(self, event: &SharedEvent) -> Bytes {
        match self {
            Format::Native => event.native_frame(),
            Format::Pubky => event.pubky_frame(),
        }
    }
}

/// How a stream runs, once its request is accepted.
pub(crate) struct Plan {
    pub feed: Feed,
    pub format: Format,
    /// Close after this many events.
    pub limit: Option<u64>,
    /// Go on with live events after the replay; otherwise close once caught up.
    pub live: bool,
    pub keepalive: Duration,
    /// Written once, first (the `retry:` line).
    pub preamble: Option<Bytes>,
    /// Written when idle for `keepalive`.
    pub keepalive_frame: &'static [u8],
}

/// The response body of a stream: frames as the feed yields them, shared bytes, no copies.
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
            if state.plan.limit.is_some_and(|limit| state.sent >= limit) {
                return None;
            }
            match state.plan.feed.next(state.plan.keepalive).await {
                Ok(Step::Event(event)) => {
                    state.sent += 1;
                    let bytes = state.plan.format.frame(&event);
                    return Some((Ok(bytes), state));
                }
                Ok(Step::CaughtUp) if !state.plan.live => return None,
                Ok(Step::CaughtUp) => continue,
                Ok(Step::Idle) => {
                    let bytes = Bytes::from_static(state.plan.keepalive_frame);
                    return Some((Ok(bytes), state));
                }
                Ok(Step::Closed) => return None,
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
    id::decode(text)
        .map(Some)
        .map_err(|err| Error::bad_request(format!("Last-Event-ID {text:?}: {err}")))
}

/// Refuse a resume position the store cannot serve: ahead of the newest event (400), or
/// before the oldest one retained (410).
pub(crate) fn check_position(store: &Store, after: u64) -> Result<()> {
    position_error(after, store.last_seq()?, store.first_seq()?).map_or(Ok(()), Err)
}

/// The rule of `check_position`, given the newest sequence ever assigned and the oldest one
/// still in the log. With no retention the log starts at 1 and only the first check can fail.
fn position_error(after: u64, newest: u64, oldest: Option<u64>) -> Option<Error> {
    if after > newest {
        return Some(Error::bad_request(format!(
            "event id {} is ahead of the newest event, {}",
            Id(after),
            Id(newest)
        )));
    }
    match oldest {
        Some(oldest) if after.saturating_add(1) < oldest => Some(Error::Gone(format!(
            "event id {} is older than the oldest retained event, {}; resume from lastSeq={} \
             to read what is retained",
            Id(after),
            Id(oldest),
            Id(oldest - 1)
        ))),
        None if after < newest => Some(Error::Gone(format!(
            "event id {} is older than the oldest retained event: none is retained, the newest \
             was {}",
            Id(after),
            Id(newest)
        ))),
        _ => None,
    }
}

/// What a `/firehose` request asks for.
#[derive(Debug)]
struct Request {
    patterns: Vec<Pattern>,
    after: Option<u64>,
    live: bool,
    limit: Option<u64>,
}

fn parse_request(uri: &Uri, headers: &HeaderMap, max_patterns: usize) -> Result<Request> {
    let mut subs = Vec::new();
    let mut last_seq = None;
    let mut live = true;
    let mut limit = None;
    for (key, value) in query_pairs(uri) {
        match key.as_str() {
            "sub" => {
                if subs.len() == max_patterns {
                    return Err(Error::bad_request(format!(
                        "too many sub patterns: at most {max_patterns} per connection"
                    )));
                }
                subs.push(value);
            }
            "lastSeq" => {
                let seq = id::decode(&value)
                    .map_err(|err| Error::bad_request(format!("lastSeq {value:?}: {err}")))?;
                last_seq = Some(seq);
            }
            "live" => live = parse_bool("live", &value)?,
            "limit" => {
                let n: u64 = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::bad_request(format!(
                        "limit must be a whole number of events, at least 1, not {value:?}"
                    ))
                })?;
                limit = Some(n);
            }
            _ => {}
        }
    }
    if subs.is_empty() {
        subs.push(DEFAULT_PATTERN.to_string());
    }
    let patterns = subs
        .iter()
        .map(|text| Pattern::parse(text).map_err(|err| Error::bad_request(err.to_string())))
        .collect::<Result<Vec<_>>>()?;
    // The header is what a browser sends on reconnect: newer than the URL's lastSeq.
    let after = last_event_id(headers)?.or(last_seq);
    Ok(Request {
        patterns,
        after,
        live,
        limit,
    })
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::bad_request(format!(
            "{name} must be true or false, not {value:?}"
        ))),
    }
}

/// `GET /firehose`.
pub async fn firehose(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let request = parse_request(&uri, &headers, state.config.max_patterns)?;
    // Subscribe first: whatever commits from here on reaches this connection's mailbox.
    let subscription = state.hub.subscribe(PatternSet::new(request.patterns));
    if let Some(after) = request.after {
        check_position(&state.store, after)?;
    }
    let feed = Feed::new(state.store.clone(), subscription, request.after, None);
    let plan = Plan {
        feed,
        format: Format::Native,
        limit: request.limit,
        live: request.live,
        keepalive: state.config.keepalive(),
        preamble: Some(frame::retry(RETRY_MS)),
        keepalive_frame: frame::KEEP_ALIVE,
    };
    Ok((sse_headers("no-cache"), stream_body(plan)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, last_event_id: Option<&str>) -> Result<Request> {
        let uri: Uri = format!("/firehose?{query}").parse().expect("uri");
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", HeaderValue::from_str(id).expect("header"));
        }
        parse_request(&uri, &headers, 3)
    }

    #[test]
    fn defaults_to_every_public_event_live_from_the_newest() {
        let request = parse("", None).expect("valid");
        assert_eq!(
            request.patterns,
            vec![Pattern::AnyUserPrefix("/pub/".into())]
        );
        assert_eq!(request.after, None);
        assert!(request.live);
        assert_eq!(request.limit, None);
    }

    #[test]
    fn the_header_wins_over_last_seq() {
        let request = parse("lastSeq=0000000000005", Some("0000000000007")).expect("valid");
        assert_eq!(request.after, Some(7));
        let request = parse("lastSeq=0000000000005", Some("")).expect("valid");
        assert_eq!(request.after, Some(5));
        let request = parse("lastSeq=0000000000000&live=false&limit=3", None).expect("valid");
        assert_eq!(
            (request.after, request.live, request.limit),
            (Some(0), false, Some(3))
        );
    }

    #[test]
    fn positions_the_store_cannot_serve() {
        let status =
            |after, newest, oldest| position_error(after, newest, oldest).map(|e| e.status());
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

    #[test]
    fn refuses_bad_requests() {
        for (query, header) in [
            ("lastSeq=12", None),
            ("lastSeq=000000000000I", None),
            ("", Some("nope")),
            ("sub=*/a&sub=*/b&sub=*/c&sub=*/d", None),
            ("sub=alice/*", None),
            ("limit=0", None),
            ("limit=-1", None),
            ("live=maybe", None),
        ] {
            let err = parse(query, header).expect_err(query);
            assert!(matches!(err, Error::BadRequest(_)), "{query}: {err}");
        }
    }
}

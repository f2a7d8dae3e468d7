//! `GET /firehose`: the native event stream (spec section 4).
//!
//! A request is checked in full before anything streams (patterns, ids, limits), so every
//! mistake is a plain 400/410 rather than a broken stream. Then the connection subscribes to
//! the hub, and only after that reads the log: replay and live join without a gap.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{Error, Result};
use super::sse::{check_position, last_event_id, sse_headers, stream_body, Plan, RETRY_MS};
use super::tenant::{parse_flag, query_pairs};
use super::AppState;
use crate::ids;
use crate::log::frame::{self, Format};
use crate::log::hub::Feed;
use crate::log::subscriptions::{Pattern, PatternSet};

/// The subscription when a request names none: every public event.
pub const DEFAULT_PATTERN: &str = "*/pub/*";

/// What a `/firehose` request asks for.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) patterns: Vec<Pattern>,
    pub(super) after: Option<u64>,
    pub(super) live: bool,
    pub(super) limit: Option<u64>,
}

pub(super) fn parse_request(
    uri: &Uri,
    headers: &HeaderMap,
    max_patterns: usize,
) -> Result<Request> {
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
                let seq = ids::decode(&value)
                    .map_err(|err| Error::bad_request(format!("lastSeq {value:?}: {err}")))?;
                last_seq = Some(seq);
            }
            "live" => live = parse_flag("live", &value)?,
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
        check_position(&state.log, after)?;
    }
    let feed = Feed::new(
        state.log.clone(),
        subscription,
        Format::Native,
        request.after,
        None,
    );
    let plan = Plan {
        feed,
        limit: request.limit,
        live: request.live,
        preamble: Some(frame::retry(RETRY_MS)),
        keepalive_frame: frame::KEEP_ALIVE,
    };
    Ok((sse_headers("no-cache"), stream_body(plan)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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

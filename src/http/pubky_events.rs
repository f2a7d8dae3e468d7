//! Pubky's event endpoints (spec section 5): `GET /events/` and `GET /events-stream`.
//!
//! The formats, parameters and error statuses are those of the Pubky homeserver, so that its
//! indexer (`pubky-nexus`) and the `pubky` SDK read them unchanged. Its cursor is our sequence
//! number in decimal. The stream runs on the firehose's hub and feeds, with each user's cursor
//! as a floor, and adds an `id:` line (and honours `Last-Event-ID`) so that a browser's
//! `EventSource` resumes by itself.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use pubky_common::storage_path::StoragePath;

use super::error::{Error, Result};
use super::sse::{last_event_id, sse_headers, stream_body, Plan};
use super::tenant::{parse_flag, query_pairs};
use super::AppState;
use crate::keys;
use crate::log::frame::{self, Format};
use crate::log::hub::{Feed, Floors};
use crate::log::subscriptions::{Pattern, PatternSet};
use crate::log::{Event, EventLog, LogError};

/// `/events/`: events per page unless asked otherwise, and at most.
const DEFAULT_FEED_LIMIT: usize = 100;
const MAX_FEED_LIMIT: usize = 1000;
/// `/events-stream`: how many users one stream may follow.
pub const MAX_STREAM_USERS: usize = 50;
/// Events read per store transaction by a reverse stream.
const REVERSE_BATCH: usize = 512;
/// Pubky's keep-alive (axum's default comment).
const PUBKY_KEEP_ALIVE: &[u8] = b":\n\n";

/// `GET /events/?cursor=<n>&limit=<k>`: one `PUT|DEL pubky://…` line per event after the
/// cursor, then `cursor: <n>` when there was at least one; lines joined by `\n`.
pub async fn feed(State(state): State<AppState>, uri: Uri) -> Result<Response> {
    let (cursor, limit) = parse_feed_query(&uri)?;
    let log = state.log.clone();
    let body = tokio::task::spawn_blocking(move || feed_page(&log, cursor, limit))
        .await
        .map_err(|err| LogError::Task(err.to_string()))??;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response())
}

/// `/events/`'s cursor (exclusive, default 0) and limit (default 100, at most 1000).
pub(super) fn parse_feed_query(uri: &Uri) -> Result<(u64, usize)> {
    let mut cursor = 0;
    let mut limit = DEFAULT_FEED_LIMIT;
    for (key, value) in query_pairs(uri) {
        match key.as_str() {
            "cursor" if value.is_empty() => {}
            "cursor" => {
                let bare = value.strip_prefix("pubky://").unwrap_or(&value);
                cursor = bare.parse::<u64>().map_err(|_| {
                    Error::bad_request(format!(
                        "Invalid cursor: {value:?} is not an event number (the decimal after `cursor: `)"
                    ))
                })?;
            }
            // As Pubky does: a limit that is not a number is ignored.
            "limit" => {
                if let Ok(n) = value.parse::<u16>() {
                    limit = usize::from(n).min(MAX_FEED_LIMIT);
                }
            }
            // Parsed (a malformed one is refused), though the feed ignores them, as Pubky.
            "reverse" | "shallow" => {
                parse_flag(&key, &value)?;
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

fn feed_page(log: &EventLog, cursor: u64, limit: usize) -> Result<String> {
    let mut body = String::new();
    let mut last = None;
    let mut count = 0;
    if limit > 0 {
        // Borrowed records, one read transaction: nothing allocated per event.
        log.replay(cursor, None, usize::MAX, |event| {
            if event.path().starts_with(crate::path::PUBLIC_ROOT) {
                frame::feed_line_ref(&mut body, event);
                body.push('\n');
                last = Some(event.seq);
                count += 1;
            }
            count < limit
        })?;
    }
    if let Some(last) = last {
        body.push_str("cursor: ");
        body.push_str(&last.to_string());
    }
    Ok(body)
}

/// `/events-stream`'s `live` and `reverse`, as Pubky reads them: the one exception to
/// `parse_flag`, because Pubky's homeserver defines them so (`live=yes` is not live there).
fn stream_flag(value: &str) -> bool {
    value == "true" || value == "1"
}

/// What an `/events-stream` request asks for.
#[derive(Debug)]
pub(super) struct StreamRequest {
    /// (user, cursor) in the order given; a repeated user keeps its last cursor.
    pub(super) users: Vec<(String, Option<u64>)>,
    /// Normalized path filters: ending in `/` is a prefix, else exact.
    pub(super) paths: Vec<String>,
    pub(super) limit: Option<u16>,
    pub(super) live: bool,
    pub(super) reverse: bool,
}

/// `max_patterns` bounds users × paths: each pair is one subscription pattern.
pub(super) fn parse_stream_request(uri: &Uri, max_patterns: usize) -> Result<StreamRequest> {
    let mut raw_users = Vec::new();
    let mut raw_paths = Vec::new();
    let mut limit = None;
    let mut live = false;
    let mut reverse = false;
    for (key, value) in query_pairs(uri) {
        match key.as_str() {
            "user" if !value.is_empty() => raw_users.push(value),
            "limit" => {
                let n: u16 = value
                    .parse()
                    .map_err(|_| Error::bad_request(format!("Invalid limit: {value}")))?;
                if n == 0 {
                    return Err(Error::bad_request("limit must be at least 1"));
                }
                limit = Some(n);
            }
            // Pubky's own rule for these two, kept so that its clients see the same stream:
            // only `true` and `1` are true, anything else is false, never a 400.
            "live" => live = stream_flag(&value),
            "reverse" => reverse = stream_flag(&value),
            "path" if !value.is_empty() => raw_paths.push(value),
            _ => {}
        }
    }
    if live && reverse {
        return Err(Error::bad_request(
            "Cannot use live mode with reverse ordering",
        ));
    }
    let mut users: Vec<(String, Option<String>)> = Vec::new();
    for value in raw_users {
        let (user, cursor) = match value.split_once(':') {
            Some((user, cursor)) => (user, Some(cursor.to_string())),
            None => (value.as_str(), None),
        };
        let user = keys::canonical(user)
            .map_err(|_| Error::bad_request(format!("Invalid public key: {user}")))?;
        match users.iter_mut().find(|(known, _)| *known == user) {
            Some(entry) => entry.1 = cursor,
            None => users.push((user, cursor)),
        }
    }
    if users.is_empty() {
        return Err(Error::bad_request("user parameter is required"));
    }
    if users.len() > MAX_STREAM_USERS {
        return Err(Error::bad_request(format!(
            "Too many users. Maximum allowed: {MAX_STREAM_USERS}"
        )));
    }
    let mut paths = Vec::with_capacity(raw_paths.len());
    let mut seen = std::collections::HashSet::new();
    for raw in raw_paths {
        let absolute = if raw.starts_with('/') {
            raw
        } else {
            format!("/{raw}")
        };
        let path = StoragePath::normalize(&absolute)
            .map_err(|err| Error::bad_request(format!("Invalid path: {absolute} ({err})")))?;
        if seen.insert(path.as_str().to_string()) {
            paths.push(path.as_str().to_string());
        }
    }
    for path in &paths {
        if path.starts_with("/priv/") || path == "/priv" {
            return Err(Error::Unauthorized(format!(
                "reading {path} needs a session of its owner, and this server keeps no private files"
            )));
        }
        if !path.starts_with(crate::path::PUBLIC_ROOT) {
            return Err(Error::Forbidden(
                "Reading from directories other than '/pub/' and '/priv/' is forbidden".into(),
            ));
        }
    }
    if paths.is_empty() {
        paths.push(crate::path::PUBLIC_ROOT.to_string());
    }
    let patterns = users.len().saturating_mul(paths.len());
    if patterns > max_patterns {
        return Err(Error::bad_request(format!(
            "too many patterns: {} users x {} paths is {patterns}, at most {max_patterns} per \
             connection; split them over several streams",
            users.len(),
            paths.len()
        )));
    }
    let users = users
        .into_iter()
        .map(|(user, cursor)| {
            let cursor = cursor
                .map(|c| {
                    c.parse::<u64>()
                        .map_err(|_| Error::bad_request(format!("Invalid cursor: {c}")))
                })
                .transpose()?;
            Ok((user, cursor))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StreamRequest {
        users,
        paths,
        limit,
        live,
        reverse,
    })
}

/// The patterns of a stream: each path filter, for each user.
fn stream_patterns(request: &StreamRequest) -> PatternSet {
    PatternSet::new(request.users.iter().flat_map(|(user, _)| {
        request.paths.iter().map(move |path| {
            if path.ends_with('/') {
                Pattern::UserPrefix(format!("{user}{path}"))
            } else {
                Pattern::Exact(format!("{user}{path}"))
            }
        })
    }))
}

/// Pubky's answers carry these on success and failure alike.
fn pubky_stream_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("pubky-host, Authorization, Cookie"),
    );
}

/// `GET /events-stream?user=<z32>[:<cursor>]&…`.
pub async fn stream(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let mut response = match open_stream(&state, &headers, &uri).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    pubky_stream_headers(&mut response);
    response
}

async fn open_stream(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Response> {
    let mut request = parse_stream_request(uri, state.config.max_patterns)?;
    // A user is known by an account here, or (on a relay, which has none) by events.
    for (user, _) in &request.users {
        if state.files.user(user)?.is_none() && !state.log.has_events_of(user)? {
            return Err(Error::NotFound(format!(
                "User not found: {user} has no account or events on this server"
            )));
        }
    }
    // A browser reconnecting sends the id of the last event it got: every user is past it.
    if let Some(resume) = last_event_id(headers)? {
        for (_, cursor) in &mut request.users {
            *cursor = Some(resume);
        }
    }
    let patterns = stream_patterns(&request);
    let limit = request.limit.map(u64::from);
    let body = if request.reverse {
        reverse_body(state.log.clone(), patterns, &request, limit)
    } else {
        let floors: Floors = request
            .users
            .iter()
            .map(|(user, cursor)| (user.clone(), cursor.unwrap_or(0)))
            .collect();
        let after = floors.values().copied().min().unwrap_or(0);
        let subscription = state.hub.subscribe(patterns);
        let feed = Feed::new(
            state.log.clone(),
            subscription,
            Format::Pubky,
            Some(after),
            Some(floors),
        )
        .starting_at_oldest_retained();
        stream_body(Plan {
            feed,
            limit,
            live: request.live,
            preamble: None,
            keepalive_frame: PUBKY_KEEP_ALIVE,
        })
    };
    Ok((sse_headers("no-store"), body).into_response())
}

/// Newest first, each user's events before its cursor (or from the newest), then close.
fn reverse_body(
    log: EventLog,
    patterns: PatternSet,
    request: &StreamRequest,
    limit: Option<u64>,
) -> Body {
    let ceilings: HashMap<String, u64> = request
        .users
        .iter()
        .map(|(user, cursor)| (user.clone(), cursor.unwrap_or(u64::MAX)))
        .collect();
    let before = ceilings.values().copied().max().unwrap_or(u64::MAX);
    struct State {
        log: EventLog,
        patterns: std::sync::Arc<PatternSet>,
        ceilings: std::sync::Arc<HashMap<String, u64>>,
        /// Read events strictly below this next.
        before: u64,
        pending: VecDeque<Event>,
        remaining: u64,
        exhausted: bool,
    }
    let state = State {
        log,
        patterns: std::sync::Arc::new(patterns),
        ceilings: std::sync::Arc::new(ceilings),
        before,
        pending: VecDeque::new(),
        remaining: limit.unwrap_or(u64::MAX),
        exhausted: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.remaining == 0 {
                return None;
            }
            if let Some(event) = state.pending.pop_front() {
                state.remaining -= 1;
                return Some((Ok::<Bytes, Infallible>(frame::pubky(&event)), state));
            }
            if state.exhausted {
                return None;
            }
            let log = state.log.clone();
            let patterns = std::sync::Arc::clone(&state.patterns);
            let ceilings = std::sync::Arc::clone(&state.ceilings);
            let before = state.before;
            let read = tokio::task::spawn_blocking(move || {
                let mut found = Vec::new();
                let last = log.scan_rev(before, REVERSE_BATCH, |event| {
                    let below = ceilings
                        .get(event.user())
                        .is_some_and(|&ceiling| event.seq < ceiling);
                    if below && patterns.matches(&event.key) {
                        found.push(event);
                    }
                    true
                })?;
                Ok::<_, LogError>((last, found))
            })
            .await;
            match read {
                Ok(Ok((Some(last), found))) => {
                    state.before = last;
                    state.pending.extend(found);
                }
                Ok(Ok((None, _))) => state.exhausted = true,
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "reverse event stream failed");
                    return None;
                }
                Err(err) => {
                    tracing::error!(error = %err, "reverse event stream task failed");
                    return None;
                }
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    const ALICE: &str = "o1gg96ewuojmopcjbz8895478wdtxtzzuxnfjjz8o8e77csa1ngo";

    fn parse(query: &str) -> Result<StreamRequest> {
        let uri: Uri = format!("/events-stream?{query}").parse().expect("uri");
        parse_stream_request(&uri, 100)
    }

    fn message(result: Result<StreamRequest>) -> (StatusCode, String) {
        let err = result.expect_err("refused");
        (err.status(), err.to_string())
    }

    #[test]
    fn parses_what_the_sdk_sends() {
        let request = parse(&format!(
            "user={ALICE}:12&limit=5&live=true&path=%2Fpub%2Fapp%2F&path=pub/x.json"
        ))
        .expect("valid");
        assert_eq!(request.users, vec![(ALICE.to_string(), Some(12))]);
        assert_eq!(request.paths, vec!["/pub/app/", "/pub/x.json"]);
        assert_eq!(
            (request.limit, request.live, request.reverse),
            (Some(5), true, false)
        );
        let request = parse(&format!("user={ALICE}&live=yes")).expect("valid");
        assert_eq!(request.paths, vec!["/pub/"]);
        assert!(!request.live, "only true and 1 are true");
    }

    #[test]
    fn refuses_as_pubky_does() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            message(parse("")),
            (bad, "user parameter is required".into())
        );
        assert_eq!(
            message(parse(&format!("user={ALICE}&limit=0"))),
            (bad, "limit must be at least 1".into())
        );
        assert_eq!(
            message(parse(&format!("user={ALICE}&limit=x"))),
            (bad, "Invalid limit: x".into())
        );
        assert_eq!(
            message(parse(&format!("user={ALICE}&live=true&reverse=1"))),
            (bad, "Cannot use live mode with reverse ordering".into())
        );
        assert_eq!(
            message(parse(&format!("user=pubky{ALICE}"))),
            (bad, format!("Invalid public key: pubky{ALICE}"))
        );
        assert_eq!(
            message(parse(&format!("user={ALICE}:abc"))),
            (bad, "Invalid cursor: abc".into())
        );
        let paths: Vec<String> = (0..101).map(|n| format!("path=/pub/{n}")).collect();
        let (status, text) = message(parse(&format!("user={ALICE}&{}", paths.join("&"))));
        assert_eq!(status, bad);
        assert!(
            text.starts_with("too many patterns: 1 users x 101 paths"),
            "{text}"
        );
        // The same path repeated is one path.
        let same: Vec<String> = (0..101).map(|_| "path=/pub/x".to_string()).collect();
        assert!(parse(&format!("user={ALICE}&{}", same.join("&"))).is_ok());
        let many: Vec<String> = (0..51).map(|_| format!("user={ALICE}")).collect();
        // The same user repeated is one user.
        assert!(parse(&many.join("&")).is_ok());
        assert_eq!(
            message(parse(&format!("user={ALICE}&path=/pub/../../x"))).0,
            bad
        );
        assert_eq!(
            message(parse(&format!("user={ALICE}&path=/priv/x/"))).0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            message(parse(&format!("user={ALICE}&path=/other/"))).0,
            StatusCode::FORBIDDEN
        );
    }
}

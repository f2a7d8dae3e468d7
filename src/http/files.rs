//! `/pub/`: reading, writing, deleting and listing files (spec section 3).
//!
//! Reads are public; a user's own bandwidth limits pace their file bodies (`throttle`). A write
//! is received in full (hashed, spooled) before it reaches the writer, so the commit that makes
//! it visible and records its event is short and all-or-nothing.
//! Formats follow the Pubky homeserver: quoted base64 BLAKE3 ETags, `201` on PUT, `204` on
//! DELETE, listings as `pubky://` lines joined by `\n`.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{Error, Result};
use super::session::authorize_write;
use super::tenant::{parse_flag, query_pairs, require_tenant};
use super::throttle::Direction;
use super::AppState;
use crate::files::content::{self, receive};
use crate::files::{FileMeta, FileOp, ListOptions};
use crate::log::hash_base64;
use crate::path::FilePath;

const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 1000;
const CACHE_CONTROL: &str = "private, must-revalidate";

/// `PUT /pub/<path>`: store a file. 201 when committed.
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response> {
    let user = require_tenant(&headers, &uri)?;
    let path = FilePath::from_uri_path(uri.path())?.into_file()?;
    authorize_write(&state, &headers, &user, path.as_str())?;
    let max = state.config.max_body_bytes;
    if let Some(length) = content_length(&headers) {
        if length > max {
            return Err(Error::PayloadTooLarge(format!(
                "the body is {length} bytes, more than the {max} bytes this server accepts"
            )));
        }
    }
    let account = state.files.user(&user)?;
    // Refused before the body is read; the writer checks both again at commit.
    if let Some(account) = &account {
        if account.disabled {
            return Err(Error::Forbidden(crate::files::USER_DISABLED.into()));
        }
        if !account.quota.may_write(path.as_str()) {
            return Err(Error::Forbidden(format!(
                "Write to this path is not allowed: {path} is outside the paths {user} may write"
            )));
        }
    }
    let quota = account.as_ref().map_or(state.config.quota_bytes, |a| {
        a.quota.storage_bytes(state.config.quota_bytes)
    });
    if let (Some(length), Some(quota)) = (content_length(&headers), quota) {
        // Refuse early what cannot fit, before reading the body; the writer checks again
        // exactly, at commit, for bodies without a length and for racing writes.
        let used = account.as_ref().map_or(0, |u| u.used_bytes);
        let existing = state
            .files
            .file(&user, path.as_str())?
            .map_or(0, |f| f.size);
        if used.saturating_sub(existing) + length > quota {
            return Err(Error::InsufficientStorage(format!(
                "this write would bring {user} over the quota of {quota} bytes"
            )));
        }
    }
    // Held until the write is answered: bodies waiting for the writer stay within the budget.
    let _share = state.bodies.take(content_length(&headers)).await;
    let body = body.into_data_stream();
    let spool_dir = state.files.spool_dir();
    let pacer = account
        .as_ref()
        .and_then(|a| state.throttles.pacer(&user, &a.quota, Direction::Write));
    let received = match pacer {
        Some(pacer) => receive(Box::pin(pacer.pace(body)), max, &spool_dir).await?,
        None => receive(body, max, &spool_dir).await?,
    };
    let content_type = detect_content_type(path.as_str(), &received.head);
    let size = received.size;
    state
        .write(FileOp::PutFile {
            user,
            path: path.as_str().to_string(),
            body: received.body,
            hash: received.hash,
            size: received.size,
            content_type,
            quota: state.config.quota_bytes,
        })
        .await?;
    crate::telemetry::put_bytes(size);
    Ok(StatusCode::CREATED.into_response())
}

/// `DELETE /pub/<path>`: 204, or 404 when there is no such file.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let user = require_tenant(&headers, &uri)?;
    let path = FilePath::from_uri_path(uri.path())?.into_file()?;
    authorize_write(&state, &headers, &user, path.as_str())?;
    state
        .write(FileOp::DeleteFile {
            user,
            path: path.as_str().to_string(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /pub/<path>`: the file, or the listing when the path ends with `/`.
pub async fn get(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    let user = require_tenant(&headers, &uri)?;
    let path = FilePath::from_uri_path(uri.path())?;
    if path.is_dir() {
        return list(&state, user, &path, &uri).await;
    }
    let meta = find(&state, &user, &path)?;
    if not_modified(&headers, &meta) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        validators(response.headers_mut(), &meta)?;
        return Ok(response);
    }
    let length = meta.size;
    let content = content::read_stream(state.files.clone(), meta.clone());
    let pacer = state.files.user(&user)?.and_then(|account| {
        state
            .throttles
            .pacer(&user, &account.quota, Direction::Read)
    });
    let body = match pacer {
        Some(pacer) => Body::from_stream(pacer.pace(content)),
        None => Body::from_stream(content),
    };
    let mut response = body.into_response();
    file_headers(response.headers_mut(), &meta, length)?;
    Ok(response)
}

/// `HEAD /pub/<path>`: the headers of GET, no body.
pub async fn head(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    let user = require_tenant(&headers, &uri)?;
    let path = FilePath::from_uri_path(uri.path())?;
    if path.is_dir() {
        return Err(Error::NotFound(format!("{path} is a directory")));
    }
    let meta = find(&state, &user, &path)?;
    let mut response = StatusCode::OK.into_response();
    file_headers(response.headers_mut(), &meta, meta.size)?;
    Ok(response)
}

fn find(state: &AppState, user: &str, path: &FilePath) -> Result<FileMeta> {
    state
        .files
        .file(user, path.as_str())?
        .ok_or_else(|| Error::NotFound(format!("no file at {path}")))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// As Pubky does: the content's magic bytes first, then the file name's extension, then
/// `application/octet-stream`. The request's own Content-Type is not trusted.
pub fn detect_content_type(path: &str, head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

fn etag(meta: &FileMeta) -> String {
    format!("\"{}\"", hash_base64(&meta.hash))
}

fn last_modified(meta: &FileMeta) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(meta.modified_ms))
}

fn header_value(value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::Internal(format!("stored value {value:?} is not a valid header")))
}

/// The validators (ETag, Last-Modified) and caching headers, shared by 200 and 304.
fn validators(headers: &mut HeaderMap, meta: &FileMeta) -> Result<()> {
    headers.insert(header::ETAG, header_value(&etag(meta))?);
    headers.insert(header::LAST_MODIFIED, header_value(&last_modified(meta))?);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    headers.insert(header::VARY, HeaderValue::from_static("pubky-host"));
    Ok(())
}

fn file_headers(headers: &mut HeaderMap, meta: &FileMeta, length: u64) -> Result<()> {
    validators(headers, meta)?;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CONTENT_TYPE, header_value(&meta.content_type)?);
    Ok(())
}

/// `If-None-Match` (exact match of one of the listed tags) wins over `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, meta: &FileMeta) -> bool {
    if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
        let ours = etag(meta);
        return tags
            .to_str()
            .map(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == ours || tag.trim() == "*")
            })
            .unwrap_or(false);
    }
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let modified_secs = meta.modified_ms / 1000;
    let since_secs = since
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    since_secs >= modified_secs
}

/// A directory listing: `pubky://<user><path>` lines joined by `\n`. Read on the blocking
/// pool: a page of a deep tree may read many ranges.
async fn list(state: &AppState, user: String, dir: &FilePath, uri: &Uri) -> Result<Response> {
    let options = list_options(&user, dir, uri)?;
    // A first page that finds nothing: the directory is empty or absent.
    let absent_if_empty = options.cursor.is_none() && options.limit > 0;
    let files = state.files.clone();
    let dir_path = dir.as_str().to_string();
    let (user, paths) = tokio::task::spawn_blocking(move || {
        let paths = files.list(&user, &dir_path, &options);
        (user, paths)
    })
    .await
    .map_err(|err| Error::Internal(format!("the listing task failed: {err}")))?;
    let paths = paths?;
    let user = user.as_str();
    if paths.is_empty() && absent_if_empty {
        return Err(Error::NotFound(format!(
            "directory {dir} is empty or absent"
        )));
    }
    let mut body = String::with_capacity(paths.len() * (user.len() + 40));
    for (index, path) in paths.iter().enumerate() {
        if index > 0 {
            body.push('\n');
        }
        body.push_str("pubky://");
        body.push_str(user);
        body.push_str(path);
    }
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
            (header::VARY, HeaderValue::from_static("pubky-host")),
        ],
        body,
    )
        .into_response())
}

pub(super) fn list_options(user: &str, dir: &FilePath, uri: &Uri) -> Result<ListOptions> {
    let mut options = ListOptions {
        limit: DEFAULT_LIST_LIMIT,
        ..ListOptions::default()
    };
    for (key, value) in query_pairs(uri) {
        match key.as_str() {
            "limit" => {
                let limit: usize = value.parse().map_err(|_| {
                    Error::bad_request(format!(
                        "limit must be a whole number from 0 to {MAX_LIST_LIMIT}, not {value:?}"
                    ))
                })?;
                options.limit = limit.min(MAX_LIST_LIMIT);
            }
            "cursor" if value.is_empty() => {}
            "cursor" => options.cursor = Some(parse_cursor(user, dir, &value)?),
            "reverse" => options.reverse = parse_flag("reverse", &value)?,
            "shallow" => options.shallow = parse_flag("shallow", &value)?,
            _ => {}
        }
    }
    Ok(options)
}

/// A cursor is the last line of the previous page (`pubky://<user>/pub/...`), or the same
/// without the scheme, or a bare path.
fn parse_cursor(user: &str, dir: &FilePath, value: &str) -> Result<String> {
    let bare = value.strip_prefix("pubky://").unwrap_or(value);
    let path = match bare.find('/') {
        Some(0) => bare,
        Some(slash) if &bare[..slash] == user => &bare[slash..],
        _ => {
            return Err(Error::bad_request(format!(
                "invalid cursor {value:?}: give the last line of the previous page, pubky://{user}/pub/..."
            )))
        }
    };
    let parsed = FilePath::parse(path)
        .map_err(|err| Error::bad_request(format!("invalid cursor {value:?}: {err}")))?;
    if !parsed.as_str().starts_with(dir.as_str()) {
        return Err(Error::bad_request(format!(
            "invalid cursor {value:?}: it is not under {dir}"
        )));
    }
    Ok(parsed.as_str().to_string())
}

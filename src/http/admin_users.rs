//! The admin's user routes, with Pubky's paths and answers: list users a page at a time, one
//! user, disable and enable, read and change a user's limits, and delete one entry (which
//! records its DEL event like any delete). Also the JSON form of limits (Pubky's `UserQuota`).
//!
//! A disabled user's reads stay public, as on Pubky; their writes (PUT and DELETE) and their
//! sign-ins are refused with 403 `User is disabled` (Pubky still lets them DELETE and sign in).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::admin::{naive_datetime, parse_limit, DEFAULT_LIST_LIMIT};
use super::error::{Error, Result};
use super::tenant::query_pairs;
use super::throttle::{Direction, Throttles};
use super::AppState;
use crate::files::quota::{Bandwidth, Limit, QuotaPatch, UserQuota, MIB};
use crate::files::{FileOp, FilesError, UserFilter, UserOrder, UserRecord};
use crate::keys;
use crate::path::FilePath;

/// A user key in an admin path: raw z32 only (Pubky refuses `pubky<z32>` there too).
fn user_key(text: &str) -> Result<String> {
    keys::canonical(text)
        .map_err(|err| Error::bad_request(format!("{text:?} is not a public key: {err}")))
}

fn user_record(state: &AppState, user: &str) -> Result<UserRecord> {
    state
        .files
        .user(user)?
        .ok_or_else(|| Error::NotFound("Not Found: no such user".into()))
}

/// One user as `GET /users` lists it.
fn user_item(state: &AppState, user: &str, record: &UserRecord) -> Value {
    json!({
        "pubky": user,
        "created_at": naive_datetime(record.created_ms),
        "disabled": record.disabled,
        "used_bytes": record.used_bytes,
        "quota": quota_answer(state, &record.quota),
    })
}

/// `{"effective": ..., "overrides": ...}`, as Pubky's `GET /users/{pubkey}/quota`.
fn quota_answer(state: &AppState, quota: &UserQuota) -> Value {
    json!({
        "effective": effective_json(quota, state.config.quota_bytes, &state.throttles),
        "overrides": quota_json(quota),
    })
}

/// `GET /users?limit=&cursor=&state=all|enabled|disabled&sort_by=created_at|used_bytes&reverse=`
pub async fn list(State(state): State<AppState>, uri: Uri) -> Result<Json<Value>> {
    let mut filter = UserFilter::All;
    let mut order = UserOrder::CreatedAt;
    let mut reverse = false;
    let mut cursor = None;
    let mut limit = DEFAULT_LIST_LIMIT;
    for (key, value) in query_pairs(&uri) {
        match key.as_str() {
            "limit" => limit = parse_limit(&value)?,
            "cursor" => cursor = Some(user_key(&value)?),
            "state" => {
                filter = match value.as_str() {
                    "all" => UserFilter::All,
                    "enabled" => UserFilter::Enabled,
                    "disabled" => UserFilter::Disabled,
                    _ => {
                        return Err(Error::bad_request(format!(
                            "state must be all, enabled or disabled, not {value:?}"
                        )))
                    }
                }
            }
            "sort_by" => {
                order = match value.as_str() {
                    "created_at" => UserOrder::CreatedAt,
                    "used_bytes" => UserOrder::UsedBytes,
                    _ => {
                        return Err(Error::bad_request(format!(
                            "sort_by must be created_at or used_bytes, not {value:?}"
                        )))
                    }
                }
            }
            "reverse" => {
                reverse = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::bad_request(format!(
                            "reverse must be true or false, not {value:?}"
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    let page = state
        .files
        .users_page(filter, order, reverse, cursor.as_deref(), limit)?
        .ok_or_else(|| Error::bad_request("Unknown cursor"))?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|(user, record)| user_item(&state, user, record))
        .collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

/// `GET /users/{pubkey}`
pub async fn get_one(
    State(state): State<AppState>,
    Path(pubkey): Path<String>,
) -> Result<Json<Value>> {
    let user = user_key(&pubkey)?;
    let record = user_record(&state, &user)?;
    Ok(Json(user_item(&state, &user, &record)))
}

/// `POST /users/{pubkey}/disable`: 200 `Ok`.
pub async fn disable(
    State(state): State<AppState>,
    Path(pubkey): Path<String>,
) -> Result<Response> {
    set_disabled(&state, &pubkey, true).await
}

/// `POST /users/{pubkey}/enable`: 200 `Ok`.
pub async fn enable(State(state): State<AppState>, Path(pubkey): Path<String>) -> Result<Response> {
    set_disabled(&state, &pubkey, false).await
}

async fn set_disabled(state: &AppState, pubkey: &str, disabled: bool) -> Result<Response> {
    let user = user_key(pubkey)?;
    state
        .write(FileOp::SetUserDisabled { user, disabled })
        .await
        .map_err(not_found_user)?;
    Ok((StatusCode::OK, "Ok").into_response())
}

/// `GET /users/{pubkey}/quota`
pub async fn get_quota(
    State(state): State<AppState>,
    Path(pubkey): Path<String>,
) -> Result<Json<Value>> {
    let user = user_key(&pubkey)?;
    let record = user_record(&state, &user)?;
    Ok(Json(quota_answer(&state, &record.quota)))
}

/// `PATCH /users/{pubkey}/quota` with a JSON body: the fields given change (null = back to
/// the server's default, `"unlimited"`, or a value), the others stay. 200, empty; 422 when the
/// values (or the limits they leave) do not hold together. Takes effect on the next write.
pub async fn patch_quota(
    State(state): State<AppState>,
    Path(pubkey): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let user = user_key(&pubkey)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|err| Error::bad_request(format!("the body is not JSON: {err}")))?;
    let patch = quota_from_json(&value).map_err(Error::Unprocessable)?;
    match state.write(FileOp::PatchUserQuota { user, patch }).await {
        Ok(_) => Ok(StatusCode::OK.into_response()),
        Err(FilesError::Invalid(message)) => Err(Error::Unprocessable(message)),
        Err(err) => Err(not_found_user(err)),
    }
}

/// `DELETE /webdav/{z32}/pub/{path}`: delete one file as the admin; 204, and a DEL event
/// like any delete. 404 when there is no such file.
pub async fn delete_entry(
    State(state): State<AppState>,
    Path(entry): Path<String>,
) -> Result<Response> {
    let (pubkey, path) = entry.split_once('/').ok_or_else(|| {
        Error::bad_request(format!(
            "{entry:?} is not an entry: expected /webdav/<z32>/pub/<path>"
        ))
    })?;
    let user = user_key(pubkey)?;
    let path = FilePath::parse(&format!("/{path}"))?.into_file()?;
    state
        .write(FileOp::AdminDeleteFile {
            user,
            path: path.as_str().to_string(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A missing user answers Pubky's 404 body.
fn not_found_user(err: FilesError) -> Error {
    match err {
        FilesError::NotFound(_) => Error::NotFound("Not Found: no such user".into()),
        other => other.into(),
    }
}

/// Limits as Pubky's `UserQuota` JSON, fields at the server's default left out.
pub fn quota_json(quota: &UserQuota) -> Value {
    let mut out = Map::new();
    if let Some(v) = limit_json(&quota.storage_quota_mb, |mb| json!(mb)) {
        out.insert("storage_quota_mb".into(), v);
    }
    if let Some(v) = limit_json(&quota.rate_read, |b| json!(b.as_str())) {
        out.insert("rate_read".into(), v);
    }
    if let Some(v) = limit_json(&quota.rate_write, |b| json!(b.as_str())) {
        out.insert("rate_write".into(), v);
    }
    bursts_and_paths(quota, &mut out);
    Value::Object(out)
}

/// The limits that apply: the user's own, else the server's (`"unlimited"` where it has
/// none). `storage_quota_bytes` is Hearth's: the exact byte limit behind `storage_quota_mb`.
fn effective_json(quota: &UserQuota, default_bytes: Option<u64>, throttles: &Throttles) -> Value {
    let mut out = Map::new();
    let bytes = quota.storage_bytes(default_bytes);
    out.insert(
        "storage_quota_mb".into(),
        bytes.map_or(json!("unlimited"), |b| json!(b / MIB)),
    );
    out.insert(
        "storage_quota_bytes".into(),
        bytes.map_or(json!("unlimited"), |b| json!(b)),
    );
    for (name, direction) in [
        ("rate_read", Direction::Read),
        ("rate_write", Direction::Write),
    ] {
        let value = throttles
            .rate(quota, direction)
            .map_or(json!("unlimited"), |(rate, _)| json!(rate.as_str()));
        out.insert(name.into(), value);
    }
    bursts_and_paths(quota, &mut out);
    Value::Object(out)
}

fn limit_json<T>(limit: &Limit<T>, value: impl Fn(&T) -> Value) -> Option<Value> {
    match limit {
        Limit::Default => None,
        Limit::Unlimited => Some(json!("unlimited")),
        Limit::Value(v) => Some(value(v)),
    }
}

fn bursts_and_paths(quota: &UserQuota, out: &mut Map<String, Value>) {
    if let Some(burst) = quota.rate_read_burst {
        out.insert("rate_read_burst".into(), json!(burst));
    }
    if let Some(burst) = quota.rate_write_burst {
        out.insert("rate_write_burst".into(), json!(burst));
    }
    if let Some(paths) = &quota.allowed_write_paths {
        out.insert("allowed_write_paths".into(), json!(paths));
    }
}

/// Read Pubky's quota JSON as a patch: an absent field keeps its value, `null` resets it to
/// the server's default, `"unlimited"` lifts it, a value sets it. Unknown fields are refused.
pub fn quota_from_json(value: &Value) -> std::result::Result<QuotaPatch, String> {
    let object = value.as_object().ok_or("the quota must be a JSON object")?;
    let mut patch = QuotaPatch::default();
    for (key, value) in object {
        match key.as_str() {
            "storage_quota_mb" => {
                patch.storage_quota_mb = Some(limit_from_json(key, value, |v| {
                    v.as_u64().ok_or_else(|| "a whole number of MB".to_string())
                })?)
            }
            "rate_read" => patch.rate_read = Some(limit_from_json(key, value, bandwidth)?),
            "rate_write" => patch.rate_write = Some(limit_from_json(key, value, bandwidth)?),
            "rate_read_burst" => patch.rate_read_burst = Some(burst(key, value)?),
            "rate_write_burst" => patch.rate_write_burst = Some(burst(key, value)?),
            "allowed_write_paths" => patch.allowed_write_paths = Some(write_paths(value)?),
            other => return Err(format!("unknown quota field {other:?}")),
        }
    }
    Ok(patch)
}

fn limit_from_json<T>(
    name: &str,
    value: &Value,
    parse: impl Fn(&Value) -> std::result::Result<T, String>,
) -> std::result::Result<Limit<T>, String> {
    match value {
        Value::Null => Ok(Limit::Default),
        Value::String(s) if s == "unlimited" => Ok(Limit::Unlimited),
        other => parse(other)
            .map(Limit::Value)
            .map_err(|why| format!("{name}: {why}, \"unlimited\" or null, not {other}")),
    }
}

fn bandwidth(value: &Value) -> std::result::Result<Bandwidth, String> {
    let text = value.as_str().ok_or("a rate such as \"10mb/s\"")?;
    Bandwidth::parse(text)
}

fn burst(name: &str, value: &Value) -> std::result::Result<Option<u32>, String> {
    match value {
        Value::Null => Ok(None),
        other => other
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0 && n <= i32::MAX as u32)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a whole number above 0 or null, not {other}")),
    }
}

fn write_paths(value: &Value) -> std::result::Result<Option<Vec<String>>, String> {
    let entries = match value {
        Value::Null => return Ok(None),
        Value::Array(entries) => entries,
        other => {
            return Err(format!(
                "allowed_write_paths must be a list of paths or null, not {other}"
            ))
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let text = entry
                .as_str()
                .ok_or_else(|| format!("allowed_write_paths[{index}] is not a string"))?;
            if text == "/" {
                return Err(format!(
                    "allowed_write_paths[{index}] must not be '/'; use null for unrestricted access"
                ));
            }
            FilePath::parse(text)
                .map(|path| path.as_str().to_string())
                .map_err(|err| format!("allowed_write_paths[{index}]: {err}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_json_round_trips_as_pubky_writes_it() {
        let value = json!({
            "storage_quota_mb": 50,
            "rate_read": "unlimited",
            "rate_write": "10MB/s",
            "rate_write_burst": 5,
            "allowed_write_paths": ["/pub/app/", "/pub/x//y.json"],
        });
        let quota = UserQuota::default().patched(&quota_from_json(&value).unwrap());
        quota.validate().unwrap();
        assert_eq!(
            quota_json(&quota),
            json!({
                "storage_quota_mb": 50,
                "rate_read": "unlimited",
                "rate_write": "10mb/s",
                "rate_write_burst": 5,
                "allowed_write_paths": ["/pub/app/", "/pub/x/y.json"],
            })
        );
        assert_eq!(quota_json(&UserQuota::default()), json!({}));
        let reset = quota.patched(&quota_from_json(&json!({"storage_quota_mb": null})).unwrap());
        assert_eq!(reset.storage_quota_mb, Limit::Default);
        assert_eq!(reset.rate_write, quota.rate_write, "absent fields stay");
        let unpaced = Throttles::default();
        let effective = effective_json(&UserQuota::default(), Some(3 * MIB), &unpaced);
        assert_eq!(effective["storage_quota_mb"], json!(3));
        assert_eq!(effective["rate_read"], json!("unlimited"));
        let server_rates = Throttles::new(None, Some(Bandwidth::parse("2mb/s").unwrap()));
        let effective = effective_json(&UserQuota::default(), None, &server_rates);
        assert_eq!(effective["rate_read"], json!("unlimited"));
        assert_eq!(effective["rate_write"], json!("2mb/s"), "the server's rate");
        let effective = effective_json(&quota, None, &server_rates);
        assert_eq!(
            effective["rate_write"],
            json!("10mb/s"),
            "the user's own rate"
        );
    }

    #[test]
    fn bad_quota_json_says_what_is_wrong() {
        for bad in [
            json!([]),
            json!({"storage_quota_mb": -1}),
            json!({"storage_quota_mb": "lots"}),
            json!({"rate_read": "10r/m"}),
            json!({"rate_read_burst": 0}),
            json!({"allowed_write_paths": ["/"]}),
            json!({"allowed_write_paths": "/pub/"}),
            json!({"allowed_write_paths": ["/etc/"]}),
            json!({"storage": 1}),
        ] {
            assert!(quota_from_json(&bad).is_err(), "{bad}");
        }
    }
}

//! A relay's routes. The public listener serves the merged log exactly as a homeserver serves
//! its own (`/firehose`, `/events/`, `/events-stream`, `GET /` with the relay's key), plus
//! `GET /relay/sources`; it has no files and no accounts, so everything else is a 404 that
//! says so. The admin listener (password-guarded like the homeserver's) adds and removes
//! sources while the relay runs:
//!
//! - `GET /relay/sources`: the sources' states, as on the public listener;
//! - `POST /relay/sources`, the body a source spec: follow it (201; 200 if it was followed
//!   already), now and at every start until it is removed;
//! - `DELETE /relay/sources?source=<spec>[&forget=true]`: stop following it (200; 404 if it
//!   is not followed). Its cursor is kept, so adding it again resumes where it stopped;
//!   `forget=true` drops its cursor and counters too.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::{Error, Result};
use super::tenant::query_pairs;
use super::{admin, cors, firehose, pubky_events, root, AppState};
use crate::relay::{Added, Relay, SourceSpec};

/// The relay's public router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/firehose", get(firehose::firehose))
        .route("/events/", get(pubky_events::feed))
        .route("/events-stream", get(pubky_events::stream))
        .route("/relay/sources", get(sources))
        .fallback(not_here)
        .layer(cors())
        .with_state(state)
}

/// The relay's admin router.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { "Hearth relay admin endpoint\n" }))
        .route(
            "/relay/sources",
            get(admin_sources).post(add_source).delete(remove_source),
        )
        .with_state(state)
}

async fn not_here(method: Method, uri: Uri) -> Error {
    Error::NotFound(format!(
        "{method} {}: this is a relay; it serves events (/firehose, /events/, /events-stream) \
         and /relay/sources, not files or accounts",
        uri.path()
    ))
}

fn relay(state: &AppState) -> Result<&Relay> {
    state
        .relay
        .as_ref()
        .ok_or_else(|| Error::NotFound("this server is not a relay".into()))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn encode(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|err| Error::Internal(err.to_string()))
}

/// `GET /relay/sources`: one object per source.
async fn sources(State(state): State<AppState>) -> Result<Response> {
    Ok(json(StatusCode::OK, encode(&relay(&state)?.sources())?))
}

async fn admin_sources(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    admin::check_password(&state, &headers)?;
    sources(State(state)).await
}

/// `POST /relay/sources` with a spec as the body.
async fn add_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: String,
) -> Result<Response> {
    admin::check_password(&state, &headers)?;
    let spec = SourceSpec::parse(&body).map_err(crate::relay::RelayError::from)?;
    let (added, status) = relay(&state)?.add(spec).await?;
    let code = match added {
        Added::Started => StatusCode::CREATED,
        Added::AlreadyFollowed => StatusCode::OK,
    };
    Ok(json(code, encode(&status)?))
}

/// `DELETE /relay/sources?source=<spec>[&forget=true]`.
async fn remove_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    admin::check_password(&state, &headers)?;
    let mut spec = None;
    let mut forget = false;
    for (key, value) in query_pairs(&uri) {
        match key.as_str() {
            "source" => spec = Some(value),
            "forget" => {
                forget = match value.as_str() {
                    "true" | "1" => true,
                    "" | "false" | "0" => false,
                    _ => {
                        return Err(Error::bad_request(format!(
                            "forget must be true or false, not {value:?}"
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    let spec = spec.ok_or_else(|| Error::bad_request("name the source: ?source=<spec>"))?;
    let spec = SourceSpec::parse(&spec).map_err(crate::relay::RelayError::from)?;
    relay(&state)?.remove(&spec, forget).await?;
    let forgotten = if forget {
        "; its cursor is forgotten"
    } else {
        ""
    };
    Ok(format!("no longer following {spec}{forgotten}\n").into_response())
}

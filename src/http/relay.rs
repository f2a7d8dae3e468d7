//! A relay's routes. The public listener serves the merged log exactly as a homeserver serves
//! its own (`/firehose`, `/events/`, `/events-stream`, `GET /` with the relay's key), plus
//! `GET /relay/sources`; it has no files and no accounts, so everything else is a 404 that
//! says so. Both listeners are built like the homeserver's (rate limits, metrics, bodies for
//! refusals; on the admin one the status page, login, `/info` and the password guard), and
//! the admin listener adds and removes sources while the relay runs:
//!
//! - `GET /relay/sources`: the sources' states, as on the public listener;
//! - `POST /relay/sources`, the body a source spec: follow it (201; 200 if it was followed
//!   already), now and at every start until it is removed;
//! - `DELETE /relay/sources?source=<spec>[&forget=true]`: stop following it (200; 404 if it
//!   is not followed). Its cursor is kept, so adding it again resumes where it stopped;
//!   `forget=true` drops its cursor and counters too.

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::{Error, Result};
use super::tenant::query_pairs;
use super::{admin, firehose, pubky_events, public, root, AppState};
use crate::relay::{Added, Relay, SourceSpec};

/// The relay's public router.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", get(root))
        .route("/firehose", get(firehose::firehose))
        .route("/events/", get(pubky_events::feed))
        .route("/events-stream", get(pubky_events::stream))
        .route("/relay/sources", get(sources))
        .fallback(not_here);
    public(routes, state)
}

/// The relay's admin listener: the status page, login and `/info` as on a homeserver, and
/// its sources in place of the user routes.
pub fn admin_router(state: AppState) -> Router {
    let guarded = Router::new().route(
        "/relay/sources",
        get(sources).post(add_source).delete(remove_source),
    );
    admin::listener(guarded, state)
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

/// `POST /relay/sources` with a spec as the body.
async fn add_source(State(state): State<AppState>, body: String) -> Result<Response> {
    let spec = SourceSpec::parse(&body).map_err(crate::relay::RelayError::from)?;
    let (added, status) = relay(&state)?.add(spec).await?;
    let code = match added {
        Added::Started => StatusCode::CREATED,
        Added::AlreadyFollowed => StatusCode::OK,
    };
    Ok(json(code, encode(&status)?))
}

/// `DELETE /relay/sources?source=<spec>[&forget=true]`.
async fn remove_source(State(state): State<AppState>, uri: Uri) -> Result<Response> {
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

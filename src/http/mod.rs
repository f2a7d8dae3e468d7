//! The HTTP surface: one router, routes grouped by concern, and the only layer that knows
//! status codes.
//!
//! - `auth`: signup and sessions (Pubky's cookie flow);
//! - `grant`: signup and sessions by Pubky's grant flow (bearer tokens), with `jws` checking
//!   its signed tokens;
//! - `files`: `/pub/` reads, writes, deletes and listings;
//! - `firehose`: the native event stream, `GET /firehose`;
//! - `pubky_events`: Pubky's `GET /events/` and `GET /events-stream`;
//! - `sse`: the stream plumbing those two share;
//! - `admin`: the separate, password-guarded admin listener (`admin_users`: its user routes;
//!   `status`: its status page and `/info`);
//! - `relay`: a relay's routes (the event endpoints, `/relay/sources`) and its admin routes;
//! - `metrics`: the metrics listener, and the middleware that counts requests by route;
//! - `rate_limit`: the configured `[[rate_limits]]`, answered with 429; `throttle`: users'
//!   own bandwidth limits, pacing file bodies;
//! - `serve`: the connection layer under all of them (accept loops, TLS, deadlines, the
//!   connection limit, a bounded stop, event streams written off hyper);
//! - `tenant`: who a request is about; `session`: whether it proves a session that may write;
//! - `error`: every failure of every layer, mapped to a status and a plain-text body.

pub mod admin;
mod admin_users;
mod auth;
mod error;
mod files;
mod firehose;
#[cfg(test)]
mod fuzz;
mod grant;
mod jws;
pub mod metrics;
mod pubky_events;
pub mod rate_limit;
pub mod relay;
pub mod serve;
mod session;
mod sse;
mod status;
mod tenant;
pub mod throttle;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use error::Error;
pub use status::admin_login_key;

use crate::config::Config;
use crate::files::{FileOp, Files, FilesError, Written};
use crate::log::hub::Hub;
use crate::log::EventLog;
use crate::log::Writer;
use crate::relay::Relay;

/// What every handler shares: one allocation, so that the clone each handler and middleware
/// takes is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of `AppState`.
pub struct Shared {
    /// The homeserver's state (reads; writes go through `writer`).
    pub files: Files,
    /// The event log, for replay.
    pub log: EventLog,
    pub writer: Writer,
    pub config: Arc<Config>,
    /// The server's public key, z-base32.
    pub server_key: Arc<str>,
    /// Flips to true when the server begins to shut down; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Fans committed events out to the event streams.
    pub hub: Arc<Hub>,
    /// Bounds the bytes of request bodies held in memory at once.
    pub bodies: crate::files::content::InFlight,
    /// A relay's sources; `None` on a homeserver.
    pub relay: Option<Relay>,
    /// Users' bandwidth limits.
    pub throttles: Arc<throttle::Throttles>,
    /// Keys the admin status page's login cookies (derived from the server's secret key).
    pub login_key: [u8; 32],
}

impl AppState {
    /// Run a file op through the writer; its answer once committed (or refused).
    async fn write(&self, op: FileOp) -> Result<Written, FilesError> {
        self.writer.submit(self.files.write(op)).await
    }
}

/// The public router.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", get(root))
        .route("/info", get(info))
        .route("/auth/grant/signup", post(grant::signup))
        .route(
            "/auth/grant/session",
            post(grant::create_session)
                .get(grant::get_session)
                .delete(grant::delete_session),
        )
        .route("/signup", post(auth::signup))
        .route(
            "/session",
            post(auth::signin)
                .get(auth::get_session)
                .delete(auth::delete_session),
        )
        .route(
            "/pub/{*path}",
            get(files::get)
                .head(files::head)
                .put(files::put)
                .delete(files::delete),
        )
        .route("/pub/", get(files::get).head(files::head))
        .route("/pub", get(files::get).head(files::head))
        .route("/firehose", get(firehose::firehose))
        .route("/events/", get(pubky_events::feed))
        .route("/events-stream", get(pubky_events::stream))
        .fallback(not_found);
    public(routes, state)
}

/// A public listener of either role: `routes` with the configured rate limits, counted by
/// route in the metrics, a body for every refusal the router makes by itself, and CORS.
fn public(routes: Router<AppState>, state: AppState) -> Router {
    let routes = routes
        .layer(axum::middleware::from_fn_with_state(
            rate_limit::Limits::new(&state.config.rate_limits, &state.config.trusted_proxies),
            rate_limit::layer,
        ))
        .layer(axum::middleware::from_fn(metrics::track_public))
        .with_state(state);
    error::with_bodies(routes).layer(cors())
}

/// Pages on other origins may read files and follow streams; credentialed requests (cookies)
/// echo the origin, as browsers require.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("pubky-host"),
        ])
        .expose_headers([
            header::ETAG,
            header::LAST_MODIFIED,
            header::CONTENT_LENGTH,
            header::RETRY_AFTER,
        ])
}

/// `GET /`: the server's public key.
async fn root(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{}\n", state.server_key),
    )
}

/// `GET /info`: the optional protocol features this server serves, and only those. The SDK
/// 0.17 reads two: `grant-proof-logout` (sign out by proving the grant with a PoP, no live
/// bearer needed; `grant::delete_session` serves it) and `path-addressed-storage` (not served:
/// without it the SDK addresses storage the legacy way, `/pub/...` with `pubky-host`). Pubky's
/// homeserver also lists `webdav-locks` and `websites`, which Hearth does not serve.
async fn info() -> impl axum::response::IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        r#"{"features":["grant-proof-logout"]}"#,
    )
}

/// Reads of unknown routes are 404; writes anywhere but `/pub/` are refused as bad paths.
async fn not_found(method: Method, uri: axum::http::Uri) -> Error {
    if method == Method::PUT || method == Method::DELETE {
        Error::bad_request(format!(
            "path {} is outside /pub/: only files under /pub/ can be written",
            uri.path()
        ))
    } else {
        Error::NotFound(format!("nothing at {}", uri.path()))
    }
}

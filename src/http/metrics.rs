//! The metrics listener (`--metrics-listen`, off by default): `GET /metrics` answers the
//! Prometheus text of `telemetry`, no password (bind it where only the scraper reaches); on a
//! relay, with each source's state, lag and counts as its registry shows them then. And
//! the middleware that counts and times every request of the other listeners by route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::AppState;
use crate::telemetry::{self, Snapshot, SourceReport};

/// The metrics listener's router.
pub fn router(state: AppState, handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((state, handle))
}

async fn scrape(State((state, handle)): State<(AppState, PrometheusHandle)>) -> Response {
    let log = state.log.clone();
    let read = tokio::task::spawn_blocking(move || {
        let (map_used, map_size) = log.map_usage()?;
        Ok::<_, crate::store::StoreError>(Snapshot {
            head_seq: log.last_seq()?,
            first_seq: log.first_seq()?.unwrap_or(0),
            events: log.count()?,
            map_used,
            map_size,
        })
    })
    .await;
    let snapshot = match read {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(err)) => return failed(err.to_string()),
        Err(err) => return failed(err.to_string()),
    };
    if let Some(relay) = &state.relay {
        for source in relay.sources() {
            telemetry::relay_source(SourceReport {
                source: source.source,
                state: source.state.as_str(),
                lag: source.lag,
                ingested: source.ingested,
                skipped: source.skipped,
            });
        }
    }
    let text = telemetry::render(&handle, snapshot);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn failed(why: String) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("# Failed to render metrics: {why}\n"),
    )
        .into_response()
}

/// Count and time a request of the public listener, by its route.
pub async fn track_public(request: Request, next: Next) -> Response {
    track("http", request, next).await
}

/// Count and time a request of the admin listener, by its route.
pub async fn track_admin(request: Request, next: Next) -> Response {
    track("admin", request, next).await
}

async fn track(listener: &'static str, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_string(),
        |path| route_label(path.as_str()),
    );
    let method = request.method().clone();
    let response = next.run(request).await;
    telemetry::request(
        listener,
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A route template as a label value without braces (`/users/{pubkey}` is `/users/:pubkey`,
/// `/pub/{*path}` is `/pub/*path`): some text-format parsers stumble on braces in values.
fn route_label(template: &str) -> String {
    template
        .replace("{*", "*")
        .replace('{', ":")
        .replace('}', "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_have_no_braces() {
        assert_eq!(super::route_label("/pub/{*path}"), "/pub/*path");
        assert_eq!(
            super::route_label("/users/{pubkey}/quota"),
            "/users/:pubkey/quota"
        );
    }
}

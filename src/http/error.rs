//! Every failure a request can meet, and the answer it gets: the one place that maps errors
//! to statuses.
//!
//! Handlers return `Result<_, Error>`. Errors of the layers below (`PathError`, `FilesError`,
//! `StoreError`, `LogError`, `RelayError`) arrive through `?` and keep their own message; the HTTP-only
//! refusals (a bad parameter, no session) are built here. The body of an error answer is the
//! plain message, so a client always learns what was wrong. Only failures of the server itself
//! are 5xx: 507 when the store or the disk is full, 503 when the writer is gone, else 500.

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::files::FilesError;
use crate::log::{LogError, PositionError};
use crate::path::PathError;
use crate::relay::RelayError;
use crate::store::{is_disk_full, StoreError};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a bad parameter, token or body.
    #[error("{0}")]
    BadRequest(String),
    /// No valid session, or a token that does not authenticate.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid session that does not cover what was asked.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The user's quota would be exceeded.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A well-formed body whose values do not hold together (Pubky's 422).
    #[error("{0}")]
    Unprocessable(String),
    /// A rate limit refused the request; try again after this many seconds.
    #[error("Rate limit exceeded")]
    TooManyRequests { retry_after_secs: u64 },
    /// A fault of the server's own (a task that panicked, a value it cannot encode).
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Relay(#[from] RelayError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::Path(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Files(err) => files_status(err),
            Error::Store(err) => store_status(err),
            Error::Log(err) => log_status(err),
            Error::Relay(err) => relay_status(err),
        }
    }
}

fn files_status(err: &FilesError) -> StatusCode {
    match err {
        FilesError::NotFound(_) => StatusCode::NOT_FOUND,
        FilesError::Conflict(_) => StatusCode::CONFLICT,
        FilesError::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
        FilesError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        FilesError::Forbidden(_) => StatusCode::FORBIDDEN,
        FilesError::Invalid(_) => StatusCode::BAD_REQUEST,
        FilesError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        FilesError::Spool(io) if is_disk_full(io) => StatusCode::INSUFFICIENT_STORAGE,
        FilesError::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
        FilesError::Store(err) => store_status(err),
    }
}

fn store_status(err: &StoreError) -> StatusCode {
    match err {
        err if err.is_full() => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Batch(inner) => store_status(inner),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn log_status(err: &LogError) -> StatusCode {
    match err {
        LogError::Position(PositionError::Ahead { .. }) => StatusCode::BAD_REQUEST,
        LogError::Position(PositionError::Dropped { .. } | PositionError::NoneRetained { .. }) => {
            StatusCode::GONE
        }
        LogError::Store(err) => store_status(err),
        LogError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn relay_status(err: &RelayError) -> StatusCode {
    match err {
        RelayError::Spec(_) => StatusCode::BAD_REQUEST,
        RelayError::NotFound(_) => StatusCode::NOT_FOUND,
        RelayError::Stopping(_) => StatusCode::SERVICE_UNAVAILABLE,
        RelayError::Client(_) => StatusCode::INTERNAL_SERVER_ERROR,
        RelayError::Store(err) => store_status(err),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = format!("{self}\n");
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
        if let Error::TooManyRequests { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

/// `routes`, with a body given to the answers axum's router makes by itself (a 405 for a path
/// that exists with other methods, a 404 where no fallback is set), which it sends empty. The
/// routes are wrapped whole, so this sees their final answer, `Allow` included: one place for
/// both listeners, and no refusal is ever bodiless.
pub fn with_bodies(routes: axum::Router) -> axum::Router {
    axum::Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_response(explain_bare))
}

/// A bodiless error answer, explained: a 405 names what `Allow` lists.
async fn explain_bare(method: Method, uri: Uri, response: Response) -> Response {
    let status = response.status();
    let bare = response.body().size_hint().exact() == Some(0);
    if !bare || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let path = uri.path();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = response
                .headers()
                .get(header::ALLOW)
                .and_then(|allow| allow.to_str().ok())
                .unwrap_or_default();
            format!("{method} is not allowed on {path}; it answers {allow}")
        }
        StatusCode::NOT_FOUND => format!("nothing at {path}"),
        _ => format!(
            "{method} {path}: {}",
            status.canonical_reason().unwrap_or("refused")
        ),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(format!("{message}\n")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    fn answer(err: impl Into<Error>) -> (StatusCode, String) {
        let err = err.into();
        (err.status(), err.to_string())
    }

    #[test]
    fn a_full_map_and_a_full_disk_are_507() {
        let full = StatusCode::INSUFFICIENT_STORAGE;
        let map_full = || StoreError::from(heed::Error::Mdb(heed::MdbError::MapFull));
        assert_eq!(answer(map_full()).0, full);
        let batch = answer(StoreError::Batch(Arc::new(map_full())));
        assert_eq!(batch.0, full);
        assert!(batch.1.contains("full"), "{}", batch.1);
        let disk = || StoreError::from(heed::Error::Mdb(heed::MdbError::Other(ENOSPC)));
        assert_eq!(answer(disk()).0, full);
        assert_eq!(answer(FilesError::Store(disk())).0, full);
        assert_eq!(
            answer(StoreError::from(std::io::Error::from_raw_os_error(ENOSPC))).0,
            full
        );
        assert_eq!(
            answer(FilesError::Spool(std::io::Error::from_raw_os_error(ENOSPC))).0,
            full
        );
        assert_eq!(answer(LogError::Store(map_full())).0, full);
        assert_eq!(answer(FilesError::QuotaExceeded("over".into())).0, full);
    }

    #[test]
    fn other_failures_are_named_for_what_they_are() {
        let eio = answer(StoreError::from(heed::Error::Mdb(heed::MdbError::Other(
            EIO,
        ))));
        assert_eq!(eio.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(eio.1.starts_with("storage failure"), "{}", eio.1);
        let batch = answer(StoreError::Batch(Arc::new(StoreError::from(
            std::io::Error::from_raw_os_error(EIO),
        ))));
        assert_eq!(batch.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!batch.1.contains("corrupt"), "{}", batch.1);
        let spool = answer(FilesError::Spool(std::io::Error::from(
            std::io::ErrorKind::AlreadyExists,
        )));
        assert_eq!(spool.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            spool.1.starts_with("spooling the body failed"),
            "{}",
            spool.1
        );
        let task = answer(LogError::Task("panicked".into()));
        assert_eq!(task.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!task.1.contains("corrupt"), "{}", task.1);
        assert_eq!(
            answer(StoreError::Unavailable("stopping".into())).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(StoreError::Corrupt("bad record".into())),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt record: bad record".into()
            )
        );
    }

    #[test]
    fn refusals_of_the_layers_below_keep_their_4xx() {
        assert_eq!(answer(PathError::NotAbsolute).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer(FilesError::NotFound("x".into())).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(FilesError::Conflict("x".into())).0,
            StatusCode::CONFLICT
        );
        assert_eq!(
            answer(FilesError::Unauthorized("x".into())).0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            answer(FilesError::Forbidden("x".into())).0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            answer(FilesError::Invalid("x".into())).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            answer(FilesError::TooLarge("x".into())).0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let ahead = PositionError::Ahead {
            after: 6,
            newest: 5,
        };
        assert_eq!(answer(LogError::from(ahead)).0, StatusCode::BAD_REQUEST);
        let dropped = PositionError::Dropped {
            after: 1,
            oldest: 10,
        };
        assert_eq!(answer(LogError::from(dropped)).0, StatusCode::GONE);
    }
}

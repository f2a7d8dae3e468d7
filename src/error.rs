//! The one error type of the server.
//!
//! Every failure a request can meet is a variant here, and each variant knows its HTTP status.
//! Handlers return `Result<_, Error>`; the body of an error response is the plain message, so a
//! client always learns what was wrong. Storage and I/O failures are the only 5xx.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A failure, with the HTTP status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a bad path, parameter, token or body.
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
    Conflict(String),
    /// Asked for events that retention has already dropped.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The user's quota would be exceeded.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The server is shutting down and takes no more writes.
    #[error("{0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Storage(#[from] heed::Error),
    #[error("i/o failure: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded: the store is damaged or from an unknown version.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Gone(_) => StatusCode::GONE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Storage(heed::Error::Mdb(heed::MdbError::MapFull)) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Error::Storage(_) | Error::Io(_) | Error::Corrupt(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(err: postcard::Error) -> Self {
        Error::Corrupt(err.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = format!("{self}\n");
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

//! Errors: [`ServerError`] for starting and running the server, and the HTTP error answers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use goodies_store::StoreError;
use inbetweenies_proto::{ErrorBody, ErrorCode};
use serde_json::Value;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting is invalid (e.g. an admin password hash that does not parse).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened or migrated.
    #[error("cannot open the store")]
    Store(#[source] StoreError),
    /// The sample home could not be loaded.
    #[error("cannot load the demo data")]
    Demo(#[source] StoreError),
    /// Serving failed.
    #[error("server i/o error")]
    Io(#[from] std::io::Error),
    /// A background task (password hashing) failed.
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ServerError {
    /// The process exit code for this error (see docs/SERVER.md):
    /// 3 configuration, 4 cannot listen, 5 store, 1 anything else.
    /// (2 is clap's code for bad arguments; 0 a clean shutdown.)
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_) => 3,
            ServerError::Bind { .. } => 4,
            ServerError::Store(_) | ServerError::Demo(_) => 5,
            ServerError::Io(_) | ServerError::Task(_) => 1,
        }
    }

    /// The error and all its causes, `: `-separated, for logs.
    pub fn report(&self) -> String {
        error_chain(self)
    }
}

/// An error answer: a status and the JSON error body of docs/PROTOCOL.md (boxed: handlers return it often).
#[derive(Debug)]
pub(crate) struct ApiError(Box<ApiErrorInner>);

/// The parts of an [`ApiError`].
#[derive(Debug)]
pub(crate) struct ApiErrorInner {
    pub status: StatusCode,
    pub body: ErrorBody,
    pub retry_after: Option<u64>,
    pub www_authenticate: bool,
}

impl std::ops::Deref for ApiError {
    type Target = ApiErrorInner;
    fn deref(&self) -> &ApiErrorInner {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ApiErrorInner {
        &mut self.0
    }
}

impl ApiError {
    /// An error whose `detail` is the message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Box::new(ApiErrorInner {
            status,
            body: ErrorBody::new(code, message),
            retry_after: None,
            www_authenticate: false,
        }))
    }

    /// Replaces the reference-compatible `detail`.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.body.detail = Some(detail);
        self
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body.error.field = Some(field.into());
        self
    }

    /// 422 with a FastAPI-style list of validation errors as `detail`.
    pub fn validation(detail: Value, message: impl Into<String>, field: Option<String>) -> Self {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            message,
        )
        .with_detail(detail);
        e.body.error.field = field;
        e
    }

    /// 400 with a plain detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, detail)
    }

    /// 401 for a missing or non-bearer Authorization header.
    pub fn not_authenticated() -> Self {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "Not authenticated",
        );
        e.www_authenticate = true;
        e
    }

    /// 401 for a token that does not verify (expired: code `AUTH_EXPIRED`).
    pub fn invalid_token(expired: bool) -> Self {
        let code = if expired {
            ErrorCode::AuthExpired
        } else {
            ErrorCode::Unauthorized
        };
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, code, "Invalid or expired token");
        e.www_authenticate = true;
        if expired {
            e.body.error.message = "token expired; log in again".to_owned();
        }
        e
    }

    /// 403 with a detail.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, detail)
    }

    /// 404 with a detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }

    /// 409 for a write that clashes with what exists (e.g. an id already taken).
    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, ErrorCode::InvalidRequest, detail)
    }

    /// 413 for a body over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "Request body too large",
        );
        e.body.error.message = format!("request body exceeds {limit} bytes");
        e
    }

    /// 429 with a `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "Too many login attempts. Try again later.",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    /// 500 that says nothing of the cause (which is logged).
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "request failed inside the server");
        let mut e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "Internal Server Error",
        );
        e.body.error.message = "internal error; nothing was applied".to_owned();
        e
    }
}

/// A cause and all its sources, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(what) => ApiError::not_found(format!("Not found: {what}")),
            StoreError::Invalid(what) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::SyncConflict, what.clone())
            }
            _ => ApiError::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let inner = *self.0;
        let mut res = (inner.status, axum::Json(inner.body)).into_response();
        if inner.www_authenticate {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = inner.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// The error code a bare HTTP status maps to.
pub(crate) fn code_for_status(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    }
}

//! Error types of the protocol crate, and the JSON error body servers send.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Not a timestamp at all.
    #[error("invalid timestamp {0:?}")]
    Invalid(String),
    /// A timestamp outside the supported range.
    #[error("timestamp {0} is out of range")]
    OutOfRange(String),
}

/// A version string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed version {version:?}: {reason}")]
pub struct VersionError {
    /// The offending string.
    pub version: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A cursor that is not a server sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor must be a server_seq integer, got {0:?}")]
pub struct CursorError(pub String);

/// One segment of the path to a field: an object key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    /// An object key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// The path to a field of a request body, e.g. `changes[0].entity.version`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<PathSegment>);

impl FieldPath {
    /// The path with a key appended.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.0.clone();
        p.push(PathSegment::Key(k.to_owned()));
        FieldPath(p)
    }

    /// The path with an index appended.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.0.clone();
        p.push(PathSegment::Index(i));
        FieldPath(p)
    }

    /// The path as a JSON array (`["changes", 0, "entity"]`), as FastAPI's `loc` writes it
    /// after its leading `"body"`.
    pub fn to_json(&self) -> Vec<Value> {
        self.0
            .iter()
            .map(|s| match s {
                PathSegment::Key(k) => Value::String(k.clone()),
                PathSegment::Index(i) => Value::from(*i),
            })
            .collect()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<body>");
        }
        for (n, s) in self.0.iter().enumerate() {
            match s {
                PathSegment::Key(k) if n == 0 => write!(f, "{k}")?,
                PathSegment::Key(k) => write!(f, ".{k}")?,
                PathSegment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FieldErrorKind {
    /// A required field is absent.
    Missing,
    /// The body is not a JSON object.
    NotAnObject,
    /// Expected a string.
    NotAString,
    /// Expected a list.
    NotAList,
    /// Expected a JSON object (a dictionary), e.g. a non-object `content`.
    NotADict,
    /// A string outside its allowed set (e.g. `sync_type`, `change_type`).
    NotAllowed {
        /// The allowed values.
        allowed: &'static [&'static str],
    },
    /// A timestamp that does not parse.
    BadTimestamp(String),
    /// A version string that does not parse.
    BadVersion(&'static str),
    /// `protocol_version` is not one this crate speaks.
    UnsupportedProtocolVersion,
    /// A cursor that is not a sequence number.
    BadCursor,
    /// A string the server would store that contains U+0000, which not every
    /// store can hold (a key of an object when the path ends at that key).
    NulCharacter,
    /// A key string (an id, a version, a type, a device id) longer than the
    /// server indexes, in bytes of UTF-8 (see `validate::MAX_KEY_BYTES`).
    TooLong {
        /// The most bytes allowed.
        max_bytes: usize,
    },
    /// A string that must not be empty.
    Empty,
    /// A value of an open enumeration (`entity_type`, `source_type`,
    /// `relationship_type`, a filter's entity type) that is not one of the
    /// known values; refused only in strict mode (PROTOCOL §12.5).
    UnknownValue {
        /// The known values.
        allowed: &'static [&'static str],
    },
    /// A `checksum` that does not match its `content` (PROTOCOL §4.6).
    BadChecksum(String),
}

/// One invalid field of a request body.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Where in the body.
    pub path: FieldPath,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The offending value (null when missing).
    pub input: Value,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        match &self.kind {
            FieldErrorKind::Missing => write!(f, "{p}: field required"),
            FieldErrorKind::NotAnObject => write!(f, "{p}: expected a JSON object"),
            FieldErrorKind::NotAString => write!(f, "{p}: expected a string"),
            FieldErrorKind::NotAList => write!(f, "{p}: expected a list"),
            FieldErrorKind::NotADict => write!(f, "{p}: expected a JSON object"),
            FieldErrorKind::NotAllowed { allowed } => {
                write!(f, "{p}: expected one of {}", allowed.join(", "))
            }
            FieldErrorKind::BadTimestamp(why) => write!(f, "{p}: invalid timestamp ({why})"),
            FieldErrorKind::BadVersion(why) => write!(f, "{p}: malformed version ({why})"),
            FieldErrorKind::UnsupportedProtocolVersion => {
                write!(f, "{p}: unsupported protocol version")
            }
            FieldErrorKind::BadCursor => write!(f, "{p}: cursor must be a server_seq integer"),
            FieldErrorKind::NulCharacter => write!(f, "{p}: must not contain U+0000 (NUL)"),
            FieldErrorKind::TooLong { max_bytes } => {
                write!(f, "{p}: must be at most {max_bytes} bytes (UTF-8)")
            }
            FieldErrorKind::Empty => write!(f, "{p}: must not be empty"),
            FieldErrorKind::UnknownValue { allowed } => {
                write!(f, "{p}: unknown value (known: {})", allowed.join(", "))
            }
            FieldErrorKind::BadChecksum(why) => write!(f, "{p}: {why}"),
        }
    }
}

/// A request body that failed validation; names every invalid field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The body is not JSON at all.
    #[error("invalid JSON at byte {position}: {message}")]
    Json {
        /// Byte offset of the error.
        position: usize,
        /// The parser's message.
        message: String,
    },
    /// The body is empty.
    #[error("request body is empty")]
    EmptyBody,
    /// One or more fields are invalid.
    #[error("invalid request: {}", display_fields(.0))]
    Fields(Vec<FieldError>),
}

fn display_fields(f: &[FieldError]) -> String {
    f.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationError {
    /// The invalid fields (empty for JSON-level errors).
    pub fn fields(&self) -> &[FieldError] {
        match self {
            ValidationError::Fields(f) => f,
            _ => &[],
        }
    }

    /// The first invalid field, if any.
    pub fn first_field(&self) -> Option<&FieldError> {
        self.fields().first()
    }

    /// Whether the only problem is an unsupported `protocol_version`
    /// (servers answer 400 rather than 422 for it, as the reference does).
    pub fn is_protocol_version(&self) -> bool {
        self.fields()
            .iter()
            .any(|f| f.kind == FieldErrorKind::UnsupportedProtocolVersion)
    }
}

/// Machine-readable error codes of the JSON error body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A conflict the server could not decide.
    SyncConflict,
    /// The client's sync state is unusable (e.g. a cursor past the end); resync from scratch.
    InvalidSyncState,
    /// Too many requests; retry after the `Retry-After` header.
    RateLimited,
    /// The bearer token has expired; log in again.
    AuthExpired,
    /// The request is malformed (bad JSON, missing or mistyped fields).
    InvalidRequest,
    /// No or bad credentials.
    Unauthorized,
    /// The credentials do not allow this.
    Forbidden,
    /// No such resource.
    NotFound,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// Something failed inside the server; nothing was applied.
    Internal,
    /// A code this version does not know.
    Other(String),
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::SyncConflict => "SYNC_CONFLICT",
            ErrorCode::InvalidSyncState => "INVALID_SYNC_STATE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::AuthExpired => "AUTH_EXPIRED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Other(s) => s,
        }
    }

    /// Reads a wire string.
    pub fn parse(s: &str) -> Self {
        match s {
            "SYNC_CONFLICT" => ErrorCode::SyncConflict,
            "INVALID_SYNC_STATE" => ErrorCode::InvalidSyncState,
            "RATE_LIMITED" => ErrorCode::RateLimited,
            "AUTH_EXPIRED" => ErrorCode::AuthExpired,
            "INVALID_REQUEST" => ErrorCode::InvalidRequest,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "FORBIDDEN" => ErrorCode::Forbidden,
            "NOT_FOUND" => ErrorCode::NotFound,
            "PAYLOAD_TOO_LARGE" => ErrorCode::PayloadTooLarge,
            "INTERNAL" => ErrorCode::Internal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

/// The `error` object of an error body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// The offending field, when one is to blame (e.g. `changes[0].entity.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The JSON body of every error response:
/// `{"error": {"code": "...", "message": "..."}, "detail": ...}`.
///
/// `detail` carries what the Python reference sends in the same situation
/// (a string, or FastAPI's list of validation errors), so clients written
/// against either server can read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The reference-compatible detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// The error.
    pub error: ErrorInfo,
}

impl ErrorBody {
    /// An error body whose `detail` is the message itself.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        ErrorBody {
            detail: Some(Value::String(message.clone())),
            error: ErrorInfo {
                code,
                message,
                field: None,
            },
        }
    }

    /// Replaces the reference-compatible `detail`.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }
}

/// A gzip or HMAC failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The gzip stream is corrupt.
    #[error("corrupt gzip body")]
    Gzip(#[source] std::io::Error),
    /// The decompressed body is larger than allowed.
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The signature is not valid hex or does not match.
    #[error("bad message signature")]
    BadSignature,
    /// The checksum does not match the content.
    #[error("checksum mismatch: expected {expected}, computed {actual}")]
    ChecksumMismatch {
        /// The checksum that was sent.
        expected: String,
        /// The checksum of the content.
        actual: String,
    },
}

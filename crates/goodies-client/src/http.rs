//! JSON over the transport: auth header, gzip both ways, error bodies, retries with backoff.

use std::sync::atomic::{AtomicBool, Ordering};

use inbetweenies_proto::codec::{gzip_decode, gzip_encode, should_gzip};
use inbetweenies_proto::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::ClientConfig;
use crate::error::{BoxError, ClientError, SyncError, TransportError};
use crate::transport::{HttpRequest, HttpResponse, Method, Transport};

/// Why a request failed for good.
#[derive(Debug)]
pub(crate) enum RequestFailure {
    /// No answer, even after retrying.
    Unreachable {
        attempts: u32,
        source: TransportError,
    },
    /// An error status (after retrying, for retryable ones).
    Status {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
        attempts: u32,
        /// Where the error body puts the blame: see [`Blame`].
        blame: Blame,
    },
    /// 401 with `AUTH_EXPIRED`.
    AuthExpired,
    /// Another 401 or a 403.
    Unauthorized { message: String },
    /// An answer that cannot be read.
    Invalid(BoxError),
    /// A server that cannot be trusted (TLS, signature): not retried.
    Untrusted(TransportError),
}

impl RequestFailure {
    /// What failed, in a few words (for retry events).
    pub(crate) fn reason(&self) -> String {
        match self {
            RequestFailure::Unreachable { source, .. } => crate::sync::error_chain(source),
            RequestFailure::Status {
                status, message, ..
            } => format!("server answered {status}: {message}"),
            RequestFailure::AuthExpired => "the token has expired".to_owned(),
            RequestFailure::Unauthorized { message } => message.clone(),
            RequestFailure::Invalid(e) => format!("invalid answer: {e}"),
            RequestFailure::Untrusted(e) => crate::sync::error_chain(e),
        }
    }

    /// Failures that end a sync with an error instead of a report.
    pub(crate) fn into_client_error(self) -> ClientError {
        match self {
            RequestFailure::Unreachable { attempts, source } => {
                ClientError::Unreachable { attempts, source }
            }
            RequestFailure::Status {
                status,
                code,
                message,
                ..
            } => ClientError::Server {
                status,
                code,
                message,
            },
            RequestFailure::AuthExpired => ClientError::AuthExpired,
            RequestFailure::Unauthorized { message } => ClientError::Unauthorized { message },
            RequestFailure::Invalid(e) => ClientError::InvalidResponse(e),
            RequestFailure::Untrusted(e) => ClientError::Untrusted(e),
        }
    }

    /// The failure as a sync report entry, or the error that ends the sync.
    pub(crate) fn into_sync_error(self) -> Result<SyncError, ClientError> {
        match self {
            RequestFailure::Unreachable { attempts, source } => Ok(SyncError::Unreachable {
                attempts,
                source: std::sync::Arc::new(source),
            }),
            RequestFailure::Status {
                status,
                code,
                message,
                attempts,
                ..
            } => Ok(SyncError::Server {
                status,
                code,
                message,
                attempts,
            }),
            RequestFailure::Invalid(e) => Ok(SyncError::InvalidResponse(std::sync::Arc::from(e))),
            RequestFailure::AuthExpired => Err(ClientError::AuthExpired),
            RequestFailure::Unauthorized { message } => Err(ClientError::Unauthorized { message }),
            RequestFailure::Untrusted(e) => Err(ClientError::Untrusted(e)),
        }
    }
}

/// One server's JSON API as seen through a transport.
pub(crate) struct Http<'a> {
    pub(crate) transport: &'a dyn Transport,
    pub(crate) base_url: &'a str,
    pub(crate) token: Option<&'a str>,
    pub(crate) config: &'a ClientConfig,
    /// Cleared when the server refuses gzipped bodies.
    pub(crate) compress: &'a AtomicBool,
}

fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

impl Http<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), path)
    }

    fn build(&self, method: Method, path: &str, json: Option<&[u8]>, gzip: bool) -> HttpRequest {
        let mut headers = vec![
            ("accept".to_owned(), "application/json".to_owned()),
            ("accept-encoding".to_owned(), "gzip".to_owned()),
            (
                "user-agent".to_owned(),
                concat!("blowing-off/", env!("CARGO_PKG_VERSION")).to_owned(),
            ),
        ];
        if let Some(t) = self.token {
            headers.push(("authorization".to_owned(), format!("Bearer {t}")));
        }
        let body = match json {
            Some(b) => {
                headers.push(("content-type".to_owned(), "application/json".to_owned()));
                if gzip {
                    headers.push(("content-encoding".to_owned(), "gzip".to_owned()));
                    gzip_encode(b)
                } else {
                    b.to_vec()
                }
            }
            None => Vec::new(),
        };
        HttpRequest {
            method,
            url: self.url(path),
            headers,
            body,
        }
    }

    fn body_of(&self, resp: &HttpResponse) -> Result<Vec<u8>, RequestFailure> {
        let gz = resp
            .header("content-encoding")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        if gz {
            gzip_decode(&resp.body, self.config.max_response_bytes)
                .map_err(|e| RequestFailure::Invalid(Box::new(e)))
        } else {
            Ok(resp.body.clone())
        }
    }

    pub(crate) fn failure_of(&self, resp: &HttpResponse, attempts: u32) -> RequestFailure {
        let body = self.body_of(resp).unwrap_or_default();
        let (code, message) = parse_error_body(&body);
        match resp.status {
            401 if code == Some(ErrorCode::AuthExpired) => RequestFailure::AuthExpired,
            401 | 403 => RequestFailure::Unauthorized { message },
            status => RequestFailure::Status {
                status,
                code,
                message,
                attempts,
                blame: Blame::of_error_body(&body),
            },
        }
    }

    /// Sends a JSON request (POST with `body`, GET without) and reads a JSON answer,
    /// retrying transport failures and retryable statuses. `retries` counts the retries made.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
        retries: &mut u32,
    ) -> Result<Resp, RequestFailure> {
        let json = match body {
            Some(b) => {
                Some(serde_json::to_vec(b).map_err(|e| RequestFailure::Invalid(Box::new(e)))?)
            }
            None => None,
        };
        let mut attempt: u32 = 0;
        let signals = crate::signals::current();
        loop {
            let gzip = json.as_deref().is_some_and(|b| should_gzip(b.len()))
                && self.config.compress_requests
                && self.compress.load(Ordering::Relaxed);
            let req = self.build(method, path, json.as_deref(), gzip);
            attempt += 1;
            if let Some(s) = &signals {
                s.sending();
            }
            let started = std::time::Instant::now();
            let outcome = self.transport.send(req).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match &outcome {
                Ok(resp) => tracing::debug!(
                    %method, path, status = resp.status, bytes = resp.body.len(), attempt,
                    "request answered in {ms:.1} ms"
                ),
                Err(e) => tracing::debug!(
                    %method, path, attempt, error = %e, "request got no answer after {ms:.1} ms"
                ),
            }
            if let (Some(s), Ok(_)) = (&signals, &outcome) {
                s.answered();
            }
            let mut retry_after = None;
            let failure = match outcome {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    let body = self.body_of(&resp)?;
                    return serde_json::from_slice(&body)
                        .map_err(|e| RequestFailure::Invalid(Box::new(e)));
                }
                Ok(resp) if gzip && matches!(resp.status, 400 | 415 | 422) => {
                    // The server may not read gzipped bodies: resend plain, and stop compressing.
                    tracing::debug!(
                        status = resp.status,
                        "gzipped request refused; resending uncompressed"
                    );
                    self.compress.store(false, Ordering::Relaxed);
                    attempt -= 1;
                    continue;
                }
                Ok(resp) => {
                    let f = self.failure_of(&resp, attempt);
                    if !retryable_status(resp.status) {
                        return Err(f);
                    }
                    retry_after = crate::signals::retry_after(resp.header("retry-after"));
                    f
                }
                Err(e) if e.is_permanent() => return Err(RequestFailure::Untrusted(e)),
                Err(e) => RequestFailure::Unreachable {
                    attempts: attempt,
                    source: e,
                },
            };
            if attempt > self.config.retry.max_retries {
                if let (Some(s), RequestFailure::Unreachable { .. }) = (&signals, &failure) {
                    s.unreachable();
                }
                return Err(failure);
            }
            // The server's Retry-After (429, 503) says how long; otherwise the backoff.
            let delay = retry_after.unwrap_or_else(|| self.config.retry.delay(attempt - 1));
            tracing::debug!(?failure, ?delay, attempt, "request failed; retrying");
            if let Some(s) = &signals {
                s.retrying(
                    attempt,
                    self.config.retry.max_retries,
                    delay,
                    failure.reason(),
                );
            }
            *retries += 1;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What an error body blames: which changes of the request (by index in `changes`,
/// each with the message given for it), and whether it names a field outside them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Blame {
    /// `(index into the request's changes, message)`, in body order.
    pub(crate) changes: Vec<(usize, String)>,
    /// A field outside `changes` is to blame (e.g. `protocol_version`, `cursor`): no
    /// change of the request is at fault.
    pub(crate) request: bool,
}

impl Blame {
    /// Reads the blame from either server's error body: FastAPI-style `detail` items
    /// whose `loc` is `["body", "changes", i, …]`, and our `error.field`
    /// (`changes[i]…`).
    pub(crate) fn of_error_body(body: &[u8]) -> Blame {
        let mut blame = Blame::default();
        let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
            return blame;
        };
        if let Some(Value::Array(items)) = o.get("detail") {
            for item in items {
                let Some(loc) = item.get("loc").and_then(Value::as_array) else {
                    continue;
                };
                let msg = item
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid")
                    .to_owned();
                let path: Vec<String> = loc
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                let rest = match path.first().map(String::as_str) {
                    Some("body") => &path[1..],
                    _ => &path[..],
                };
                match (rest.first().map(String::as_str), rest.get(1)) {
                    (Some("changes"), Some(i)) => match i.parse::<usize>() {
                        Ok(i) => {
                            let at = rest[2..].join(".");
                            let msg = if at.is_empty() {
                                msg
                            } else {
                                format!("{at}: {msg}")
                            };
                            blame.changes.push((i, msg));
                        }
                        Err(_) => blame.request = true,
                    },
                    (Some(_), _) => blame.request = true,
                    (None, _) => {}
                }
            }
        }
        if let Some(field) = o
            .get("error")
            .and_then(|e| e.get("field"))
            .and_then(Value::as_str)
        {
            let message = o
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("invalid")
                .to_owned();
            match field
                .strip_prefix("changes[")
                .and_then(|r| r.split_once(']'))
                .and_then(|(i, _)| i.parse::<usize>().ok())
            {
                Some(i) if !blame.changes.iter().any(|(j, _)| *j == i) => {
                    blame.changes.push((i, format!("{field}: {message}")));
                }
                Some(_) => {}
                None if blame.changes.is_empty() => blame.request = true,
                None => {}
            }
        }
        blame
    }
}

/// Reads `(code, message)` from an error body of either server (ours: `error.code` and
/// `error.message`; the reference: `detail`), or the raw text.
fn parse_error_body(body: &[u8]) -> (Option<ErrorCode>, String) {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        return (Some(b.error.code), b.error.message);
    }
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) {
        match o.get("detail") {
            Some(Value::String(s)) => return (None, s.clone()),
            Some(other) => return (None, other.to_string()),
            None => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        "no details".to_owned()
    } else {
        text.chars().take(300).collect()
    };
    (None, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_both_servers() {
        let ours = br#"{"detail":"token expired","error":{"code":"AUTH_EXPIRED","message":"token expired"}}"#;
        assert_eq!(
            parse_error_body(ours),
            (Some(ErrorCode::AuthExpired), "token expired".to_owned())
        );
        let theirs = br#"{"detail": "Invalid or expired token"}"#;
        assert_eq!(
            parse_error_body(theirs),
            (None, "Invalid or expired token".to_owned())
        );
        assert_eq!(
            parse_error_body(b"Internal Server Error"),
            (None, "Internal Server Error".to_owned())
        );
        assert_eq!(parse_error_body(b""), (None, "no details".to_owned()));
    }

    /// Both servers' ways of naming the refused changes of a request are read, and a
    /// field outside `changes` blames the request, not a change.
    #[test]
    fn blame_names_the_refused_changes() {
        let fastapi = br#"{"detail":[
            {"type":"missing","loc":["body","changes",2,"entity","version"],"msg":"Field required"},
            {"type":"enum","loc":["body","changes",0,"entity","entity_type"],"msg":"Input should be 'home'"}
        ]}"#;
        let b = Blame::of_error_body(fastapi);
        assert_eq!(
            b.changes,
            vec![
                (2, "entity.version: Field required".to_owned()),
                (0, "entity.entity_type: Input should be 'home'".to_owned())
            ]
        );
        assert!(!b.request);
        let ours = br#"{"detail":"Unknown relationship_type: x","error":{"code":"INVALID_REQUEST","message":"Unknown relationship_type: x","field":"changes[4].relationships[0].relationship_type"}}"#;
        let b = Blame::of_error_body(ours);
        assert_eq!(b.changes.len(), 1);
        assert_eq!(b.changes[0].0, 4);
        assert!(!b.request);
        let request = br#"{"detail":"Unsupported protocol version","error":{"code":"INVALID_REQUEST","message":"unsupported","field":"protocol_version"}}"#;
        let b = Blame::of_error_body(request);
        assert!(b.changes.is_empty() && b.request);
        assert_eq!(Blame::of_error_body(b"oops"), Blame::default());
    }
}

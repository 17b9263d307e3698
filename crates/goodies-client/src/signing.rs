//! Signed messages (PROTOCOL §2.4, §2.6) as a wrapping [`Transport`]: every request is
//! signed with the shared key (a new timestamp and nonce each time, retries included),
//! and every whole answer must carry the server's signature over its status, the
//! request's nonce, its timestamp and its body; an answer without it, or with a wrong
//! one, is refused and not retried. Streamed answers (event streams, blob bytes) are
//! not signed by the server and are not checked.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use inbetweenies_proto::codec::{gzip_decode, sign, verify, SIGNATURE_HEADER};
use sha2::{Digest, Sha256};

use crate::error::{ClientError, TransportError};
use crate::transport::{HttpRequest, HttpResponse, HttpStream, Transport};

/// The header with the signing time, whole seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "x-inbetweenies-timestamp";
/// The header with a request's nonce.
pub const NONCE_HEADER: &str = "x-inbetweenies-nonce";
const REQUEST_SCHEME: &str = "INBETWEENIES-HMAC-SHA256";
const RESPONSE_SCHEME: &str = "INBETWEENIES-HMAC-SHA256-RESPONSE";

/// The key shared with the server for message signatures. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Arc<str>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A key (its UTF-8 bytes key the HMAC). Fails when empty.
    pub fn new(key: impl Into<String>) -> Result<Self, ClientError> {
        let key = key.into();
        if key.is_empty() {
            return Err(ClientError::Invalid("the signing key is empty".into()));
        }
        Ok(SigningKey(key.into()))
    }

    /// The key in a file (one line: a trailing line break is not part of it).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Invalid(format!(
                "cannot read the signing key file {}: {e}",
                path.display()
            ))
        })?;
        Self::new(text.trim_end_matches(['\r', '\n'])).map_err(|_| {
            ClientError::Invalid(format!("the signing key file {} is empty", path.display()))
        })
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A [`Transport`] that signs requests and checks the signatures of answers with a key
/// shared with the server.
#[derive(Debug)]
pub struct SigningTransport {
    inner: Arc<dyn Transport>,
    key: SigningKey,
    max_body: usize,
}

impl SigningTransport {
    /// Signs what goes through `inner` with `key`; gzipped bodies are hashed as they read
    /// decompressed, up to `max_body` bytes.
    pub fn new(inner: Arc<dyn Transport>, key: SigningKey, max_body: usize) -> Self {
        SigningTransport {
            inner,
            key,
            max_body,
        }
    }

    /// Adds the timestamp, nonce and signature headers; returns the nonce.
    fn sign_request(&self, request: &mut HttpRequest) -> Result<String, TransportError> {
        let uri: hyper::Uri = request
            .url
            .parse()
            .map_err(|_| TransportError::InvalidUrl(request.url.clone()))?;
        let body = self.plain(&request.headers, &request.body)?;
        let ts = now_secs();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let string = format!(
            "{REQUEST_SCHEME}\n{}\n{}\n{}\n{ts}\n{nonce}\n{}",
            request.method.as_str(),
            uri.path(),
            uri.query().unwrap_or(""),
            hex::encode(Sha256::digest(&body))
        );
        let sig = sign(self.key.bytes(), string.as_bytes());
        request
            .headers
            .retain(|(k, _)| !is_signature_header(k.as_str()));
        request
            .headers
            .push((TIMESTAMP_HEADER.to_owned(), ts.to_string()));
        request
            .headers
            .push((NONCE_HEADER.to_owned(), nonce.clone()));
        request.headers.push((SIGNATURE_HEADER.to_owned(), sig));
        Ok(nonce)
    }

    /// A body as it reads decompressed.
    fn plain<'a>(
        &self,
        headers: &[(String, String)],
        body: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, TransportError> {
        let gz = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("content-encoding") && v.trim().eq_ignore_ascii_case("gzip")
        });
        if gz {
            gzip_decode(body, self.max_body)
                .map(std::borrow::Cow::Owned)
                .map_err(TransportError::http)
        } else {
            Ok(std::borrow::Cow::Borrowed(body))
        }
    }

    /// Checks an answer's signature; hands a gzipped answer on decompressed.
    fn check_response(
        &self,
        nonce: &str,
        mut resp: HttpResponse,
    ) -> Result<HttpResponse, TransportError> {
        if is_streamed(&resp) {
            return Ok(resp);
        }
        let refuse = |why: &str| {
            TransportError::Signature(format!(
                "the server's answer ({}) {why}; is the signing key the server's?",
                resp.status
            ))
        };
        let (Some(sig), Some(ts)) = (resp.header(SIGNATURE_HEADER), resp.header(TIMESTAMP_HEADER))
        else {
            return Err(refuse("is not signed"));
        };
        let ts = ts.trim();
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse("has a malformed signature timestamp"));
        }
        let body = self.plain(&resp.headers, &resp.body)?;
        let string = format!(
            "{RESPONSE_SCHEME}\n{}\n{nonce}\n{ts}\n{}",
            resp.status,
            hex::encode(Sha256::digest(&body))
        );
        if verify(self.key.bytes(), string.as_bytes(), sig).is_err() {
            return Err(refuse("has a wrong signature"));
        }
        if let std::borrow::Cow::Owned(plain) = body {
            resp.body = plain;
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-encoding"));
        }
        Ok(resp)
    }
}

fn is_signature_header(name: &str) -> bool {
    [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Answers the server does not sign: event streams and blob bytes.
fn is_streamed(resp: &HttpResponse) -> bool {
    resp.header("accept-ranges").is_some()
        || resp.header("content-type").is_some_and(|v| {
            v.starts_with("text/event-stream") || v.starts_with("application/octet-stream")
        })
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[async_trait]
impl Transport for SigningTransport {
    async fn send(&self, mut request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let nonce = self.sign_request(&mut request)?;
        let resp = self.inner.send(request).await?;
        self.check_response(&nonce, resp)
    }

    /// Signs the request; the streamed answer is not signed by the server (PROTOCOL
    /// §2.6), so it is handed on as it comes.
    async fn open_stream(&self, mut request: HttpRequest) -> Result<HttpStream, TransportError> {
        self.sign_request(&mut request)?;
        self.inner.open_stream(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Method;

    /// The worked example of PROTOCOL §2.6, request and answer.
    #[test]
    fn the_worked_example_signs_and_verifies() {
        let key = SigningKey::new("funkygibbon-example-key").unwrap();
        let body = br#"{"device_id":"phone-1","user_id":"alice","sync_type":"delta","changes":[]}"#;
        let string = format!(
            "{REQUEST_SCHEME}\nPOST\n/api/v1/sync/\n\n1767225600\n4f1c2a9e7b3d4c5a8e6f0b1d2c3a4b5c\n{}",
            hex::encode(Sha256::digest(body))
        );
        assert_eq!(
            sign(key.bytes(), string.as_bytes()),
            "9a85e4d0d0dc73641f563307f7648d11579e6d1b68c967eabbb33b1574ead11a"
        );
        let t = SigningTransport::new(
            Arc::new(crate::transport::HyperTransport::new()),
            key,
            1 << 20,
        );
        let resp = HttpResponse {
            status: 200,
            headers: vec![
                (TIMESTAMP_HEADER.into(), "1767225601".into()),
                (
                    SIGNATURE_HEADER.into(),
                    "189d7452e898c8387cf1c39f76b66c3fa65240d8257e6ec95eea4a175029a8ef".into(),
                ),
            ],
            body: br#"{"status":"ok"}"#.to_vec(),
        };
        assert!(t
            .check_response("4f1c2a9e7b3d4c5a8e6f0b1d2c3a4b5c", resp.clone())
            .is_ok());
        let e = t
            .check_response("another-nonce-0123456789", resp)
            .unwrap_err();
        assert!(matches!(e, TransportError::Signature(_)), "{e}");
        assert!(e.is_permanent());
    }

    #[test]
    fn requests_get_a_fresh_nonce_and_the_key_never_shows() {
        let key = SigningKey::new("k3y-never-shown").unwrap();
        assert!(!format!("{key:?}").contains("k3y-never-shown"));
        let t = SigningTransport::new(
            Arc::new(crate::transport::HyperTransport::new()),
            key,
            1 << 20,
        );
        assert!(!format!("{t:?}").contains("k3y-never-shown"));
        let mut r = HttpRequest {
            method: Method::Get,
            url: "http://127.0.0.1:1/api/v1/auth/me?x=1".into(),
            headers: vec![],
            body: vec![],
        };
        let n1 = t.sign_request(&mut r).unwrap();
        let n2 = t.sign_request(&mut r).unwrap();
        assert_ne!(n1, n2);
        assert_eq!(r.headers.len(), 3, "signing again replaces the headers");
        assert!(SigningKey::new("").is_err());
    }
}

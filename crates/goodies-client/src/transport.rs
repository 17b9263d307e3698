//! The HTTP transport behind the client: a small object-safe trait in plain types, and
//! the default implementation over hyper.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{ClientError, TransportError};
use crate::tls::TlsConfig;

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// HEAD.
    Head,
}

impl Method {
    /// The method's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Head => "HEAD",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request as the client hands it to a [`Transport`]. Its `Debug` does not show the
/// `authorization` header's value.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Headers, in order (names in lowercase).
    pub headers: Vec<(String, String)>,
    /// The body (possibly gzipped: see the `content-encoding` header).
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let secret = k.eq_ignore_ascii_case("authorization");
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl HttpRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// An answer as a [`Transport`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body as received (the client decompresses gzip itself).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The body of a streamed answer: chunks as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>;

/// An answer whose body is read as it arrives (a long-lived stream such as the change
/// feed): status and headers at once, the body chunk by chunk.
pub struct HttpStream {
    /// The status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as received (not decompressed).
    pub body: ByteStream,
}

impl fmt::Debug for HttpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStream")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl HttpStream {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends one HTTP request and returns the answer, whatever its status.
///
/// An error means no answer arrived (connection refused, timeout, connection reset): the
/// client then retries with backoff. An app can bring its own implementation (another
/// HTTP stack, TLS, a proxy, a recorder); [`HyperTransport`] is the default.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends the request.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;

    /// Sends the request and returns the answer as soon as its head arrives, the body
    /// read as a stream with no total time limit (for long-lived answers such as the
    /// change feed). The default says the transport cannot stream.
    async fn open_stream(&self, request: HttpRequest) -> Result<HttpStream, TransportError> {
        let _ = request;
        Err(TransportError::Unsupported(
            "this transport cannot stream answers".into(),
        ))
    }
}

/// The default transport: hyper's pooled HTTP/1.1 client over TCP, `http://` and
/// `https://` (rustls; the platform's trust roots by default, or a custom CA or a pinned
/// certificate: [`HyperTransport::with_tls`]).
///
/// Every request is bounded by the timeout (default 30 s). A TLS failure (an untrusted
/// certificate) is [`TransportError::Tls`], which is not retried.
pub struct HyperTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for HyperTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperTransport {
    /// The default request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A transport with the default timeout.
    pub fn new() -> Self {
        Self::with_timeout(Self::DEFAULT_TIMEOUT)
    }

    /// A transport whose requests time out after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self::over(timeout, crate::tls::platform_config().clone())
    }

    /// A transport whose requests time out after `timeout` and whose `https://`
    /// connections trust what `tls` says. Fails when the TLS settings cannot be used.
    pub fn with_tls(timeout: Duration, tls: &TlsConfig) -> Result<Self, ClientError> {
        Ok(Self::over(timeout, tls.client_config()?))
    }

    fn over(timeout: Duration, tls: tokio_rustls::rustls::ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HyperTransport { client, timeout }
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[async_trait]
impl Transport for HyperTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let uri: hyper::Uri = request
            .url
            .parse()
            .map_err(|_| TransportError::InvalidUrl(request.url.clone()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(TransportError::InvalidUrl(request.url.clone()));
        }
        let method = match request.method {
            Method::Get => hyper::Method::GET,
            Method::Post => hyper::Method::POST,
            Method::Put => hyper::Method::PUT,
            Method::Head => hyper::Method::HEAD,
        };
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let req = builder
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| TransportError::InvalidUrl(format!("{}: {e}", request.url)))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(request_error)?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| TransportError::Http(Box::new(e)))?
                .to_bytes();
            let headers = parts
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    v.to_str()
                        .ok()
                        .map(|v| (k.as_str().to_owned(), v.to_owned()))
                })
                .collect();
            Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers,
                body: body.to_vec(),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(self.timeout)),
        }
    }

    /// Bounded by the timeout until the answer's head arrives; the body then streams
    /// for as long as the server keeps it open.
    async fn open_stream(&self, request: HttpRequest) -> Result<HttpStream, TransportError> {
        let uri: hyper::Uri = request
            .url
            .parse()
            .map_err(|_| TransportError::InvalidUrl(request.url.clone()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(TransportError::InvalidUrl(request.url.clone()));
        }
        let method = hyper::Method::from_bytes(request.method.as_str().as_bytes())
            .map_err(|e| TransportError::InvalidUrl(format!("{}: {e}", request.url)))?;
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let req = builder
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| TransportError::InvalidUrl(format!("{}: {e}", request.url)))?;
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(request_error(e)),
            Err(_) => return Err(TransportError::Timeout(self.timeout)),
        };
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        let body = body
            .into_data_stream()
            .map(|r| r.map_err(|e| TransportError::Http(Box::new(e))));
        Ok(HttpStream {
            status: parts.status.as_u16(),
            headers,
            body: Box::pin(body),
        })
    }
}

/// A failed request as a [`TransportError`]: a TLS failure (not transient), a failed
/// connection, or a failed exchange.
fn request_error(e: hyper_util::client::legacy::Error) -> TransportError {
    if let Some(why) = crate::tls::tls_failure(&e) {
        return TransportError::Tls(why);
    }
    if e.is_connect() {
        TransportError::Connect(Box::new(e))
    } else {
        TransportError::Http(Box::new(e))
    }
}

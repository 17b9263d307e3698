//! Client connections: the accept loop and its limits, and the JSON body on the
//! errors HTTP/1 parsing answers before any request reaches the router.
//!
//! - At most `max_client_connections` connections are served at once; further
//!   ones wait in the listen queue (the kernel's backlog) until one closes, so
//!   descriptors never run out and the connections being served keep working.
//! - A connection must send a whole request head within `header_read_timeout`
//!   of starting to wait for one (accepted, or the previous answer sent).
//! - A connection that sends nothing for `idle_timeout` while waiting for a
//!   request (new, or kept alive after an answer) is closed.
//! - Request bodies are read under `body_read_timeout` (see `body.rs`).
//! - Every request is counted in flight until its answer is ready, and every closed
//!   connection is noted, so that the server gives its free memory back once it has
//!   been idle for a moment ([`crate::memory::IdleTrim`]).
//! - When the request line or a header does not parse (a garbage request line,
//!   `Content-Length: abc`, two different `Content-Length`s, control characters
//!   in a header value, too many headers), the HTTP parser answers by itself
//!   with an empty body; [`GuardedIo`] gives that answer the JSON error body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use inbetweenies_proto::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::error::{code_for_status, ServerError};
use crate::memory::IdleTrim;

/// The limits one server applies to its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    pub max_connections: usize,
    /// Also the time a TLS handshake has to finish.
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Quiet time after which free memory is given back (zero: never).
    pub idle_trim: Duration,
}

/// In every request's extensions: becomes `true` when the server starts shutting down,
/// so that a long-lived answer (the change feed's event stream) can end by itself
/// rather than hold the shutdown up.
#[derive(Clone, Debug)]
pub(crate) struct ServerClosing(pub watch::Receiver<bool>);

/// Serves `router` on `listener` until `shutdown` completes, then lets every
/// connection finish its request in flight and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (closing_tx, closing_rx) = watch::channel(false);
    let idle_trim = {
        let mut closing = closing_rx.clone();
        IdleTrim::spawn(limits.idle_trim, async move {
            let _ = closing.wait_for(|c| *c).await;
        })
    };
    tokio::pin!(shutdown);
    loop {
        // A slot first: over the cap, connections wait in the listen queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let closing = closing_rx.clone();
        let closing_ext = ServerClosing(closing_rx.clone());
        let tls = tls.clone();
        let trim = idle_trim.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Whatever the connection held is freed when it ends.
            let _closed = trim.as_ref().map(|t| t.connection());
            match tls {
                None => {
                    serve_connection(stream, peer, router, limits, closing, closing_ext, trim).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(
                                tls_stream,
                                peer,
                                router,
                                limits,
                                closing,
                                closing_ext,
                                trim,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection holds a slot until it ends.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// Serves one connection (plain TCP or TLS) until it closes, or gracefully once the
/// server is closing.
async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    router: axum::Router,
    limits: ConnLimits,
    mut closing: watch::Receiver<bool>,
    closing_ext: ServerClosing,
    trim: Option<Arc<IdleTrim>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(closing_ext.clone());
        // In flight until the answer is ready (its body, already built, is then written).
        let busy = trim.as_ref().map(|t| t.busy());
        let answer = router.clone().oneshot(req);
        async move {
            let answer = answer.await;
            drop(busy);
            answer
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let io = TokioIo::new(GuardedIo::new(stream, limits.idle_timeout));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = closing.wait_for(|c| *c).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}

/// A client socket with the idle timeout, and the JSON body on the HTTP parser's
/// own error answers.
#[derive(Debug)]
pub(crate) struct GuardedIo<S = TcpStream> {
    inner: S,
    idle: Duration,
    /// Armed when the connection waits for the client: at accept and after every write;
    /// disarmed by every byte read.
    idle_deadline: Pin<Box<Sleep>>,
    idle_armed: bool,
    /// Bytes of a rewritten answer still to be written.
    pending: Vec<u8>,
    pending_pos: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> GuardedIo<S> {
    fn new(inner: S, idle: Duration) -> Self {
        GuardedIo {
            inner,
            idle,
            idle_deadline: Box::pin(tokio::time::sleep(idle)),
            idle_armed: true,
            pending: Vec::new(),
            pending_pos: 0,
        }
    }

    fn arm_idle(&mut self) {
        self.idle_armed = true;
        let deadline = Instant::now() + self.idle;
        self.idle_deadline.as_mut().reset(deadline);
    }

    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_pos < self.pending.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_pos..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_pos += n;
        }
        self.pending.clear();
        self.pending_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.idle_armed = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.idle_armed && this.idle_deadline.as_mut().poll(cx).is_ready() {
                    this.idle_armed = false;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = json_parse_error_answer(buf) {
            this.pending = answer;
            this.pending_pos = 0;
            this.arm_idle();
            // Whatever cannot be written now goes out on the next write, flush or shutdown.
            match this.poll_pending(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => return Poll::Ready(Ok(buf.len())),
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.arm_idle();
        Poll::Ready(Ok(n))
    }

    /// Vectored writes go through, so hyper queues an answer's body as it is instead of
    /// copying it into the connection's write buffer ("flattening"): a flattened buffer
    /// grows to the largest answer (up to hyper's 400 KB cap) and is kept for the life of
    /// the connection, which under a thousand kept-alive clients held ~0.4 GB.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            // One slice (a bodiless answer is one): the parser-answer rewrite applies.
            (Some(one), None) => self.poll_write(cx, one),
            _ => {
                let this = &mut *self;
                ready!(this.poll_pending(cx))?;
                let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
                this.arm_idle();
                Poll::Ready(Ok(n))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// When `buf` is exactly a bodiless error answer without a content type (what the
/// HTTP parser sends for a request it cannot parse: 400, 414 or 431; every answer of
/// the router carries a JSON body), the same answer with the JSON error body.
fn json_parse_error_answer(buf: &[u8]) -> Option<Vec<u8>> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) || buf.len() < 12 {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let code: u16 = std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()?;
    let status = StatusCode::from_u16(code).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    let mut has_connection = false;
    for line in lines {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if line[name.len() + 1..].trim() != "0" {
                return None;
            }
            continue;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        has_connection |= name.eq_ignore_ascii_case("connection");
        kept.push(line);
    }
    let (detail, message) = parse_error_words(status);
    let mut body = ErrorBody::new(code_for_status(status), detail);
    body.error.message = message.to_owned();
    let json = serde_json::to_vec(&body).ok()?;
    let mut out = Vec::with_capacity(head_end + json.len() + 64);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in kept {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", json.len()).as_bytes());
    if !has_connection {
        // The parser closes the connection after such an answer.
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&json);
    Some(out)
}

/// The `detail` and `error.message` of an answer to a request that did not parse.
fn parse_error_words(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => (
            "Bad Request",
            "the request is not valid HTTP/1.1: malformed request line, header, or Content-Length",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "Request Header Fields Too Large",
            "too many request headers, or a request head over the size limit",
        ),
        StatusCode::URI_TOO_LONG => ("URI Too Long", "the request target is too long"),
        s => (
            s.canonical_reason().unwrap_or("Error"),
            "the request could not be read",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that writes vectored stays vectored through the guard, every slice of a
    /// vectored write arrives in order, and a parser's bodiless error answer written as a
    /// single slice still gets its JSON body.
    #[tokio::test]
    async fn vectored_writes_pass_through_and_parser_answers_are_still_rewritten() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut io = GuardedIo::new(server, Duration::from_secs(30));
        assert!(io.is_write_vectored(), "a TCP socket writes vectored");

        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
        let mut written = 0;
        while written < head.len() + 4 {
            let rest: Vec<io::IoSlice<'_>> = if written < head.len() {
                vec![
                    io::IoSlice::new(&head[written..]),
                    io::IoSlice::new(b"body"),
                ]
            } else {
                vec![io::IoSlice::new(&b"body"[written - head.len()..])]
            };
            written += io.write_vectored(&rest).await.expect("write");
        }
        let mut got = vec![0u8; head.len() + 4];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..head.len()], head);
        assert_eq!(&got[head.len()..], b"body");

        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let n = io
            .write_vectored(&[io::IoSlice::new(b""), io::IoSlice::new(bare)])
            .await
            .expect("write");
        assert_eq!(n, bare.len());
        io.flush().await.expect("flush");
        drop(io);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        let text = String::from_utf8(rest).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(
            text.contains("application/json"),
            "rewritten with a JSON body: {text}"
        );
    }

    #[test]
    fn parser_answers_get_the_json_body() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_parse_error_answer(raw).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["detail"], "Bad Request");
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");

        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(json_parse_error_answer(big).unwrap()).unwrap();
        assert!(out.contains("\"detail\":\"Request Header Fields Too Large\""));
    }

    #[test]
    fn other_writes_pass_unchanged() {
        // A JSON answer, a success, a head followed by its body, a body chunk.
        for raw in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"{\"detail\":\"x\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n",
        ] {
            assert!(json_parse_error_answer(raw).is_none(), "{raw:?}");
        }
    }
}

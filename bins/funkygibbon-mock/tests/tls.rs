//! HTTPS with a certificate made in the test: a client trusting it gets answers, a
//! plain-HTTP client gets none, and the connection limits still hold over TLS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use funkygibbon_mock::{serve_with_handle, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

struct Tls {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), funkygibbon_mock::ServerError>>,
    _dir: tempfile::TempDir,
}

async fn start(idle: Duration) -> Tls {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
    let config = ServerConfig::new(format!("sqlite://{}", dir.path().join("tls.db").display()))
        .with_admin_password(support::PASSWORD)
        .with_jwt_secret(support::SECRET)
        .with_tls(&cert_path, &key_path)
        .with_connection_limits(Duration::from_secs(5), Duration::from_secs(5), idle, 64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(serve_with_handle(
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
        ready_tx,
    ));
    ready_rx.await.expect("the server starts");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        addr,
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        stop,
        task,
        _dir: dir,
    }
}

async fn https_exchange(t: &Tls, request: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = t.connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_to_a_client_that_trusts_the_certificate() {
    let t = start(Duration::from_secs(5)).await;
    let answer = https_exchange(
        &t,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"healthy\""), "{answer}");
    let body = format!("{{\"password\":\"{}\"}}", support::PASSWORD);
    let answer = https_exchange(
        &t,
        &format!(
            "POST /api/v1/auth/admin/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"));
    // Parse errors still get the JSON body over TLS.
    let answer = https_exchange(&t, "NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"INVALID_REQUEST\""), "{answer}");
    // Plain HTTP to the TLS port gets no answer.
    let mut plain = tokio::net::TcpStream::connect(t.addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("healthy"));
    let _ = t.stop.send(());
    t.task.await.expect("task").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_holds_over_tls() {
    let t = start(Duration::from_millis(300)).await;
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = t.connector.connect(name, tcp).await.expect("handshake");
    // Silent after the handshake: the server closes the connection.
    let mut buf = [0u8; 64];
    let started = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let _ = t.stop.send(());
    t.task.await.expect("task").expect("clean stop");
}

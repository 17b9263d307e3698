//! The client against the real server over TLS and with signed messages: https with a
//! custom CA and with a pinned certificate, an untrusted server refused at once, signed
//! requests and checked answers, a token refreshed before it expires, and a token that
//! never shows in logs, events, errors or settings.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use goodies_client::{
    certificate_sha256, BlowingOffClient, ClientError, EntityType, HttpRequest, HttpResponse,
    HyperTransport, JsonObject, SigningKey, SigningTransport, TlsConfig, Transport, TransportError,
    REFRESH_PATH, SYNC_PATH,
};
use goodies_e2e::{test_config, TestServer, PASSWORD};

/// A CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files.
struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    leaf_der: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn pki(self_signed: bool) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().expect("dir");
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let leaf_key = KeyPair::generate().expect("key");
    let leaf_params = CertificateParams::new(names).expect("params");
    let (ca_pem, leaf) = if self_signed {
        let leaf = leaf_params.self_signed(&leaf_key).expect("self-signed");
        (leaf.pem(), leaf)
    } else {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("signed");
        (ca.pem(), leaf)
    };
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, leaf.pem()).expect("write cert");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");
    Pki {
        ca_pem,
        cert,
        key,
        leaf_der: leaf.der().to_vec(),
        _dir: dir,
    }
}

async fn tls_server(pki: &Pki) -> anyhow::Result<(TestServer, String)> {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let server = TestServer::start_with(move |c| c.with_tls(cert, key)).await?;
    let url = server.url.replacen("http://", "https://", 1);
    Ok((server, url))
}

/// Counts the requests that go through, by path.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Transport>,
    paths: Mutex<Vec<String>>,
}

impl Counting {
    fn new(inner: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            paths: Mutex::new(Vec::new()),
        })
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Transport for Counting {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let path = request
            .url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{}", p.split('?').next().unwrap_or("")))
            .unwrap_or_default();
        self.paths.lock().expect("lock").push(path);
        self.inner.send(request).await
    }
}

async fn client_at(
    dir: &Path,
    name: &str,
    tls: TlsConfig,
    key: Option<SigningKey>,
) -> anyhow::Result<BlowingOffClient> {
    let mut b = BlowingOffClient::builder(dir.join(format!("{name}.db")))
        .config(test_config())
        .tls(tls);
    if let Some(k) = key {
        b = b.signing_key(k);
    }
    Ok(b.open().await?)
}

async fn edit_and_sync(c: &BlowingOffClient, server: &TestServer) -> anyhow::Result<()> {
    let home = c.create_home("Home over TLS").await?;
    let r = c.sync().await?;
    anyhow::ensure!(r.errors.is_empty(), "sync errors: {:?}", r.errors);
    anyhow::ensure!(r.acknowledged >= 1, "nothing acknowledged: {r:?}");
    anyhow::ensure!(
        server.handle.store().entity(&home.id).await?.is_some(),
        "the home reached the server"
    );
    Ok(())
}

/// (a) A client that trusts the hub's own CA logs in and syncs over https.
#[tokio::test]
async fn https_with_a_custom_ca_syncs() -> anyhow::Result<()> {
    let pki = pki(false);
    let (server, url) = tls_server(&pki).await?;
    let tls = TlsConfig::platform().with_ca_pem(pki.ca_pem.as_bytes())?;
    let c = client_at(server.dir.path(), "ca", tls, None).await?;
    c.login(&url, PASSWORD).await?;
    edit_and_sync(&c, &server).await?;
    assert_eq!(
        c.settings().await?.server_url.as_deref(),
        Some(url.as_str())
    );
    server.stop().await
}

/// (b) A client that pins the hub's self-signed certificate (SHA-256 of its DER) syncs.
#[tokio::test]
async fn https_with_a_pinned_certificate_syncs() -> anyhow::Result<()> {
    let pki = pki(true);
    let (server, url) = tls_server(&pki).await?;
    let pin = certificate_sha256(&pki.leaf_der);
    let tls = TlsConfig::platform().with_pinned_sha256_hex(&pin)?;
    let c = client_at(server.dir.path(), "pin", tls, None).await?;
    c.login(&url, PASSWORD).await?;
    edit_and_sync(&c, &server).await?;
    server.stop().await
}

/// (c) A server whose certificate is not the trusted one is refused at once (one
/// request, not the retries a transient failure gets) with an error that says why:
/// signed by another CA, not the pinned certificate, or unknown to the platform's roots.
#[tokio::test]
async fn an_untrusted_server_is_refused_at_once() -> anyhow::Result<()> {
    let pki_served = pki(false);
    let other = pki(false);
    let (server, url) = tls_server(&pki_served).await?;
    let cases = [
        (
            "another CA",
            TlsConfig::platform().with_ca_pem(other.ca_pem.as_bytes())?,
            "not trusted",
        ),
        (
            "another pin",
            TlsConfig::platform().with_pinned_sha256_hex(&certificate_sha256(&other.leaf_der))?,
            "is not the pinned one",
        ),
        ("platform roots", TlsConfig::platform(), "not trusted"),
    ];
    for (what, tls, says) in cases {
        let counting = Counting::new(Arc::new(HyperTransport::with_tls(
            Duration::from_secs(10),
            &tls,
        )?));
        let c = BlowingOffClient::builder(server.dir.path().join(format!("{what}.db")))
            .config(test_config())
            .transport(counting.clone())
            .open()
            .await?;
        let e = c.login(&url, PASSWORD).await.expect_err(what);
        let chain = goodies_client::error_chain(&e);
        assert!(
            matches!(&e, ClientError::Untrusted(TransportError::Tls(_))),
            "{what}: {chain}"
        );
        assert!(chain.contains(says), "{what}: {chain}");
        assert!(!e.is_unreachable(), "{what}: not an unreachable server");
        assert_eq!(counting.paths().len(), 1, "{what}: sent once, not retried");

        // A sync with a stored token ends with the same error, not a report.
        c.connect(&url, Some("stored-token")).await?;
        let e = c.sync().await.expect_err(what);
        assert!(matches!(e, ClientError::Untrusted(_)), "{what}: {e}");
        assert_eq!(counting.paths().len(), 2, "{what}: one sync request");
    }
    server.stop().await
}

/// https to a server that speaks plain http fails at once and says so.
#[tokio::test]
async fn https_to_a_plain_server_says_so() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.url.replacen("http://", "https://", 1);
    let c = client_at(server.dir.path(), "plain", TlsConfig::platform(), None).await?;
    let e = c.login(&url, PASSWORD).await.expect_err("plain http");
    let chain = goodies_client::error_chain(&e);
    assert!(matches!(e, ClientError::Untrusted(_)), "{chain}");
    assert!(chain.contains("does not speak TLS"), "{chain}");
    server.stop().await
}

const KEY: &str = "a-shared-signing-key-for-tests";

/// With the server's key the client signs its requests (the server refuses unsigned
/// ones) and checks every answer's signature; without it, it gets the server's error.
#[tokio::test]
async fn signed_requests_and_answers() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_hmac_key(KEY)).await?;
    let signed = client_at(
        server.dir.path(),
        "signed",
        TlsConfig::platform(),
        Some(SigningKey::new(KEY)?),
    )
    .await?;
    signed.login(&server.url, PASSWORD).await?;
    edit_and_sync(&signed, &server).await?;
    // Big enough to be gzipped both ways: the body is hashed as it reads decompressed.
    let mut big = JsonObject::new();
    big.insert("text".into(), serde_json::json!("x".repeat(20_000)));
    signed
        .create_entity(EntityType::Note, "a long note", big)
        .await?;
    let r = signed.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.acknowledged, 1);

    // Without the key: the server's clear refusal.
    let unsigned = client_at(server.dir.path(), "unsigned", TlsConfig::platform(), None).await?;
    let e = unsigned
        .login(&server.url, PASSWORD)
        .await
        .expect_err("unsigned");
    let chain = goodies_client::error_chain(&e);
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{chain}");
    assert!(chain.contains("x-inbetweenies-signature"), "{chain}");

    // With another key: the server refuses the request, and its answer (signed with
    // the server's key) does not verify either: refused at once, clearly.
    let wrong = client_at(
        server.dir.path(),
        "wrong",
        TlsConfig::platform(),
        Some(SigningKey::new("not-the-key")?),
    )
    .await?;
    let e = wrong
        .login(&server.url, PASSWORD)
        .await
        .expect_err("wrong key");
    let chain = goodies_client::error_chain(&e);
    assert!(
        matches!(e, ClientError::Untrusted(TransportError::Signature(_))),
        "{chain}"
    );
    assert!(chain.contains("wrong signature"), "{chain}");
    server.stop().await
}

/// Alters the body of every sync answer on the way back, as a man in the middle would.
#[derive(Debug)]
struct Tamper(Arc<dyn Transport>);

#[async_trait]
impl Transport for Tamper {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let is_sync = request.url.contains(SYNC_PATH);
        let mut resp = self.0.send(request).await?;
        if is_sync && resp.header("content-encoding").is_none() {
            resp.body.extend_from_slice(b" ");
        }
        Ok(resp)
    }
}

/// An answer whose body was changed after the server signed it is refused, and
/// nothing of it is applied; an answer from a server that does not sign is refused too.
#[tokio::test]
async fn an_answer_with_a_bad_signature_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_hmac_key(KEY)).await?;
    let plain = Counting::new(Arc::new(HyperTransport::new()));
    let tampered: Arc<dyn Transport> = Arc::new(SigningTransport::new(
        Arc::new(Tamper(plain.clone())),
        SigningKey::new(KEY)?,
        1 << 24,
    ));
    let c = server.client_with_transport("tampered", tampered).await?;
    c.create_home("Home").await?;
    let e = c.sync().await.expect_err("tampered answer");
    let chain = goodies_client::error_chain(&e);
    assert!(
        matches!(e, ClientError::Untrusted(TransportError::Signature(_))),
        "{chain}"
    );
    assert_eq!(
        plain.paths().iter().filter(|p| *p == SYNC_PATH).count(),
        1,
        "not retried"
    );
    assert_eq!(c.pending_changes().await?, 1, "the edit stays queued");

    // A client with a key against a server without one: its answers are not signed.
    let unsigning = TestServer::start().await?;
    let c = client_at(
        unsigning.dir.path(),
        "keyed",
        TlsConfig::platform(),
        Some(SigningKey::new(KEY)?),
    )
    .await?;
    let e = c
        .login(&unsigning.url, PASSWORD)
        .await
        .expect_err("unsigned answer");
    assert!(
        goodies_client::error_chain(&e).contains("is not signed"),
        "{e}"
    );
    unsigning.stop().await?;
    server.stop().await
}

/// A token with less than 5 minutes (or a tenth of its lifetime) left is refreshed
/// before the sync request; a fresh one is not.
#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_before_the_sync() -> anyhow::Result<()> {
    let server = TestServer::start_with(|mut c| {
        c.admin_token_ttl = Duration::from_secs(120);
        c
    })
    .await?;
    let counting = Counting::new(Arc::new(HyperTransport::new()));
    let c = server
        .client_with_transport("short", counting.clone())
        .await?;
    let before = c.settings().await?.auth_token.expect("token");
    c.create_home("Home").await?;
    let r = c.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let paths = counting.paths();
    let refresh = paths.iter().position(|p| p == REFRESH_PATH);
    let sync = paths.iter().position(|p| p == SYNC_PATH);
    assert!(
        matches!((refresh, sync), (Some(r), Some(s)) if r < s),
        "refresh before sync: {paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| *p == REFRESH_PATH).count(),
        1,
        "{paths:?}"
    );
    // The token the refresh stored is one the server accepts.
    let after = c.settings().await?.auth_token.expect("token");
    assert!(goodies_client::token_expires_at(&after) >= goodies_client::token_expires_at(&before));
    assert_eq!(c.verify_token().await?.role.as_deref(), Some("admin"));

    // The default lifetime (7 days): no refresh.
    let long = TestServer::start().await?;
    let counting = Counting::new(Arc::new(HyperTransport::new()));
    let c = long.client_with_transport("long", counting.clone()).await?;
    c.sync().await?;
    assert!(
        !counting.paths().iter().any(|p| p == REFRESH_PATH),
        "{:?}",
        counting.paths()
    );
    long.stop().await?;
    server.stop().await
}

/// A writer that keeps what the log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The token is in none of: the client's logs at trace level (login, sync, refresh, a
/// refused sync), its events, the Debug of its errors, settings, requests and client.
#[tokio::test]
async fn the_token_never_shows() -> anyhow::Result<()> {
    use futures::StreamExt;
    let server = TestServer::start_with(|mut c| {
        c.admin_token_ttl = Duration::from_secs(120);
        c
    })
    .await?;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let c = server.client("logged").await?;
    let mut events = c.observe_changes();
    let mut seen = Vec::new();
    let first = c.settings().await?.auth_token.expect("token");
    c.create_home("Home").await?;
    c.sync().await?;
    let token = c.settings().await?.auth_token.expect("token");
    // A refused token: the error and its events.
    c.connect(&server.url, Some(&format!("{token}x"))).await?;
    let refused = c.sync().await.expect_err("refused");
    let settings = c.settings().await?;
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        seen.push(format!("{e:?}"));
    }
    assert!(!seen.is_empty(), "the syncs emitted events");
    let request = HttpRequest {
        method: goodies_client::Method::Get,
        url: server.url.clone(),
        headers: vec![("authorization".into(), format!("Bearer {token}"))],
        body: Vec::new(),
    };
    let logs = String::from_utf8(captured.0.lock().expect("lock").clone())?;
    assert!(logs.len() > 1_000, "the client logged: {logs}");
    let texts = [
        ("logs", logs),
        ("events", seen.join("\n")),
        ("error", format!("{refused:?} {refused}")),
        ("settings", format!("{settings:?}")),
        ("request", format!("{request:?}")),
        ("client", format!("{c:?}")),
    ];
    for t in [&first, &token] {
        // The signature part of a JWT is what makes it a credential.
        let secret = t.rsplit('.').next().expect("signature");
        for (what, text) in &texts {
            assert!(
                !text.contains(secret),
                "the token shows in the {what}: {text}"
            );
        }
    }
    server.stop().await
}

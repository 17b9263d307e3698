//! A server that refuses gzipped request bodies, as the Python reference does (400): the
//! client falls back to a plain body once, remembers the refusal for that server in its
//! settings, and a reopened client sends that server no gzipped body at all. Another
//! server still gets gzip, and the refusal is tried again once it is older than
//! `GZIP_RETRY_AFTER_DAYS`.
//!
//! The refusing server is a small HTTP proxy in front of the real server (SQLite and
//! PostgreSQL): it answers 400 to any body with `content-encoding: gzip`, forwards
//! everything else, and counts both.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use goodies_client::{
    keys, BlowingOffClient, EntityType, GzipRefusals, JsonObject, Timestamp, GZIP_RETRY_AFTER_DAYS,
};
use goodies_e2e::{quiet_sync, test_config, Backend, TestServer, PASSWORD};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

/// What a proxy saw.
#[derive(Debug, Default)]
struct Counts {
    /// Requests whose body was gzipped.
    gzip_bodies: AtomicU32,
    /// Requests with a plain, non-empty body.
    plain_bodies: AtomicU32,
}

/// An HTTP proxy on `127.0.0.1:0` in front of `upstream`.
struct Proxy {
    url: String,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: &str, refuse_gzip: bool) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let upstream = upstream.to_owned();
        let seen = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, seen) = (client.clone(), upstream.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (client, upstream, seen) =
                            (client.clone(), upstream.clone(), seen.clone());
                        async move { relay(req, &client, &upstream, refuse_gzip, &seen).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Proxy { url, counts, task })
    }

    fn gzip_bodies(&self) -> u32 {
        self.counts.gzip_bodies.load(Ordering::SeqCst)
    }

    fn plain_bodies(&self) -> u32 {
        self.counts.plain_bodies.load(Ordering::SeqCst)
    }
}

async fn relay(
    req: Request<Incoming>,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
    refuse_gzip: bool,
    seen: &Counts,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let gzipped = parts
        .headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if gzipped {
        seen.gzip_bodies.fetch_add(1, Ordering::SeqCst);
    } else if !body.is_empty() {
        seen.plain_bodies.fetch_add(1, Ordering::SeqCst);
    }
    if gzipped && refuse_gzip {
        let answer = json!({"detail": "There was an error parsing the body"}).to_string();
        return Ok(Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer)))
            .expect("a response"));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if k != "host" {
            forward = forward.header(k, v);
        }
    }
    let forward = forward.body(Full::new(body)).expect("a request");
    let answer = match client.request(forward).await {
        Ok(a) => a,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(e.to_string())))
                .expect("a response"))
        }
    };
    let (parts, body) = answer.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut out = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if k != "transfer-encoding" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    Ok(out.body(Full::new(body)).expect("a response"))
}

/// Enough notes that the push body is well past the 1 KB gzip threshold.
async fn write_notes(c: &BlowingOffClient, tag: &str) -> anyhow::Result<()> {
    for i in 0..8 {
        let mut content = JsonObject::new();
        content.insert(
            "text".into(),
            json!(format!("{tag} {i} {}", "x".repeat(300))),
        );
        c.create_entity(EntityType::Note, &format!("{tag}-{i}"), content)
            .await?;
    }
    Ok(())
}

async fn open(server: &TestServer, name: &str) -> anyhow::Result<BlowingOffClient> {
    Ok(
        BlowingOffClient::builder(server.dir.path().join(format!("{name}.db")))
            .config(test_config())
            .open()
            .await?,
    )
}

async fn refusals(c: &BlowingOffClient) -> anyhow::Result<GzipRefusals> {
    let raw = c
        .store()
        .setting(keys::GZIP_REFUSED)
        .await?
        .context("no gzip refusal remembered")?;
    Ok(serde_json::from_str(&raw)?)
}

async fn remembered_per_server(backend: Backend) -> anyhow::Result<()> {
    let Some(server) = TestServer::start_on(backend, |c| c).await? else {
        return Ok(());
    };
    let refusing = Proxy::start(&server.url, true).await?;
    let accepting = Proxy::start(&server.url, false).await?;

    // First process: one refused gzip body, resent plain, remembered.
    {
        let c = open(&server, "phone").await?;
        c.login(&refusing.url, PASSWORD).await?;
        write_notes(&c, "first").await?;
        quiet_sync(&c).await?;
        assert_eq!(refusing.gzip_bodies(), 1, "one gzipped push, refused");
        let r = refusals(&c).await?;
        assert!(r.refused_recently(&refusing.url, Timestamp::now()), "{r:?}");
        write_notes(&c, "same-process").await?;
        quiet_sync(&c).await?;
        assert_eq!(refusing.gzip_bodies(), 1, "not tried again in this process");
    }

    // Second process (the client reopened from its file): plain bodies only.
    let plain_before = refusing.plain_bodies();
    let c = open(&server, "phone").await?;
    write_notes(&c, "second").await?;
    quiet_sync(&c).await?;
    assert_eq!(
        refusing.gzip_bodies(),
        1,
        "the reopened client sent no gzip body"
    );
    assert!(refusing.plain_bodies() > plain_before, "it pushed plain");
    let on_server = server
        .handle
        .store()
        .entities(&goodies_client::EntityQuery::default())
        .await?
        .len();
    assert_eq!(on_server, 24, "every note reached the server");

    // Another server starts fresh: gzip is used there.
    let token = c.settings().await?.auth_token.context("a token")?;
    c.connect(&accepting.url, Some(&token)).await?;
    write_notes(&c, "elsewhere").await?;
    quiet_sync(&c).await?;
    assert!(accepting.gzip_bodies() >= 1, "the other server got gzip");
    assert_eq!(refusing.gzip_bodies(), 1);

    // Back on the refusing server, still remembered...
    c.connect(&refusing.url, Some(&token)).await?;
    write_notes(&c, "back").await?;
    quiet_sync(&c).await?;
    assert_eq!(
        refusing.gzip_bodies(),
        1,
        "still remembered for that server"
    );

    // ...until the refusal is older than the retry period: then gzip is tried once more,
    // refused, and remembered afresh.
    let mut r = refusals(&c).await?;
    let old =
        Timestamp::now().saturating_add_micros(-(GZIP_RETRY_AFTER_DAYS * 86_400 + 60) * 1_000_000);
    r.0.insert(refusing.url.clone(), old);
    c.store()
        .set_setting(keys::GZIP_REFUSED, &serde_json::to_string(&r)?)
        .await?;
    drop(c);
    let c = open(&server, "phone").await?;
    write_notes(&c, "retry").await?;
    quiet_sync(&c).await?;
    assert_eq!(
        refusing.gzip_bodies(),
        2,
        "tried once after the retry period"
    );
    let r = refusals(&c).await?;
    assert!(r.refused_recently(&refusing.url, Timestamp::now()), "{r:?}");
    write_notes(&c, "after-retry").await?;
    quiet_sync(&c).await?;
    assert_eq!(refusing.gzip_bodies(), 2);

    drop(c);
    drop((refusing, accepting));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_refusal_is_remembered_per_server_sqlite() -> anyhow::Result<()> {
    remembered_per_server(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_refusal_is_remembered_per_server_postgres() -> anyhow::Result<()> {
    remembered_per_server(Backend::Postgres).await
}

//! Blobs at `/api/v1/blobs/{sha256}` (PROTOCOL §14) on the real server over real HTTP,
//! on SQLite and PostgreSQL: chunked upload, resume after an interrupted upload, the
//! held offset in `HEAD`, ranged `GET`, checksum mismatch refused and discarded, a held
//! blob never uploaded twice, the size limit, who may do what, and the `has_blob` edge
//! that links a blob to an entity, synced by the client library.

mod support;

use std::time::{Duration, Instant};

use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy};
use goodies_store::RelationshipQuery;
use inbetweenies_proto::{EntityType, RelationshipType};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// Deterministic bytes that do not compress.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn path(sha: &str) -> String {
    format!("/api/v1/blobs/{sha}")
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn put_range(
    s: &TestServer,
    token: &str,
    sha: &str,
    data: &[u8],
    start: usize,
    end: usize,
) -> reqwest::Response {
    s.http
        .put(s.url(&path(sha)))
        .bearer_auth(token)
        .header("content-type", "application/pdf")
        .header(
            "content-range",
            format!("bytes {start}-{}/{}", end - 1, data.len()),
        )
        .body(data[start..end].to_vec())
        .send()
        .await
        .expect("put")
}

async fn head(s: &TestServer, token: &str, sha: &str) -> reqwest::Response {
    s.http
        .head(s.url(&path(sha)))
        .bearer_auth(token)
        .send()
        .await
        .expect("head")
}

async fn get(s: &TestServer, token: &str, sha: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = s.http.get(s.url(&path(sha))).bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.expect("get")
}

async fn error_code(res: reqwest::Response) -> (u16, String) {
    let (status, body) = support::read(res).await;
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

async fn chunked_upload_then_ranged_reads(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let data = bytes(3 * MIB + 123, 1);
    let id = sha(&data);
    assert_eq!(head(&s, &admin, &id).await.status(), 404);
    let cuts = [0, MIB, 2 * MIB + 7, data.len()];
    for w in cuts.windows(2) {
        let res = put_range(&s, &admin, &id, &data, w[0], w[1]).await;
        let last = w[1] == data.len();
        assert_eq!(res.status(), if last { 201 } else { 202 });
        assert_eq!(header(&res, "upload-offset"), Some(w[1].to_string()));
        assert_eq!(
            header(&res, "upload-complete").as_deref(),
            Some(if last { "true" } else { "false" })
        );
        let h = head(&s, &admin, &id).await;
        assert_eq!(h.status(), 200);
        assert_eq!(header(&h, "upload-offset"), Some(w[1].to_string()));
        assert_eq!(header(&h, "upload-length"), Some(data.len().to_string()));
        if !last {
            // Not visible before it is complete.
            assert_eq!(get(&s, &admin, &id, None).await.status(), 404);
        }
    }
    let whole = get(&s, &admin, &id, None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(
        header(&whole, "content-type").as_deref(),
        Some("application/pdf")
    );
    assert_eq!(header(&whole, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &data[..]);

    let part = get(&s, &admin, &id, Some("bytes=1048570-1048589")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range"),
        Some(format!("bytes 1048570-1048589/{}", data.len()))
    );
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &data[1_048_570..1_048_590]
    );
    let tail = get(&s, &admin, &id, Some("bytes=-100")).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &data[data.len() - 100..]
    );
    let from = get(&s, &admin, &id, Some(&format!("bytes={}-", 3 * MIB))).await;
    assert_eq!(from.bytes().await.unwrap().as_ref(), &data[3 * MIB..]);
    let past = get(&s, &admin, &id, Some(&format!("bytes={}-", data.len()))).await;
    assert_eq!(past.status(), 416);
    assert_eq!(
        header(&past, "content-range"),
        Some(format!("bytes */{}", data.len()))
    );

    // The same bytes in one PUT without Content-Range, for a second blob.
    let small = bytes(5000, 2);
    let res = s
        .http
        .put(s.url(&path(&sha(&small))))
        .bearer_auth(&admin)
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["size"], 5000);
    assert_eq!(body["content_type"], "application/octet-stream");
    let got = get(&s, &admin, &sha(&small), None).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), &small[..]);
    s.shutdown().await.unwrap();
}

/// An upload cut off mid-body keeps what arrived; `HEAD` says how much; the client goes
/// on from there. A PUT from another offset is refused and told the right one.
async fn an_interrupted_upload_resumes(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let data = bytes(5 * MIB, 3);
    let id = sha(&data);
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head_text = format!(
        "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Range: bytes 0-{}/{}\r\nContent-Length: {}\r\n\r\n",
        path(&id),
        data.len() - 1,
        data.len(),
        data.len()
    );
    conn.write_all(head_text.as_bytes()).await.unwrap();
    conn.write_all(&data[..2 * MIB]).await.unwrap();
    conn.flush().await.unwrap();
    // The server stores whole chunks as they arrive: wait (bounded) until it holds 2 MiB.
    let started = Instant::now();
    loop {
        let h = head(&s, &admin, &id).await;
        if header(&h, "upload-offset") == Some((2 * MIB).to_string()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first 2 MiB were not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);

    // From the wrong offset: 409 with the right one.
    let started = Instant::now();
    let wrong = loop {
        let res = put_range(&s, &admin, &id, &data, 0, MIB).await;
        let offset = header(&res, "upload-offset");
        let (status, code) = error_code(res).await;
        if code == "BLOB_UPLOAD_CONFLICT" && started.elapsed() < Duration::from_secs(20) {
            // The cut-off PUT has not finished on the server yet.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        break (status, code, offset);
    };
    assert_eq!(
        wrong,
        (
            409,
            "BLOB_OFFSET_MISMATCH".to_owned(),
            Some((2 * MIB).to_string())
        )
    );
    let res = put_range(&s, &admin, &id, &data, 2 * MIB, data.len()).await;
    assert_eq!(res.status(), 201);
    let got = get(&s, &admin, &id, None).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
    s.shutdown().await.unwrap();
}

/// Bytes that do not hash to the address are refused when the last byte arrives, and the
/// upload is gone: nothing to `HEAD`, nothing to `GET`, and a correct upload starts over.
async fn a_checksum_mismatch_is_refused_and_discarded(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let data = bytes(MIB + 10, 4);
    let id = sha(&data);
    let mut wrong = data.clone();
    wrong[MIB + 3] ^= 1;
    assert_eq!(
        put_range(&s, &admin, &id, &wrong, 0, MIB).await.status(),
        202
    );
    let res = put_range(&s, &admin, &id, &wrong, MIB, wrong.len()).await;
    let (status, body) = support::read(res).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "BLOB_CHECKSUM_MISMATCH");
    assert_eq!(body["error"]["field"], "sha256");
    assert_eq!(head(&s, &admin, &id).await.status(), 404);
    assert_eq!(get(&s, &admin, &id, None).await.status(), 404);
    let res = put_range(&s, &admin, &id, &data, 0, data.len()).await;
    assert_eq!(res.status(), 201);

    // An address that is not a SHA-256.
    let res = s
        .http
        .put(s.url("/api/v1/blobs/ABC"))
        .bearer_auth(&admin)
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, body) = support::read(res).await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("sha256")));
    s.shutdown().await.unwrap();
}

/// A blob the server holds is answered at once: the server does not wait for (or read)
/// the body, and `HEAD` says complete.
async fn a_held_blob_is_not_uploaded_again(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let data = bytes(100_000, 5);
    let id = sha(&data);
    assert_eq!(
        put_range(&s, &admin, &id, &data, 0, data.len())
            .await
            .status(),
        201
    );
    let h = head(&s, &admin, &id).await;
    assert_eq!(header(&h, "upload-complete").as_deref(), Some("true"));
    assert_eq!(header(&h, "content-length"), Some("100000".into()));

    // Announce 10 MB and send none of it: the answer comes anyway.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\nContent-Length: 10000000\r\n\r\n",
        path(&id)
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("upload-offset: 100000"), "{text}");
    assert!(text.contains("upload-complete: true"), "{text}");
    s.shutdown().await.unwrap();
}

async fn the_size_limit_is_413(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_max_blob_size(1000)).await else {
        return;
    };
    let admin = s.login().await;
    let big = bytes(1001, 6);
    let res = s
        .http
        .put(s.url(&path(&sha(&big))))
        .bearer_auth(&admin)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await, (413, "PAYLOAD_TOO_LARGE".into()));
    // A first chunk that declares too large a total is refused too.
    let res = put_range(&s, &admin, &sha(&big), &big, 0, 10).await;
    assert_eq!(error_code(res).await, (413, "PAYLOAD_TOO_LARGE".into()));
    assert_eq!(head(&s, &admin, &sha(&big)).await.status(), 404);
    let fits = bytes(1000, 7);
    assert_eq!(
        put_range(&s, &admin, &sha(&fits), &fits, 0, 1000)
            .await
            .status(),
        201
    );
    s.shutdown().await.unwrap();
}

/// Guests read blobs but cannot upload them; without a token nothing is answered.
async fn guests_read_and_do_not_write(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let guest = s.guest_token(&admin).await;
    let data = bytes(2000, 8);
    let id = sha(&data);
    let res = put_range(&s, &guest, &id, &data, 0, data.len()).await;
    assert_eq!(error_code(res).await, (403, "FORBIDDEN".into()));
    assert_eq!(head(&s, &admin, &id).await.status(), 404);
    assert_eq!(
        put_range(&s, &admin, &id, &data, 0, data.len())
            .await
            .status(),
        201
    );
    assert_eq!(head(&s, &guest, &id).await.status(), 200);
    let got = get(&s, &guest, &id, Some("bytes=0-9")).await;
    assert_eq!(got.status(), 206);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..10]);
    let res = s.http.get(s.url(&path(&id))).send().await.unwrap();
    assert_eq!(error_code(res).await, (401, "UNAUTHORIZED".into()));
    let res = s
        .http
        .put(s.url(&path(&id)))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 401);
    s.shutdown().await.unwrap();
}

async fn client(
    s: &TestServer,
    dir: &tempfile::TempDir,
    name: &str,
    token: &str,
) -> BlowingOffClient {
    let c = BlowingOffClient::builder(dir.path().join(format!("{name}.db")))
        .config(ClientConfig::default().with_retry(RetryPolicy::immediate(3)))
        .open()
        .await
        .expect("open client");
    c.connect(&s.base, Some(token)).await.expect("connect");
    c
}

/// The link between a blob and an entity is a `has_blob` relationship whose properties
/// name the blob: one client writes it, another syncs it and fetches the bytes it names.
async fn the_has_blob_edge_syncs_to_other_clients(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let pdf = bytes(300_000, 9);
    let id = sha(&pdf);
    assert_eq!(
        put_range(&s, &admin, &id, &pdf, 0, pdf.len())
            .await
            .status(),
        201
    );
    let dir = tempfile::tempdir().unwrap();
    let writer = client(&s, &dir, "writer", &admin).await;
    let oven = writer
        .create_entity(EntityType::Device, "Oven", Default::default())
        .await
        .unwrap();
    let manual = writer
        .create_entity(EntityType::Manual, "Oven manual", Default::default())
        .await
        .unwrap();
    let props = json!({"sha256": id, "size": pdf.len(), "content_type": "application/pdf", "filename": "oven.pdf"});
    writer
        .relate(
            &oven.id,
            &manual.id,
            RelationshipType::HasBlob,
            props.as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    let pushed = writer.sync().await.unwrap();
    assert!(pushed.errors.is_empty(), "{:?}", pushed.errors);

    let guest = s.guest_token(&admin).await;
    let reader = client(&s, &dir, "reader", &guest).await;
    let pulled = reader.sync().await.unwrap();
    assert!(pulled.errors.is_empty(), "{:?}", pulled.errors);
    let edges = reader
        .relationships(&RelationshipQuery {
            from_entity_id: Some(oven.id.clone()),
            relationship_type: Some(RelationshipType::HasBlob),
            ..RelationshipQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0].to_entity_id, manual.id);
    assert_eq!(Value::Object(edges[0].properties.clone()), props);
    let named = edges[0].properties["sha256"].as_str().unwrap();
    let got = get(&s, &guest, named, None).await.bytes().await.unwrap();
    assert_eq!(sha(&got), named, "the bytes the edge names");
    s.shutdown().await.unwrap();
}

/// The body read timeout is a limit on silence, not on the whole upload: an upload that
/// keeps sending goes on for several timeouts; one that stops keeps what arrived.
async fn a_slow_upload_that_progresses_is_not_cut_off(backend: Backend) {
    let timeout = Duration::from_millis(400);
    let Some(s) = TestServer::start_with(backend, |c| {
        c.with_connection_limits(
            Duration::from_secs(30),
            timeout,
            Duration::from_secs(15),
            64,
        )
    })
    .await
    else {
        return;
    };
    let admin = s.login().await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // Sends the head, then `pieces` of 4 KiB 100 ms apart; answers what the server said.
    let send = |data: Vec<u8>, pieces: usize| {
        let (addr, admin) = (addr.clone(), admin.clone());
        async move {
            let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\nContent-Length: {}\r\n\r\n",
                path(&sha(&data)),
                data.len()
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            for piece in data.chunks(4096).take(pieces) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.write_all(piece).await.unwrap();
            }
            let mut answer = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
                .await
                .expect("an answer")
                .unwrap();
            answer.truncate(n);
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    // 20 pieces 100 ms apart: 2 s in all, five body timeouts.
    let data = bytes(20 * 4096, 10);
    let started = Instant::now();
    let answer = send(data.clone(), 20).await;
    assert!(started.elapsed() > timeout * 4);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    // Silent for longer than the timeout after 2 pieces: what arrived is kept.
    let other = bytes(4 * 4096, 11);
    let answer = send(other.clone(), 2).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let h = head(&s, &admin, &sha(&other)).await;
    assert_eq!(header(&h, "upload-offset"), Some((2 * 4096).to_string()));
    s.shutdown().await.unwrap();
}

async fn blobs_are_announced_as_a_capability(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let mut body = support::sync_body("phone", "delta", json!([]));
    body["capabilities"] = json!(["blobs"]);
    let (status, answer) = s.post_json(&admin, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("blobs")),
        "{answer}"
    );
    s.shutdown().await.unwrap();
}

on_both_backends!(
    chunked_upload_then_ranged_reads,
    an_interrupted_upload_resumes,
    a_checksum_mismatch_is_refused_and_discarded,
    a_held_blob_is_not_uploaded_again,
    the_size_limit_is_413,
    guests_read_and_do_not_write,
    the_has_blob_edge_syncs_to_other_clients,
    blobs_are_announced_as_a_capability,
    a_slow_upload_that_progresses_is_not_cut_off,
);

/// Two servers on one PostgreSQL database: an upload begun through one is resumed and
/// finished through the other, which has no hash state for it and hashes the bytes from
/// the database before making the blob visible; both then serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_on_another_server_process_on_postgres() {
    let Some(one) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let shared = one.database_url.clone();
    let two = TestServer::start_with(Backend::Postgres, move |mut c| {
        c.database_url = shared;
        c
    })
    .await
    .expect("second server");
    let (a, b) = (one.login().await, two.login().await);
    let data = bytes(3 * MIB + 5, 12);
    let id = sha(&data);
    assert_eq!(
        put_range(&one, &a, &id, &data, 0, 2 * MIB).await.status(),
        202
    );
    let h = head(&two, &b, &id).await;
    assert_eq!(header(&h, "upload-offset"), Some((2 * MIB).to_string()));
    let res = put_range(&two, &b, &id, &data, 2 * MIB, data.len()).await;
    assert_eq!(res.status(), 201);
    for (s, t) in [(&one, &a), (&two, &b)] {
        let got = get(s, t, &id, None).await.bytes().await.unwrap();
        assert_eq!(sha(&got), id);
    }
    // And a wrong blob finished on the other process is caught the same way.
    let good = bytes(2 * MIB, 13);
    let mut bad = good.clone();
    bad[3] ^= 1;
    let gid = sha(&good);
    assert_eq!(put_range(&one, &a, &gid, &bad, 0, MIB).await.status(), 202);
    let res = put_range(&two, &b, &gid, &bad, MIB, bad.len()).await;
    assert_eq!(
        error_code(res).await,
        (422, "BLOB_CHECKSUM_MISMATCH".into())
    );
    assert_eq!(head(&one, &a, &gid).await.status(), 404);
    two.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
}

//! The client library's blobs (`attach_blob`, `upload_pending_blobs`, `fetch_blob`)
//! against the real server over real HTTP, on SQLite and PostgreSQL: a multi-chunk round
//! trip seen by a second client through the `has_blob` edge, an upload cut off mid-chunk
//! and resumed re-sending less than one chunk, a held blob never sent again, a corrupted
//! download refused with nothing left behind, and no request body larger than a chunk.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use goodies_client::{
    BlobDirection, BlowingOffClient, ClientConfig, ClientError, ClientEvent, HttpRequest,
    HttpResponse, HyperTransport, Method, RetryPolicy, Transport, TransportError,
};
use inbetweenies_proto::EntityType;
use sha2::{Digest, Sha256};
use support::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 256 * 1024;

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

/// The real transport, watched: counts PUTs and their body bytes, records the largest
/// request body, can cut one PUT off halfway (sending half its body over a raw
/// connection, then closing it) and can flip a byte of GET answers.
#[derive(Debug, Default)]
struct Watched {
    inner: HyperTransport,
    puts: AtomicU32,
    put_bytes: AtomicU64,
    largest_body: AtomicUsize,
    /// Cut off the PUT with this number (1-based); 0: none.
    cut_put: AtomicU32,
    corrupt_gets: AtomicBool,
    methods: Mutex<Vec<Method>>,
}

impl Watched {
    fn reset(&self) {
        self.puts.store(0, Ordering::SeqCst);
        self.put_bytes.store(0, Ordering::SeqCst);
        self.methods.lock().unwrap().clear();
    }
}

/// Sends `req` over a fresh connection with only half its body, closes the sending
/// side, and waits for the server's answer (or the close) before giving up.
async fn send_half(req: &HttpRequest) -> TransportError {
    let rest = req.url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&req.body[..req.body.len() / 2])
        .await
        .unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await;
    TransportError::http("connection lost mid-body")
}

#[async_trait]
impl Transport for Watched {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.methods.lock().unwrap().push(req.method);
        self.largest_body
            .fetch_max(req.body.len(), Ordering::SeqCst);
        if req.method == Method::Put {
            let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.cut_put.load(Ordering::SeqCst) {
                self.put_bytes
                    .fetch_add(req.body.len() as u64 / 2, Ordering::SeqCst);
                return Err(send_half(&req).await);
            }
            self.put_bytes
                .fetch_add(req.body.len() as u64, Ordering::SeqCst);
        }
        let is_get = req.method == Method::Get && req.url.contains("/api/v1/blobs/");
        let mut resp = self.inner.send(req).await?;
        if is_get && self.corrupt_gets.load(Ordering::SeqCst) && !resp.body.is_empty() {
            let mid = resp.body.len() / 2;
            resp.body[mid] ^= 0x01;
        }
        Ok(resp)
    }
}

async fn client(
    s: &TestServer,
    dir: &tempfile::TempDir,
    name: &str,
    token: &str,
    transport: Arc<Watched>,
    retries: u32,
) -> BlowingOffClient {
    let c = BlowingOffClient::builder(dir.path().join(format!("{name}.db")))
        .config(
            ClientConfig::default()
                .with_retry(RetryPolicy::immediate(retries))
                .with_blob_chunk_size(CHUNK),
        )
        .transport(transport)
        .open()
        .await
        .expect("open client");
    c.connect(&s.base, Some(token)).await.expect("connect");
    c
}

/// A file of several chunks attached to a device arrives whole: the edge reaches a
/// second client by sync, which fetches the bytes chunk by chunk and verifies them;
/// progress is reported, and no request body is larger than a chunk.
async fn a_multi_chunk_blob_round_trips(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5 * CHUNK + 1234, 1);
    let file = dir.path().join("oven.pdf");
    std::fs::write(&file, &data).unwrap();

    let wt = Arc::new(Watched::default());
    let writer = client(&s, &dir, "writer", &admin, wt.clone(), 2).await;
    let progress = Arc::new(Mutex::new(Vec::new()));
    let p2 = progress.clone();
    let _h = writer.on_change(move |e| {
        if let ClientEvent::BlobProgress {
            done,
            total,
            direction: BlobDirection::Upload,
            ..
        } = e
        {
            p2.lock().unwrap().push((*done, *total));
        }
    });
    let oven = writer
        .create_entity(EntityType::Device, "Oven", Default::default())
        .await
        .unwrap();
    let attached = writer.attach_blob(&oven.id, &file).await.unwrap();
    assert!(attached.uploaded, "{attached:?}");
    assert_eq!(attached.blob.sha256, sha(&data));
    assert_eq!(attached.blob.size, Some(data.len() as u64));
    assert_eq!(
        attached.blob.content_type.as_deref(),
        Some("application/pdf")
    );
    assert_eq!(wt.puts.load(Ordering::SeqCst), 6);
    assert_eq!(wt.put_bytes.load(Ordering::SeqCst), data.len() as u64);
    assert!(wt.largest_body.load(Ordering::SeqCst) <= CHUNK);
    let seen = progress.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&(0, data.len() as u64)));
    assert_eq!(seen.last(), Some(&(data.len() as u64, data.len() as u64)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert!(writer.pending_blob_uploads().await.unwrap().is_empty());
    let pushed = writer.sync().await.unwrap();
    assert!(pushed.errors.is_empty(), "{:?}", pushed.errors);

    let guest = s.guest_token(&admin).await;
    let rt = Arc::new(Watched::default());
    let reader = client(&s, &dir, "reader", &guest, rt.clone(), 2).await;
    let pulled = reader.sync().await.unwrap();
    assert!(pulled.errors.is_empty(), "{:?}", pulled.errors);
    let blobs = reader.blobs_of(&oven.id).await.unwrap();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(blobs[0], attached.blob);
    // The entity that is the file names the same blob.
    assert_eq!(
        reader.blobs_of(&blobs[0].blob_entity_id).await.unwrap(),
        blobs
    );
    let out = dir.path().join("got.pdf");
    let n = reader.fetch_blob(&blobs[0].sha256, &out).await.unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let gets = rt
        .methods
        .lock()
        .unwrap()
        .iter()
        .filter(|m| **m == Method::Get)
        .count();
    assert_eq!(gets, 6, "one ranged GET per chunk");
    assert!(rt.largest_body.load(Ordering::SeqCst) <= CHUNK);
    s.shutdown().await.unwrap();
}

/// An upload cut off at 50 %, in the middle of its third chunk (of five), leaves the blob pending,
/// also for a new process on the same database; the next attempt asks the server what
/// it kept and sends only the rest: less than one chunk is sent twice.
async fn an_interrupted_upload_resumes_sending_at_most_one_chunk_again(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5 * CHUNK, 2);
    let file = dir.path().join("photo.jpg");
    std::fs::write(&file, &data).unwrap();

    let t = Arc::new(Watched::default());
    t.cut_put.store(3, Ordering::SeqCst);
    let c = client(&s, &dir, "phone", &admin, t.clone(), 0).await;
    let lamp = c
        .create_entity(EntityType::Device, "Lamp", Default::default())
        .await
        .unwrap();
    let attached = c.attach_blob(&lamp.id, &file).await.unwrap();
    assert!(!attached.uploaded);
    assert!(attached.upload_error.is_some());
    assert_eq!(t.puts.load(Ordering::SeqCst), 3);
    let first = t.put_bytes.load(Ordering::SeqCst);
    assert_eq!(first, (2 * CHUNK + CHUNK / 2) as u64);
    assert_eq!(2 * first, data.len() as u64, "cut at half the blob");
    drop(c);

    // A new process on the same database finishes it.
    let t2 = Arc::new(Watched::default());
    let c = client(&s, &dir, "phone", &admin, t2.clone(), 0).await;
    assert_eq!(c.pending_blob_uploads().await.unwrap(), vec![sha(&data)]);
    let report = c.upload_pending_blobs().await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.pending, 0);
    let stats = &report.completed[0];
    assert_eq!(stats.resumed_from, (2 * CHUNK + CHUNK / 2) as u64);
    let total_sent = first + t2.put_bytes.load(Ordering::SeqCst);
    assert!(
        total_sent <= (data.len() + CHUNK) as u64,
        "sent {total_sent} bytes for a blob of {}",
        data.len()
    );
    assert_eq!(total_sent, data.len() as u64, "what arrived was kept");
    let out = dir.path().join("back.jpg");
    c.fetch_blob(&sha(&data), &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    s.shutdown().await.unwrap();
}

/// Attaching offline queues the upload; the next sync finishes it and pushes the edge.
/// Attaching a file the server already holds sends no byte: one HEAD, no PUT.
async fn offline_attach_uploads_on_sync_and_a_held_blob_is_not_sent_again(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(2 * CHUNK + 7, 3);
    let file = dir.path().join("manual.pdf");
    std::fs::write(&file, &data).unwrap();

    let t = Arc::new(Watched::default());
    let offline = BlowingOffClient::builder(dir.path().join("offline.db"))
        .config(
            ClientConfig::default()
                .with_retry(RetryPolicy::immediate(0))
                .with_blob_chunk_size(CHUNK),
        )
        .transport(t.clone())
        .open()
        .await
        .unwrap();
    let fridge = offline
        .create_entity(EntityType::Device, "Fridge", Default::default())
        .await
        .unwrap();
    let attached = offline.attach_blob(&fridge.id, &file).await.unwrap();
    assert!(!attached.uploaded && attached.upload_error.is_none());
    assert_eq!(t.puts.load(Ordering::SeqCst), 0);
    assert_eq!(offline.pending_blob_uploads().await.unwrap().len(), 1);
    offline.connect(&s.base, Some(&admin)).await.unwrap();
    let r = offline.sync().await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(t.puts.load(Ordering::SeqCst), 3);
    assert!(offline.pending_blob_uploads().await.unwrap().is_empty());

    // The same bytes attached again (another client, another entity): not sent.
    let t2 = Arc::new(Watched::default());
    let other = client(&s, &dir, "other", &admin, t2.clone(), 0).await;
    let oven = other
        .create_entity(EntityType::Device, "Oven", Default::default())
        .await
        .unwrap();
    let again = other.attach_blob(&oven.id, &file).await.unwrap();
    assert!(again.uploaded);
    assert_eq!(t2.puts.load(Ordering::SeqCst), 0, "no PUT for a held blob");
    assert_eq!(t2.put_bytes.load(Ordering::SeqCst), 0);
    assert!(t2.methods.lock().unwrap().contains(&Method::Head));
    s.shutdown().await.unwrap();
}

/// Bytes that do not hash to the address are refused: an error, and neither the
/// destination nor a temporary file is left.
async fn a_corrupted_download_is_refused_and_leaves_nothing(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(3 * CHUNK, 4);
    let file = dir.path().join("a.bin");
    std::fs::write(&file, &data).unwrap();
    let t = Arc::new(Watched::default());
    let c = client(&s, &dir, "c", &admin, t.clone(), 0).await;
    let e = c
        .create_entity(EntityType::Device, "Thing", Default::default())
        .await
        .unwrap();
    assert!(c.attach_blob(&e.id, &file).await.unwrap().uploaded);

    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("b.bin");
    t.corrupt_gets.store(true, Ordering::SeqCst);
    t.reset();
    let err = c.fetch_blob(&sha(&data), &out).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::BlobChecksumMismatch { expected, .. } if *expected == sha(&data)),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_dir(out_dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
    // Unknown blob: not found, nothing left either.
    t.corrupt_gets.store(false, Ordering::SeqCst);
    let err = c.fetch_blob(&"0".repeat(64), &out).await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound(_)), "{err:?}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
    // Intact, it arrives.
    c.fetch_blob(&sha(&data), &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    s.shutdown().await.unwrap();
}

on_both_backends!(
    a_multi_chunk_blob_round_trips,
    an_interrupted_upload_resumes_sending_at_most_one_chunk_again,
    offline_attach_uploads_on_sync_and_a_held_blob_is_not_sent_again,
    a_corrupted_download_is_refused_and_leaves_nothing,
);

//! The change feed `GET /api/v1/sync/events` (PROTOCOL §13) on the real server over real
//! HTTP, on SQLite and PostgreSQL: a write's event carries the new cursor, resume by
//! `Last-Event-ID`, heartbeats that keep a quiet stream open past the idle timeout, a
//! stuck reader that holds nobody up, guests, and two server processes on one database.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer, PASSWORD, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS: &str = "/api/v1/sync/events";

/// How long any one expected event may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event {
        event: String,
        id: Option<String>,
        data: Value,
    },
    Comment(String),
}

impl Item {
    fn event(&self) -> &str {
        match self {
            Item::Event { event, .. } => event,
            Item::Comment(_) => "",
        }
    }

    fn data(&self) -> &Value {
        match self {
            Item::Event { data, .. } => data,
            Item::Comment(_) => &Value::Null,
        }
    }

    fn id(&self) -> Option<&str> {
        match self {
            Item::Event { id, .. } => id.as_deref(),
            Item::Comment(_) => None,
        }
    }
}

/// Parses one SSE block (the lines before a blank line).
fn parse_block(block: &str) -> Option<Item> {
    let mut event = "message".to_owned();
    let mut id = None;
    let mut data = String::new();
    let mut comment = None;
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if data.is_empty() {
        return comment.map(Item::Comment);
    }
    Some(Item::Event {
        event,
        id,
        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
    })
}

/// An open event stream.
struct Stream {
    res: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(server: &TestServer, token: &str, last_event_id: Option<&str>) -> Stream {
        let mut req = server.http.get(server.url(EVENTS)).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.expect("open the event stream");
        assert_eq!(res.status(), 200, "{:?}", res.headers());
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Stream {
            res,
            buf: String::new(),
        }
    }

    /// The next item; `None` when the stream ended.
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(item) = parse_block(&block) {
                    return Some(item);
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.res.chunk())
                .await
                .expect("an event within the wait")
                .expect("read the stream")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// The next event, skipping heartbeats.
    async fn next_event(&mut self) -> Item {
        loop {
            match self.next().await.expect("the stream is open") {
                Item::Comment(_) => continue,
                e => return e,
            }
        }
    }
}

async fn push(server: &TestServer, token: &str, changes: Value) {
    let (status, body) = server
        .post_json(
            token,
            "/api/v1/sync/",
            &sync_body("writer", "delta", changes),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn push_one(server: &TestServer, token: &str, id: &str, entity_type: &str) {
    push(
        server,
        token,
        json!([create_change(id, entity_type, id, json!({}))]),
    )
    .await;
}

async fn max_seq(server: &TestServer) -> String {
    server
        .handle
        .store()
        .max_seq()
        .await
        .expect("max seq")
        .to_string()
}

async fn a_write_produces_an_event_with_the_new_cursor(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let mut stream = Stream::open(&server, &admin, None).await;
    let ready = stream.next_event().await;
    assert_eq!(ready.event(), "ready");
    assert_eq!(ready.data()["cursor"], "0");
    assert_eq!(ready.id(), Some("0"));

    push_one(&server, &admin, "lamp-1", "device").await;
    let change = stream.next_event().await;
    let cursor = max_seq(&server).await;
    assert_eq!(change.event(), "change");
    assert_eq!(change.id(), Some(cursor.as_str()));
    assert_eq!(
        change.data(),
        &json!({"cursor": cursor, "entity_types": ["device"], "relationships": false})
    );

    // A second write, of two types and a relationship: one event for the one commit.
    let mut room = create_change("kitchen", "room", "Kitchen", json!({}));
    let lamp = server
        .handle
        .store()
        .entity(&inbetweenies_proto::EntityId::new("lamp-1"))
        .await
        .unwrap()
        .unwrap();
    room["relationships"] = json!([{
        "id": "rel-1", "from_entity_id": "lamp-1", "from_entity_version": lamp.version,
        "to_entity_id": "kitchen", "to_entity_version": room["entity"]["version"],
        "relationship_type": "located_in", "properties": {}, "user_id": "tester",
    }]);
    push(
        &server,
        &admin,
        json!([room, create_change("hall", "zone", "Hall", json!({}))]),
    )
    .await;
    let change = stream.next_event().await;
    let cursor = max_seq(&server).await;
    assert_eq!(change.id(), Some(cursor.as_str()));
    assert_eq!(change.data()["entity_types"], json!(["room", "zone"]));
    assert_eq!(change.data()["relationships"], true);
    server.shutdown().await.unwrap();
}

async fn last_event_id_resumes_from_a_cursor(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |c| c.with_feed(Duration::from_secs(15), 64, 3)).await
    else {
        return;
    };
    let admin = server.login().await;
    push_one(&server, &admin, "a", "device").await;
    let seen = max_seq(&server).await;
    // Missed while away: two writes.
    push_one(&server, &admin, "b", "room").await;
    push_one(&server, &admin, "c", "device").await;
    let now = max_seq(&server).await;

    let mut resumed = Stream::open(&server, &admin, Some(&seen)).await;
    let first = resumed.next_event().await;
    assert_eq!(first.event(), "change");
    assert_eq!(first.id(), Some(now.as_str()));
    assert_eq!(first.data()["entity_types"], json!(["device", "room"]));
    // And the stream goes on with live events.
    push_one(&server, &admin, "d", "zone").await;
    let live = resumed.next_event().await;
    assert_eq!(live.id(), Some(max_seq(&server).await.as_str()));
    assert_eq!(live.data()["entity_types"], json!(["zone"]));
    drop(resumed);

    // Up to date: `ready` at the same cursor.
    let now = max_seq(&server).await;
    let mut current = Stream::open(&server, &admin, Some(&now)).await;
    let first = current.next_event().await;
    assert_eq!((first.event(), first.id()), ("ready", Some(now.as_str())));
    drop(current);

    // Further back than the replay limit (3 rows): resync.
    let mut old = Stream::open(&server, &admin, Some("0")).await;
    let first = old.next_event().await;
    assert_eq!(first.event(), "resync");
    assert_eq!(first.data()["reason"], "too_old");
    assert_eq!(first.id(), Some(now.as_str()));
    drop(old);

    // A cursor this server never reached: resync.
    let mut ahead = Stream::open(&server, &admin, Some("999999")).await;
    let first = ahead.next_event().await;
    assert_eq!(first.event(), "resync");
    assert_eq!(first.data()["reason"], "unknown_cursor");
    drop(ahead);

    // A malformed one: 400 with the JSON error body.
    let res = server
        .http
        .get(server.url(EVENTS))
        .bearer_auth(&admin)
        .header("Last-Event-ID", "12abc")
        .send()
        .await
        .unwrap();
    let (status, body) = support::read(res).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
    assert_eq!(body["error"]["field"], "Last-Event-ID");
    server.shutdown().await.unwrap();
}

/// Heartbeats arrive at the configured interval, and at least twice per idle timeout:
/// a quiet stream outlives the connection idle timeout several times over.
async fn heartbeats_keep_a_quiet_stream_open(backend: Backend) {
    let idle = Duration::from_millis(600);
    let Some(server) = TestServer::start_with(backend, |c| {
        c.with_connection_limits(Duration::from_secs(30), Duration::from_secs(60), idle, 64)
            .with_feed(Duration::from_secs(3600), 64, 1000)
    })
    .await
    else {
        return;
    };
    let admin = server.login().await;
    let mut stream = Stream::open(&server, &admin, None).await;
    assert_eq!(stream.next_event().await.event(), "ready");
    let started = std::time::Instant::now();
    let mut beats = 0;
    while started.elapsed() < idle * 4 {
        match stream.next().await.expect("the stream stays open") {
            Item::Comment(c) => {
                assert_eq!(c, "heartbeat");
                beats += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(beats >= 6, "{beats} heartbeats in four idle timeouts");
    // Still live after four idle timeouts without a byte from the client.
    push_one(&server, &admin, "late", "device").await;
    assert_eq!(stream.next_event().await.event(), "change");
    server.shutdown().await.unwrap();
}

async fn heartbeat_interval_is_configurable(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |c| c.with_feed(Duration::from_secs(1), 64, 1000)).await
    else {
        return;
    };
    let guest = server.guest_token(&server.login().await).await;
    let mut stream = Stream::open(&server, &guest, None).await;
    assert_eq!(stream.next_event().await.event(), "ready");
    let started = std::time::Instant::now();
    assert_eq!(stream.next().await, Some(Item::Comment("heartbeat".into())));
    assert_eq!(stream.next().await, Some(Item::Comment("heartbeat".into())));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "two heartbeats 1 s apart took {took:?}"
    );
    server.shutdown().await.unwrap();
}

/// Guests may listen; no token or a bad one is refused like everywhere else.
async fn guests_listen_and_strangers_do_not(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let guest = server.guest_token(&admin).await;
    let mut stream = Stream::open(&server, &guest, None).await;
    assert_eq!(stream.next_event().await.event(), "ready");
    push_one(&server, &admin, "lamp", "device").await;
    assert_eq!(stream.next_event().await.event(), "change");

    let res = server.http.get(server.url(EVENTS)).send().await.unwrap();
    let (status, body) = support::read(res).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let res = server
        .http
        .get(server.url(EVENTS))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(support::read(res).await.0, 401);
    server.shutdown().await.unwrap();
}

/// A reader that reads nothing (its client's receive buffer is tiny and never drained)
/// holds up neither writers nor other readers.
async fn a_stuck_reader_holds_nobody_up(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |c| c.with_feed(Duration::from_secs(15), 8, 1000)).await
    else {
        return;
    };
    let admin = server.login().await;
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "GET {EVENTS} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stuck.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let mut reader = Stream::open(&server, &admin, None).await;
    assert_eq!(reader.next_event().await.event(), "ready");
    let writes = 120;
    let started = std::time::Instant::now();
    for i in 0..writes {
        push_one(&server, &admin, &format!("e{i}"), "device").await;
        // The reading listener gets every commit, in order, as it happens.
        let e = reader.next_event().await;
        assert_eq!(e.event(), "change");
        assert_eq!(e.id(), Some(max_seq(&server).await.as_str()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{writes} writes took {:?}",
        started.elapsed()
    );
    drop(stuck);
    server.shutdown().await.unwrap();
}

/// A client learns that the server has the feed from the capabilities it announces
/// (PROTOCOL §5.12).
async fn the_feed_is_announced_as_a_capability(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let mut body = sync_body("phone", "delta", json!([]));
    body["capabilities"] = json!(["change_feed"]);
    let (status, answer) = server.post_json(&admin, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{answer}");
    let offered = answer["capabilities"].as_array().expect("capabilities");
    assert!(offered.contains(&json!("change_feed")), "{offered:?}");
    server.shutdown().await.unwrap();
}

/// Shutting the server down ends open event streams instead of waiting for them.
async fn shutdown_ends_the_streams(backend: Backend) {
    let Some(mut server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let mut stream = Stream::open(&server, &admin, None).await;
    assert_eq!(stream.next_event().await.event(), "ready");
    server.signal_stop();
    tokio::time::timeout(WAIT, server.join())
        .await
        .expect("the server stops with a stream open")
        .unwrap();
    loop {
        match stream.next().await {
            None => break,
            Some(Item::Comment(_)) => continue,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

on_both_backends!(
    a_write_produces_an_event_with_the_new_cursor,
    last_event_id_resumes_from_a_cursor,
    heartbeats_keep_a_quiet_stream_open,
    heartbeat_interval_is_configurable,
    guests_listen_and_strangers_do_not,
    a_stuck_reader_holds_nobody_up,
    shutdown_ends_the_streams,
    the_feed_is_announced_as_a_capability,
);

/// A `funkygibbon-mock` process, killed when dropped.
struct ServerProcess {
    child: Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts the binary on `database_url` (on a free loopback port) and waits until it
    /// logs its address.
    async fn start(database_url: &str) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"));
        for (key, _) in std::env::vars() {
            if key.starts_with("FUNKYGIBBON_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(["--admin-password", PASSWORD, "--jwt-secret", SECRET])
            .env("RUST_LOG", "warn,funkygibbon_mock=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start funkygibbon-mock");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The one stdout line: {"event":"listening","addr":"127.0.0.1:PORT",…}.
                let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                if let Some(addr) = parsed.as_ref().and_then(|v| v["addr"].as_str()) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server logs its address")
            .expect("address");
        ServerProcess {
            child,
            base: format!("http://{addr}"),
        }
    }
}

/// Two server processes on one PostgreSQL database: a write through one reaches a
/// listener on the other (LISTEN/NOTIFY), with the cursor the writer's store assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_share_the_feed() {
    let Some(pg) = support::FreshPostgres::create().await else {
        return;
    };
    let one = ServerProcess::start(&pg.url).await;
    let two = ServerProcess::start(&pg.url).await;
    let http = support::http_client();
    let login = |base: String| {
        let http = http.clone();
        async move {
            let res = http
                .post(format!("{base}/api/v1/auth/admin/login"))
                .json(&json!({"password": PASSWORD}))
                .send()
                .await
                .unwrap();
            support::read(res).await.1["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let token_one = login(one.base.clone()).await;
    let token_two = login(two.base.clone()).await;

    let res = http
        .get(format!("{}{EVENTS}", two.base))
        .bearer_auth(&token_two)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = Stream {
        res,
        buf: String::new(),
    };
    assert_eq!(stream.next_event().await.event(), "ready");

    for (i, t) in ["device", "room", "device"].into_iter().enumerate() {
        let res = http
            .post(format!("{}/api/v1/sync/", one.base))
            .bearer_auth(&token_one)
            .json(&sync_body(
                "writer",
                "delta",
                json!([create_change(&format!("x{i}"), t, "x", json!({}))]),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let e = stream.next_event().await;
        assert_eq!(e.event(), "change");
        assert_eq!(e.data()["entity_types"], json!([t]));
        let cursor: u64 = e.id().unwrap().parse().unwrap();
        assert_eq!(cursor, i as u64 + 1, "cursors in commit order");
    }
}

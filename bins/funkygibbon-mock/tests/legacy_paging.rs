//! Clients written for the Python reference (the reference's own client and the
//! TypeScript port) get pages as the reference builds them, and see every pushed id
//! they are acknowledged for in `changes`; clients that declare `relationship_rows`
//! get relationship rows (PROTOCOL §5.12, §6.4, §6.7, §12.4).
//!
//! Every test runs a real server on 127.0.0.1:0 over SQLite and PostgreSQL and speaks
//! raw HTTP, with request bodies shaped as those clients send them.

mod support;

use std::collections::HashSet;

use inbetweenies_proto::{EntityId, Version};
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};

/// Devices in the house (and one room, one relationship per device).
const DEVICES: usize = 600;
/// Devices pushed per request while seeding (each with its relationship).
const BATCH: usize = 100;
/// The reference's page size, and ours by default.
const PAGE: usize = 500;
/// Pages followed at most in one pull (the largest pull here needs three).
const MOST_PAGES: usize = 10;

/// The keys of the reference's SyncResponse, in the reference's order.
const REFERENCE_KEYS: [&str; 11] = [
    "protocol_version",
    "sync_type",
    "changes",
    "conflicts",
    "vector_clock",
    "cursor",
    "state_digest",
    "sync_stats",
    "server_time",
    "applied",
    "applied_relationships",
];

/// What the seeded house holds, in the order the server received it.
struct House {
    /// Entity ids: the room, then the devices.
    entities: Vec<String>,
    /// Relationship ids (device located_in room).
    relationships: Vec<String>,
    /// Each entity's version.
    versions: std::collections::HashMap<String, String>,
    /// A watermark from before the house was pushed, naive (no offset) as the Python client sends it.
    naive_before: String,
}

/// Pushes one room, then `DEVICES` devices, each located in the room, `BATCH` devices
/// (and their relationships) per request, so entity and relationship rows interleave.
async fn seed(s: &TestServer, token: &str) -> House {
    let (status, empty) = s
        .post_json(
            token,
            "/api/v1/sync/",
            &sync_body("seeder", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{empty}");
    let before = empty["server_time"].as_str().expect("server_time");
    let naive_before = before
        .strip_suffix("+00:00")
        .expect("server_time ends in +00:00")
        .to_owned();
    let room = create_change("room", "room", "Hall", json!({}));
    let room_version = room["entity"]["version"].clone();
    let mut house = House {
        entities: vec!["room".to_owned()],
        relationships: Vec::new(),
        versions: [(
            "room".to_owned(),
            room_version.as_str().expect("version").to_owned(),
        )]
        .into(),
        naive_before,
    };
    let mut body = sync_body("seeder", "delta", json!([room]));
    body["capabilities"] = json!(["relationship_rows"]);
    let (status, pushed) = s.post_json(token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{pushed}");
    let mut pending = Vec::new();
    for i in 0..DEVICES {
        let id = format!("device-{i:04}");
        let rel = format!("rel-{i:04}");
        let mut device = create_change(&id, "device", &format!("Device {i}"), json!({"n": i}));
        device["relationships"] = json!([{
            "id": rel, "from_entity_id": id, "from_entity_version": device["entity"]["version"],
            "to_entity_id": "room", "to_entity_version": room_version,
            "relationship_type": "located_in", "properties": {},
        }]);
        house.versions.insert(
            id.clone(),
            device["entity"]["version"]
                .as_str()
                .expect("version")
                .to_owned(),
        );
        house.entities.push(id);
        house.relationships.push(rel);
        pending.push(device);
        if pending.len() >= BATCH || i + 1 == DEVICES {
            let changes = Value::Array(std::mem::take(&mut pending));
            let mut body = sync_body("seeder", "delta", changes);
            body["capabilities"] = json!(["relationship_rows"]);
            let (status, pushed) = s.post_json(token, "/api/v1/sync/", &body).await;
            assert_eq!(status, 200, "{pushed}");
            assert!(pushed["conflicts"].as_array().is_some_and(Vec::is_empty));
        }
    }
    house
}

/// A pull request body as the reference's clients send it (no `capabilities`).
fn legacy(sync_type: &str, since: Option<&str>, cursor: Option<&str>) -> Value {
    let mut body = sync_body("legacy", sync_type, json!([]));
    if let Some(since) = since {
        body["filters"] = json!({"since": since});
    }
    if let Some(cursor) = cursor {
        body["cursor"] = json!(cursor);
    }
    body
}

/// The server's list of what it offers (PROTOCOL §5.12): relationship rows among them.
fn assert_offered(caps: &Value) {
    let names = caps.as_array().expect("a capabilities list");
    assert!(
        names.iter().any(|n| n == "relationship_rows"),
        "relationship_rows offered: {caps}"
    );
}

/// The same body declaring `caps`.
fn declaring(mut body: Value, caps: &[&str]) -> Value {
    body["capabilities"] = json!(caps);
    body
}

fn changes(answer: &Value) -> &Vec<Value> {
    answer["changes"].as_array().expect("changes")
}

/// The entity ids of an answer's entity rows, in order.
fn entity_ids(answer: &Value) -> Vec<String> {
    changes(answer)
        .iter()
        .filter_map(|c| c["entity"]["id"].as_str().map(str::to_owned))
        .collect()
}

/// The relationship ids of an answer's relationship rows, in order.
fn relationship_ids(answer: &Value) -> Vec<String> {
    changes(answer)
        .iter()
        .filter(|c| c["entity"].is_null())
        .flat_map(|c| c["relationships"].as_array().expect("relationships").iter())
        .map(|r| r["id"].as_str().expect("relationship id").to_owned())
        .collect()
}

fn keys(answer: &Value) -> Vec<&str> {
    answer
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// A page as the reference builds it: entity rows only, none with a relationship
/// attached, and the reference's keys in the reference's order (no `capabilities`).
fn assert_reference_page(answer: &Value, what: &str) {
    assert_eq!(keys(answer), REFERENCE_KEYS, "{what}: keys");
    for c in changes(answer) {
        assert!(c["entity"].is_object(), "{what}: an entity: null row: {c}");
        assert_eq!(
            c["relationships"],
            json!([]),
            "{what}: a relationship attached"
        );
    }
}

/// The sequence number of an entity's latest row.
async fn latest_seq(s: &TestServer, id: &str) -> u64 {
    let history = s
        .handle
        .store()
        .history(&EntityId::new(id))
        .await
        .expect("history");
    history
        .iter()
        .find(|r| r.latest)
        .map(|r| r.seq)
        .unwrap_or_else(|| panic!("no latest row for {id}"))
}

/// Follows the cursor of `first` (repeating `body` as delta with the cursor) until it
/// comes back null; every answer, the first included.
async fn follow(s: &TestServer, token: &str, body: &Value, first: Value) -> Vec<Value> {
    let mut pages = vec![first];
    while let Some(cursor) = pages.last().and_then(|p| p["cursor"].as_str()) {
        assert!(pages.len() < MOST_PAGES, "the pull does not end");
        let mut next = body.clone();
        next["sync_type"] = json!("delta");
        next["cursor"] = json!(cursor);
        let (status, page) = s.post_json(token, "/api/v1/sync/", &next).await;
        assert_eq!(status, 200, "{page}");
        pages.push(page);
    }
    pages
}

/// No id twice across pages, and together exactly `want`, in order.
fn assert_pages_hold(pages: &[Value], want: &[String], what: &str) {
    let got: Vec<String> = pages.iter().flat_map(entity_ids).collect();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "{what}: a row twice");
    assert_eq!(got, want, "{what}: every entity, in sequence order");
}

/// Without capabilities, a full pull and a delta with a naive `since` (as the Python
/// client sends it) get 500 entity rows, no relationship anywhere, the reference's keys,
/// and a cursor that is the last entity row's sequence; following it returns the rest
/// with no row twice. The five-step flow pages alike, whatever the body declares.
async fn a_request_without_capabilities_gets_the_reference_pages(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let house = seed(&s, &token).await;
    for (what, body) in [
        ("full", legacy("full", None, None)),
        (
            "delta, naive since",
            legacy("delta", Some(&house.naive_before), None),
        ),
        ("delta, no since", legacy("delta", None, None)),
    ] {
        let (status, first) = s.post_json(&token, "/api/v1/sync/", &body).await;
        assert_eq!(status, 200, "{what}: {first}");
        assert_reference_page(&first, what);
        let ids = entity_ids(&first);
        assert_eq!(ids.len(), PAGE, "{what}: a full page of entities");
        let cursor = first["cursor"].as_str().expect("a cursor").to_owned();
        assert_eq!(
            cursor,
            latest_seq(&s, ids.last().expect("rows")).await.to_string(),
            "{what}: the cursor is the last entity row's sequence"
        );
        let pages = follow(&s, &token, &body, first).await;
        assert_eq!(pages.len(), 2, "{what}: two pages");
        for page in &pages[1..] {
            assert_reference_page(page, what);
        }
        assert_eq!(entity_ids(&pages[1]).len(), house.entities.len() - PAGE);
        assert_pages_hold(&pages, &house.entities, what);
    }
    // Declaring the capability in the five-step flow changes nothing: it carries entities only.
    let (status, delta) = s
        .post_json(
            &token,
            "/api/v1/sync/request",
            &json!({"type": "sync_request", "client_id": "flow", "include_deleted": true,
                    "capabilities": ["relationship_rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{delta}");
    assert_eq!(delta["changes"].as_array().map(Vec::len), Some(PAGE));
    assert_eq!(delta["more"], true);
    assert!(delta.get("capabilities").is_none(), "{:?}", keys(&delta));
    s.shutdown().await.expect("clean shutdown");
}

/// With `relationship_rows` the same store yields every relationship in sequence order,
/// paged with the entities, and the answer lists the server's capabilities last; unknown
/// names are ignored (alone, they get the reference's pages, and the list).
async fn declared_relationship_rows_are_sent_and_unknown_names_ignored(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let house = seed(&s, &token).await;
    for caps in [
        &["relationship_rows"][..],
        &["some_later_feature", "relationship_rows"][..],
    ] {
        let body = declaring(legacy("full", None, None), caps);
        let (status, first) = s.post_json(&token, "/api/v1/sync/", &body).await;
        assert_eq!(status, 200, "{first}");
        let mut want_keys = REFERENCE_KEYS.to_vec();
        want_keys.push("capabilities");
        assert_eq!(keys(&first), want_keys, "{caps:?}");
        assert_offered(&first["capabilities"]);
        assert_eq!(changes(&first).len(), PAGE, "{caps:?}: a full page of rows");
        assert!(
            !relationship_ids(&first).is_empty(),
            "{caps:?}: relationships in the first page"
        );
        let pages = follow(&s, &token, &body, first).await;
        assert_eq!(pages.len(), 3, "{caps:?}: 1,201 rows in pages of 500");
        let rels: Vec<String> = pages.iter().flat_map(relationship_ids).collect();
        assert_eq!(
            rels, house.relationships,
            "{caps:?}: every relationship, in sequence order"
        );
        assert_pages_hold(&pages, &house.entities, &format!("{caps:?}"));
        for page in &pages {
            assert_offered(&page["capabilities"]);
        }
    }
    // Only names this server does not offer: the reference's pages, and the list.
    let body = declaring(legacy("full", None, None), &["some_later_feature"]);
    let (status, first) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{first}");
    assert_offered(&first["capabilities"]);
    let mut answer = first.clone();
    answer
        .as_object_mut()
        .expect("object")
        .remove("capabilities");
    assert_reference_page(&answer, "unknown capability only");
    assert_eq!(entity_ids(&first).len(), PAGE);
    // An empty list declares nothing: no `capabilities` key.
    let (status, none) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &declaring(legacy("full", None, None), &[]),
        )
        .await;
    assert_eq!(status, 200, "{none}");
    assert_reference_page(&none, "capabilities: []");
    s.shutdown().await.expect("clean shutdown");
}

/// A TypeScript-style push of 3 entities into a store bigger than one page: each
/// acknowledged id is in the answer's `changes` as the server's latest row, before a page
/// that is still the reference's 500 rows with its own cursor. A client declaring the
/// capability confirms by `applied` and is carried only superseded ids (none here).
/// Python-style pushes of an `entity: null` delete and of a relationship-only change
/// are answered as the reference answers them (vectors 33 and 36).
async fn a_legacy_push_is_confirmed_in_changes_whatever_the_store_size(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let house = seed(&s, &token).await;
    // The feed's first 500 entity rows once device-0000 has moved to its end.
    let first_page: Vec<String> = house.entities[..1]
        .iter()
        .chain(&house.entities[2..=PAGE])
        .cloned()
        .collect();
    for (what, since, caps) in [
        ("no since", None, None),
        ("naive since", Some(house.naive_before.as_str()), None),
        ("declared", None, Some(&["relationship_rows"][..])),
    ] {
        let tag = what.replace(' ', "-");
        let edited = Version::now("tester").to_string();
        // Two creates and an edit of device-0000 from its latest version.
        let latest = s
            .handle
            .store()
            .entity(&EntityId::new("device-0000"))
            .await
            .expect("read")
            .expect("device-0000")
            .version;
        let mut body = sync_body(
            "ts-port",
            "delta",
            json!([
                create_change(&format!("ts-a-{tag}"), "device", "A", json!({})),
                create_change(&format!("ts-b-{tag}"), "note", "B", json!({})),
                {
                    "change_type": "update",
                    "entity": {"id": "device-0000", "version": edited, "entity_type": "device",
                               "name": format!("Device 0, {what}"), "content": {"n": 0},
                               "source_type": "manual", "user_id": "tester",
                               "parent_versions": [latest]},
                    "relationships": [],
                },
            ]),
        );
        if let Some(since) = since {
            body["filters"] = json!({"since": since});
        }
        if let Some(caps) = caps {
            body = declaring(body, caps);
        }
        let (status, answer) = s.post_json(&token, "/api/v1/sync/", &body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        let acked = [
            format!("ts-a-{tag}"),
            format!("ts-b-{tag}"),
            "device-0000".to_owned(),
        ];
        assert_eq!(answer["applied"], json!(acked), "{what}");
        assert!(answer["conflicts"].as_array().is_some_and(Vec::is_empty));
        let ids = entity_ids(&answer);
        if caps.is_some() {
            // Confirmed by `applied`; every pushed version is latest: nothing carried.
            for id in &acked {
                assert!(
                    !ids.contains(id),
                    "{what}: {id} carried though it is latest"
                );
            }
            continue;
        }
        // The acknowledged ids first, as the server's latest rows, then the page.
        assert_reference_page(&answer, what);
        assert_eq!(ids[..3], acked[..], "{what}: acknowledged ids in changes");
        let rows = changes(&answer);
        assert_eq!(
            rows[2]["entity"]["version"], edited,
            "{what}: the latest row"
        );
        assert_eq!(rows[2]["entity"]["name"], format!("Device 0, {what}"));
        // The page and its cursor are what they would be without the acknowledgement.
        let page_rows = &ids[3..];
        assert_eq!(page_rows, first_page, "{what}: the page's rows");
        assert_eq!(
            answer["cursor"],
            json!(latest_seq(&s, &first_page[PAGE - 1]).await.to_string()),
            "{what}: the cursor is the page's last row"
        );
    }

    // Python-style: a delete with `entity: null` (vector 33) and a relationship-only
    // change (vector 36), each with the previous answer's watermark as a naive `since`.
    let (status, mark) = s
        .post_json(&token, "/api/v1/sync/", &legacy("delta", None, None))
        .await;
    assert_eq!(status, 200, "{mark}");
    let naive = |t: &Value| {
        t.as_str()
            .and_then(|t| t.strip_suffix("+00:00"))
            .expect("server_time")
            .to_owned()
    };
    let since = naive(&mark["server_time"]);
    let mut body = sync_body(
        "python",
        "delta",
        json!([{"change_type": "delete", "entity": null, "relationships": []}]),
    );
    body["filters"] = json!({"since": since});
    let (status, answer) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_reference_page(&answer, "delete without entity");
    assert_eq!(answer["applied"], json!([]), "not acknowledged");
    assert_eq!(answer["applied_relationships"], json!([]));
    assert_eq!(answer["changes"], json!([]), "nothing changed since");
    assert_eq!(answer["sync_stats"]["entities_synced"], 0);

    let since = naive(&answer["server_time"]);
    let from = s
        .handle
        .store()
        .entity(&EntityId::new("device-0001"))
        .await
        .expect("read")
        .expect("device-0001");
    let mut body = sync_body(
        "python",
        "delta",
        json!([{"change_type": "update", "entity": null, "relationships": [{
            "id": "rel-extra", "from_entity_id": "device-0001",
            "from_entity_version": from.version, "to_entity_id": "room",
            "to_entity_version": house.versions["room"], "relationship_type": "located_in",
            "properties": {}}]}]),
    );
    body["filters"] = json!({"since": since});
    let (status, answer) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_reference_page(&answer, "relationship-only change");
    assert_eq!(answer["applied"], json!([]));
    assert_eq!(answer["applied_relationships"], json!(["rel-extra"]));
    assert_eq!(answer["sync_stats"]["relationships_synced"], 1);
    assert_eq!(
        answer["changes"],
        json!([]),
        "no entity changed since; the relationship is not sent back"
    );
    // It is stored, and a client declaring the capability gets it.
    let mut body = declaring(legacy("delta", None, None), &["relationship_rows"]);
    body["filters"] = json!({"since": since});
    let (status, capable) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{capable}");
    assert_eq!(relationship_ids(&capable), ["rel-extra"]);
    s.shutdown().await.expect("clean shutdown");
}

/// A page read ahead for a request without capabilities is never served to one that
/// declares `relationship_rows` with the same device, filters and cursor, and the
/// other way round: each gets what a fresh read for its own kind answers.
async fn a_page_read_ahead_never_crosses_capabilities(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let house = seed(&s, &token).await;
    let caps = ["relationship_rows"];
    // Pages read ahead so far: one per delta pull without changes answered with a cursor.
    let mut started = 0;
    let mut pull = |answer: &Value| {
        if answer["cursor"].is_string() {
            started += 1;
        }
        started
    };
    for (round, (first_caps, then_caps)) in [(None, Some(&caps[..])), (Some(&caps[..]), None)]
        .into_iter()
        .enumerate()
    {
        let device = format!("reader-{round}");
        let with = |body: Value, c: Option<&[&str]>| match c {
            Some(c) => declaring(body, c),
            None => body,
        };
        let mut body = with(legacy("delta", None, None), first_caps);
        body["device_id"] = json!(device);
        let (status, first) = s.post_json(&token, "/api/v1/sync/", &body).await;
        assert_eq!(status, 200, "{first}");
        let cursor = first["cursor"].as_str().expect("a full page").to_owned();
        // The next page for this device and these capabilities has been read ahead.
        let n = pull(&first);
        s.handle.wait_for_read_ahead(n).await;
        let mut next = with(legacy("delta", None, Some(&cursor)), then_caps);
        next["device_id"] = json!(device);
        let (status, served) = s.post_json(&token, "/api/v1/sync/", &next).await;
        assert_eq!(status, 200, "{served}");
        pull(&served);
        // What a fresh read answers: the same request from a device nothing was read for.
        next["device_id"] = json!(format!("{device}-fresh"));
        let (status, fresh) = s.post_json(&token, "/api/v1/sync/", &next).await;
        assert_eq!(status, 200, "{fresh}");
        pull(&fresh);
        assert_eq!(served["changes"], fresh["changes"], "round {round}");
        assert_eq!(served["cursor"], fresh["cursor"], "round {round}");
        match then_caps {
            Some(_) => {
                // Device 499 and the last 100 devices, each batch's relationships after it.
                let rels = relationship_ids(&served);
                assert_eq!(rels, house.relationships[PAGE - 100..], "relationship rows");
                assert_eq!(entity_ids(&served), house.entities[PAGE..]);
                assert_offered(&served["capabilities"]);
            }
            None => {
                assert_reference_page(&served, "after a page read for a capable client");
                let after: u64 = cursor.parse().expect("cursor");
                let mut want = Vec::new();
                for id in &house.entities {
                    if latest_seq(&s, id).await > after && want.len() < PAGE {
                        want.push(id.clone());
                    }
                }
                assert_eq!(entity_ids(&served), want, "the entities after the cursor");
            }
        }
    }
    s.shutdown().await.expect("clean shutdown");
}

on_both_backends!(
    a_request_without_capabilities_gets_the_reference_pages,
    declared_relationship_rows_are_sent_and_unknown_names_ignored,
    a_legacy_push_is_confirmed_in_changes_whatever_the_store_size,
    a_page_read_ahead_never_crosses_capabilities,
);

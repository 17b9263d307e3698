//! The typed API reads the graph the Python reference writes: its sample home pushed to
//! the real server by raw HTTP in the reference's own shapes (zone `part_of` home, room
//! `located_in` zone and `part_of` home, device `located_in` room, a device's type in
//! `content.type`), then synced by `BlowingOffClient`. The rooms of the home, the devices
//! of each room and each device's type come out as the reference's own tools give them
//! (`tests/vectors/reference-graph/sample_graph.json` holds the graph and those answers).

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use goodies_client::{EntityId, EntityType};
use goodies_e2e::{http_json, quiet_sync, Backend, TestServer, PASSWORD};
use serde_json::{json, Value};

const SAMPLE: &str = include_str!("vectors/reference-graph/sample_graph.json");

/// One HTTP/1.1 POST of a JSON body over a plain socket; the status and the JSON answer.
fn post(base: &str, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<(u16, Value)> {
    http_json("POST", base, path, token, Some(body))
}

/// The sample graph as one reference-shaped push: each edge rides on the change of its
/// `from` entity, naming both endpoints' versions, as the reference's client sends them.
fn reference_push(sample: &Value) -> anyhow::Result<Value> {
    let entities = sample["entities"].as_array().context("entities")?;
    let by_name: HashMap<&str, &Value> = entities
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e)))
        .collect();
    let mut changes = Vec::new();
    for e in entities {
        let name = e["name"].as_str().context("name")?;
        let mut rels = Vec::new();
        for (i, r) in sample["relationships"]
            .as_array()
            .context("relationships")?
            .iter()
            .enumerate()
            .filter(|(_, r)| r["from"] == name)
        {
            let to = by_name
                .get(r["to"].as_str().context("to")?)
                .context("edge to an unknown name")?;
            rels.push(json!({
                "id": format!("00000000-0000-4000-8000-{i:012}"),
                "from_entity_id": e["id"],
                "from_entity_version": e["version"],
                "to_entity_id": to["id"],
                "to_entity_version": to["version"],
                "relationship_type": r["relationship_type"],
                "properties": r["properties"],
            }));
        }
        changes.push(json!({"change_type": "create", "entity": e, "relationships": rels}));
    }
    Ok(json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": "populate-script",
        "user_id": "populate-script",
        "sync_type": "delta",
        "changes": changes,
        "vector_clock": {"clocks": {}},
    }))
}

fn login(base: &str) -> anyhow::Result<String> {
    let (status, body) = post(
        base,
        "/api/v1/auth/admin/login",
        None,
        &json!({"password": PASSWORD}),
    )?;
    anyhow::ensure!(status == 200, "login: {status} {body}");
    Ok(body["access_token"].as_str().context("token")?.to_owned())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn reads_the_reference_graph(backend: Backend) -> anyhow::Result<()> {
    let Some(server) = TestServer::start_on(backend, |c| c).await? else {
        return Ok(());
    };
    let sample: Value = serde_json::from_str(SAMPLE)?;
    let push = reference_push(&sample)?;
    let token = login(&server.url)?;
    let (status, answer) = post(&server.url, "/api/v1/sync/", Some(&token), &push)?;
    anyhow::ensure!(status == 200, "push: {status} {answer}");
    assert_eq!(answer["applied"].as_array().map(Vec::len), Some(19));
    assert_eq!(
        answer["applied_relationships"].as_array().map(Vec::len),
        Some(27)
    );

    let c = server.client("reader").await?;
    quiet_sync(&c).await?;
    let expected = &sample["expected"];
    let id_of: HashMap<String, EntityId> = c
        .entities(&goodies_client::EntityQuery::default())
        .await?
        .into_iter()
        .map(|e| (e.name, e.id))
        .collect();
    let name_of: HashMap<&EntityId, &str> = id_of.iter().map(|(n, id)| (id, n.as_str())).collect();

    // The home and its rooms.
    let homes = c.get_homes().await?;
    assert_eq!(homes.len(), 1);
    assert_eq!(homes[0].name, expected["home"]);
    let home = homes[0].id.clone();
    let rooms = c.get_rooms_in_home(&home).await?;
    let want: Vec<String> = serde_json::from_value(expected["rooms_of_home"].clone())?;
    assert_eq!(sorted(rooms.iter().map(|r| r.name.clone()).collect()), want);
    for r in c.get_rooms().await? {
        assert_eq!(r.home_id.as_ref(), Some(&home), "{} is in the home", r.name);
        assert_eq!(c.get_room(&r.id).await?.home_id.as_ref(), Some(&home));
    }

    // The devices of each room.
    let want: BTreeMap<String, Vec<String>> =
        serde_json::from_value(expected["devices_in_room"].clone())?;
    for (room, devices) in &want {
        let got = c.get_devices_in_room(&id_of[room]).await?;
        assert_eq!(
            &sorted(got.iter().map(|d| d.name.clone()).collect()),
            devices,
            "devices in {room}"
        );
    }

    // Each device's type and room, in the list and one by one.
    let types: BTreeMap<String, String> = serde_json::from_value(expected["device_types"].clone())?;
    let all = c.get_devices().await?;
    assert_eq!(all.len(), types.len());
    for d in &all {
        assert_eq!(d.device_type.as_ref(), Some(&types[&d.name]), "{}", d.name);
        let one = c.get_device(&d.id).await?;
        assert_eq!(one.device_type, d.device_type);
        assert_eq!(one.room_id, d.room_id, "{}", d.name);
        let room = d.room_id.as_ref().map(|r| name_of[r]);
        let listed = want
            .iter()
            .find(|(_, ds)| ds.contains(&d.name))
            .map(|(r, _)| r.as_str());
        assert_eq!(room, listed, "{}'s room", d.name);
    }
    for name in expected["devices_in_no_room"].as_array().context("list")? {
        let d = c.get_device(&id_of[name.as_str().context("name")?]).await?;
        assert_eq!(d.room_id, None, "{name} only monitors a room");
    }

    // A room the reference places only in a zone is in the zone's home.
    let zone = sample["entities"]
        .as_array()
        .context("entities")?
        .iter()
        .find(|e| e["name"] == "Outdoor Areas")
        .context("zone")?
        .clone();
    let shed = json!({
        "id": "5bed0000-0000-4000-8000-000000000001",
        "version": "2026-12-01T10:30:00.000000+00:00-000100-populate-script",
        "entity_type": "room", "name": "Shed", "content": {},
        "source_type": "generated", "user_id": "populate-script", "parent_versions": [],
    });
    let edge = json!({
        "id": "5bed0000-0000-4000-8000-000000000002",
        "from_entity_id": shed["id"], "from_entity_version": shed["version"],
        "to_entity_id": zone["id"], "to_entity_version": zone["version"],
        "relationship_type": "located_in", "properties": {},
    });
    let mut more = push.clone();
    more["changes"] = json!([{"change_type": "create", "entity": shed, "relationships": [edge]}]);
    let (status, answer) = post(&server.url, "/api/v1/sync/", Some(&token), &more)?;
    anyhow::ensure!(status == 200, "push: {status} {answer}");
    quiet_sync(&c).await?;
    let shed_id = EntityId::new("5bed0000-0000-4000-8000-000000000001");
    assert_eq!(c.get_room(&shed_id).await?.home_id.as_ref(), Some(&home));
    assert!(c
        .get_rooms_in_home(&home)
        .await?
        .iter()
        .any(|r| r.name == "Shed"));
    assert_eq!(
        c.entities_of_type(EntityType::Room).await?.len(),
        7,
        "six rooms and the shed"
    );

    drop(c);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_api_reads_the_reference_graph_sqlite() -> anyhow::Result<()> {
    reads_the_reference_graph(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_api_reads_the_reference_graph_postgres() -> anyhow::Result<()> {
    reads_the_reference_graph(Backend::Postgres).await
}

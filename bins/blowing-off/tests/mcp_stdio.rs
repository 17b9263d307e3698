//! `blowing-off mcp` driven by an MCP client (rmcp) as a child process over stdio: every
//! tool, reads and writes, online against a real server, then offline (server stopped:
//! reads answer from the mirror, writes queue in the outbox), then the server is back on
//! the same database and the queued writes reach another client through sync.

use std::path::Path;
use std::time::Duration;

use funkygibbon_mock::{serve_with_handle, ServerConfig};
use goodies_client::{BlowingOffClient, ClientConfig, EntityId, RetryPolicy};
use goodies_store::GraphRead;
use goodies_tools::Toolbox;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::ServiceExt;
use serde_json::{json, Value};

const PASSWORD: &str = "mcp-password";

/// A server on a SQLite file in `dir`, on 127.0.0.1:0, until the sender is dropped or
/// fired; the join handle says when it is gone.
async fn start_server(
    dir: &Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = ServerConfig::new(format!("sqlite://{}", dir.join("server.db").display()))
        .with_admin_password(PASSWORD)
        .with_jwt_secret("mcp-secret");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = serve_with_handle(
            listener,
            config,
            async move {
                let _ = stopped.await;
            },
            ready,
        )
        .await;
    });
    is_ready.await.expect("server ready");
    (url, stop, task)
}

/// `blowing-off --db DB mcp --sync-every 0` as a child process, in its own home, with an
/// MCP client attached.
async fn start_mcp(db: &Path, home: &Path) -> RunningService<RoleClient, ()> {
    std::fs::create_dir_all(home).expect("home");
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_blowing-off")).configure(|c| {
        for v in [
            "BLOWING_OFF_DB",
            "BLOWING_OFF_CONFIG",
            "BLOWING_OFF_SERVER_URL",
            "BLOWING_OFF_AUTH_TOKEN",
            "BLOWING_OFF_CLIENT_ID",
            "BLOWING_OFF_PASSWORD",
            "RUST_LOG",
        ] {
            c.env_remove(v);
        }
        c.env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("BLOWING_OFF_RETRIES", "0")
            .current_dir(home)
            .arg("--db")
            .arg(db)
            .args(["mcp", "--sync-every", "0"]);
    });
    let transport = TokioChildProcess::new(cmd).expect("spawn blowing-off mcp");
    ().serve(transport).await.expect("MCP handshake")
}

/// Calls a tool; the structured result when it succeeded, else the error text.
async fn call(
    mcp: &RunningService<RoleClient, ()>,
    name: &str,
    args: Value,
) -> Result<Value, String> {
    let Value::Object(arguments) = args else {
        panic!("arguments must be an object")
    };
    let res: CallToolResult = mcp
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("{name}: protocol error {e}"));
    let text = res
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    if res.is_error == Some(true) {
        Err(text)
    } else {
        let structured = res.structured_content.expect("structured result");
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("text is the JSON result"),
            structured
        );
        Ok(structured)
    }
}

async fn ok(mcp: &RunningService<RoleClient, ()>, name: &str, args: Value) -> Value {
    call(mcp, name, args)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn create(
    mcp: &RunningService<RoleClient, ()>,
    t: &str,
    name: &str,
    content: Value,
) -> String {
    let r = ok(
        mcp,
        "create_entity",
        json!({"entity_type": t, "name": name, "content": content}),
    )
    .await;
    assert_eq!(r["created"], true);
    assert_eq!(r["entity"]["name"], name);
    r["entity"]["id"].as_str().expect("id").to_owned()
}

async fn relate(
    mcp: &RunningService<RoleClient, ()>,
    from: &str,
    rel: &str,
    to: &str,
    props: Value,
) {
    let r = ok(
        mcp,
        "create_relationship",
        json!({"from_entity_id": from, "to_entity_id": to, "relationship_type": rel, "properties": props}),
    )
    .await;
    assert_eq!(r["relationship"]["type"], rel);
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_online_then_offline_then_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("client.db");
    let (url, stop, server) = start_server(dir.path()).await;
    let no_retries = ClientConfig::default().with_retry(RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    });
    let client = BlowingOffClient::builder(&db)
        .config(no_retries)
        .open()
        .await
        .expect("open mirror");
    client.login(&url, PASSWORD).await.expect("login");

    let mcp = start_mcp(&db, &dir.path().join("home")).await;

    // The catalog, as the server lists it.
    let tools = mcp.list_all_tools().await.expect("tools/list");
    let listed: Vec<(String, Value)> = tools
        .iter()
        .map(|t| (t.name.to_string(), Value::Object((*t.input_schema).clone())))
        .collect();
    let catalog: Vec<(String, Value)> = goodies_tools::tools()
        .iter()
        .map(|t| (t.name.clone(), t.parameters.clone()))
        .collect();
    assert_eq!(listed, catalog);
    let read_only: Vec<bool> = tools
        .iter()
        .map(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true))
        .collect();
    assert_eq!(read_only.iter().filter(|r| !**r).count(), 3);

    // Writes (online): a small house.
    let home = create(&mcp, "home", "Test Home", json!({})).await;
    let kitchen = create(&mcp, "room", "Kitchen", json!({"floor": 0})).await;
    let dining = create(&mcp, "room", "Dining Room", json!({"floor": 0})).await;
    let oven = create(
        &mcp,
        "device",
        "Oven",
        json!({"manufacturer": "Acme", "type": "appliance", "capabilities": ["bake", "grill"]}),
    )
    .await;
    let thermostat = create(
        &mcp,
        "device",
        "Thermostat",
        json!({"manufacturer": "Acme", "type": "climate"}),
    )
    .await;
    let morning = create(&mcp, "automation", "Morning", json!({"trigger": "07:00"})).await;
    let preheat = create(
        &mcp,
        "procedure",
        "Preheat",
        json!({"steps": ["turn the dial"]}),
    )
    .await;
    let manual = create(&mcp, "manual", "Oven Manual", json!({"pages": 20})).await;
    relate(&mcp, &kitchen, "located_in", &home, json!({})).await;
    relate(&mcp, &dining, "located_in", &home, json!({})).await;
    relate(&mcp, &oven, "located_in", &kitchen, json!({})).await;
    relate(&mcp, &thermostat, "located_in", &kitchen, json!({})).await;
    relate(
        &mcp,
        &kitchen,
        "connects_to",
        &dining,
        json!({"via": "door"}),
    )
    .await;
    relate(&mcp, &thermostat, "controls", &oven, json!({})).await;
    relate(&mcp, &preheat, "procedure_for", &oven, json!({})).await;
    relate(&mcp, &oven, "documented_by", &manual, json!({})).await;
    relate(&mcp, &morning, "automates", &oven, json!({})).await;
    let refused = call(
        &mcp,
        "create_relationship",
        json!({"from_entity_id": kitchen, "to_entity_id": oven, "relationship_type": "located_in"}),
    )
    .await;
    assert_eq!(
        refused,
        Err("Invalid relationship: room cannot have located_in relationship to device".into())
    );

    // Reads, every tool.
    let r = ok(&mcp, "get_devices_in_room", json!({"room_id": kitchen})).await;
    assert_eq!(names(&r["devices"]), ["Oven", "Thermostat"]);
    assert_eq!(r["count"], 2);
    let r = ok(
        &mcp,
        "find_device_controls",
        json!({"device_id": thermostat}),
    )
    .await;
    assert_eq!(
        r["controlled_devices"],
        json!([{"id": oven, "name": "Oven", "type": "device"}])
    );
    let r = ok(&mcp, "find_device_controls", json!({"device_id": oven})).await;
    assert_eq!(r["capabilities"], json!(["bake", "grill"]));
    let r = ok(&mcp, "get_room_connections", json!({"room_id": kitchen})).await;
    assert_eq!(
        r["connections"],
        json!([{"id": dining, "name": "Dining Room", "connection_type": "door"}])
    );
    let r = ok(
        &mcp,
        "search_entities",
        json!({"query": "oven", "entity_types": ["device", "manual"]}),
    )
    .await;
    assert_eq!(names(&r["results"]), ["Oven", "Oven Manual"]);
    assert_eq!(r["results"][0]["score"], 7.0);
    let r = ok(
        &mcp,
        "find_path",
        json!({"from_entity_id": oven, "to_entity_id": home}),
    )
    .await;
    assert_eq!(
        (r["found"].clone(), r["length"].clone()),
        (json!(true), json!(2))
    );
    assert_eq!(names(&r["path"]), ["Oven", "Kitchen", "Test Home"]);
    let r = ok(
        &mcp,
        "get_entity_details",
        json!({"entity_id": oven, "include_connected": true}),
    )
    .await;
    assert_eq!(r["version_count"], 1);
    assert_eq!(
        r["relationships"]["outgoing"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        r["relationships"]["incoming"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(r["connected_entities"].as_array().map(Vec::len), Some(5));
    let r = ok(
        &mcp,
        "find_similar_entities",
        json!({"entity_id": oven, "threshold": 0.5}),
    )
    .await;
    assert_eq!(names(&r["similar_entities"]), ["Thermostat"]);
    assert_eq!(r["similar_entities"][0]["score"], 0.543);
    let r = ok(
        &mcp,
        "get_procedures_for_device",
        json!({"device_id": oven}),
    )
    .await;
    assert_eq!(
        (names(&r["procedures"]), names(&r["manuals"])),
        (vec!["Preheat"], vec!["Oven Manual"])
    );
    assert_eq!(r["total_documentation"], 2);
    let r = ok(&mcp, "get_automations_in_room", json!({"room_id": kitchen})).await;
    assert_eq!(names(&r["automations"]), ["Morning"]);
    assert_eq!(
        r["automations"][0]["affects_devices"],
        json!([{"id": oven, "name": "Oven"}])
    );
    let r = ok(
        &mcp,
        "update_entity",
        json!({"entity_id": oven, "changes": {"name": "Wall Oven", "content": {"max_temp": 250}}, "user_id": "assistant"}),
    )
    .await;
    assert_eq!(
        r["changes_applied"],
        json!({"name": "Wall Oven", "content": {"max_temp": 250}})
    );
    assert_eq!(r["parent_versions"].as_array().map(Vec::len), Some(1));
    let latest = client
        .entity(&EntityId::new(&oven))
        .await
        .unwrap()
        .expect("oven");
    assert_eq!(latest.version.to_string(), r["new_version"]);
    assert_eq!(latest.content["manufacturer"], "Acme");
    assert_eq!(latest.content["max_temp"], 250);

    // The caller's mistakes are tool errors the assistant reads.
    assert_eq!(
        call(&mcp, "get_devices_in_room", json!({"room_id": oven})).await,
        Err(format!("Room {oven} not found"))
    );
    assert_eq!(
        call(&mcp, "get_devices_in_room", json!({})).await,
        Err("get_devices_in_room() missing 1 required argument: 'room_id'".into())
    );
    assert_eq!(
        call(
            &mcp,
            "search_entities",
            json!({"query": "x", "entity_types": ["gadget"]})
        )
        .await,
        Err("'gadget' is not a valid EntityType".into())
    );
    let unknown = mcp
        .call_tool(CallToolRequestParams::new("turn_on_everything"))
        .await;
    assert!(unknown.is_err(), "an unknown tool is a protocol error");

    // Every write is a queued local edit until a sync sends it.
    assert_eq!(client.pending_changes().await.unwrap(), 18);
    let synced = client.sync().await.expect("sync");
    assert!(synced.errors.is_empty(), "{:?}", synced.errors);
    assert_eq!(client.pending_changes().await.unwrap(), 0);

    // Offline: the server is gone; reads answer from the mirror, writes queue.
    drop(stop);
    server.await.expect("server stopped");
    let r = ok(&mcp, "get_devices_in_room", json!({"room_id": kitchen})).await;
    assert_eq!(names(&r["devices"]), ["Thermostat", "Wall Oven"]);
    let r = ok(&mcp, "search_entities", json!({"query": "wall oven"})).await;
    assert_eq!(r["results"][0]["id"], json!(oven));
    let lamp = create(&mcp, "device", "Lamp", json!({"type": "light"})).await;
    relate(&mcp, &lamp, "located_in", &dining, json!({})).await;
    ok(
        &mcp,
        "update_entity",
        json!({"entity_id": kitchen, "changes": {"content": {"floor": 1}}, "user_id": "assistant"}),
    )
    .await;
    assert_eq!(client.pending_changes().await.unwrap(), 3);
    let failed = client.sync().await;
    assert!(
        failed.is_err() || !failed.as_ref().unwrap().errors.is_empty(),
        "a sync with the server down cannot succeed"
    );
    assert_eq!(client.pending_changes().await.unwrap(), 3);

    // The server is back (same database, new port): the queued writes sync and reach
    // another client, whose mirror the same tools read.
    let (url2, stop2, server2) = start_server(dir.path()).await;
    client.login(&url2, PASSWORD).await.expect("login again");
    let synced = client.sync().await.expect("sync after the server is back");
    assert!(synced.errors.is_empty(), "{:?}", synced.errors);
    assert_eq!(client.pending_changes().await.unwrap(), 0);
    let other = BlowingOffClient::open(dir.path().join("other.db"))
        .await
        .expect("other mirror");
    other.login(&url2, PASSWORD).await.expect("other login");
    let pulled = other.sync().await.expect("other sync");
    assert!(pulled.errors.is_empty(), "{:?}", pulled.errors);
    let graph: &dyn GraphRead = other.store().as_ref();
    let tools = Toolbox::new(graph, None);
    let dining_devices = tools.get_devices_in_room(&dining).await.expect("read");
    assert_eq!(dining_devices.devices.len(), 1);
    assert_eq!(dining_devices.devices[0].name, "Lamp");
    let details = tools
        .get_entity_details(&kitchen, true, false)
        .await
        .expect("kitchen");
    assert_eq!(details.entity.content["floor"], 1);
    let written = client
        .entity(&EntityId::new(&kitchen))
        .await
        .unwrap()
        .expect("kitchen");
    assert_eq!(details.current_version, written.version.to_string());

    mcp.cancel().await.expect("close the MCP session");
    drop(stop2);
    tokio::time::timeout(Duration::from_secs(30), server2)
        .await
        .expect("server stops")
        .expect("server task");
}

//! `goodies-demo`: one minute that shows what The Goodies does. A FunkyGibbon server runs
//! in this process on a temporary SQLite database (127.0.0.1, a free port); two
//! Blowing-Off clients, Alice's and Bob's, each with their own local mirror, share a home.
//! Alice edits a lamp while offline, Bob edits it too, the server decides the conflict,
//! the losing edit stays in history, and both clients end with the same state digest as
//! the server. Everything is removed on exit.

use std::time::Duration;

use anyhow::{ensure, Context};
use funkygibbon_mock::{serve_with_handle, ServerConfig};
use goodies_client::{json_object, BlowingOffClient, SyncResult};
use serde_json::json;

fn step(title: &str) {
    println!("\n== {title}");
}

fn said(who: &str, r: &SyncResult) {
    println!(
        "   {who}: synced — pushed {}, pulled {} entities, {} conflict(s), {} ms",
        r.pushed,
        r.pulled_entities,
        r.conflicts_resolved,
        r.duration.as_millis()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let password = "demo-password";

    step("A FunkyGibbon server on a fresh SQLite database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let config = ServerConfig::new(format!(
        "sqlite://{}",
        dir.path().join("server.db").display()
    ))
    .with_admin_password(password)
    .with_jwt_secret("goodies-demo");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(serve_with_handle(
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
        ready,
    ));
    is_ready.await.context("the server did not start")?;
    println!("   listening on {url}");

    step("Two clients, each with its own local mirror, log in");
    let alice = BlowingOffClient::open(dir.path().join("alice.db")).await?;
    let bob = BlowingOffClient::open(dir.path().join("bob.db")).await?;
    alice.login(&url, password).await?;
    bob.login(&url, password).await?;
    println!("   alice and bob are connected");

    step("Alice describes her home — offline-first, every write is local");
    let home = alice.create_home("Maple House").await?;
    let kitchen = alice.create_room(&home.id, "Kitchen", Some(0)).await?;
    let living = alice.create_room(&home.id, "Living Room", Some(0)).await?;
    let lamp = alice
        .create_device(&living.id, "Reading Lamp", "light", Some("Acme"))
        .await?;
    let kettle = alice
        .create_device(&kitchen.id, "Kettle", "switch", None)
        .await?;
    alice
        .update_device_state(
            &lamp.id,
            json_object(json!({"power": "on", "brightness": 60})),
        )
        .await?;
    alice
        .update_device_state(&kettle.id, json_object(json!({"power": "off"})))
        .await?;
    println!(
        "   {} with {} and {}; {} and {}; {} change(s) waiting to be sent",
        home.name,
        kitchen.name,
        living.name,
        lamp.name,
        kettle.name,
        alice.pending_changes().await?
    );
    said("alice", &alice.sync().await?);
    said("bob", &bob.sync().await?);
    for d in bob.get_devices().await? {
        println!(
            "   bob sees {} in {}: {}",
            d.name,
            match &d.room_id {
                Some(r) => bob.get_room(r).await?.name,
                None => "-".into(),
            },
            serde_json::Value::Object(d.state.clone())
        );
    }

    step("Alice dims the lamp while offline; Bob brightens it a moment later and syncs");
    alice
        .update_device_state(&lamp.id, json_object(json!({"brightness": 20})))
        .await?;
    println!(
        "   alice (offline): brightness 20 — {} change(s) pending",
        alice.pending_changes().await?
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    bob.update_device_state(&lamp.id, json_object(json!({"brightness": 100})))
        .await?;
    said("bob", &bob.sync().await?);

    step("Alice comes back online: the server decides the conflict");
    let r = alice.sync().await?;
    said("alice", &r);
    ensure!(
        r.conflicts_resolved == 1,
        "expected one conflict, got {}",
        r.conflicts_resolved
    );
    // Told from Alice's side: "this device's edit" is hers, "the other device's" Bob's.
    for c in &r.recorded {
        println!("   {}", c.explain());
        let content = |e: &Option<goodies_client::Entity>| {
            e.as_ref().map_or("(not known here)".to_owned(), |e| {
                serde_json::Value::Object(e.content.clone()).to_string()
            })
        };
        println!("   this device's edit (alice): {}", content(&c.ours));
        println!(
            "   the other side (bob's, on the server): {}",
            content(&c.theirs)
        );
    }
    let state = alice.get_device_state(&lamp.id).await?;
    println!(
        "   the lamp now: {}",
        serde_json::Value::Object(state.clone())
    );

    step("Nothing is destroyed: the losing edit stays in history");
    for v in alice.history(&lamp.id).await? {
        println!(
            "   {} {} {}",
            if v.latest { "latest " } else { "       " },
            v.entity.version,
            serde_json::Value::Object(v.entity.content.clone())
        );
    }

    step("Both clients converge on the server's state");
    let a = alice.sync().await?;
    let b = bob.sync().await?;
    let (da, db) = (
        a.digest.as_ref().context("alice's digest")?,
        b.digest.as_ref().context("bob's digest")?,
    );
    println!("   server  {}", da.server);
    println!("   alice   {}", da.local);
    println!("   bob     {}", db.local);
    ensure!(
        da.matches() && db.matches() && da.local == db.local,
        "the digests differ"
    );
    println!("\nconverged: both clients hold exactly the server's graph");

    let _ = stop.send(());
    server.await??;
    Ok(())
}

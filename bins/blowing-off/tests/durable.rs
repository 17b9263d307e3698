//! A command's writes are in the mirror's database file, synced, when the process ends
//! (docs/CLIENT.md "What reaches the disk"): the mirror runs SQLite's write-ahead log
//! with `synchronous = NORMAL`, where a commit survives the process but not a power
//! loss until a checkpoint copies it into the database file and syncs it. Each command
//! closes the mirror, and the last connection's close is that checkpoint. Checked by
//! reading the database file alone, as a machine that lost the write-ahead log's unsynced
//! pages would: it must hold the edit.

mod support;

use std::path::Path;

use goodies_store::{ClientStore as _, SqliteStore, StoreOptions};
use support::{connect, json, ok, start_server};

/// The pending (unsent) changes in the database file at `db`, read without its
/// write-ahead log (the file is copied alone).
fn pending_in_file_alone(db: &Path, scratch: &Path) -> u64 {
    let copy = scratch.join("alone.db");
    std::fs::copy(db, &copy).expect("copy the database file");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::connect(&copy.display().to_string(), StoreOptions::default())
            .await
            .expect("open the copy");
        let n = store.pending_count().await.expect("pending");
        store.close().await;
        n
    })
}

fn wal_len(db: &Path) -> u64 {
    let wal = format!("{}-wal", db.display());
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[test]
fn a_local_edit_is_in_the_database_file_when_the_command_ends() {
    let dir = tempfile::tempdir().expect("dir");
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("m.db");
    connect(&db, &url);
    ok(&db, &["sync"]);

    // Offline edits: nothing sends them, so they are only in the mirror.
    let home = json(&db, &["home", "create", "--name", "Home"]);
    let home_id = home["id"].as_str().expect("home id").to_owned();
    json(
        &db,
        &["room", "create", "--home-id", &home_id, "--name", "Kitchen"],
    );
    assert_eq!(
        wal_len(&db),
        0,
        "the write-ahead log is checkpointed into the file when the command ends"
    );
    let scratch = tempfile::tempdir().expect("scratch");
    let in_file = pending_in_file_alone(&db, scratch.path());
    let status = json(&db, &["status"]);
    let pending = status["pending_changes"].as_u64().expect("pending_changes");
    assert!(pending >= 2, "the home and the room are pending: {status}");
    assert_eq!(
        in_file, pending,
        "every pending edit is in the database file itself"
    );

    // And a sync that sends them leaves the file up to date too.
    ok(&db, &["sync"]);
    assert_eq!(wal_len(&db), 0);
    assert_eq!(pending_in_file_alone(&db, scratch.path()), 0);
}

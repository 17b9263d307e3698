//! A backup restored under running clients: every client converges on the server
//! again, nothing a client holds is lost, and no client keeps a row the restore took
//! away unless it gives it back (both backends).
//!
//! The story: two clients sync a graph; the admin takes a backup; client `a` then edits
//! one entity, deletes another and creates a third, and both clients sync; the admin
//! restores the backup. The server now answers the clients' cursors and watermarks from
//! before the restore with `INVALID_SYNC_STATE` (PROTOCOL §9.2), so each client pulls in
//! full keeping its pending changes, takes the server's rows, and gives back what only it
//! holds (the entity created after the backup, as after any divergence: a client's data is
//! never dropped silently). Afterwards every digest is the server's.

use anyhow::Context;
use goodies_client::{BlowingOffClient, EntityType, RepairReason};
use goodies_e2e::{assert_converged, http_json, quiet_sync, Backend, TestServer};
use serde_json::json;

fn obj(v: serde_json::Value) -> goodies_client::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

async fn sync_after_restore(
    c: &BlowingOffClient,
    name: &str,
) -> anyhow::Result<goodies_client::SyncResult> {
    let r = c.sync().await?;
    anyhow::ensure!(r.errors.is_empty(), "{name}: sync errors {:?}", r.errors);
    let repair = r
        .repair
        .as_ref()
        .with_context(|| format!("{name}: no repair reported after the restore: {r:?}"))?;
    anyhow::ensure!(
        repair.reason == RepairReason::InvalidSyncState,
        "{name}: repaired for {:?}, not for the restore",
        repair.reason
    );
    anyhow::ensure!(
        repair.converged,
        "{name}: repair did not converge: {repair:?}"
    );
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_on_a_restored_backup_and_keep_what_only_they_hold() -> anyhow::Result<()>
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let token = server.handle.admin_token();
        let a = server.client("a").await?;
        let b = server.client("b").await?;
        let kept = a
            .create_entity(EntityType::Note, "kept", obj(json!({"v": 1})))
            .await?;
        let edited = a
            .create_entity(EntityType::Note, "edited", obj(json!({"v": 1})))
            .await?;
        let deleted = a
            .create_entity(EntityType::Note, "deleted", obj(json!({"v": 1})))
            .await?;
        quiet_sync(&a).await?;
        quiet_sync(&b).await?;

        let (status, made) = http_json(
            "POST",
            &server.url,
            "/api/v1/backup/create",
            Some(&token),
            Some(&json!({"description": "before the edits"})),
        )?;
        anyhow::ensure!(status == 201, "{backend:?}: backup create {status} {made}");
        let backup_id = made["backup_id"].as_str().context("backup_id")?.to_owned();
        let at_backup = server.digest().await?;

        let edit = a
            .update_entity(&edited.id, None, Some(obj(json!({"v": 2}))))
            .await?;
        a.delete_entity(&deleted.id).await?;
        let created = a
            .create_entity(EntityType::Note, "created after the backup", obj(json!({})))
            .await?;
        quiet_sync(&a).await?;
        quiet_sync(&b).await?;
        // `b` also has a change waiting when the restore lands: it must survive it.
        let pending = b
            .update_entity(&kept.id, Some("kept, renamed by b"), None)
            .await?;

        let (status, restored) = http_json(
            "POST",
            &server.url,
            &format!("/api/v1/backup/{backup_id}/restore"),
            Some(&token),
            Some(&json!({"verify_checksum": true})),
        )?;
        anyhow::ensure!(status == 200, "{backend:?}: restore {status} {restored}");
        anyhow::ensure!(
            server.digest().await? == at_backup,
            "{backend:?}: the server's state is not the backup's"
        );

        let rb = sync_after_restore(&b, "b").await?;
        anyhow::ensure!(rb.pending == 0, "{backend:?}: b's change is still pending");
        let ra = sync_after_restore(&a, "a").await?;
        // Both held the entity created after the backup; whichever syncs first gives it back.
        let given_back: u64 = [&rb, &ra]
            .iter()
            .filter_map(|r| r.repair.as_ref())
            .map(|r| r.requeued)
            .sum();
        anyhow::ensure!(given_back >= 1, "{backend:?}: no client gave anything back");
        quiet_sync(&b).await?;
        quiet_sync(&a).await?;
        assert_converged(&server, &[&a, &b]).await?;

        let store = server.handle.store();
        // b's pending rename, made before the restore and sent after it, is the latest.
        let k = store.entity(&kept.id).await?.context("kept")?;
        anyhow::ensure!(
            k.version == pending.version,
            "{backend:?}: b's pending rename was lost: {k:?}"
        );
        // The edit and the delete made after the backup are undone by the restore...
        let e = store.entity(&edited.id).await?.context("edited")?;
        anyhow::ensure!(
            e.version == edited.version && e.version != edit.version,
            "{backend:?}: the restore did not take back the edit: {e:?}"
        );
        let d = store.entity(&deleted.id).await?.context("deleted")?;
        anyhow::ensure!(
            !d.is_deleted(),
            "{backend:?}: the restored entity is deleted"
        );
        // ...while the entity only the clients held is given back, not dropped.
        let c = store.entity(&created.id).await?;
        anyhow::ensure!(
            c.is_some_and(|c| c.version == created.version),
            "{backend:?}: the entity created after the backup was lost"
        );
        for client in [&a, &b] {
            let mine = client.entity(&edited.id).await?.context("edited locally")?;
            anyhow::ensure!(
                mine.version == edited.version,
                "{backend:?}: a client kept the undone edit"
            );
        }
        server.stop().await?;
    }
    Ok(())
}

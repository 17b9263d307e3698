//! The history horizon with real clients (both backends): a compaction prunes
//! superseded versions and keeps every latest row (tombstones included); a client that
//! was offline across it holds a sync position behind the horizon, is answered
//! `INVALID_SYNC_STATE`, pulls in full and converges. Nothing deleted comes back: not
//! from a client holding a stale copy of a deleted entity, not from one holding a
//! pending edit to an entity whose history was pruned. Admin only; as-of reads before
//! the horizon are refused, after it they are exact.

use anyhow::Context;
use goodies_client::{EntityType, RepairReason};
use goodies_e2e::{assert_converged, http_json, quiet_sync, Backend, TestServer};
use serde_json::json;

fn obj(v: serde_json::Value) -> goodies_client::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_clients_resync_across_a_compaction_and_nothing_deleted_returns(
) -> anyhow::Result<()> {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let token = server.handle.admin_token();
        let a = server.client("a").await?;
        let b = server.client("b").await?;
        let edited = a
            .create_entity(EntityType::Note, "edited", obj(json!({"v": 1})))
            .await?;
        let deleted = a
            .create_entity(EntityType::Note, "deleted", obj(json!({"v": 1})))
            .await?;
        let stale = a
            .create_entity(EntityType::Note, "stale", obj(json!({"v": 1})))
            .await?;
        quiet_sync(&a).await?;
        quiet_sync(&b).await?;

        // b goes offline holding a pending edit of `deleted` and a stale copy of `stale`.
        let pending = b
            .update_entity(&deleted.id, Some("deleted, renamed by b"), None)
            .await?;
        // Meanwhile a edits `edited` three times and deletes `deleted` and `stale`.
        for v in 2..=4 {
            a.update_entity(&edited.id, None, Some(obj(json!({"v": v}))))
                .await?;
        }
        a.delete_entity(&deleted.id).await?;
        a.delete_entity(&stale.id).await?;
        quiet_sync(&a).await?;
        let store = server.handle.store();
        let before = store.stats().await?.entity_versions;

        // Non-admins may not compact.
        let (_, qr) = http_json(
            "POST",
            &server.url,
            "/api/v1/auth/guest/generate-qr",
            Some(&token),
            Some(&json!({"duration_hours": 1})),
        )?;
        let (status, verified) = http_json(
            "POST",
            &server.url,
            "/api/v1/auth/guest/verify",
            None,
            Some(&json!({"token": qr["qr_data"]["token"]})),
        )?;
        anyhow::ensure!(
            status == 200,
            "{backend:?}: guest verify {status} {verified}"
        );
        let guest = verified["access_token"]
            .as_str()
            .context("guest jwt")?
            .to_owned();
        let (status, _) = http_json(
            "POST",
            &server.url,
            "/api/v1/admin/history/compact",
            Some(&guest),
            Some(&json!({"older_than": "0s"})),
        )?;
        anyhow::ensure!(status == 403, "{backend:?}: a guest compacted ({status})");

        let (status, report) = http_json(
            "POST",
            &server.url,
            "/api/v1/admin/history/compact",
            Some(&token),
            Some(&json!({"older_than": "0s"})),
        )?;
        anyhow::ensure!(status == 200, "{backend:?}: compact {status} {report}");
        let after = store.stats().await?.entity_versions;
        anyhow::ensure!(
            report["pruned_versions"].as_u64() == Some(before - after) && after < before,
            "{backend:?}: {report} (versions {before} -> {after})"
        );
        // Every latest row is kept: `edited` at its fourth version, the two tombstones.
        let history = store.history(&edited.id).await?;
        anyhow::ensure!(
            history.len() == 1 && history[0].latest,
            "{backend:?}: {history:?}"
        );
        for id in [&deleted.id, &stale.id] {
            let latest = store.entity(id).await?.context("a tombstone")?;
            anyhow::ensure!(latest.is_deleted(), "{backend:?}: {latest:?}");
        }

        // b's watermark predates the horizon: INVALID_SYNC_STATE, a full pull, convergence.
        let rb = b.sync().await?;
        anyhow::ensure!(rb.errors.is_empty(), "{backend:?}: {:?}", rb.errors);
        let repair = rb
            .repair
            .as_ref()
            .context("no repair after the compaction")?;
        anyhow::ensure!(
            repair.reason == RepairReason::InvalidSyncState,
            "{backend:?}: repaired for {:?}",
            repair.reason
        );
        quiet_sync(&b).await?;
        quiet_sync(&a).await?;
        assert_converged(&server, &[&a, &b]).await?;

        // Nothing deleted came back: the stale copy is gone from b, and b's pending edit
        // of a deleted entity did not bring it back on the server.
        let s = store.entity(&stale.id).await?.context("stale")?;
        anyhow::ensure!(s.is_deleted(), "{backend:?}: the stale copy came back");
        anyhow::ensure!(
            b.entity(&stale.id).await?.is_none_or(|e| e.is_deleted()),
            "{backend:?}: b still shows the deleted entity"
        );
        let d = store.entity(&deleted.id).await?.context("deleted")?;
        anyhow::ensure!(
            d.is_deleted() && d.version != pending.version,
            "{backend:?}: the pending edit resurrected a deleted entity: {d:?}"
        );
        let e = store.entity(&edited.id).await?.context("edited")?;
        anyhow::ensure!(
            b.entity(&edited.id).await?.map(|x| x.version) == Some(e.version),
            "{backend:?}: b does not hold the latest edit"
        );

        // As-of reads before the horizon are refused; at it they answer.
        let horizon = report["horizon"].as_str().context("horizon")?.to_owned();
        let (status, body) = http_json(
            "GET",
            &server.url,
            "/api/v1/graph/entities?at=2000-01-01T00:00:00Z",
            Some(&token),
            None,
        )?;
        anyhow::ensure!(
            status == 400 && body["error"]["field"] == "at",
            "{backend:?}: {status} {body}"
        );
        let (status, body) = http_json(
            "GET",
            &server.url,
            &format!(
                "/api/v1/graph/entities?at={}",
                horizon.replace('+', "%2B").replace(':', "%3A")
            ),
            Some(&token),
            None,
        )?;
        anyhow::ensure!(status == 200, "{backend:?}: {status} {body}");
        server.stop().await?;
    }
    Ok(())
}

/// A delta request as a client of the reference sends it: no changes, its stored
/// watermark (every answer's `server_time`) as `filters.since`.
fn idle_delta(since: Option<&str>) -> serde_json::Value {
    json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": "idle-reference-client",
        "user_id": "idle-reference-client",
        "sync_type": "delta",
        "changes": [],
        "filters": since.map(|s| json!({"since": s})),
        "vector_clock": {"clocks": {}},
    })
}

/// Idle clients of a quiet server (both backends): every answer carries the server's
/// current time, however long nothing was written. So a client that stores each
/// answer's `server_time` (as the reference client does) keeps a watermark that follows
/// the clock, and a compaction whose horizon is behind the clock never sends it back to
/// a full pull; and our client measures no clock skew on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_of_a_quiet_server_get_the_current_time() -> anyhow::Result<()> {
    use std::time::Duration;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let token = server.handle.admin_token();
        let ours = server.client("ours").await?;
        ours.create_entity(EntityType::Note, "the last write", obj(json!({})))
            .await?;
        quiet_sync(&ours).await?;
        let sync = |since: Option<&str>| -> anyhow::Result<String> {
            let (status, answer) = http_json(
                "POST",
                &server.url,
                "/api/v1/sync/",
                Some(&token),
                Some(&idle_delta(since)),
            )?;
            anyhow::ensure!(status == 200, "{backend:?}: sync {status} {answer}");
            Ok(answer["server_time"]
                .as_str()
                .context("server_time")?
                .to_owned())
        };
        let mut watermark = sync(None)?;
        watermark = sync(Some(&watermark))?;
        for round in 0..3 {
            // Nothing is written for longer than the compaction's age below.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            let before = goodies_client::proto::Timestamp::now();
            let answered = sync(Some(&watermark))?;
            let at = goodies_client::proto::Timestamp::parse(&answered)?;
            anyhow::ensure!(
                at.unix_micros() >= before.unix_micros() - 1_000,
                "{backend:?} round {round}: an idle answer's server_time {answered} is behind \
                 the clock ({before}); last one {watermark}"
            );
            watermark = answered;
            // Our client, idle too, measures the server's clock from the same answers.
            // (It keeps its own watermark up to an hour while idle, so this compaction's
            // horizon may send it back to a full pull: docs/CLIENT.md.)
            let r = ours.sync().await?;
            anyhow::ensure!(r.errors.is_empty(), "{backend:?} round {round}: {r:?}");
            let link = ours.link_state().await?;
            anyhow::ensure!(
                !link.clock_skewed(),
                "{backend:?} round {round}: skew measured on loopback: {link:?}"
            );
            // History older than two seconds is pruned; the idle watermark is newer.
            let (status, report) = http_json(
                "POST",
                &server.url,
                "/api/v1/admin/history/compact",
                Some(&token),
                Some(&json!({"older_than": "2s"})),
            )?;
            anyhow::ensure!(status == 200, "{backend:?}: compact {status} {report}");
            watermark = sync(Some(&watermark))?;
        }
        server.stop().await?;
    }
    Ok(())
}

//! Conflicts people can see, end to end with the real server on SQLite and PostgreSQL:
//! the device whose edit another device's push replaced is told (event, status, both
//! contents), a fast-forward is not a conflict, and the server's review queue is listed
//! and resolved by hand (choosing a side, or merged content) to a version with both
//! parents that every device converges on.

use futures::StreamExt;
use goodies_client::{
    BlowingOffClient, ClientError, ClientEvent, ConflictOrigin, ConflictOutcome, Entity,
    EntityType, RecordedConflict, Resolution,
};
use goodies_e2e::{assert_converged, quiet_sync, Backend, TestServer};
use inbetweenies_conflict::{ResolverConfig, Strategy};
use serde_json::json;

fn text(t: &str) -> goodies_client::JsonObject {
    goodies_client::json_object(json!({ "text": t }))
}

fn text_of(e: &Entity) -> &str {
    e.content["text"].as_str().unwrap_or_default()
}

/// The conflicts a client's event stream carried so far.
fn recorded_events(
    events: &mut (impl futures::Stream<Item = ClientEvent> + Unpin),
) -> Vec<RecordedConflict> {
    let mut out = Vec::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        if let ClientEvent::ConflictRecorded(c) = e {
            out.push(*c);
        }
    }
    out
}

use futures::FutureExt as _;

async fn overwritten_device_is_told(backend: Backend) -> anyhow::Result<()> {
    let Some(server) = TestServer::start_on(backend, |c| c).await? else {
        return Ok(());
    };
    let a = server.client("a").await?;
    let b = server.client("b").await?;
    let note = a
        .create_entity(EntityType::Note, "Shopping", text("milk"))
        .await?;
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;

    // A edits and syncs: its version is latest on the server. B, not having pulled it,
    // edits later and pushes: the server keeps B's (newer) edit.
    let ours = a
        .update_entity(&note.id, None, Some(text("milk, eggs")))
        .await?;
    quiet_sync(&a).await?;
    let theirs = b.update_entity(&note.id, None, Some(text("bread"))).await?;
    let rb = quiet_sync(&b).await?;
    assert_eq!(rb.conflicts_resolved, 1, "B's push meets A's edit");
    assert_eq!(rb.conflicts[0].resolved_version, theirs.version);
    assert_eq!(rb.recorded.len(), 1);
    assert_eq!(rb.recorded[0].origin, ConflictOrigin::ThisDevice);
    assert_eq!(rb.recorded[0].outcome(), ConflictOutcome::Ours);
    assert_eq!(text_of(rb.recorded[0].ours.as_ref().unwrap()), "bread");
    assert_eq!(
        text_of(rb.recorded[0].theirs.as_ref().unwrap()),
        "milk, eggs"
    );

    // A pulls B's winning version of an entity A edited: A is told.
    let mut events = a.observe_changes();
    let ra = quiet_sync(&a).await?;
    assert_eq!(ra.conflicts_resolved, 0, "A pushed nothing");
    assert_eq!(ra.recorded.len(), 1, "{:?}", ra.recorded);
    let told = &ra.recorded[0];
    assert_eq!(told.origin, ConflictOrigin::OtherDevice);
    assert_eq!(told.conflict.entity_id, note.id);
    assert_eq!(told.ours_version(), &ours.version);
    assert_eq!(told.theirs_version(), &theirs.version);
    assert_eq!(told.outcome(), ConflictOutcome::Theirs);
    assert_eq!(text_of(told.ours.as_ref().unwrap()), "milk, eggs");
    assert_eq!(text_of(told.theirs.as_ref().unwrap()), "bread");
    assert!(told.explain().contains("the other device's edit"));
    assert_eq!(recorded_events(&mut events), vec![told.clone()]);
    let status = a.status().await?;
    assert_eq!(status.conflicts, 1);
    assert_eq!(status.conflicts_from_other_devices, 1);
    assert_eq!(status.last_conflict.as_ref(), Some(told));
    assert_eq!(text_of(&a.entity(&note.id).await?.unwrap()), "bread");

    // Told once: a later sync records nothing more.
    let again = quiet_sync(&a).await?;
    assert!(again.recorded.is_empty());

    // A fast-forward is not a conflict, even over several versions: A edits, B pulls
    // it and edits twice on top; A pulls the last one (whose parent is B's first).
    let mine = a.update_entity(&note.id, None, Some(text("tea"))).await?;
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;
    b.update_entity(&note.id, None, Some(text("tea, sugar")))
        .await?;
    quiet_sync(&b).await?;
    let last = b
        .update_entity(&note.id, None, Some(text("tea, sugar, lemon")))
        .await?;
    quiet_sync(&b).await?;
    assert!(!last.parent_versions.contains(&mine.version));
    let ra = quiet_sync(&a).await?;
    assert!(ra.recorded.is_empty(), "{:?}", ra.recorded);
    assert_eq!(recorded_events(&mut events), vec![]);
    assert_eq!(a.status().await?.conflicts, 1);
    assert_eq!(
        a.entity(&note.id).await?.unwrap().version,
        last.version,
        "A has B's last edit"
    );
    assert_converged(&server, &[&a, &b]).await?;
    server.stop().await
}

#[tokio::test]
async fn overwritten_device_is_told_sqlite() -> anyhow::Result<()> {
    overwritten_device_is_told(Backend::Sqlite).await
}

#[tokio::test]
async fn overwritten_device_is_told_postgres() -> anyhow::Result<()> {
    overwritten_device_is_told(Backend::Postgres).await
}

/// A edits `id` and syncs, then B (not having pulled A's edit) edits it and syncs: with
/// the manual strategy the conflict is queued. Returns (A's version, B's version).
async fn queue_one(
    a: &BlowingOffClient,
    b: &BlowingOffClient,
    id: &goodies_client::EntityId,
    ta: &str,
    tb: &str,
) -> anyhow::Result<(Entity, Entity)> {
    let va = a.update_entity(id, None, Some(text(ta))).await?;
    quiet_sync(a).await?;
    let vb = b.update_entity(id, None, Some(text(tb))).await?;
    let rb = b.sync().await?;
    assert!(rb.errors.is_empty(), "{:?}", rb.errors);
    assert_eq!(rb.conflicts.len(), 1);
    assert_eq!(rb.conflicts[0].reason.as_deref(), Some("manual"));
    assert_eq!(rb.recorded[0].outcome(), ConflictOutcome::AwaitingReview);
    Ok((va, vb))
}

async fn manual_review(backend: Backend) -> anyhow::Result<()> {
    let Some(server) = TestServer::start_on(backend, |c| {
        c.with_resolver(ResolverConfig {
            default_strategy: Strategy::Manual,
            ..ResolverConfig::default()
        })
    })
    .await?
    else {
        return Ok(());
    };
    let a = server.client("a").await?;
    let b = server.client("b").await?;
    let x = a.create_entity(EntityType::Note, "X", text("x0")).await?;
    let y = a.create_entity(EntityType::Note, "Y", text("y0")).await?;
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;
    assert!(a.review_queue().await?.is_empty());

    // Choosing a side: B keeps its own edit.
    let (xa, xb) = queue_one(&a, &b, &x.id, "x by a", "x by b").await?;
    let seen_by_a = a.review_queue().await?;
    assert_eq!(seen_by_a.len(), 1);
    let q = &seen_by_a[0];
    assert_eq!(
        (q.server_version.clone(), q.client_version.clone()),
        (xa.version.clone(), xb.version.clone())
    );
    assert_eq!(
        q.ours_is_pushed(),
        Some(false),
        "A authored the server's side"
    );
    assert_eq!(text_of(q.server_side.as_ref().unwrap()), "x by a");
    assert_eq!(text_of(q.pushed_side.as_ref().unwrap()), "x by b");
    let seen_by_b = b.review_queue().await?;
    assert_eq!(seen_by_b[0].ours_is_pushed(), Some(true), "B pushed");
    let kept = b.resolve_conflict(q.id, Resolution::Ours).await?;
    assert_eq!(text_of(&kept), "x by b");
    assert!(kept.parent_versions.contains(&xa.version));
    assert!(kept.parent_versions.contains(&xb.version));
    // Resolved once: a second resolution is refused, and the queue is empty.
    let again = a.resolve_conflict(q.id, Resolution::Server).await;
    assert!(
        matches!(again, Err(ClientError::Server { status: 409, .. })),
        "{again:?}"
    );
    assert!(a.review_queue().await?.is_empty());
    let missing = a.resolve_conflict(987_654, Resolution::Pushed).await;
    assert!(
        matches!(missing, Err(ClientError::Server { status: 404, .. })),
        "{missing:?}"
    );

    // Merged content from a person.
    let (ya, yb) = queue_one(&a, &b, &y.id, "y by a", "y by b").await?;
    let q = a.review_queue().await?.remove(0);
    let merged = a
        .resolve_conflict(q.id, Resolution::Merged(text("y by a and b")))
        .await?;
    assert!(merged.parent_versions.contains(&ya.version));
    assert!(merged.parent_versions.contains(&yb.version));

    // Both devices converge on the resolutions; a resolution that names this device's
    // version as a parent is not "another device replaced my edit".
    let ra = quiet_sync(&a).await?;
    quiet_sync(&b).await?;
    quiet_sync(&a).await?;
    assert!(
        ra.recorded
            .iter()
            .all(|r| r.origin == ConflictOrigin::ThisDevice),
        "{:?}",
        ra.recorded
    );
    for c in [&a, &b] {
        assert_eq!(c.entity(&x.id).await?.unwrap().version, kept.version);
        assert_eq!(text_of(&c.entity(&y.id).await?.unwrap()), "y by a and b");
    }
    assert_converged(&server, &[&a, &b]).await?;
    server.stop().await
}

#[tokio::test]
async fn manual_review_sqlite() -> anyhow::Result<()> {
    manual_review(Backend::Sqlite).await
}

#[tokio::test]
async fn manual_review_postgres() -> anyhow::Result<()> {
    manual_review(Backend::Postgres).await
}

//! The one generic store story: every trait operation and every rule of SEMANTICS.md, run against each backend.
//!
//! Each `story_*` function takes a [`Harness`] (a fresh database of one
//! backend) and exercises the stores it opens only through the
//! `ServerStore`/`ClientStore` traits. The `stories!` macro at the bottom runs
//! every story against SQLite and, with the `postgres` feature, against
//! PostgreSQL. Client stories use a SQLite client store against the
//! harness's server store.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use goodies_store::graph::{devices_of_room, rooms_of_home};
use goodies_store::{
    AckSet, ChangePage, ChangeQuery, ChangeRecord, ClientStore, ConflictStatus, Direction,
    EntityOutcome, EntityQuery, LocalEdit, ManualResolution, PulledPage, PushOutcome,
    RelationshipOutcome, RelationshipQuery, ServerStore, StoreError, StoreOptions,
};
use inbetweenies_conflict::{state_digest, ResolverConfig, Strategy, EMPTY_DIGEST};
use inbetweenies_proto::{
    ChangeType, EntityId, EntityType, RelationshipId, RelationshipType, SourceType, Timestamp,
    Version,
};
use serde_json::json;
use support::*;

// ---------------------------------------------------------------- helpers

fn id(s: &str) -> EntityId {
    EntityId::new(s)
}

fn rid(s: &str) -> RelationshipId {
    RelationshipId::new(s)
}

fn ids(v: &[&str]) -> Vec<EntityId> {
    v.iter().map(|s| id(s)).collect()
}

async fn push(
    store: &Arc<dyn ServerStore>,
    changes: Vec<inbetweenies_proto::SyncChange>,
) -> Result<PushOutcome> {
    Ok(store
        .apply_push(batch("device-1", "alice", changes))
        .await?)
}

fn outcome_of(out: &PushOutcome, entity: &str) -> Vec<EntityOutcome> {
    out.entity_outcomes
        .iter()
        .filter(|(i, _)| i.as_ref().map(|i| i.as_str()) == Some(entity))
        .map(|(_, o)| o.clone())
        .collect()
}

/// Reads the whole change feed from `after` with pages of `limit`, following cursors.
async fn drain(
    store: &Arc<dyn ServerStore>,
    mut query: ChangeQuery,
) -> Result<(Vec<ChangeRecord>, Vec<ChangePage>)> {
    let mut rows = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..10_000 {
        let page = store.changes(&query).await?;
        rows.extend(page.records.iter().cloned());
        let next = page.next_after_seq;
        pages.push(page);
        match next {
            Some(seq) => query.after_seq = Some(seq),
            None => return Ok((rows, pages)),
        }
    }
    anyhow::bail!("the change feed did not drain in 10,000 pages")
}

fn seqs(rows: &[ChangeRecord]) -> Vec<u64> {
    rows.iter().map(ChangeRecord::seq).collect()
}

fn entity_rows(rows: &[ChangeRecord]) -> Vec<(String, String)> {
    rows.iter()
        .filter_map(|r| match r {
            ChangeRecord::Entity(e) => {
                Some((e.entity.id.to_string(), e.entity.version.to_string()))
            }
            ChangeRecord::Relationship(_) => None,
        })
        .collect()
}

fn entity_ids(rows: &[ChangeRecord]) -> Vec<String> {
    entity_rows(rows).into_iter().map(|(i, _)| i).collect()
}

fn rel_ids(rows: &[ChangeRecord]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| match r {
            ChangeRecord::Relationship(r) => Some(r.relationship.id.to_string()),
            ChangeRecord::Entity(_) => None,
        })
        .collect()
}

fn strictly_increasing(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

async fn digest_of_latest(store: &dyn goodies_store::GraphRead) -> Result<String> {
    let rows = store.latest_versions().await?;
    Ok(state_digest(
        rows.iter().map(|(i, v)| (i.as_str(), v.as_str())),
    ))
}

/// The push a client makes from its outbox, and the acknowledgement it builds from the answer.
async fn client_push(
    client: &Arc<dyn ClientStore>,
    server: &Arc<dyn ServerStore>,
    device: &str,
) -> Result<(AckSet, PushOutcome)> {
    let pending = client.pending(1000).await?;
    let out = server
        .apply_push(batch(
            device,
            "alice",
            pending.iter().map(|e| e.change.clone()).collect(),
        ))
        .await?;
    let acks = AckSet {
        sent_positions: pending.iter().map(|e| e.position).collect(),
        entities: out.applied.clone(),
        relationships: out.applied_relationships.clone(),
        resolved_versions: out
            .conflicts
            .iter()
            .map(|c| (c.entity_id.clone(), c.resolved_version.clone()))
            .collect(),
    };
    Ok((acks, out))
}

/// One full pull page (everything after the watermark) in the server's wire form.
async fn server_page(
    server: &Arc<dyn ServerStore>,
    since: Option<Timestamp>,
) -> Result<PulledPage> {
    let page = server
        .changes(&ChangeQuery {
            since,
            limit: 100_000,
            ..ChangeQuery::default()
        })
        .await?;
    Ok(PulledPage {
        changes: page.records.iter().map(to_wire).collect(),
        cursor: page.next_after_seq.map(|s| s.to_string()),
        server_time: page.server_time,
    })
}

// ---------------------------------------------------------------- server stories

/// New entities are stored and read back; unknown enum values round-trip; the
/// `applied` list is in request order without duplicates.
async fn story_push_and_read(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    ensure!(s.max_seq().await? == 0, "an empty store has max_seq 0");
    ensure!(s.entity(&id("nope")).await?.is_none());
    let v_home = ver(0, 1, "alice");
    let v_room = ver(10, 2, "alice");
    let v_odd = ver(20, 3, "alice");
    let mut odd = ent(
        "odd-1",
        &v_odd,
        &[],
        EntityType::Other("spaceship".into()),
        "Zeta",
        json!({"warp": 9}),
    );
    odd.source_type = SourceType::Other("tricorder".into());
    let home = ent(
        "home-1",
        &v_home,
        &[],
        EntityType::Home,
        "Home",
        json!({"address": "1 Main St"}),
    );
    let out = push(
        &s,
        vec![
            create(home.clone()),
            create(ent(
                "room-1",
                &v_room,
                &[],
                EntityType::Room,
                "Kitchen",
                json!({"floor": 1}),
            )),
            create(odd),
            create(home), // the same change again in one batch
        ],
    )
    .await?;
    ensure!(
        out.applied == ids(&["home-1", "room-1", "odd-1"]),
        "applied in request order without duplicates: {:?}",
        out.applied
    );
    ensure!(out.conflicts.is_empty());
    ensure!(
        out.entities_written == 3,
        "three rows written, got {}",
        out.entities_written
    );
    ensure!(out.entity_outcomes.len() == 4);
    ensure!(out.entity_outcomes[0] == (Some(id("home-1")), EntityOutcome::Applied));
    ensure!(out.entity_outcomes[3] == (Some(id("home-1")), EntityOutcome::AlreadyPresent));
    ensure!(s.max_seq().await? == 3, "three rows took seq 1..=3");

    let got = s.entity(&id("odd-1")).await?.context("odd-1 stored")?;
    ensure!(
        got.entity_type == EntityType::Other("spaceship".into()),
        "unknown entity_type round-trips"
    );
    ensure!(
        got.source_type == SourceType::Other("tricorder".into()),
        "unknown source_type round-trips"
    );
    ensure!(got.content == obj(json!({"warp": 9})));
    ensure!(got.user_id == "alice");
    ensure!(
        got.updated_at == v_odd.timestamp()?,
        "updated_at is the edit time inside the version"
    );
    ensure!(
        got.created_at == got.updated_at,
        "a new id's created_at is its edit time"
    );
    ensure!(s.entity_version(&id("room-1"), &v_room).await?.is_some());
    ensure!(s.entity_version(&id("room-1"), &v_home).await?.is_none());

    // entities(): latest rows, by name then id, with filters and paging.
    let all = s.entities(&EntityQuery::default()).await?;
    let names: Vec<_> = all.iter().map(|e| e.name.as_str()).collect();
    ensure!(
        names == ["Home", "Kitchen", "Zeta"],
        "ordered by name: {names:?}"
    );
    let rooms = s
        .entities(&EntityQuery {
            entity_types: Some(vec![
                EntityType::Room,
                EntityType::Other("spaceship".into()),
            ]),
            ..EntityQuery::default()
        })
        .await?;
    ensure!(rooms.len() == 2);
    let kitchen = s
        .entities(&EntityQuery {
            name_contains: Some("kitCH".into()),
            ..EntityQuery::default()
        })
        .await?;
    ensure!(
        kitchen.len() == 1 && kitchen[0].id == id("room-1"),
        "case-insensitive name filter"
    );
    let page = s
        .entities(&EntityQuery {
            limit: Some(1),
            offset: 1,
            ..EntityQuery::default()
        })
        .await?;
    ensure!(page.len() == 1 && page[0].name == "Kitchen", "limit/offset");
    Ok(())
}

/// Fast-forwards, history, parents before children inside one batch, created_at kept.
async fn story_fast_forward_and_history(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    let v3 = ver(2000, 3, "bob");
    // The child is listed before its parent: the store applies the parent first.
    let out = push(
        &s,
        vec![
            update(ent(
                "dev-1",
                &v2,
                &[&v1],
                EntityType::Device,
                "Lamp",
                json!({"on": true}),
            )),
            create(ent(
                "dev-1",
                &v1,
                &[],
                EntityType::Device,
                "Lamp",
                json!({"on": false}),
            )),
        ],
    )
    .await?;
    ensure!(out.applied == ids(&["dev-1"]));
    ensure!(
        outcome_of(&out, "dev-1") == [EntityOutcome::Applied, EntityOutcome::Applied],
        "{:?}",
        out.entity_outcomes
    );
    ensure!(out.conflicts.is_empty());
    let latest = s.entity(&id("dev-1")).await?.context("dev-1")?;
    ensure!(latest.version == v2);
    ensure!(
        latest.created_at == v1.timestamp()?,
        "created_at stays the first version's"
    );
    ensure!(latest.parent_versions == vec![v1.clone()]);

    let out = push(
        &s,
        vec![update(ent(
            "dev-1",
            &v3,
            &[&v2],
            EntityType::Device,
            "Lamp",
            json!({"on": false}),
        ))],
    )
    .await?;
    ensure!(outcome_of(&out, "dev-1") == [EntityOutcome::Applied]);
    let hist = s.history(&id("dev-1")).await?;
    let versions: Vec<_> = hist.iter().map(|h| h.entity.version.clone()).collect();
    ensure!(
        versions == vec![v1.clone(), v2.clone(), v3.clone()],
        "history in sequence order: {versions:?}"
    );
    ensure!(
        hist.iter().map(|h| h.latest).collect::<Vec<_>>() == [false, false, true],
        "exactly one latest row"
    );
    ensure!(
        hist.iter().all(|h| h.became_latest),
        "every fast-forward became latest when inserted"
    );
    ensure!(strictly_increasing(
        &hist.iter().map(|h| h.seq).collect::<Vec<_>>()
    ));
    ensure!(
        hist.windows(2).all(|w| w[0].received_at < w[1].received_at),
        "received_at increases with seq"
    );
    ensure!(hist[2].entity.user_id == "bob");
    ensure!(s.history(&id("unknown")).await?.is_empty());
    Ok(())
}

/// Re-sending a request is safe: every stored (id, version) is acknowledged as-is.
async fn story_idempotent_repush(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    let home_v1 = ent("home-1", &v1, &[], EntityType::Home, "Home", json!({}));
    let mut first = create(ent(
        "room-1",
        &v1,
        &[],
        EntityType::Room,
        "Kitchen",
        json!({}),
    ));
    first.relationships.push(rel(
        "rel-1",
        ("room-1", &v1),
        ("home-1", &v1),
        RelationshipType::LocatedIn,
    ));
    let changes = vec![first, create(home_v1.clone())];
    let a = push(&s, changes.clone()).await?;
    let seq_after_first = s.max_seq().await?;
    let digest_after_first = s.state_digest().await?;
    let b = push(&s, changes).await?;
    ensure!(
        a.applied == b.applied && a.applied_relationships == b.applied_relationships,
        "same acknowledgements"
    );
    ensure!(b
        .entity_outcomes
        .iter()
        .all(|(_, o)| *o == EntityOutcome::AlreadyPresent));
    ensure!(b.relationship_outcomes == vec![(rid("rel-1"), RelationshipOutcome::AlreadyPresent)]);
    ensure!(b.conflicts.is_empty() && b.entities_written == 0 && b.relationships_written == 0);
    ensure!(s.max_seq().await? == seq_after_first, "nothing written");
    ensure!(s.state_digest().await? == digest_after_first);

    // An older version re-sent after a newer one landed: acknowledged, no conflict.
    push(
        &s,
        vec![update(ent(
            "home-1",
            &v2,
            &[&v1],
            EntityType::Home,
            "Home",
            json!({"x": 1}),
        ))],
    )
    .await?;
    let c = push(&s, vec![create(home_v1)]).await?;
    ensure!(c.applied == ids(&["home-1"]));
    ensure!(outcome_of(&c, "home-1") == [EntityOutcome::AlreadyPresent]);
    ensure!(
        c.conflicts.is_empty(),
        "a re-sent older version is not a conflict"
    );
    ensure!(s.entity(&id("home-1")).await?.context("home")?.version == v2);
    Ok(())
}

/// Sets up `id` with a base version and a server edit made from it.
async fn contested(
    s: &Arc<dyn ServerStore>,
    entity: &str,
    ty: EntityType,
    base: serde_json::Value,
    server: serde_json::Value,
    server_ms: i64,
) -> Result<(Version, Version)> {
    let v0 = ver(0, 1, "alice");
    let vs = ver(server_ms, 2, "tablet");
    push(
        s,
        vec![
            create(ent(entity, &v0, &[], ty.clone(), "Thing", base)),
            update(ent(entity, &vs, &[&v0], ty, "Thing", server)),
        ],
    )
    .await?;
    Ok((v0, vs))
}

/// The newer edit wins; the older is kept as a non-latest version; both are acknowledged.
async fn story_conflict_won_and_lost(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    // Won: the pushed edit is 5 s newer than the server's.
    let (v0, vs) = contested(
        &s,
        "dev-1",
        EntityType::Device,
        json!({"on": false}),
        json!({"on": true}),
        10_000,
    )
    .await?;
    let vc = ver(15_000, 3, "phone");
    let out = push(
        &s,
        vec![update(ent(
            "dev-1",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({"on": false, "dim": 3}),
        ))],
    )
    .await?;
    ensure!(out.applied == ids(&["dev-1"]));
    ensure!(outcome_of(&out, "dev-1") == [EntityOutcome::Won]);
    ensure!(out.conflicts.len() == 1);
    let c = &out.conflicts[0];
    ensure!(
        c.entity_id == id("dev-1")
            && c.local_version == vs
            && c.remote_version == vc
            && c.resolved_version == vc
    );
    ensure!(
        c.resolution_strategy == "remote has newer timestamp",
        "{}",
        c.resolution_strategy
    );
    ensure!(c.reason.as_deref() == Some("newer_on_client"));
    ensure!(s.entity(&id("dev-1")).await?.context("dev")?.version == vc);
    let hist = s.history(&id("dev-1")).await?;
    ensure!(
        hist.len() == 3 && hist[1].entity.version == vs && !hist[1].latest && hist[1].became_latest
    );

    // Lost: the pushed edit is 5 s older than the server's.
    let (v0, vs) = contested(
        &s,
        "dev-2",
        EntityType::Device,
        json!({"on": false}),
        json!({"on": true}),
        10_000,
    )
    .await?;
    let vc = ver(5_000, 3, "phone");
    let out = push(
        &s,
        vec![update(ent(
            "dev-2",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({"on": false}),
        ))],
    )
    .await?;
    ensure!(
        out.applied == ids(&["dev-2"]),
        "a lost change is acknowledged"
    );
    ensure!(outcome_of(&out, "dev-2") == [EntityOutcome::Lost]);
    let c = &out.conflicts[0];
    ensure!(c.local_version == vs && c.remote_version == vc && c.resolved_version == vs);
    ensure!(
        c.resolution_strategy == "local has newer timestamp",
        "{}",
        c.resolution_strategy
    );
    ensure!(c.reason.as_deref() == Some("newer_on_server"));
    ensure!(out.entities_written == 1, "the loser is stored");
    ensure!(
        s.entity(&id("dev-2")).await?.context("dev")?.version == vs,
        "the server's version stays latest"
    );
    let loser = s
        .history(&id("dev-2"))
        .await?
        .into_iter()
        .find(|h| h.entity.version == vc)
        .context("loser kept in history")?;
    ensure!(
        !loser.latest && !loser.became_latest,
        "the loser is a non-latest version that never became latest"
    );
    ensure!(s.entity_version(&id("dev-2"), &vc).await?.is_some());

    // Both decisions are in the audit trail, newest first.
    let recorded = s.conflicts(None, 10).await?;
    ensure!(recorded.len() == 2);
    ensure!(
        recorded[0].entity_id == id("dev-2") && recorded[1].entity_id == id("dev-1"),
        "newest first"
    );
    ensure!(recorded.iter().all(|r| r.status == ConflictStatus::Auto));
    ensure!(
        recorded[0].reason == "newer_on_server"
            && recorded[0].strategy == "local has newer timestamp"
    );
    ensure!(
        recorded[0].server_version == vs
            && recorded[0].client_version == vc
            && recorded[0].resolved_version == vs
    );
    ensure!(recorded[0].device_id == "device-1" && recorded[0].resolved_at.is_none());
    ensure!(s
        .conflicts(Some(&[ConflictStatus::Pending]), 10)
        .await?
        .is_empty());
    ensure!(s.conflicts(None, 1).await?.len() == 1, "limit");
    Ok(())
}

/// Edits within one second: the lexically greater version wins; a delete beats an update.
async fn story_conflict_tiebreak_and_delete_wins(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let (v0, vs) = contested(
        &s,
        "dev-1",
        EntityType::Device,
        json!({}),
        json!({"a": 1}),
        10_000,
    )
    .await?;
    // 0.4 s apart: within the window, so the lexically greater version wins.
    let vc = ver(10_400, 1, "phone");
    ensure!(vc > vs);
    let out = push(
        &s,
        vec![update(ent(
            "dev-1",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({"a": 2}),
        ))],
    )
    .await?;
    ensure!(outcome_of(&out, "dev-1") == [EntityOutcome::Won]);
    ensure!(out.conflicts[0].reason.as_deref() == Some("tiebreak_version"));
    ensure!(
        out.conflicts[0].resolution_strategy == "timestamps within 1s, remote has greater version"
    );

    let (v0, vs) = contested(
        &s,
        "dev-2",
        EntityType::Device,
        json!({}),
        json!({"a": 1}),
        10_000,
    )
    .await?;
    let vc = ver(9_700, 9, "phone");
    ensure!(vc < vs);
    let out = push(
        &s,
        vec![update(ent(
            "dev-2",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({"a": 2}),
        ))],
    )
    .await?;
    ensure!(outcome_of(&out, "dev-2") == [EntityOutcome::Lost]);
    ensure!(
        out.conflicts[0].resolution_strategy == "timestamps within 1s, local has greater version"
    );

    // A pushed delete beats a server update at (nearly) equal time, even with a smaller version.
    let (v0, vs) = contested(
        &s,
        "dev-3",
        EntityType::Device,
        json!({}),
        json!({"a": 1}),
        10_000,
    )
    .await?;
    let vc = ver(9_900, 0, "phone");
    ensure!(vc < vs);
    let out = push(
        &s,
        vec![delete(ent(
            "dev-3",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({}),
        ))],
    )
    .await?;
    ensure!(outcome_of(&out, "dev-3") == [EntityOutcome::Won]);
    ensure!(out.conflicts[0].reason.as_deref() == Some("delete_wins"));
    ensure!(out.conflicts[0].resolution_strategy == "timestamps within 1s, remote is a delete");
    let latest = s.entity(&id("dev-3")).await?.context("dev-3")?;
    ensure!(
        latest.is_deleted() && latest.version == vc,
        "the delete is latest: a tombstone"
    );

    // A server delete beats a pushed update at equal time.
    let v0 = ver(0, 1, "alice");
    let vd = ver(10_000, 1, "tablet");
    push(
        &s,
        vec![
            create(ent(
                "dev-4",
                &v0,
                &[],
                EntityType::Device,
                "Thing",
                json!({}),
            )),
            delete(ent(
                "dev-4",
                &vd,
                &[&v0],
                EntityType::Device,
                "Thing",
                json!({}),
            )),
        ],
    )
    .await?;
    let vc = ver(10_300, 9, "phone");
    let out = push(
        &s,
        vec![update(ent(
            "dev-4",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({"a": 2}),
        ))],
    )
    .await?;
    ensure!(outcome_of(&out, "dev-4") == [EntityOutcome::Lost]);
    ensure!(out.conflicts[0].resolution_strategy == "timestamps within 1s, local is a delete");
    ensure!(s.entity(&id("dev-4")).await?.context("dev-4")?.is_deleted());
    Ok(())
}

/// Deletes: tombstones, unknown ids, repeated deletes, changes without an entity.
async fn story_deletes(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    let v3 = ver(2000, 3, "alice");
    push(
        &s,
        vec![create(ent(
            "note-1",
            &v1,
            &[],
            EntityType::Note,
            "Memo",
            json!({"text": "hi"}),
        ))],
    )
    .await?;
    let seq0 = s.max_seq().await?;

    let out = push(
        &s,
        vec![
            delete(ent("ghost", &v2, &[], EntityType::Note, "Ghost", json!({}))),
            delete(ent(
                "note-1",
                &v2,
                &[&v1],
                EntityType::Note,
                "Memo",
                json!({"text": "hi"}),
            )),
            rels(vec![]),
        ],
    )
    .await?;
    ensure!(
        out.applied == ids(&["ghost", "note-1"]),
        "delete of an unknown id is acknowledged: {:?}",
        out.applied
    );
    ensure!(out.entity_outcomes[0] == (Some(id("ghost")), EntityOutcome::DeletedUnknown));
    ensure!(out.entity_outcomes[1] == (Some(id("note-1")), EntityOutcome::Applied));
    ensure!(
        matches!(out.entity_outcomes[2], (None, EntityOutcome::NotAcked(_))),
        "a change without an entity is not acknowledged"
    );
    ensure!(!out.entity_outcomes[2].1.is_acked());
    ensure!(
        s.entity(&id("ghost")).await?.is_none() && s.history(&id("ghost")).await?.is_empty(),
        "nothing stored for an unknown delete"
    );
    ensure!(s.max_seq().await? == seq0 + 1, "one row: the tombstone");

    let tomb = s.entity(&id("note-1")).await?.context("tombstone")?;
    ensure!(
        tomb.is_deleted() && tomb.content.get("deleted") == Some(&json!(true)),
        "content.deleted = true"
    );
    ensure!(tomb.parent_versions == vec![v1.clone()]);
    ensure!(
        s.entities(&EntityQuery::default()).await?.is_empty(),
        "tombstones hidden by default"
    );
    let with_deleted = s
        .entities(&EntityQuery {
            include_deleted: true,
            ..EntityQuery::default()
        })
        .await?;
    ensure!(with_deleted.len() == 1 && with_deleted[0].version == v2);

    // Deleting again: already deleted, nothing stored. An update whose content says deleted is a delete.
    let mut again = ent(
        "note-1",
        &v3,
        &[&v2],
        EntityType::Note,
        "Memo",
        json!({"deleted": true}),
    );
    again.content.insert("deleted".into(), json!(true));
    let out = push(&s, vec![update(again)]).await?;
    ensure!(outcome_of(&out, "note-1") == [EntityOutcome::AlreadyDeleted]);
    ensure!(out.applied == ids(&["note-1"]) && out.entities_written == 0);
    ensure!(s.max_seq().await? == seq0 + 1);
    Ok(())
}

/// Three-way merge when configured for a type; other types keep last-write-wins.
async fn story_merge_per_type(h: &Harness) -> Result<()> {
    let opts = StoreOptions {
        resolver: Arc::new(
            ResolverConfig::default().with_strategy(EntityType::Device, Strategy::ThreeWayMerge),
        ),
        ..StoreOptions::default()
    };
    let s = h.server(opts).await;
    let (v0, vs) = contested(
        &s,
        "dev-1",
        EntityType::Device,
        json!({"a": 1, "b": 1}),
        json!({"a": 2, "b": 1}),
        10_000,
    )
    .await?;
    let vc = ver(12_000, 3, "phone");
    let out = push(
        &s,
        vec![update(ent(
            "dev-1",
            &vc,
            &[&v0],
            EntityType::Device,
            "Thing",
            json!({"a": 1, "b": 2}),
        ))],
    )
    .await?;
    ensure!(out.applied == ids(&["dev-1"]));
    let merged = match outcome_of(&out, "dev-1").as_slice() {
        [EntityOutcome::Merged(v)] => v.clone(),
        other => anyhow::bail!("expected a merge, got {other:?}"),
    };
    ensure!(
        out.entities_written == 2,
        "the pushed version and the merge version"
    );
    let latest = s.entity(&id("dev-1")).await?.context("dev-1")?;
    ensure!(latest.version == merged);
    ensure!(
        latest.content == obj(json!({"a": 2, "b": 2})),
        "fields changed on one side merge cleanly: {:?}",
        latest.content
    );
    let mut parents = latest.parent_versions.clone();
    parents.sort();
    ensure!(parents == vec![vs.clone(), vc.clone()]);
    let pushed = s
        .history(&id("dev-1"))
        .await?
        .into_iter()
        .find(|h| h.entity.version == vc)
        .context("pushed kept")?;
    ensure!(!pushed.latest && !pushed.became_latest);
    let c = &out.conflicts[0];
    ensure!(
        c.reason.as_deref() == Some("merged")
            && c.resolution_strategy == "merged"
            && c.resolved_version == merged
    );

    // A room is not configured: last-write-wins.
    let (v0, _) = contested(
        &s,
        "room-1",
        EntityType::Room,
        json!({"a": 1}),
        json!({"a": 2}),
        10_000,
    )
    .await?;
    let vc = ver(15_000, 3, "phone");
    let out = push(
        &s,
        vec![update(ent(
            "room-1",
            &vc,
            &[&v0],
            EntityType::Room,
            "Thing",
            json!({"b": 1}),
        ))],
    )
    .await?;
    ensure!(outcome_of(&out, "room-1") == [EntityOutcome::Won]);
    Ok(())
}

/// The manual queue: queued conflicts keep the server's version; resolve and dismiss.
async fn story_manual_queue(h: &Harness) -> Result<()> {
    let opts = StoreOptions {
        resolver: Arc::new(
            ResolverConfig::default().with_strategy(EntityType::Note, Strategy::Manual),
        ),
        ..StoreOptions::default()
    };
    let s = h.server(opts).await;
    let (v0, vs) = contested(
        &s,
        "note-1",
        EntityType::Note,
        json!({"t": "a"}),
        json!({"t": "server"}),
        10_000,
    )
    .await?;
    let vc = ver(12_000, 3, "phone");
    let out = push(
        &s,
        vec![update(ent(
            "note-1",
            &vc,
            &[&v0],
            EntityType::Note,
            "Thing",
            json!({"t": "client"}),
        ))],
    )
    .await?;
    ensure!(out.applied == ids(&["note-1"]), "queued is acknowledged");
    ensure!(outcome_of(&out, "note-1") == [EntityOutcome::Queued]);
    ensure!(
        out.conflicts[0].reason.as_deref() == Some("manual")
            && out.conflicts[0].resolved_version == vs
    );
    ensure!(
        s.entity(&id("note-1")).await?.context("note")?.version == vs,
        "the server's version stays latest"
    );
    ensure!(s.stats().await?.pending_conflicts == 1);
    let pending = s.conflicts(Some(&[ConflictStatus::Pending]), 10).await?;
    ensure!(
        pending.len() == 1
            && pending[0].client_version == vc
            && pending[0].server_version == vs
            && pending[0].reason == "manual"
    );

    let (record, entity) = s
        .resolve_conflict(pending[0].id, ManualResolution::KeepClient, "admin")
        .await?;
    ensure!(record.status == ConflictStatus::Resolved && record.resolved_at.is_some());
    ensure!(record.resolved_version == entity.version);
    ensure!(entity.content == obj(json!({"t": "client"})));
    let mut parents = entity.parent_versions.clone();
    parents.sort();
    ensure!(
        parents == vec![vs.clone(), vc.clone()],
        "the resolution is parented on both sides"
    );
    ensure!(entity.user_id == "admin");
    ensure!(
        s.entity(&id("note-1")).await?.context("note")?.version == entity.version,
        "the resolution is the new latest"
    );
    ensure!(s.stats().await?.pending_conflicts == 0);
    match s
        .resolve_conflict(pending[0].id, ManualResolution::KeepServer, "admin")
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => anyhow::bail!("resolving twice must be invalid, got {other:?}"),
    }
    // The resolution shows up in the change feed as a new row.
    let (rows, _) = drain(&s, ChangeQuery::default()).await?;
    ensure!(entity_rows(&rows).contains(&("note-1".to_owned(), entity.version.to_string())));

    // A custom resolution, then a dismissal.
    let (v0, _) = contested(
        &s,
        "note-2",
        EntityType::Note,
        json!({}),
        json!({"t": "s"}),
        10_000,
    )
    .await?;
    push(
        &s,
        vec![update(ent(
            "note-2",
            &ver(13_000, 3, "phone"),
            &[&v0],
            EntityType::Note,
            "Thing",
            json!({"t": "c"}),
        ))],
    )
    .await?;
    let (v0, vs3) = contested(
        &s,
        "note-3",
        EntityType::Note,
        json!({}),
        json!({"t": "s"}),
        10_000,
    )
    .await?;
    push(
        &s,
        vec![update(ent(
            "note-3",
            &ver(13_000, 3, "phone"),
            &[&v0],
            EntityType::Note,
            "Thing",
            json!({"t": "c"}),
        ))],
    )
    .await?;
    let pending = s.conflicts(Some(&[ConflictStatus::Pending]), 10).await?;
    ensure!(
        pending.len() == 2 && pending[0].entity_id == id("note-3"),
        "newest first"
    );
    let (_, custom) = s
        .resolve_conflict(
            pending[1].id,
            ManualResolution::Custom {
                name: "Merged by hand".into(),
                content: obj(json!({"t": "both"})),
            },
            "admin",
        )
        .await?;
    ensure!(custom.name == "Merged by hand" && custom.content == obj(json!({"t": "both"})));
    let dismissed = s.dismiss_conflict(pending[0].id).await?;
    ensure!(dismissed.status == ConflictStatus::Dismissed && dismissed.resolved_at.is_some());
    ensure!(
        s.entity(&id("note-3")).await?.context("note-3")?.version == vs3,
        "dismissal keeps the automatic outcome"
    );
    ensure!(matches!(
        s.dismiss_conflict(pending[0].id).await,
        Err(StoreError::Invalid(_))
    ));
    ensure!(matches!(
        s.dismiss_conflict(999_999).await,
        Err(StoreError::NotFound(_))
    ));
    ensure!(matches!(
        s.resolve_conflict(999_999, ManualResolution::KeepServer, "x")
            .await,
        Err(StoreError::NotFound(_))
    ));
    let statuses: BTreeSet<_> = s
        .conflicts(None, 10)
        .await?
        .iter()
        .map(|c| c.status.as_str())
        .collect();
    ensure!(statuses == BTreeSet::from(["resolved", "dismissed"]));
    Ok(())
}

/// Relationships are acknowledged only when both endpoint versions exist.
async fn story_relationships(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    // The relationship rides on the first change; its endpoints come later in the batch.
    let mut first = create(ent(
        "dev-1",
        &v1,
        &[],
        EntityType::Device,
        "Lamp",
        json!({}),
    ));
    first.relationships.push(rel(
        "r-ok",
        ("dev-1", &v1),
        ("room-1", &v1),
        RelationshipType::LocatedIn,
    ));
    first.relationships.push(rel(
        "r-missing",
        ("dev-1", &v1),
        ("room-404", &v1),
        RelationshipType::LocatedIn,
    ));
    let mut r_other = rel(
        "r-other",
        ("dev-1", &v1),
        ("room-1", &v1),
        RelationshipType::Other("haunts".into()),
    );
    r_other.user_id = Some("carol".into());
    r_other.properties = obj(json!({"since": 2020}));
    let out = push(
        &s,
        vec![
            first,
            create(ent(
                "room-1",
                &v1,
                &[],
                EntityType::Room,
                "Kitchen",
                json!({}),
            )),
            rels(vec![
                r_other,
                rel(
                    "r-badver",
                    ("dev-1", &v2),
                    ("room-1", &v1),
                    RelationshipType::Controls,
                ),
            ]),
        ],
    )
    .await?;
    ensure!(
        out.applied_relationships == vec![rid("r-ok"), rid("r-other")],
        "{:?}",
        out.applied_relationships
    );
    ensure!(
        out.relationship_outcomes
            == vec![
                (rid("r-ok"), RelationshipOutcome::Applied),
                (rid("r-missing"), RelationshipOutcome::MissingEndpoint),
                (rid("r-other"), RelationshipOutcome::Applied),
                (rid("r-badver"), RelationshipOutcome::MissingEndpoint),
            ]
    );
    ensure!(out.relationships_written == 2);
    ensure!(s.relationship(&rid("r-missing")).await?.is_none());
    let r = s.relationship(&rid("r-ok")).await?.context("r-ok")?;
    ensure!(
        r.user_id == "alice",
        "a relationship without user_id takes the batch's user"
    );
    let other = s.relationship(&rid("r-other")).await?.context("r-other")?;
    ensure!(
        other.relationship_type == RelationshipType::Other("haunts".into())
            && other.user_id == "carol"
    );
    ensure!(other.properties == obj(json!({"since": 2020})));

    // Endpoints at non-latest versions are fine; a re-push is acknowledged as present.
    push(
        &s,
        vec![update(ent(
            "dev-1",
            &v2,
            &[&v1],
            EntityType::Device,
            "Lamp",
            json!({"on": true}),
        ))],
    )
    .await?;
    let out = push(
        &s,
        vec![rels(vec![
            rel(
                "r-old",
                ("dev-1", &v1),
                ("room-1", &v1),
                RelationshipType::Controls,
            ),
            rel(
                "r-ok",
                ("dev-1", &v1),
                ("room-1", &v1),
                RelationshipType::LocatedIn,
            ),
        ])],
    )
    .await?;
    ensure!(
        out.relationship_outcomes
            == vec![
                (rid("r-old"), RelationshipOutcome::Applied),
                (rid("r-ok"), RelationshipOutcome::AlreadyPresent)
            ]
    );
    ensure!(out.applied_relationships == vec![rid("r-old"), rid("r-ok")]);

    // Queries, in sequence order.
    let from_dev = s
        .relationships(&RelationshipQuery {
            from_entity_id: Some(id("dev-1")),
            ..RelationshipQuery::default()
        })
        .await?;
    ensure!(
        from_dev.iter().map(|r| r.id.as_str()).collect::<Vec<_>>() == ["r-ok", "r-other", "r-old"]
    );
    let to_room = s
        .relationships(&RelationshipQuery {
            to_entity_id: Some(id("room-1")),
            relationship_type: Some(RelationshipType::Controls),
            ..RelationshipQuery::default()
        })
        .await?;
    ensure!(to_room.len() == 1 && to_room[0].id == rid("r-old"));
    let paged = s
        .relationships(&RelationshipQuery {
            limit: Some(1),
            offset: 1,
            ..RelationshipQuery::default()
        })
        .await?;
    ensure!(paged.len() == 1 && paged[0].id == rid("r-other"));
    Ok(())
}

/// A batch that fails before COMMIT leaves the database exactly as it was.
async fn story_failed_batch_changes_nothing(h: &Harness) -> Result<()> {
    let gate = Gate::new();
    let s = h.server(gate.options()).await;
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    push(
        &s,
        vec![create(ent(
            "home-1",
            &v1,
            &[],
            EntityType::Home,
            "Home",
            json!({}),
        ))],
    )
    .await?;
    let before = (
        s.state_digest().await?,
        s.stats().await?,
        s.history(&id("home-1")).await?,
    );

    let mut changes = vec![
        create(ent(
            "room-1",
            &v1,
            &[],
            EntityType::Room,
            "Kitchen",
            json!({}),
        )),
        update(ent(
            "home-1",
            &v2,
            &[&v1],
            EntityType::Home,
            "Home",
            json!({"x": 1}),
        )),
        update(ent(
            "home-1",
            &ver(500, 9, "phone"),
            &[],
            EntityType::Home,
            "Home",
            json!({"y": 1}),
        )),
    ];
    changes[0].relationships.push(rel(
        "r-1",
        ("room-1", &v1),
        ("home-1", &v1),
        RelationshipType::LocatedIn,
    ));
    gate.fail_next_commit();
    let err = s
        .apply_push(batch("device-1", "alice", changes.clone()))
        .await;
    ensure!(err.is_err(), "the injected failure fails the push");
    let after = (
        s.state_digest().await?,
        s.stats().await?,
        s.history(&id("home-1")).await?,
    );
    ensure!(before == after, "nothing of the failed batch is visible");
    ensure!(
        s.entity(&id("room-1")).await?.is_none() && s.relationship(&rid("r-1")).await?.is_none()
    );
    ensure!(
        s.conflicts(None, 10).await?.is_empty(),
        "no conflict row survives the rollback"
    );
    let (rows, _) = drain(&s, ChangeQuery::default()).await?;
    ensure!(rows.len() == 1);

    // The same batch goes through afterwards.
    let out = s.apply_push(batch("device-1", "alice", changes)).await?;
    ensure!(
        out.applied == ids(&["room-1", "home-1"]) && out.applied_relationships == vec![rid("r-1")]
    );
    ensure!(outcome_of(&out, "home-1") == [EntityOutcome::Applied, EntityOutcome::Lost]);
    let st = s.stats().await?;
    ensure!(
        st.entity_versions == before.1.entity_versions + 3 && st.relationships == 1,
        "room, home v2, the loser; one relationship"
    );
    Ok(())
}

/// A transaction that takes sequence N and commits late is never skipped by a reader.
async fn story_late_commit_never_skipped(h: &Harness) -> Result<()> {
    let gate = Gate::new();
    let s = h.server(gate.options()).await;
    let mut seed = Vec::new();
    for i in 0..5 {
        seed.push(create(ent(
            &format!("e-{i}"),
            &ver(i, 1, "alice"),
            &[],
            EntityType::Device,
            "Seed",
            json!({}),
        )));
    }
    push(&s, seed).await?;
    let first = s
        .changes(&ChangeQuery {
            limit: 3,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(first.records.len() == 3 && first.next_after_seq.is_some());

    // Writer A takes the next sequence number and stops just before COMMIT.
    gate.hold_next_commit();
    let a = tokio::spawn({
        let s = Arc::clone(&s);
        async move {
            s.apply_push(batch(
                "dev-a",
                "alice",
                vec![create(ent(
                    "late-a",
                    &ver(100, 1, "alice"),
                    &[],
                    EntityType::Device,
                    "A",
                    json!({}),
                ))],
            ))
            .await
        }
    });
    gate.entered().await;
    // Writer B tries to write meanwhile; a reader pages on from its cursor.
    let b = tokio::spawn({
        let s = Arc::clone(&s);
        async move {
            s.apply_push(batch(
                "dev-b",
                "bob",
                vec![create(ent(
                    "late-b",
                    &ver(200, 1, "bob"),
                    &[],
                    EntityType::Device,
                    "B",
                    json!({}),
                ))],
            ))
            .await
        }
    });
    let mut reader = tokio::spawn({
        let s = Arc::clone(&s);
        let after = first.next_after_seq;
        async move {
            drain(
                &s,
                ChangeQuery {
                    after_seq: after,
                    limit: 3,
                    ..ChangeQuery::default()
                },
            )
            .await
        }
    });
    // Give a store that does not serialise commits the chance to show the bug: the
    // reader or writer B finishing while A still holds sequence N. (A correct store
    // blocks both until A commits, so this wait only bounds how long we look.)
    let early = tokio::time::timeout(Duration::from_millis(300), &mut reader).await;
    let a_done_before_release = a.is_finished();
    gate.release();
    let out_a = a.await??;
    let out_b = b.await??;
    ensure!(!a_done_before_release, "writer A was held");
    ensure!(out_a.applied == ids(&["late-a"]) && out_b.applied == ids(&["late-b"]));
    let (mut rows, reader_pages) = match early {
        Ok(joined) => joined??,
        Err(_) => reader.await??,
    };
    // The reader's last page drained the feed: every row it did not deliver committed
    // later, and must have been received strictly after that page's server_time (else
    // a client using it as its watermark would never see the row).
    let drained_at = reader_pages
        .last()
        .context("the reader read a page")?
        .server_time;
    let delivered_up_to = rows.last().map(ChangeRecord::seq).or(first.next_after_seq);
    let (everything, _) = drain(&s, ChangeQuery::default()).await?;
    for r in everything
        .iter()
        .filter(|r| Some(r.seq()) > delivered_up_to)
    {
        let received = match r {
            ChangeRecord::Entity(e) => e.received_at,
            ChangeRecord::Relationship(r) => r.received_at,
        };
        ensure!(
            received > drained_at,
            "row {} committed after the drained page but was received at {received}, not after its server_time {drained_at}",
            r.seq()
        );
    }
    // Drain again: writer B may have committed after the reader's last page.
    let last = rows.last().map(ChangeRecord::seq).or(first.next_after_seq);
    let (more, _) = drain(
        &s,
        ChangeQuery {
            after_seq: last,
            limit: 3,
            ..ChangeQuery::default()
        },
    )
    .await?;
    rows.extend(more);

    let seq_a = s.history(&id("late-a")).await?[0].seq;
    let seq_b = s.history(&id("late-b")).await?[0].seq;
    ensure!(seq_a < seq_b, "A took its sequence number first");
    let got = seqs(&rows);
    ensure!(
        strictly_increasing(&got),
        "pages are in sequence order without repeats: {got:?}"
    );
    ensure!(
        got.contains(&seq_a),
        "the reader received A's row (seqs {got:?}, A = {seq_a})"
    );
    ensure!(got.contains(&seq_b));
    let ids_seen = entity_ids(&rows);
    ensure!(
        ids_seen == ["e-3", "e-4", "late-a", "late-b"],
        "{ids_seen:?}"
    );

    // The watermark of the page read before A committed is before A's receipt time.
    let ra = s.history(&id("late-a")).await?[0].received_at;
    ensure!(
        ra > first.server_time,
        "a row committed after a page is received after its server_time"
    );
    let since = s
        .changes(&ChangeQuery {
            since: Some(first.server_time),
            ..ChangeQuery::default()
        })
        .await?;
    let since_ids = entity_ids(&since.records);
    ensure!(since_ids.contains(&"late-a".to_owned()) && since_ids.contains(&"late-b".to_owned()));
    Ok(())
}

/// Delta filters: since, cursor, entity types, modified_by, include flags, limit.
async fn story_change_feed_filters(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let v = |ms, n, u: &str| ver(ms, n, u);
    let (vh, vr) = (v(0, 1, "alice"), v(10, 1, "bob"));
    let mut room = create(ent(
        "room-1",
        &vr,
        &[],
        EntityType::Room,
        "Kitchen",
        json!({}),
    ));
    room.relationships.push(rel(
        "r-1",
        ("room-1", &vr),
        ("home-1", &vh),
        RelationshipType::LocatedIn,
    ));
    room.relationships[0].user_id = Some("bob".into());
    push(
        &s,
        vec![
            create(ent("home-1", &vh, &[], EntityType::Home, "Home", json!({}))),
            room,
        ],
    )
    .await?;
    let p0 = s.changes(&ChangeQuery::default()).await?;
    ensure!(entity_ids(&p0.records) == ["home-1", "room-1"] && rel_ids(&p0.records) == ["r-1"]);
    ensure!(
        matches!(p0.records[2], ChangeRecord::Relationship(_)),
        "relationships after the entities they follow in sequence"
    );
    ensure!(strictly_increasing(&seqs(&p0.records)) && p0.next_after_seq.is_none());
    let w1 = p0.server_time;

    let (vd, vn) = (v(20, 1, "alice"), v(30, 1, "carol"));
    let mut dev = create(ent(
        "dev-1",
        &vd,
        &[],
        EntityType::Device,
        "Lamp",
        json!({}),
    ));
    dev.relationships.push(rel(
        "r-2",
        ("dev-1", &vd),
        ("room-1", &vr),
        RelationshipType::LocatedIn,
    ));
    push(
        &s,
        vec![
            dev,
            create(ent("note-1", &vn, &[], EntityType::Note, "Memo", json!({}))),
        ],
    )
    .await?;

    let since = s
        .changes(&ChangeQuery {
            since: Some(w1),
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        entity_ids(&since.records) == ["dev-1", "note-1"] && rel_ids(&since.records) == ["r-2"],
        "since: {:?}",
        since.records
    );
    ensure!(since.server_time >= w1);
    let typed = s
        .changes(&ChangeQuery {
            since: Some(w1),
            entity_types: Some(vec![EntityType::Device]),
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        entity_ids(&typed.records) == ["dev-1"] && rel_ids(&typed.records) == ["r-2"],
        "relationships are not filtered by type"
    );
    let alice = s
        .changes(&ChangeQuery {
            modified_by: Some(vec!["alice".into()]),
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        entity_ids(&alice.records) == ["home-1", "dev-1"] && rel_ids(&alice.records) == ["r-2"],
        "modified_by"
    );
    let only_rels = s
        .changes(&ChangeQuery {
            include_entities: false,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        entity_ids(&only_rels.records).is_empty() && rel_ids(&only_rels.records) == ["r-1", "r-2"]
    );
    let only_entities = s
        .changes(&ChangeQuery {
            include_relationships: false,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        entity_ids(&only_entities.records) == ["home-1", "room-1", "dev-1", "note-1"]
            && rel_ids(&only_entities.records).is_empty()
    );
    let room_seq = p0.records[1].seq();
    let after = s
        .changes(&ChangeQuery {
            after_seq: Some(room_seq),
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        after.records.iter().all(|r| r.seq() > room_seq) && after.records.len() == 4,
        "cursor"
    );

    // Paging: full pages carry a cursor; the last page does not.
    let p1 = s
        .changes(&ChangeQuery {
            limit: 2,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(p1.records.len() == 2 && p1.next_after_seq == Some(p1.records[1].seq()));
    let p2 = s
        .changes(&ChangeQuery {
            limit: 2,
            after_seq: p1.next_after_seq,
            ..ChangeQuery::default()
        })
        .await?;
    let p3 = s
        .changes(&ChangeQuery {
            limit: 2,
            after_seq: p2.next_after_seq,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(
        p2.records.len() == 2 && p3.records.len() == 2 && p3.next_after_seq.is_some(),
        "exactly full: a cursor"
    );
    let p4 = s
        .changes(&ChangeQuery {
            limit: 2,
            after_seq: p3.next_after_seq,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(p4.records.is_empty() && p4.next_after_seq.is_none());
    let odd = s
        .changes(&ChangeQuery {
            limit: 4,
            after_seq: p1.next_after_seq,
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(odd.records.len() == 4 && odd.next_after_seq.is_some());

    // Only latest rows: an updated entity moves to the end with its new version.
    let vh2 = v(5000, 2, "alice");
    push(
        &s,
        vec![update(ent(
            "home-1",
            &vh2,
            &[&vh],
            EntityType::Home,
            "Home",
            json!({"x": 1}),
        ))],
    )
    .await?;
    let all = s.changes(&ChangeQuery::default()).await?;
    let rows = entity_rows(&all.records);
    ensure!(rows.iter().filter(|(i, _)| i == "home-1").count() == 1);
    ensure!(
        rows.last() == Some(&("home-1".to_owned(), vh2.to_string())),
        "{rows:?}"
    );
    // A cursor after everything yields nothing.
    let none = s
        .changes(&ChangeQuery {
            after_seq: Some(s.max_seq().await?),
            ..ChangeQuery::default()
        })
        .await?;
    ensure!(none.records.is_empty() && none.next_after_seq.is_none());
    Ok(())
}

/// Paging across entities and relationships while writes continue: no row skipped or repeated.
async fn story_paging_while_writing(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let mut versions: HashMap<String, Version> = HashMap::new();
    let mut changes = Vec::new();
    for i in 0..30 {
        let e = format!("e-{i:02}");
        let v = ver(i, 1, "alice");
        let mut c = create(ent(&e, &v, &[], EntityType::Device, &e, json!({"i": i})));
        if i > 0 {
            let prev = format!("e-{:02}", i - 1);
            let pv = versions[&prev].clone();
            c.relationships.push(rel(
                &format!("r-{i:02}"),
                (&e, &v),
                (&prev, &pv),
                RelationshipType::ConnectsTo,
            ));
        }
        versions.insert(e, v);
        changes.push(c);
    }
    push(&s, changes).await?;

    let mut seen = Vec::new();
    let mut after = None;
    let mut counter = 2;
    for round in 0..100 {
        let page = s
            .changes(&ChangeQuery {
                after_seq: after,
                limit: 7,
                ..ChangeQuery::default()
            })
            .await?;
        seen.extend(page.records.iter().cloned());
        if let Some(last) = page.records.last() {
            after = Some(last.seq());
        }
        // Writes between pages: an entity already sent, one not yet sent, a new one and an edge.
        if round < 6 {
            let mut batch_changes = Vec::new();
            for target in [
                format!("e-{:02}", round * 2),
                format!("e-{:02}", 29 - round * 3),
            ] {
                let old = versions[&target].clone();
                let v = ver(10_000 + counter, counter as u32, "bob");
                counter += 1;
                batch_changes.push(update(ent(
                    &target,
                    &v,
                    &[&old],
                    EntityType::Device,
                    &target,
                    json!({"round": round}),
                )));
                versions.insert(target, v);
            }
            let new_id = format!("n-{round}");
            let nv = ver(20_000 + round, 1, "carol");
            let mut c = create(ent(&new_id, &nv, &[], EntityType::Note, &new_id, json!({})));
            c.relationships.push(rel(
                &format!("rn-{round}"),
                (&new_id, &nv),
                ("e-00", &ver(0, 1, "alice")),
                RelationshipType::DocumentedBy,
            ));
            batch_changes.push(c);
            versions.insert(new_id, nv);
            push(&s, batch_changes).await?;
        } else if page.next_after_seq.is_none() {
            break;
        }
    }
    let got = seqs(&seen);
    ensure!(
        strictly_increasing(&got),
        "no row repeated, in sequence order"
    );
    // Every entity's last-seen version is its latest; every relationship seen once.
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, v) in entity_rows(&seen) {
        last_seen.insert(i, v);
    }
    let latest: BTreeMap<String, String> = s
        .latest_versions()
        .await?
        .into_iter()
        .map(|(i, v)| (i.to_string(), v.to_string()))
        .collect();
    ensure!(
        last_seen == latest,
        "every id's latest version was delivered"
    );
    ensure!(latest.len() == 36);
    let expected: BTreeMap<String, String> = versions
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    ensure!(latest == expected);
    let rel_seen = rel_ids(&seen);
    let rel_set: BTreeSet<_> = rel_seen.iter().cloned().collect();
    ensure!(
        rel_seen.len() == rel_set.len() && rel_set.len() == 35,
        "each relationship exactly once"
    );
    // The rows seen that are still latest are exactly the feed read in one go now.
    let (all, _) = drain(
        &s,
        ChangeQuery {
            limit: 1000,
            ..ChangeQuery::default()
        },
    )
    .await?;
    let still: Vec<u64> = got
        .iter()
        .copied()
        .filter(|q| all.iter().any(|r| r.seq() == *q))
        .collect();
    ensure!(still == seqs(&all), "no current row was skipped");
    Ok(())
}

/// The digest equals the conflict crate's over the same rows, and moves only with the latest rows.
async fn story_digest(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    ensure!(s.state_digest().await? == EMPTY_DIGEST);
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    // Ids chosen so that byte order differs from case-insensitive order.
    push(
        &s,
        vec![
            create(ent("b-id", &v1, &[], EntityType::Room, "B", json!({}))),
            create(ent("A-id", &v1, &[], EntityType::Room, "A", json!({}))),
            create(ent("a-id", &v1, &[], EntityType::Room, "a", json!({}))),
            create(ent("_-id", &v1, &[], EntityType::Room, "_", json!({}))),
        ],
    )
    .await?;
    let latest = s.latest_versions().await?;
    let order: Vec<_> = latest.iter().map(|(i, _)| i.as_str()).collect();
    ensure!(
        order == ["A-id", "_-id", "a-id", "b-id"],
        "id byte order: {order:?}"
    );
    let d1 = s.state_digest().await?;
    ensure!(d1 == digest_of_latest(s.as_ref()).await?);
    let all = s
        .entities(&EntityQuery {
            include_deleted: true,
            ..EntityQuery::default()
        })
        .await?;
    ensure!(d1 == state_digest(all.iter().map(|e| (e.id.as_str(), e.version.as_str()))));
    ensure!(s.state_digest().await? == d1, "stable without writes");

    // A relationship alone does not change the digest; a tombstone does and is included.
    push(
        &s,
        vec![rels(vec![rel(
            "r-1",
            ("a-id", &v1),
            ("b-id", &v1),
            RelationshipType::ConnectsTo,
        )])],
    )
    .await?;
    ensure!(s.state_digest().await? == d1);
    push(
        &s,
        vec![delete(ent(
            "b-id",
            &v2,
            &[&v1],
            EntityType::Room,
            "B",
            json!({}),
        ))],
    )
    .await?;
    let d2 = s.state_digest().await?;
    ensure!(d2 != d1, "a write changes the digest");
    ensure!(
        d2 == state_digest([
            ("A-id", v1.as_str()),
            ("_-id", v1.as_str()),
            ("a-id", v1.as_str()),
            ("b-id", v2.as_str())
        ])
    );

    // A second store on the same database sees the first one's writes.
    let other = h.default_server().await;
    ensure!(other.state_digest().await? == d2);
    push(
        &other,
        vec![update(ent(
            "a-id",
            &v2,
            &[&v1],
            EntityType::Room,
            "a",
            json!({"x": 1}),
        ))],
    )
    .await?;
    let d3 = s.state_digest().await?;
    ensure!(
        d3 != d2 && d3 == digest_of_latest(s.as_ref()).await?,
        "a cached digest follows another store's writes"
    );
    Ok(())
}

/// The graph as it was at a time (by receipt time), tombstones and losers left out.
async fn story_as_of(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let (v1, v2, v3) = (
        ver(0, 1, "alice"),
        ver(10_000, 2, "alice"),
        ver(20_000, 3, "alice"),
    );
    push(
        &s,
        vec![
            create(ent("home-1", &v1, &[], EntityType::Home, "Home", json!({}))),
            create(ent(
                "room-1",
                &v1,
                &[],
                EntityType::Room,
                "Kitchen",
                json!({}),
            )),
        ],
    )
    .await?;
    let t1 = s.history(&id("room-1")).await?[0].received_at;
    push(
        &s,
        vec![update(ent(
            "home-1",
            &v2,
            &[&v1],
            EntityType::Home,
            "Home",
            json!({"x": 2}),
        ))],
    )
    .await?;
    let t2 = s.history(&id("home-1")).await?[1].received_at;
    push(
        &s,
        vec![delete(ent(
            "room-1",
            &v3,
            &[&v1],
            EntityType::Room,
            "Kitchen",
            json!({}),
        ))],
    )
    .await?;
    // A loser never became latest: it is not part of any past state.
    push(
        &s,
        vec![update(ent(
            "home-1",
            &ver(5_000, 9, "phone"),
            &[&v1],
            EntityType::Home,
            "Home",
            json!({"lost": true}),
        ))],
    )
    .await?;
    let now = Timestamp::now().saturating_add_micros(1_000_000);

    let key = |v: Vec<inbetweenies_proto::Entity>| -> BTreeSet<(String, String)> {
        v.into_iter()
            .map(|e| (e.id.to_string(), e.version.to_string()))
            .collect()
    };
    ensure!(
        s.entities_as_of(t1.saturating_add_micros(-10), None)
            .await?
            .is_empty(),
        "nothing before the first write"
    );
    ensure!(
        key(s.entities_as_of(t1, None).await?)
            == BTreeSet::from([
                ("home-1".into(), v1.to_string()),
                ("room-1".into(), v1.to_string())
            ])
    );
    ensure!(
        key(s.entities_as_of(t2, None).await?)
            == BTreeSet::from([
                ("home-1".into(), v2.to_string()),
                ("room-1".into(), v1.to_string())
            ])
    );
    ensure!(
        key(s.entities_as_of(now, None).await?)
            == BTreeSet::from([("home-1".into(), v2.to_string())]),
        "tombstoned left out"
    );
    ensure!(
        key(s.entities_as_of(t2, Some(&[EntityType::Room])).await?)
            == BTreeSet::from([("room-1".into(), v1.to_string())])
    );
    Ok(())
}

/// Ids and versions with characters that need escaping or are not ASCII (and a
/// long id) work everywhere an id is looked up: push, re-push, update, reads,
/// graph walks, the digest in byte order, and a client's pull.
async fn story_awkward_ids(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let long = "x".repeat(300);
    let ids = [
        "quote\"d",
        "back\\slash",
        "tab\tand\u{1}control",
        "caf\u{e9}",
        "emoji-\u{1f3e0}",
        long.as_str(),
        "",
    ];
    let v1 = Version::new("2025-01-01T00:00:00.000000+00:00-000001-al\"ice\\");
    let v2 = ver(1000, 2, "alice");
    let mut changes: Vec<_> = ids
        .iter()
        .map(|i| create(ent(i, &v1, &[], EntityType::Device, i, json!({"k": i}))))
        .collect();
    changes.push(rels(
        ids.windows(2)
            .map(|w| {
                rel(
                    &format!("r:{}\"{}", w[0], w[1]),
                    (w[0], &v1),
                    (w[1], &v1),
                    RelationshipType::ConnectsTo,
                )
            })
            .collect(),
    ));
    let out = push(&s, changes.clone()).await?;
    ensure!(out.applied.len() == ids.len(), "applied: {:?}", out.applied);
    ensure!(out.applied_relationships.len() == ids.len() - 1);
    // Everything is found again: a re-push writes nothing.
    let again = push(&s, changes).await?;
    ensure!(again.entities_written == 0 && again.relationships_written == 0);
    ensure!(again.applied.len() == ids.len());
    ensure!(again.applied_relationships.len() == ids.len() - 1);
    for i in ids {
        let e = s.entity(&id(i)).await?.context("latest row")?;
        ensure!(e.name == i && e.version == v1);
        ensure!(s.entity_version(&id(i), &v1).await?.is_some());
        ensure!(s.history(&id(i)).await?.len() == 1);
    }
    let first = id(ids[0]);
    ensure!(s.neighbours(&first, None, Direction::Outgoing).await?.len() == 1);
    let path = s.path(&first, &id(ids[ids.len() - 1]), 10).await?;
    ensure!(
        path.as_ref().map(Vec::len) == Some(ids.len()),
        "path: {path:?}"
    );
    let r0 = rid(&format!("r:{}\"{}", ids[0], ids[1]));
    ensure!(s.relationship(&r0).await?.is_some());
    let from_first = s
        .relationships(&RelationshipQuery {
            from_entity_id: Some(first.clone()),
            ..RelationshipQuery::default()
        })
        .await?;
    ensure!(from_first.len() == 1 && from_first[0].id == r0);

    // An update fast-forwards; the digest is over the latest rows in byte order.
    push(
        &s,
        vec![update(ent(
            ids[3],
            &v2,
            &[&v1],
            EntityType::Device,
            "renamed",
            json!({}),
        ))],
    )
    .await?;
    ensure!(s.entity(&id(ids[3])).await?.map(|e| e.version) == Some(v2.clone()));
    ensure!(s.history(&id(ids[3])).await?.len() == 2);
    let latest = s.latest_versions().await?;
    let mut expected: Vec<(String, String)> = ids
        .iter()
        .map(|i| {
            let v = if *i == ids[3] { &v2 } else { &v1 };
            (i.to_string(), v.to_string())
        })
        .collect();
    expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let got: Vec<(String, String)> = latest
        .iter()
        .map(|(i, v)| (i.to_string(), v.to_string()))
        .collect();
    ensure!(got == expected, "latest versions: {got:?}");
    ensure!(
        s.state_digest().await?
            == state_digest(expected.iter().map(|(i, v)| (i.as_str(), v.as_str())))
    );

    // A client pulls all of it, twice (the second time nothing changes).
    let ch = ClientHarness::new();
    let c = ch.open().await;
    let page = server_page(&s, None).await?;
    let report = c.apply_response(&AckSet::default(), &page).await?;
    ensure!(report.entities_applied.len() == ids.len());
    ensure!(report.relationships_applied.len() == ids.len() - 1);
    let report = c.apply_response(&AckSet::default(), &page).await?;
    ensure!(report.entities_applied.is_empty() && report.relationships_applied.is_empty());
    ensure!(c.state_digest().await? == s.state_digest().await?);
    Ok(())
}

/// Neighbours, shortest paths, rooms of a home and devices of a room.
async fn story_graph_queries(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let v = ver(0, 1, "alice");
    let e = |i: &str, t: EntityType, n: &str| create(ent(i, &v, &[], t, n, json!({})));
    let r = |i: &str, a: &str, b: &str, t: RelationshipType| rel(i, (a, &v), (b, &v), t);
    let mut changes = vec![
        e("home", EntityType::Home, "Home"),
        e("kitchen", EntityType::Room, "Kitchen"),
        e("bedroom", EntityType::Room, "Bedroom"),
        e("lamp", EntityType::Device, "Lamp"),
        e("fan", EntityType::Device, "Fan"),
        e("clock", EntityType::Device, "Clock"),
        e("manual", EntityType::Manual, "Lamp manual"),
        e("island", EntityType::Note, "Unconnected"),
    ];
    changes.push(rels(vec![
        r("r1", "kitchen", "home", RelationshipType::LocatedIn),
        r("r2", "bedroom", "home", RelationshipType::LocatedIn),
        r("r3", "lamp", "kitchen", RelationshipType::LocatedIn),
        r("r4", "fan", "kitchen", RelationshipType::LocatedIn),
        r("r5", "clock", "bedroom", RelationshipType::LocatedIn),
        r("r6", "lamp", "manual", RelationshipType::DocumentedBy),
    ]));
    push(&s, changes).await?;
    let names =
        |v: Vec<inbetweenies_proto::Entity>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    let nb = |v: Vec<goodies_store::Neighbour>| {
        v.into_iter()
            .map(|n| (n.relationship.id.to_string(), n.entity.id.to_string()))
            .collect::<BTreeSet<_>>()
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());

    ensure!(
        nb(s.neighbours(
            &id("home"),
            Some(&RelationshipType::LocatedIn),
            Direction::Incoming
        )
        .await?)
            == BTreeSet::from([pair("r1", "kitchen"), pair("r2", "bedroom")])
    );
    ensure!(
        nb(s.neighbours(&id("lamp"), None, Direction::Outgoing).await?)
            == BTreeSet::from([pair("r3", "kitchen"), pair("r6", "manual")])
    );
    ensure!(
        nb(s.neighbours(
            &id("lamp"),
            Some(&RelationshipType::DocumentedBy),
            Direction::Outgoing
        )
        .await?)
            == BTreeSet::from([pair("r6", "manual")])
    );
    ensure!(
        nb(s.neighbours(&id("kitchen"), None, Direction::Both).await?)
            == BTreeSet::from([pair("r1", "home"), pair("r3", "lamp"), pair("r4", "fan")])
    );
    ensure!(s
        .neighbours(&id("lamp"), None, Direction::Incoming)
        .await?
        .is_empty());
    ensure!(
        names(rooms_of_home(s.as_ref(), &id("home")).await?) == ["Bedroom", "Kitchen"],
        "rooms by name"
    );
    ensure!(names(devices_of_room(s.as_ref(), &id("kitchen")).await?) == ["Fan", "Lamp"]);

    let path = s
        .path(&id("lamp"), &id("clock"), 10)
        .await?
        .context("a path")?;
    ensure!(
        path == ids(&["lamp", "kitchen", "home", "bedroom", "clock"]),
        "{path:?}"
    );
    ensure!(
        s.path(&id("lamp"), &id("clock"), 3).await?.is_none(),
        "longer than max_depth"
    );
    ensure!(
        s.path(&id("clock"), &id("manual"), 5)
            .await?
            .is_some_and(|p| p.len() == 6 && p[0] == id("clock")),
        "edges in either direction"
    );
    ensure!(s.path(&id("clock"), &id("manual"), 4).await?.is_none());
    ensure!(s.path(&id("lamp"), &id("lamp"), 0).await? == Some(ids(&["lamp"])));
    ensure!(s.path(&id("lamp"), &id("island"), 10).await?.is_none());

    // A tombstoned neighbour is left out.
    push(
        &s,
        vec![delete(ent(
            "fan",
            &ver(1000, 2, "alice"),
            &[&v],
            EntityType::Device,
            "Fan",
            json!({}),
        ))],
    )
    .await?;
    ensure!(
        nb(s.neighbours(&id("kitchen"), None, Direction::Incoming)
            .await?)
            == BTreeSet::from([pair("r3", "lamp")])
    );
    ensure!(names(devices_of_room(s.as_ref(), &id("kitchen")).await?) == ["Lamp"]);
    // Neighbours carry the latest version of the entity at the other end.
    let v2 = ver(2000, 3, "alice");
    push(
        &s,
        vec![update(ent(
            "lamp",
            &v2,
            &[&v],
            EntityType::Device,
            "Lamp 2",
            json!({}),
        ))],
    )
    .await?;
    let n = s
        .neighbours(&id("kitchen"), None, Direction::Incoming)
        .await?;
    ensure!(n.len() == 1 && n[0].entity.version == v2 && n[0].entity.name == "Lamp 2");
    Ok(())
}

/// Counts for statistics.
async fn story_stats(h: &Harness) -> Result<()> {
    let opts = StoreOptions {
        resolver: Arc::new(
            ResolverConfig::default().with_strategy(EntityType::Note, Strategy::Manual),
        ),
        ..StoreOptions::default()
    };
    let s = h.server(opts).await;
    ensure!(
        s.stats().await? == goodies_store::GraphStats::default(),
        "an empty store counts nothing"
    );
    let v1 = ver(0, 1, "alice");
    let v2 = ver(1000, 2, "alice");
    let mut home = create(ent("home", &v1, &[], EntityType::Home, "Home", json!({})));
    home.relationships.push(rel(
        "r1",
        ("kitchen", &v1),
        ("home", &v1),
        RelationshipType::LocatedIn,
    ));
    home.relationships.push(rel(
        "r2",
        ("lamp", &v1),
        ("kitchen", &v1),
        RelationshipType::LocatedIn,
    ));
    home.relationships.push(rel(
        "r3",
        ("lamp", &v1),
        ("home", &v1),
        RelationshipType::Controls,
    ));
    push(
        &s,
        vec![
            home,
            create(ent(
                "kitchen",
                &v1,
                &[],
                EntityType::Room,
                "Kitchen",
                json!({}),
            )),
            create(ent("lamp", &v1, &[], EntityType::Device, "Lamp", json!({}))),
            create(ent("fan", &v1, &[], EntityType::Device, "Fan", json!({}))),
            update(ent(
                "lamp",
                &v2,
                &[&v1],
                EntityType::Device,
                "Lamp",
                json!({"on": true}),
            )),
            delete(ent(
                "fan",
                &v2,
                &[&v1],
                EntityType::Device,
                "Fan",
                json!({}),
            )),
        ],
    )
    .await?;
    contested(
        &s,
        "note",
        EntityType::Note,
        json!({}),
        json!({"t": 1}),
        5_000,
    )
    .await?;
    push(
        &s,
        vec![update(ent(
            "note",
            &ver(7_000, 7, "phone"),
            &[&ver(0, 1, "alice")],
            EntityType::Note,
            "Thing",
            json!({"t": 2}),
        ))],
    )
    .await?;
    let st = s.stats().await?;
    ensure!(st.entities == 4, "live latest entities: {st:?}");
    ensure!(st.entity_versions == 9, "all version rows: {st:?}");
    ensure!(st.relationships == 3);
    let by_type: BTreeMap<String, u64> = st
        .entities_by_type
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .collect();
    ensure!(
        by_type
            == BTreeMap::from([
                ("device".into(), 1),
                ("home".into(), 1),
                ("note".into(), 1),
                ("room".into(), 1)
            ]),
        "{by_type:?}"
    );
    let rel_types: BTreeMap<String, u64> = st
        .relationships_by_type
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .collect();
    ensure!(rel_types == BTreeMap::from([("controls".into(), 1), ("located_in".into(), 2)]));
    ensure!(st.pending_conflicts == 1);
    Ok(())
}

/// Content-addressed blobs: storing the same bytes twice keeps one blob; ranged reads.
async fn story_blobs(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let m1 = s
        .put_blob(&id("manual-1"), "application/pdf", &bytes)
        .await?;
    ensure!(
        m1.sha256 == sha
            && m1.size == bytes.len() as u64
            && m1.content_type == "application/pdf"
            && m1.entity_id == id("manual-1")
    );
    let m2 = s
        .put_blob(&id("manual-1"), "application/pdf", &bytes)
        .await?;
    ensure!(m2 == m1, "storing the same bytes again is a no-op");
    ensure!(s.blob_meta(&sha).await? == Some(m1.clone()));
    ensure!(
        s.blobs_of(&id("manual-1")).await? == vec![m1.clone()],
        "one blob"
    );
    ensure!(s.read_blob(&sha, 0, 10).await? == bytes[..10]);
    ensure!(s.read_blob(&sha, 1234, 5000).await? == bytes[1234..6234]);
    ensure!(
        s.read_blob(&sha, bytes.len() as u64 - 5, 100).await? == bytes[bytes.len() - 5..],
        "fewer at the end"
    );
    ensure!(s
        .read_blob(&sha, bytes.len() as u64 + 10, 5)
        .await?
        .is_empty());
    ensure!(s.read_blob(&sha, 0, bytes.len() as u64 * 2).await? == bytes);
    let small = s
        .put_blob(&id("manual-1"), "image/png", b"png bytes")
        .await?;
    ensure!(small.size == 9);
    ensure!(s.blobs_of(&id("manual-1")).await?.len() == 2);
    ensure!(s.blobs_of(&id("other")).await?.is_empty());
    let empty = s.put_blob(&id("other"), "text/plain", b"").await?;
    ensure!(empty.size == 0 && s.read_blob(&empty.sha256, 0, 10).await?.is_empty());
    let unknown = "0".repeat(64);
    ensure!(s.blob_meta(&unknown).await?.is_none());
    ensure!(matches!(
        s.read_blob(&unknown, 0, 1).await,
        Err(StoreError::NotFound(_))
    ));
    Ok(())
}

/// What the server knows about each device.
async fn story_devices(h: &Harness) -> Result<()> {
    let s = h.default_server().await;
    ensure!(s.client_status("phone").await?.is_none());
    s.record_sync("phone").await?;
    s.record_sync("phone").await?;
    let st = s.client_status("phone").await?.context("status")?;
    ensure!(
        st.device_id == "phone"
            && st.sync_count == 2
            && st.last_seen.is_some()
            && st.last_ack.is_none()
    );
    let mark = Timestamp::parse("2026-01-02T03:04:05.678901+00:00")?;
    s.record_ack("phone", mark).await?;
    s.record_ack("tablet", mark).await?;
    let st = s.client_status("phone").await?.context("status")?;
    ensure!(st.last_ack == Some(mark) && st.sync_count == 2);
    ensure!(s.client_status("tablet").await?.context("tablet")?.last_ack == Some(mark));
    Ok(())
}

// ---------------------------------------------------------------- client stories

/// Local writes: versions parented on the previous latest, an outbox entry in the same transaction.
async fn story_client_local_writes(_h: &Harness) -> Result<()> {
    let ch = ClientHarness::new();
    let c = ch.open().await;
    ensure!(c.pending_count().await? == 0 && c.state_digest().await? == EMPTY_DIGEST);
    let home = c
        .write_local(
            LocalEdit::Create {
                id: None,
                entity_type: EntityType::Home,
                name: "Home".into(),
                content: obj(json!({})),
                source_type: SourceType::Manual,
            },
            "alice",
        )
        .await?;
    ensure!(
        uuid::Uuid::parse_str(home.id.as_str()).is_ok(),
        "a fresh UUID id"
    );
    ensure!(home.version.parse()?.user_id == "alice" && home.parent_versions.is_empty());
    let lamp = c
        .write_local(
            LocalEdit::Create {
                id: Some(id("lamp")),
                entity_type: EntityType::Device,
                name: "Lamp".into(),
                content: obj(json!({"on": false, "dim": 3})),
                source_type: SourceType::Homekit,
            },
            "alice",
        )
        .await?;
    let lamp2 = c
        .write_local(
            LocalEdit::MergeContent {
                id: id("lamp"),
                patch: obj(json!({"on": true, "dim": null})),
            },
            "alice",
        )
        .await?;
    ensure!(
        lamp2.content == obj(json!({"on": true})),
        "patch sets keys, null removes: {:?}",
        lamp2.content
    );
    ensure!(
        lamp2.parent_versions == vec![lamp.version.clone()] && lamp2.created_at == lamp.created_at
    );
    let lamp3 = c
        .write_local(
            LocalEdit::Update {
                id: id("lamp"),
                name: Some("Desk lamp".into()),
                content: None,
            },
            "bob",
        )
        .await?;
    ensure!(lamp3.name == "Desk lamp" && lamp3.content == lamp2.content && lamp3.user_id == "bob");
    let r = c
        .write_local_relationship(
            &id("lamp"),
            &home.id,
            RelationshipType::LocatedIn,
            obj(json!({"w": 1})),
            "alice",
        )
        .await?;
    ensure!(
        r.from_entity_version == lamp3.version && r.to_entity_version == home.version,
        "endpoints at their latest versions"
    );
    ensure!(matches!(
        c.write_local_relationship(
            &id("lamp"),
            &id("nope"),
            RelationshipType::Controls,
            obj(json!({})),
            "a"
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    ensure!(c.relationship(&r.id).await?.as_ref() == Some(&r));

    let gone = c
        .write_local(
            LocalEdit::Delete {
                id: home.id.clone(),
            },
            "alice",
        )
        .await?;
    ensure!(gone.is_deleted() && gone.parent_versions == vec![home.version.clone()]);
    ensure!(matches!(
        c.write_local(
            LocalEdit::Update {
                id: id("nope"),
                name: None,
                content: None
            },
            "a"
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    ensure!(matches!(
        c.write_local(LocalEdit::Delete { id: id("nope") }, "a")
            .await,
        Err(StoreError::NotFound(_))
    ));

    let pending = c.pending(100).await?;
    ensure!(c.pending_count().await? == 6 && pending.len() == 6);
    ensure!(strictly_increasing(
        &pending
            .iter()
            .map(|p| p.position as u64)
            .collect::<Vec<_>>()
    ));
    let kinds: Vec<_> = pending.iter().map(|p| p.change_type()).collect();
    ensure!(
        kinds
            == [
                ChangeType::Create,
                ChangeType::Create,
                ChangeType::Update,
                ChangeType::Update,
                ChangeType::Update,
                ChangeType::Delete
            ],
        "{kinds:?}"
    );
    ensure!(pending[2].entity_key() == Some((&id("lamp"), &lamp2.version)));
    ensure!(pending[4].change.entity.is_none() && pending[4].relationship_id() == Some(&r.id));
    ensure!(pending[5].entity_key() == Some((&home.id, &gone.version)));
    ensure!(pending.iter().all(|p| p.attempts == 0));
    ensure!(c.pending(2).await?.len() == 2);
    let pids: BTreeSet<_> = c.pending_ids().await?.into_iter().collect();
    ensure!(pids == BTreeSet::from([home.id.clone(), id("lamp")]));
    c.mark_attempted(&[pending[0].position, pending[1].position])
        .await?;
    let again = c.pending(100).await?;
    ensure!(again[0].attempts == 1 && again[1].attempts == 1 && again[2].attempts == 0);
    ensure!(c.history(&id("lamp")).await?.len() == 3);
    ensure!(c.state_digest().await? == digest_of_latest(c.as_ref()).await?);
    Ok(())
}

/// A round trip: push the outbox, acknowledge, pull; client and server converge.
async fn story_client_round_trip(h: &Harness) -> Result<()> {
    let server = h.default_server().await;
    let ch = ClientHarness::new();
    let c = ch.open().await;
    let home = c
        .write_local(
            LocalEdit::Create {
                id: Some(id("home")),
                entity_type: EntityType::Home,
                name: "Home".into(),
                content: obj(json!({})),
                source_type: SourceType::Manual,
            },
            "alice",
        )
        .await?;
    let room = c
        .write_local(
            LocalEdit::Create {
                id: Some(id("room")),
                entity_type: EntityType::Room,
                name: "Kitchen".into(),
                content: obj(json!({})),
                source_type: SourceType::Manual,
            },
            "alice",
        )
        .await?;
    c.write_local_relationship(
        &room.id,
        &home.id,
        RelationshipType::LocatedIn,
        obj(json!({})),
        "alice",
    )
    .await?;
    // Someone else's data is on the server too.
    push(
        &server,
        vec![create(ent(
            "dev-x",
            &ver(0, 1, "bob"),
            &[],
            EntityType::Device,
            "Other",
            json!({}),
        ))],
    )
    .await?;

    let (acks, out) = client_push(&c, &server, "phone").await?;
    ensure!(out.applied.len() == 2 && out.applied_relationships.len() == 1);
    let page = server_page(&server, c.sync_state().await?.watermark).await?;
    let report = c.apply_response(&acks, &page).await?;
    ensure!(
        c.pending_count().await? == 0,
        "every acknowledged entry dropped"
    );
    ensure!(report.entities_applied.contains(&id("dev-x")) && report.entities_guarded.is_empty());
    ensure!(
        report.unchanged >= 2,
        "own versions already present: {report:?}"
    );
    ensure!(c.entity(&id("dev-x")).await?.is_some());
    ensure!(
        c.state_digest().await? == server.state_digest().await?,
        "converged"
    );
    ensure!(c.sync_state().await?.watermark == Some(page.server_time));

    // The next delta pull brings only what changed since.
    push(
        &server,
        vec![update(ent(
            "dev-x",
            &ver(1000, 2, "bob"),
            &[&ver(0, 1, "bob")],
            EntityType::Device,
            "Other",
            json!({"on": true}),
        ))],
    )
    .await?;
    let page = server_page(&server, c.sync_state().await?.watermark).await?;
    ensure!(page.changes.len() == 1, "a delta: {:?}", page.changes);
    let report = c.apply_response(&AckSet::default(), &page).await?;
    ensure!(report.entities_applied == ids(&["dev-x"]));
    ensure!(c.state_digest().await? == server.state_digest().await?);
    // Relationships arrive without an endpoint check on the client.
    let wire = PulledPage {
        changes: vec![rels(vec![rel(
            "r-far",
            ("unknown-a", &ver(0, 1, "z")),
            ("unknown-b", &ver(0, 1, "z")),
            RelationshipType::Monitors,
        )])],
        cursor: None,
        server_time: Timestamp::now(),
    };
    let report = c.apply_response(&AckSet::default(), &wire).await?;
    ensure!(report.relationships_applied == vec![rid("r-far")]);
    ensure!(c.relationship(&rid("r-far")).await?.is_some());
    Ok(())
}

/// apply_response drops only entries that were sent AND acknowledged.
async fn story_client_acks_only_sent(_h: &Harness) -> Result<()> {
    let ch = ClientHarness::new();
    let c = ch.open().await;
    let mk = |i: &str| LocalEdit::Create {
        id: Some(id(i)),
        entity_type: EntityType::Device,
        name: i.into(),
        content: obj(json!({})),
        source_type: SourceType::Manual,
    };
    c.write_local(mk("a"), "alice").await?;
    c.write_local(mk("b"), "alice").await?;
    let r = c
        .write_local_relationship(
            &id("a"),
            &id("b"),
            RelationshipType::Controls,
            obj(json!({})),
            "alice",
        )
        .await?;
    let sent = c.pending(100).await?;
    // Written after the send: not part of it, even for an acknowledged id.
    c.write_local(
        LocalEdit::MergeContent {
            id: id("a"),
            patch: obj(json!({"x": 1})),
        },
        "alice",
    )
    .await?;
    let acks = AckSet {
        sent_positions: sent.iter().map(|e| e.position).collect(),
        entities: ids(&["a"]),
        relationships: vec![],
        resolved_versions: vec![],
    };
    let page = PulledPage {
        changes: vec![],
        cursor: None,
        server_time: Timestamp::now(),
    };
    c.apply_response(&acks, &page).await?;
    let left = c.pending(100).await?;
    let keys: Vec<_> = left
        .iter()
        .map(|e| {
            (
                e.entity_key().map(|(i, _)| i.to_string()),
                e.relationship_id().cloned(),
            )
        })
        .collect();
    ensure!(
        keys == vec![
            (Some("b".to_owned()), None),
            (None, Some(r.id.clone())),
            (Some("a".to_owned()), None)
        ],
        "{keys:?}"
    );
    ensure!(
        left[0].attempts == 1 && left[1].attempts == 1,
        "unacknowledged sent entries count an attempt"
    );
    ensure!(left[2].attempts == 0, "unsent entries are untouched");
    let acks = AckSet {
        sent_positions: vec![left[1].position],
        relationships: vec![r.id.clone()],
        ..AckSet::default()
    };
    c.apply_response(&acks, &page).await?;
    ensure!(c.pending_count().await? == 2);
    Ok(())
}

/// The pull-guard: a pending local edit is never overwritten by a pull; the server decides.
async fn story_client_pull_guard(h: &Harness) -> Result<()> {
    for client_wins in [false, true] {
        let server = h.default_server().await;
        let ch = ClientHarness::new();
        let c = ch.open().await;
        let x = format!("x-{client_wins}");
        let v1 = ver_from_now(-2 * 3_600_000, 1, "bob");
        push(
            &server,
            vec![create(ent(
                &x,
                &v1,
                &[],
                EntityType::Device,
                "X",
                json!({"n": 1}),
            ))],
        )
        .await?;
        let page = server_page(&server, None).await?;
        c.apply_response(&AckSet::default(), &page).await?;
        ensure!(c.entity(&id(&x)).await?.context("x pulled")?.version == v1);

        // A local edit, pending; meanwhile another device edits X on the server.
        let local = c
            .write_local(
                LocalEdit::MergeContent {
                    id: id(&x),
                    patch: obj(json!({"n": 2})),
                },
                "alice",
            )
            .await?;
        // Newer by an hour (the client loses) or older by an hour (the client wins).
        let vs = ver_from_now(if client_wins { -3_600_000 } else { 3_600_000 }, 2, "bob");
        push(
            &server,
            vec![update(ent(
                &x,
                &vs,
                &[&v1],
                EntityType::Device,
                "X",
                json!({"n": 3}),
            ))],
        )
        .await?;
        let page = server_page(&server, c.sync_state().await?.watermark).await?;
        let report = c.apply_response(&AckSet::default(), &page).await?;
        ensure!(
            report.entities_guarded == vec![id(&x)] && report.entities_applied.is_empty(),
            "{report:?}"
        );
        ensure!(
            c.entity(&id(&x)).await?.context("x")?.version == local.version,
            "the pending edit stays latest"
        );
        ensure!(
            c.entity_version(&id(&x), &vs).await?.is_some(),
            "the pulled version is stored aside"
        );
        let aside = c
            .history(&id(&x))
            .await?
            .into_iter()
            .find(|h| h.entity.version == vs)
            .context("aside")?;
        ensure!(!aside.latest && !aside.became_latest);
        ensure!(c.pending_count().await? == 1);

        // The push goes to the server, which decides; the client follows.
        let (acks, out) = client_push(&c, &server, "phone").await?;
        ensure!(
            outcome_of(&out, &x)
                == [if client_wins {
                    EntityOutcome::Won
                } else {
                    EntityOutcome::Lost
                }]
        );
        let page = server_page(&server, c.sync_state().await?.watermark).await?;
        c.apply_response(&acks, &page).await?;
        ensure!(c.pending_count().await? == 0);
        let want = if client_wins {
            local.version.clone()
        } else {
            vs.clone()
        };
        ensure!(server.entity(&id(&x)).await?.context("x")?.version == want);
        ensure!(
            c.entity(&id(&x)).await?.context("x")?.version == want,
            "client follows the server's decision (client_wins = {client_wins})"
        );
        ensure!(
            c.state_digest().await? == server.state_digest().await?,
            "converged"
        );
    }
    Ok(())
}

/// The watermark is stored only when a pull completes; the cursor of a pull in progress is kept.
async fn story_client_watermark_and_settings(_h: &Harness) -> Result<()> {
    let ch = ClientHarness::new();
    let c = ch.open().await;
    ensure!(c.sync_state().await? == goodies_store::SyncState::default());
    let t1 = Timestamp::parse("2026-03-01T10:00:00.000001+00:00")?;
    let t2 = Timestamp::parse("2026-03-01T10:00:05.000002+00:00")?;
    let mk = |i: &str| {
        create(ent(
            i,
            &ver(0, 1, "bob"),
            &[],
            EntityType::Room,
            i,
            json!({}),
        ))
    };
    let p1 = PulledPage {
        changes: vec![mk("r1")],
        cursor: Some("7".into()),
        server_time: t1,
    };
    c.apply_response(&AckSet::default(), &p1).await?;
    let st = c.sync_state().await?;
    ensure!(
        st.cursor.as_deref() == Some("7") && st.watermark.is_none(),
        "mid-pull: cursor only"
    );
    let p2 = PulledPage {
        changes: vec![mk("r2")],
        cursor: None,
        server_time: t2,
    };
    let rep = c.apply_response(&AckSet::default(), &p2).await?;
    ensure!(rep.entities_applied == ids(&["r2"]));
    let st = c.sync_state().await?;
    ensure!(
        st.cursor.is_none() && st.watermark == Some(t2),
        "the completed pull stores its server_time"
    );
    // Re-applying a page changes nothing.
    let rep = c.apply_response(&AckSet::default(), &p2).await?;
    ensure!(rep.entities_applied.is_empty() && rep.unchanged == 1);

    ensure!(c.setting("theme").await?.is_none());
    c.set_setting("theme", "dark").await?;
    c.set_setting("theme", "light").await?;
    c.set_setting("server", "http://127.0.0.1:8000").await?;
    drop(c);
    let c = ch.open().await;
    ensure!(
        c.sync_state().await?.watermark == Some(t2),
        "persisted across reopening"
    );
    ensure!(c.setting("theme").await?.as_deref() == Some("light"));
    ensure!(c.setting("server").await?.as_deref() == Some("http://127.0.0.1:8000"));
    ensure!(c.entity(&id("r1")).await?.is_some());
    c.reset_sync_state().await?;
    ensure!(c.sync_state().await? == goodies_store::SyncState::default());
    Ok(())
}

// ---------------------------------------------------------------- running the story

macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() -> anyhow::Result<()> {
                    let h = crate::support::Harness::sqlite();
                    crate::$story(&h).await
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() -> anyhow::Result<()> {
                    let Some(h) = crate::support::Harness::postgres().await else { return Ok(()) };
                    crate::$story(&h).await
                }
            )*
        }
    };
}

stories!(
    story_push_and_read,
    story_fast_forward_and_history,
    story_idempotent_repush,
    story_conflict_won_and_lost,
    story_conflict_tiebreak_and_delete_wins,
    story_deletes,
    story_merge_per_type,
    story_manual_queue,
    story_relationships,
    story_failed_batch_changes_nothing,
    story_late_commit_never_skipped,
    story_change_feed_filters,
    story_paging_while_writing,
    story_digest,
    story_awkward_ids,
    story_as_of,
    story_graph_queries,
    story_stats,
    story_blobs,
    story_devices,
    story_client_local_writes,
    story_client_round_trip,
    story_client_acks_only_sent,
    story_client_pull_guard,
    story_client_watermark_and_settings,
);

// ---------------------------------------------------------------- opening stores by URL

mod open_urls {
    use goodies_store::{open_client_store, open_server_store, StoreError, StoreOptions};

    #[tokio::test]
    async fn sqlite_urls_and_paths() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("nested.db");
        let url = format!("sqlite://{}", file.display());
        let s = open_server_store(&url, StoreOptions::default()).await?;
        anyhow::ensure!(file.exists(), "sqlite://PATH creates the file");
        anyhow::ensure!(s.max_seq().await? == 0);
        let bare = dir.path().join("bare.db");
        let c =
            open_client_store(bare.to_str().unwrap_or_default(), StoreOptions::default()).await?;
        anyhow::ensure!(
            bare.exists() && c.pending_count().await? == 0,
            "a bare path is a SQLite file"
        );
        let m = open_server_store("sqlite::memory:", StoreOptions::default()).await?;
        anyhow::ensure!(m.state_digest().await? == inbetweenies_conflict::EMPTY_DIGEST);
        let mc = open_client_store("sqlite::memory:", StoreOptions::default()).await?;
        mc.set_setting("k", "v").await?;
        anyhow::ensure!(
            mc.setting("k").await?.as_deref() == Some("v"),
            "one in-memory database per store"
        );
        Ok(())
    }

    #[tokio::test]
    async fn unsupported_urls() {
        assert!(matches!(
            open_server_store("mysql://x/y", StoreOptions::default()).await,
            Err(StoreError::UnsupportedUrl(_))
        ));
        assert!(matches!(
            open_client_store("postgres://x/y", StoreOptions::default()).await,
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_needs_its_feature() {
        assert!(matches!(
            open_server_store("postgres://x/y", StoreOptions::default()).await,
            Err(StoreError::BackendDisabled("postgres"))
        ));
    }
}

//! The change feed's pages when entity and relationship rows alternate in sequence order:
//! one merged statement per page on both backends, cut at the limit. Every page holds its
//! rows in exact sequence order, and paging with every limit from 1 to past the end —
//! so that a page boundary falls between an entity and the relationship after it, and
//! between a relationship and the entity after it — returns every row once, the same rows
//! as one page holding all of them.

mod support;

use goodies_store::{ChangeQuery, ChangeRecord, ServerStore};
use inbetweenies_proto::{EntityType, RelationshipType};
use support::*;

/// `(kind, id, seq)` of a row: `e` for an entity version, `r` for a relationship.
fn key(r: &ChangeRecord) -> (char, String, u64) {
    match r {
        ChangeRecord::Entity(e) => ('e', e.entity.id.as_str().to_owned(), e.seq),
        ChangeRecord::Relationship(x) => ('r', x.relationship.id.as_str().to_owned(), x.seq),
    }
}

fn query(after: Option<u64>, limit: usize, entities: bool, relationships: bool) -> ChangeQuery {
    ChangeQuery {
        after_seq: after,
        include_entities: entities,
        include_relationships: relationships,
        limit,
        ..ChangeQuery::default()
    }
}

/// Pages through the feed with `limit`; checks each page's order and cursor.
async fn paged(
    store: &dyn ServerStore,
    limit: usize,
    entities: bool,
    relationships: bool,
) -> Vec<(char, String, u64)> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = store
            .changes(&query(after, limit, entities, relationships))
            .await
            .expect("page");
        let keys: Vec<_> = page.records.iter().map(key).collect();
        assert!(
            keys.len() <= limit,
            "a page of {} rows, limit {limit}",
            keys.len()
        );
        assert!(
            keys.windows(2).all(|w| w[0].2 < w[1].2),
            "limit {limit}: rows out of sequence order: {keys:?}"
        );
        if let (Some(a), Some(first)) = (after, keys.first()) {
            assert!(first.2 > a, "limit {limit}: a row at or before the cursor");
        }
        match page.next_after_seq {
            Some(next) => {
                assert_eq!(keys.len(), limit, "a cursor after a short page");
                assert_eq!(Some(next), keys.last().map(|k| k.2));
                out.extend(keys);
                after = Some(next);
            }
            None => {
                assert!(keys.len() < limit, "a full page without a cursor");
                out.extend(keys);
                return out;
            }
        }
    }
    panic!("the feed did not end");
}

async fn alternating_rows_page_in_sequence_order(h: Harness) {
    let store = h.default_server().await;
    // e0; then (e_i, r_i: e_i → e_{i-1}) per push: entity, relationship, entity, …
    let n = 6;
    let versions: Vec<_> = (0..n).map(|i| ver(i as i64, 0, "alice")).collect();
    for i in 0..n {
        let id = format!("ent-{i}");
        let mut changes = vec![create(ent(
            &id,
            &versions[i],
            &[],
            EntityType::Device,
            &format!("device {i}"),
            serde_json::json!({"n": i}),
        ))];
        if i > 0 {
            let prev = format!("ent-{}", i - 1);
            changes.push(rels(vec![rel(
                &format!("rel-{i}"),
                (&id, &versions[i]),
                (&prev, &versions[i - 1]),
                RelationshipType::ConnectsTo,
            )]));
        }
        store
            .apply_push(batch("dev", "alice", changes))
            .await
            .expect("push");
    }
    // A later version of ent-2: its first row leaves the feed, the new one comes last.
    let newer = ver(100, 0, "alice");
    store
        .apply_push(batch(
            "dev",
            "alice",
            vec![update(ent(
                "ent-2",
                &newer,
                &[&versions[2]],
                EntityType::Device,
                "device 2 again",
                serde_json::json!({"n": 2, "again": true}),
            ))],
        ))
        .await
        .expect("update");

    let all = paged(store.as_ref(), 10_000, true, true).await;
    let kinds: String = all.iter().map(|k| k.0).collect();
    assert_eq!(
        kinds, "eerrererere",
        "{}: the merged feed in sequence order: {all:?}",
        h.backend
    );
    assert_eq!(all.last().map(|k| k.1.as_str()), Some("ent-2"));
    assert_eq!(
        all.iter().filter(|k| k.1 == "ent-2").count(),
        1,
        "only the latest version of ent-2"
    );
    for limit in 1..=all.len() + 1 {
        assert_eq!(
            paged(store.as_ref(), limit, true, true).await,
            all,
            "{}: paging with limit {limit}",
            h.backend
        );
    }
    // One kind alone: the same rows of that kind, in the same order, with any limit.
    for (entities, relationships, kind) in [(true, false, 'e'), (false, true, 'r')] {
        let only: Vec<_> = all.iter().filter(|k| k.0 == kind).cloned().collect();
        for limit in [1, 2, 3, only.len(), only.len() + 1] {
            assert_eq!(
                paged(store.as_ref(), limit, entities, relationships).await,
                only,
                "{}: {kind} rows alone with limit {limit}",
                h.backend
            );
        }
    }
    let none = store
        .changes(&query(None, 5, false, false))
        .await
        .expect("an empty query");
    assert!(none.records.is_empty() && none.next_after_seq.is_none());
}

#[tokio::test]
async fn sqlite_alternating_rows_page_in_sequence_order() {
    alternating_rows_page_in_sequence_order(Harness::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_alternating_rows_page_in_sequence_order() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    alternating_rows_page_in_sequence_order(h).await;
}

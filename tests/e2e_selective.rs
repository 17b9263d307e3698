//! Selective sync (`BlowingOffClient::set_selection`), against the real server on SQLite
//! and PostgreSQL: only the selected entity types, or only the selected writers' rows,
//! are pulled; relationships to entities outside the selection are stored whole with
//! the other end unresolved; local edits of any type still push; changing the selection
//! pulls the whole state again keeping a pending edit; the digest check is skipped while
//! a selection is set.

use anyhow::Context;
use goodies_client::proto::RelationshipType;
use goodies_client::{
    BlowingOffClient, ClientError, Direction, EntityId, EntityType, RelationshipQuery, Selection,
};
use goodies_e2e::{quiet_sync, Backend, TestServer};
use serde_json::json;

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

fn obj(v: serde_json::Value) -> goodies_client::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

async fn has(c: &BlowingOffClient, id: &EntityId) -> anyhow::Result<bool> {
    Ok(c.entity(id).await?.is_some())
}

#[tokio::test]
async fn a_type_selection_pulls_its_types_keeps_edges_whole_and_widens_keeping_a_pending_edit(
) -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        // The writer: a room with two devices in it, a device controlling another, a home.
        let a = server.client("a").await?;
        let home = a
            .create_entity(EntityType::Home, "Home", obj(json!({})))
            .await?;
        let room = a
            .create_entity(EntityType::Room, "Kitchen", obj(json!({})))
            .await?;
        let lamp = a
            .create_entity(EntityType::Device, "Lamp", obj(json!({"power": "off"})))
            .await?;
        let switch = a
            .create_entity(EntityType::Device, "Switch", obj(json!({})))
            .await?;
        let lamp_in_room = a
            .relate(
                &lamp.id,
                &room.id,
                RelationshipType::LocatedIn,
                obj(json!({"since": 2020})),
            )
            .await?;
        let switch_controls_lamp = a
            .relate(
                &switch.id,
                &lamp.id,
                RelationshipType::Controls,
                obj(json!({})),
            )
            .await?;
        let room_in_home = a
            .relate(&room.id, &home.id, RelationshipType::PartOf, obj(json!({})))
            .await?;
        quiet_sync(&a).await?;

        // The selective reader: devices only.
        let b = server.client("b").await?;
        assert!(
            b.set_selection(Selection::all().with_entity_types([EntityType::Device]))
                .await?
        );
        assert!(
            !b.set_selection(
                Selection::all().with_entity_types([EntityType::Device, EntityType::Device])
            )
            .await?,
            "the same selection is no change"
        );
        let r = b.sync().await?;
        assert!(r.is_ok(), "{backend:?}: {:?}", r.errors);
        assert!(
            r.digest.is_none(),
            "{backend:?}: no digest check under a selection"
        );
        assert!(r.repair.is_none(), "{backend:?}");
        assert!(has(&b, &lamp.id).await? && has(&b, &switch.id).await?);
        assert!(!has(&b, &room.id).await? && !has(&b, &home.id).await?);

        // Every edge the server holds is stored whole, whatever its ends' types.
        let server_rels = server
            .handle
            .store()
            .relationships(&RelationshipQuery::default())
            .await?;
        assert_eq!(server_rels.len(), 3);
        let mut mine = b.relationships(&RelationshipQuery::default()).await?;
        let mut theirs = server_rels.clone();
        mine.sort_by(|x, y| x.id.cmp(&y.id));
        theirs.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(mine.len(), theirs.len(), "{backend:?}");
        for (m, t) in mine.iter().zip(&theirs) {
            assert_eq!(
                (
                    &m.id,
                    &m.from_entity_id,
                    &m.from_entity_version,
                    &m.to_entity_id,
                    &m.to_entity_version,
                    &m.relationship_type,
                    &m.properties,
                ),
                (
                    &t.id,
                    &t.from_entity_id,
                    &t.from_entity_version,
                    &t.to_entity_id,
                    &t.to_entity_version,
                    &t.relationship_type,
                    &t.properties,
                ),
                "{backend:?}"
            );
        }
        assert!(mine.iter().any(|r| r.id == lamp_in_room.id));
        assert!(mine.iter().any(|r| r.id == room_in_home.id));
        // The other end of lamp → kitchen is outside the selection: unresolved.
        let around_lamp = b.neighbours(&lamp.id, None, Direction::Both).await?;
        let ends: Vec<&EntityId> = around_lamp.iter().map(|n| &n.entity.id).collect();
        assert_eq!(ends, vec![&switch.id], "{backend:?}: {around_lamp:?}");
        assert_eq!(around_lamp[0].relationship.id, switch_controls_lamp.id);

        // A room edit is not pulled, a device edit is.
        a.merge_content(&room.id, obj(json!({"floor": 1}))).await?;
        let lamp_on = a
            .merge_content(&lamp.id, obj(json!({"power": "on"})))
            .await?;
        quiet_sync(&a).await?;
        let r = b.sync().await?;
        assert!(r.is_ok(), "{backend:?}: {:?}", r.errors);
        assert_eq!(r.pulled_entities, 1, "{backend:?}: only the device");
        assert_eq!(
            b.entity(&lamp.id).await?.context("lamp")?.version,
            lamp_on.version
        );
        assert!(!has(&b, &room.id).await?);

        // A local edit outside the selection still pushes, and stays.
        let note = b
            .create_entity(EntityType::Note, "shopping", obj(json!({})))
            .await?;
        let r = b.sync().await?;
        assert!(r.is_ok() && r.pending == 0, "{backend:?}: {:?}", r.errors);
        assert!(server.handle.store().entity(&note.id).await?.is_some());
        assert!(has(&b, &note.id).await?);

        // Widening with an edit pending: the whole state is pulled again, the edit kept
        // and pushed, and the digest compared again.
        let dimmed = b.merge_content(&lamp.id, obj(json!({"level": 30}))).await?;
        assert!(b.set_selection(Selection::all()).await?);
        assert_eq!(b.selection().await?, Selection::all());
        let r = quiet_sync(&b).await?;
        assert!(r.repair.is_none(), "{backend:?}");
        assert!(has(&b, &room.id).await? && has(&b, &home.id).await?);
        let lamp_now = server
            .handle
            .store()
            .entity(&lamp.id)
            .await?
            .context("lamp")?;
        assert_eq!(
            lamp_now.version, dimmed.version,
            "{backend:?}: the edit was pushed"
        );
        assert_eq!(
            b.entity(&lamp.id).await?.context("lamp")?.version,
            dimmed.version
        );
        let around_lamp = b.neighbours(&lamp.id, None, Direction::Both).await?;
        assert_eq!(
            around_lamp.len(),
            2,
            "{backend:?}: the kitchen end resolved"
        );
        assert_eq!(b.state_digest().await?, server.digest().await?);
        server.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_writer_selection_pulls_only_those_writers_rows() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let alice = server.client("alice").await?;
        alice.set_user_id("alice").await?;
        let bob = server.client("bob").await?;
        bob.set_user_id("bob").await?;
        let by_alice = alice
            .create_entity(EntityType::Device, "alice's lamp", obj(json!({})))
            .await?;
        let by_bob = bob
            .create_entity(EntityType::Device, "bob's lamp", obj(json!({})))
            .await?;
        quiet_sync(&alice).await?;
        quiet_sync(&bob).await?;
        // Bob links his lamp to alice's: bob's row.
        let link = bob
            .relate(
                &by_bob.id,
                &by_alice.id,
                RelationshipType::ConnectsTo,
                obj(json!({})),
            )
            .await?;
        quiet_sync(&bob).await?;

        let reader = server.client("reader").await?;
        reader
            .set_selection(Selection::all().with_modified_by(["alice"]))
            .await?;
        let r = reader.sync().await?;
        assert!(r.is_ok(), "{backend:?}: {:?}", r.errors);
        assert!(has(&reader, &by_alice.id).await?, "{backend:?}");
        assert!(!has(&reader, &by_bob.id).await?, "{backend:?}");
        assert!(
            reader.store().relationship(&link.id).await?.is_none(),
            "{backend:?}: bob's edge is bob's row"
        );

        // Bob's later version of alice's lamp is his row: not pulled under the selection.
        bob.merge_content(&by_alice.id, obj(json!({"touched": "bob"})))
            .await?;
        quiet_sync(&bob).await?;
        let r = reader.sync().await?;
        assert!(r.is_ok(), "{backend:?}: {:?}", r.errors);
        assert_eq!(r.pulled_entities, 0, "{backend:?}");
        assert_eq!(
            reader
                .entity(&by_alice.id)
                .await?
                .context("alice's lamp")?
                .user_id,
            "alice"
        );

        // An empty list is refused, and changes nothing.
        let refused = reader
            .set_selection(Selection::all().with_modified_by(Vec::<String>::new()))
            .await;
        assert!(
            matches!(refused, Err(ClientError::Invalid(_))),
            "{refused:?}"
        );
        assert_eq!(
            reader.selection().await?,
            Selection::all().with_modified_by(["alice"])
        );
        server.stop().await?;
    }
    Ok(())
}

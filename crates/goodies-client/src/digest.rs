//! The local state digest kept in memory: an index of every id's latest version that the
//! client updates from what it writes and applies, so the check after a quiet sync
//! re-hashes the index instead of reading every latest row of the mirror.
//!
//! The index is never trusted blindly: the store counts every committed transaction
//! that changes entity rows, in any process ([`ClientStore::graph_generation`]), and the
//! index counts the ones it was told about (local writes, applied pages, removals).
//! When the store's count has moved by more, something else wrote — another process on
//! the same file, or a write through [`crate::BlowingOffClient::store`] directly — and
//! the index is rebuilt from the store before it answers. So it can neither miss a
//! write nor match the server's digest by accident.
//!
//! When its digest differs from the server's, the sync also recomputes the digest from
//! the store itself ([`LocalDigest::rebuild_from_store`]): the store has the last word.
//!
//! A fresh process does not build the index to answer one digest: it asks the store for
//! the digest it remembers ([`ClientStore::stored_digest`]: SQLite keeps the last one
//! computed, in any process, until a latest row changes), so an idle `blowing-off sync`
//! costs one small read whatever the mirror's size. When nothing is remembered, the
//! first digest is the store's own (which remembers it for the next process); only a
//! process that needs a second one builds the index and keeps it up to date from then on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use goodies_store::{ApplyReport, ClientStore, StoreError};
use inbetweenies_conflict::DigestBuilder;
use inbetweenies_proto::{EntityId, SyncChange};

/// Id → latest version, in id byte order (the digest's order).
type Latest = BTreeMap<Box<str>, Box<str>>;

#[derive(Debug, Default)]
struct Index {
    latest: Latest,
    /// The digest of `latest`, while nothing changed.
    digest: Option<String>,
    /// The store's graph generation when the index was read from it…
    base: u64,
    /// …and the writes the index had been told about then.
    told_at_build: u64,
}

impl Index {
    fn set(&mut self, id: &str, version: &str) {
        match self.latest.get_mut(id) {
            Some(v) if **v == *version => return,
            Some(v) => *v = Box::from(version),
            None => {
                self.latest.insert(Box::from(id), Box::from(version));
            }
        }
        self.digest = None;
    }
}

/// The in-memory digest index of one client.
#[derive(Debug, Default)]
pub(crate) struct LocalDigest {
    /// `None` until built from the store.
    index: tokio::sync::Mutex<Option<Index>>,
    /// Ids written locally since the index last looked: re-read from the store (after
    /// their writes committed) before the next digest, whatever order notes arrive in.
    dirty: Mutex<HashSet<EntityId>>,
    /// Transactions changing entity rows that this client made and told the index of.
    told: AtomicU64,
    /// Digests the store had to compute for this client while the index was not built.
    computed_by_store: AtomicU64,
}

impl LocalDigest {
    /// One transaction that changes entity rows committed (a local write, a removal),
    /// whose ids are passed to [`LocalDigest::touched`]. Pages are counted by
    /// [`LocalDigest::applied`].
    pub(crate) fn counted_write(&self) {
        self.told.fetch_add(1, Ordering::SeqCst);
    }

    /// A local write changed the latest version of `id` (called after it committed).
    pub(crate) fn touched(&self, id: &EntityId) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
    }

    /// Builds the index from the store unless it is built already, once this process has
    /// needed a digest the store did not remember (a sync calls it first so that its
    /// pages keep the index up to date). Before that, nothing: a process that syncs once
    /// reads the remembered digest instead.
    pub(crate) async fn ensure(&self, store: &dyn ClientStore) -> Result<(), StoreError> {
        let mut index = self.index.lock().await;
        if index.is_none() && self.computed_by_store.load(Ordering::SeqCst) > 0 {
            self.take_dirty();
            *index = Some(self.build(store).await?);
        }
        Ok(())
    }

    /// A page was applied: the ids the store reports as having become latest now hold the
    /// version the page carried; ids whose version is ambiguous are re-read later.
    pub(crate) async fn applied(&self, changes: &[SyncChange], report: &ApplyReport) {
        self.counted_write();
        let mut index = self.index.lock().await;
        let Some(ix) = index.as_mut() else {
            return;
        };
        let mut versions: HashMap<&str, Option<&str>> = HashMap::with_capacity(changes.len());
        for e in changes.iter().filter_map(|c| c.entity.as_ref()) {
            versions
                .entry(e.id.as_str())
                .and_modify(|v| *v = None)
                .or_insert(Some(e.version.as_str()));
        }
        for id in &report.entities_applied {
            match versions.get(id.as_str()) {
                Some(Some(version)) => ix.set(id.as_str(), version),
                _ => self.touched(id),
            }
        }
    }

    /// The digest of the index, built or brought up to date from the store as needed.
    pub(crate) async fn digest(&self, store: &dyn ClientStore) -> Result<String, StoreError> {
        let mut index = self.index.lock().await;
        if let Some(ix) = index.as_ref() {
            let told = self.told.load(Ordering::SeqCst) - ix.told_at_build;
            if store.graph_generation().await? != ix.base + told {
                tracing::debug!("the database changed behind the index; rebuilding it");
                *index = None;
            }
        }
        if index.is_none() {
            if let Some(d) = store.stored_digest().await? {
                self.take_dirty();
                return Ok(d);
            }
            if self.computed_by_store.fetch_add(1, Ordering::SeqCst) == 0 {
                // The first digest of this process: the store computes it and remembers
                // it for the next process.
                self.take_dirty();
                return store.state_digest().await;
            }
        }
        let ix = match index.as_mut() {
            Some(ix) => {
                for id in self.take_dirty() {
                    match store.entity(&id).await? {
                        Some(e) => ix.set(e.id.as_str(), e.version.as_str()),
                        None => {
                            if ix.latest.remove(id.as_str()).is_some() {
                                ix.digest = None;
                            }
                        }
                    }
                }
                ix
            }
            None => {
                self.take_dirty();
                index.insert(self.build(store).await?)
            }
        };
        if let Some(d) = &ix.digest {
            return Ok(d.clone());
        }
        let mut builder = DigestBuilder::new();
        for (id, version) in &ix.latest {
            builder
                .push(id, version)
                .map_err(|e| StoreError::Corrupt(format!("digest index out of order: {e}")))?;
        }
        let d = builder.finish();
        ix.digest = Some(d.clone());
        Ok(d)
    }

    /// The digest read from the store itself; the index is rebuilt from the store.
    pub(crate) async fn rebuild_from_store(
        &self,
        store: &dyn ClientStore,
    ) -> Result<String, StoreError> {
        let mut index = self.index.lock().await;
        self.take_dirty();
        let digest = store.state_digest().await?;
        *index = Some(self.build(store).await?);
        Ok(digest)
    }

    fn take_dirty(&self) -> HashSet<EntityId> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl LocalDigest {
    async fn build(&self, store: &dyn ClientStore) -> Result<Index, StoreError> {
        // Counted first: a write during the read shows at the next check (a rebuild).
        let told_at_build = self.told.load(Ordering::SeqCst);
        let base = store.graph_generation().await?;
        let latest = store
            .latest_versions()
            .await?
            .into_iter()
            .map(|(id, v)| (Box::from(id.as_str()), Box::from(v.as_str())))
            .collect();
        Ok(Index {
            latest,
            digest: None,
            base,
            told_at_build,
        })
    }
}

#[cfg(test)]
mod tests {
    use goodies_store::{AckSet, LocalEdit, PulledPage, StoreOptions};
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityType, SourceType, Timestamp, Version,
    };

    use super::*;

    fn server_change(id: &EntityId, version: &Version, parents: Vec<Version>) -> SyncChange {
        SyncChange {
            change_type: ChangeType::Update,
            entity: Some(EntityChange {
                id: id.clone(),
                version: version.clone(),
                entity_type: EntityType::Device,
                name: "from the server".into(),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "server-user".into(),
                parent_versions: parents,
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    async fn create(store: &dyn ClientStore, name: &str) -> EntityId {
        store
            .write_local(
                LocalEdit::Create {
                    id: None,
                    entity_type: EntityType::Device,
                    name: name.into(),
                    content: Default::default(),
                    source_type: SourceType::Manual,
                },
                "me",
            )
            .await
            .expect("local write")
            .id
    }

    /// Local writes, pulled pages (new ids, a newer version of a held id, one id twice in
    /// a page) and acknowledgements keep the index equal to the store's digest; a write the
    /// index never heard of makes it stale until it is rebuilt from the store.
    #[tokio::test]
    async fn index_matches_the_store() {
        let store = goodies_store::open_client_store("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        let store = store.as_ref();
        let digest = LocalDigest::default();
        digest.ensure(store).await.expect("ensure");
        assert_eq!(
            digest.digest(store).await.expect("digest"),
            store.state_digest().await.expect("store digest"),
            "empty mirror"
        );

        let a = create(store, "a").await;
        digest.counted_write();
        digest.touched(&a);
        let b = create(store, "b").await;
        digest.counted_write();
        digest.touched(&b);
        assert_eq!(
            digest.digest(store).await.expect("digest"),
            store.state_digest().await.expect("store digest"),
            "two local creates"
        );

        // Both are acknowledged; the page brings a new id, a newer version of `a`, and
        // an id twice (its version is re-read from the store).
        let pending = store.pending(10).await.expect("pending");
        let a_now = store.entity(&a).await.expect("read").expect("a").version;
        let (c, twice) = (EntityId::new_random(), EntityId::new_random());
        let (t1, t2) = (Version::now("server-user"), Version::now("server-user"));
        let a_next = Version::now("server-user");
        let changes = vec![
            server_change(&c, &Version::now("server-user"), vec![]),
            server_change(&a, &a_next, vec![a_now]),
            server_change(&twice, &t1, vec![]),
            server_change(&twice, &t2, vec![t1.clone()]),
        ];
        let acks = AckSet {
            sent_positions: pending.iter().map(|e| e.position).collect(),
            entities: vec![a.clone(), b.clone()],
            relationships: vec![],
            resolved_versions: vec![],
        };
        let page = PulledPage {
            changes,
            cursor: None,
            server_time: Timestamp::now(),
        };
        let report = store.apply_response(&acks, &page).await.expect("apply");
        assert!(report.entities_applied.contains(&a), "{report:?}");
        digest.applied(&page.changes, &report).await;
        assert_eq!(
            digest.digest(store).await.expect("digest"),
            store.state_digest().await.expect("store digest"),
            "after a pulled page"
        );

        // A write the index is not told about is noticed all the same.
        create(store, "behind its back").await;
        let want = store.state_digest().await.expect("store digest");
        assert_eq!(digest.digest(store).await.expect("digest"), want);
        assert_eq!(
            digest.rebuild_from_store(store).await.expect("from store"),
            want
        );
    }

    /// A fresh process answers its first digest from the store without building the index:
    /// the digest an earlier process left in the file, or else the store's own (which it
    /// leaves for the next process). Only a second digest the store does not remember
    /// builds the index, which then follows this process's writes.
    #[tokio::test]
    async fn a_fresh_process_reads_the_remembered_digest() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("mirror.db").display());
        let earlier = goodies_store::open_client_store(&url, StoreOptions::default())
            .await
            .expect("store");
        for name in ["a", "b", "c"] {
            create(earlier.as_ref(), name).await;
        }
        let want = earlier.state_digest().await.expect("store digest");
        drop(earlier);

        let store = goodies_store::open_client_store(&url, StoreOptions::default())
            .await
            .expect("store");
        let store = store.as_ref();
        assert_eq!(
            store.stored_digest().await.expect("stored"),
            Some(want.clone())
        );
        let digest = LocalDigest::default();
        digest.ensure(store).await.expect("ensure");
        assert_eq!(digest.digest(store).await.expect("digest"), want);
        assert!(digest.index.lock().await.is_none(), "no index was built");

        // A write forgets the remembered digest: the store computes the next one.
        let d = create(store, "d").await;
        digest.counted_write();
        digest.touched(&d);
        let next = digest.digest(store).await.expect("digest");
        assert_ne!(next, want);
        assert_eq!(
            store.stored_digest().await.expect("stored"),
            Some(next.clone())
        );
        assert!(digest.index.lock().await.is_none(), "still no index");

        // A second digest the store does not remember builds the index, kept from then on.
        let e = create(store, "e").await;
        digest.counted_write();
        digest.touched(&e);
        let last = digest.digest(store).await.expect("digest");
        assert!(digest.index.lock().await.is_some(), "the index is built");
        assert_eq!(last, store.state_digest().await.expect("store digest"));
        assert_ne!(last, next);
    }

    /// Another writer of the same file (a second store on it: another process, or a
    /// direct use of the store) is noticed by the index: its local write, and its pulled
    /// page, show in the next digest without a rebuild being asked for.
    #[tokio::test]
    async fn index_notices_writes_by_another_process() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("mirror.db");
        let url = format!("sqlite://{}", path.display());
        let ours = goodies_store::open_client_store(&url, StoreOptions::default())
            .await
            .expect("store");
        let a = create(ours.as_ref(), "a").await;
        let digest = LocalDigest::default();
        digest.ensure(ours.as_ref()).await.expect("ensure");
        let before = digest.digest(ours.as_ref()).await.expect("digest");

        // The other process: a separate store whose writes this process never counted.
        let theirs = goodies_store::SqliteStore::connect(&url, StoreOptions::default())
            .await
            .expect("second store");
        let other_write = create(&theirs, "written elsewhere").await;
        let after = digest.digest(ours.as_ref()).await.expect("digest");
        assert_ne!(after, before, "the other process's create is seen");
        assert_eq!(after, ours.state_digest().await.expect("store digest"));

        // The other process applies a page making a version latest without a new row
        // in this mirror's view of the id: also seen.
        let pending = theirs.pending(10).await.expect("pending");
        let next = Version::now("server-user");
        let a_now = ours.entity(&a).await.expect("read").expect("a").version;
        let report = theirs
            .apply_response(
                &AckSet {
                    sent_positions: pending.iter().map(|e| e.position).collect(),
                    entities: vec![a.clone(), other_write.clone()],
                    relationships: vec![],
                    resolved_versions: vec![],
                },
                &PulledPage {
                    changes: vec![server_change(&a, &next, vec![a_now])],
                    cursor: None,
                    server_time: Timestamp::now(),
                },
            )
            .await
            .expect("apply");
        assert_eq!(report.entities_applied, vec![a.clone()]);
        assert_eq!(
            digest.digest(ours.as_ref()).await.expect("digest"),
            ours.state_digest().await.expect("store digest"),
            "the other process's pull is seen"
        );
    }
}

//! The state digest kept up to date from the change feed: after a write the server re-hashes
//! an in-memory index of every id's latest version instead of reading every latest row again.
//!
//! The index follows the store's change feed by sequence number. That is sound because only
//! newly inserted rows ever become latest (goodies-store `SEMANTICS.md`), so every change of
//! an id's latest version shows up in the feed after the position the index covers. Writes
//! made by other server processes on the same database are followed the same way.
//!
//! The digest is one value for every client, whatever capabilities its request declared
//! (PROTOCOL §5.12): it covers entity ids and versions only, which every kind of page
//! carries, so unlike pages read ahead (`crate::readahead`) it needs no key beyond the
//! store position.

use std::collections::BTreeMap;

use goodies_store::{ChangeQuery, ChangeRecord, Seq, ServerStore, StoreError};
use inbetweenies_conflict::DigestBuilder;

/// Rows read per feed page while catching up.
const FEED_PAGE: usize = 2_000;

/// Past this many sequence numbers behind, the index is rebuilt from `latest_versions`
/// (id and version only) rather than followed through the feed (whole rows).
const REBUILD_GAP: Seq = 20_000;

/// Ids the index holds at most, by default (`--digest-index-ids`).
pub const DEFAULT_MAX_IDS: usize = 250_000;

/// The digest index; build it lazily with [`DigestIndex::digest`].
///
/// It holds at most `max_ids` ids (about 100–150 bytes each): a store with more ids is
/// answered by the store's own digest (`ServerStore::state_digest`, cached by the store
/// per position) and the index is not kept, so the memory it takes is set by
/// configuration, not by the store.
#[derive(Debug)]
pub(crate) struct DigestIndex {
    state: tokio::sync::Mutex<Option<Index>>,
    rebuild_gap: Seq,
    max_ids: usize,
    /// Set once the store had more ids than `max_ids`: the store's digest answers.
    too_big: std::sync::atomic::AtomicBool,
    /// Builds from every latest row (`rebuilds`).
    rebuilds: std::sync::atomic::AtomicU64,
}

impl Default for DigestIndex {
    fn default() -> Self {
        DigestIndex::new(DEFAULT_MAX_IDS)
    }
}

#[derive(Debug)]
struct Index {
    /// Every row with a sequence number up to this one is reflected.
    seq: Seq,
    /// Id → latest version, in id byte order (the digest's order).
    latest: BTreeMap<Box<str>, Box<str>>,
    /// The digest of `latest`.
    digest: String,
}

impl DigestIndex {
    /// An index of at most `max_ids` ids (0: never kept; the store's digest answers).
    pub(crate) fn new(max_ids: usize) -> DigestIndex {
        DigestIndex {
            state: tokio::sync::Mutex::new(None),
            rebuild_gap: REBUILD_GAP,
            max_ids,
            too_big: std::sync::atomic::AtomicBool::new(max_ids == 0),
            rebuilds: Default::default(),
        }
    }

    /// How many times the index was built from every latest row.
    #[cfg(test)]
    pub(crate) fn rebuilds(&self) -> u64 {
        self.rebuilds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many ids the index holds now.
    pub(crate) async fn held(&self) -> usize {
        self.state
            .lock()
            .await
            .as_ref()
            .map_or(0, |ix| ix.latest.len())
    }

    /// The convergence digest of the store's current state (PROTOCOL §4.7).
    pub(crate) async fn digest(&self, store: &dyn ServerStore) -> Result<String, StoreError> {
        Ok(self.digest_with_seq(store).await?.1)
    }

    /// The digest and the highest committed sequence number read just before it.
    ///
    /// The digest reflects every row up to that number, and possibly rows committed while
    /// it was computed: it is exactly the digest of the state at that number when the
    /// store's highest sequence number is still the same afterwards (`crate::snapshot`).
    pub(crate) async fn digest_with_seq(
        &self,
        store: &dyn ServerStore,
    ) -> Result<(Seq, String), StoreError> {
        // Read the position first: a row committed meanwhile is read again next time, and
        // applying a row twice changes nothing.
        let max = store.max_seq().await?;
        self.digest_at(store, max).await
    }

    /// [`Self::digest_with_seq`] with the highest committed sequence number already read
    /// (`max`, read before this call): the digest reflects every row up to the number
    /// returned with it, which is `max` or, when the index was already past it, the
    /// index's position.
    pub(crate) async fn digest_at(
        &self,
        store: &dyn ServerStore,
        max: Seq,
    ) -> Result<(Seq, String), StoreError> {
        use std::sync::atomic::Ordering;
        if self.too_big.load(Ordering::Relaxed) {
            // Read after `max`: the digest of that state or a later one, as following
            // the feed would give (the caller checks the head again for exactness).
            return Ok((max, store.state_digest().await?));
        }
        let mut state = self.state.lock().await;
        // At or past the position asked (another request moved it on since the caller
        // read its head): the index reflects every row up to its own position, which it
        // answers with; the caller checks that against the head read after its page. A
        // rebuild here would read every latest row and label a later state `max`.
        if let Some(ix) = state.as_ref().filter(|ix| ix.seq >= max) {
            return Ok((ix.seq, ix.digest.clone()));
        }
        // A restore of a backup replaces rows without the feed showing what went away:
        // an index from before the restore's mark is rebuilt.
        let restored_after = match state.as_ref() {
            Some(ix) => store
                .restore_mark()
                .await?
                .is_some_and(|mark| mark.seq > ix.seq),
            None => false,
        };
        let mut ix = match state.take() {
            Some(mut ix) if !restored_after && max > ix.seq && max - ix.seq <= self.rebuild_gap => {
                if follow(&mut ix, store).await? {
                    ix.digest = hash(&ix.latest)?;
                }
                ix
            }
            _ => {
                self.rebuilds.fetch_add(1, Ordering::Relaxed);
                let latest = rebuild(store).await?;
                let digest = hash(&latest)?;
                Index {
                    seq: max,
                    latest,
                    digest,
                }
            }
        };
        ix.seq = max;
        if ix.latest.len() > self.max_ids {
            self.too_big.store(true, Ordering::Relaxed);
            tracing::info!(
                ids = ix.latest.len(),
                max = self.max_ids,
                "more ids than --digest-index-ids: the store's digest answers from now on"
            );
            return Ok((max, ix.digest));
        }
        Ok((max, state.insert(ix).digest.clone()))
    }
}

/// Every id's latest version.
async fn rebuild(store: &dyn ServerStore) -> Result<BTreeMap<Box<str>, Box<str>>, StoreError> {
    Ok(store
        .latest_versions()
        .await?
        .into_iter()
        .map(|(id, v)| (Box::from(id.as_str()), Box::from(v.as_str())))
        .collect())
}

/// Applies the latest rows received after the index's position; whether any entity changed.
async fn follow(ix: &mut Index, store: &dyn ServerStore) -> Result<bool, StoreError> {
    let mut changed = false;
    let mut after = ix.seq;
    loop {
        let page = store
            .changes(&ChangeQuery {
                after_seq: Some(after),
                include_relationships: false,
                limit: FEED_PAGE,
                ..ChangeQuery::default()
            })
            .await?;
        for rec in &page.records {
            if let ChangeRecord::Entity(se) = rec {
                changed = true;
                let (id, version) = (se.entity.id.as_str(), se.entity.version.as_str());
                match ix.latest.get_mut(id) {
                    Some(v) => *v = Box::from(version),
                    None => {
                        ix.latest.insert(Box::from(id), Box::from(version));
                    }
                }
            }
        }
        match page.next_after_seq {
            Some(next) => after = next,
            None => return Ok(changed),
        }
    }
}

/// The digest of an index, in id byte order.
fn hash(latest: &BTreeMap<Box<str>, Box<str>>) -> Result<String, StoreError> {
    let mut builder = DigestBuilder::new();
    for (id, version) in latest {
        builder
            .push(id, version)
            .map_err(|e| StoreError::Corrupt(format!("digest index out of order: {e}")))?;
    }
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use goodies_store::{PushBatch, StoreOptions};
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, RelationshipChange, RelationshipId,
        RelationshipType, SourceType, SyncChange, Version,
    };

    use super::*;

    fn change(
        id: &EntityId,
        version: &Version,
        parents: &[&Version],
        kind: ChangeType,
    ) -> SyncChange {
        SyncChange {
            change_type: kind,
            entity: Some(EntityChange {
                id: id.clone(),
                version: version.clone(),
                entity_type: EntityType::Device,
                name: format!("device {id}"),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "tester".into(),
                parent_versions: parents.iter().map(|v| (*v).clone()).collect(),
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    async fn push(store: &Arc<dyn ServerStore>, changes: Vec<SyncChange>) {
        store
            .apply_push(PushBatch {
                device_id: "d".into(),
                user_id: "tester".into(),
                changes,
            })
            .await
            .expect("push");
    }

    /// A request that read its head before another one moved the index on is answered
    /// from the index, with the index's own position (the caller checks it against the
    /// head after its page), never by reading every latest row again.
    #[tokio::test]
    async fn a_position_behind_the_index_is_answered_without_a_rebuild() {
        let store = goodies_store::open_server_store("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        let index = DigestIndex::default();
        let id = |_| EntityId::new_random();
        let create = |i: &EntityId| change(i, &Version::now("tester"), &[], ChangeType::Create);
        push(&store, (0..5).map(id).map(|i| create(&i)).collect()).await;
        let older = store.max_seq().await.expect("seq");
        index.digest(store.as_ref()).await.expect("first build");
        assert_eq!(index.rebuilds(), 1);
        push(&store, (0..3).map(id).map(|i| create(&i)).collect()).await;
        let (now, digest) = index.digest_with_seq(store.as_ref()).await.expect("follow");
        assert!(now > older);
        assert_eq!(index.rebuilds(), 1, "followed through the feed");
        let (seq, behind) = index
            .digest_at(store.as_ref(), older)
            .await
            .expect("behind");
        assert_eq!(
            (seq, &behind),
            (now, &digest),
            "the index's own position and digest"
        );
        assert_eq!(behind, store.state_digest().await.expect("store digest"));
        assert_eq!(
            index.rebuilds(),
            1,
            "no rebuild for a position behind the index"
        );
    }

    /// Creates, fast-forwards, conflicting pushes, tombstones and relationship-only writes,
    /// followed by the index (and rebuilt when it falls too far behind), always equal to
    /// the store's own digest.
    #[tokio::test]
    async fn follows_the_store_digest() {
        let store = goodies_store::open_server_store("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        let index = DigestIndex {
            rebuild_gap: 30,
            ..DigestIndex::default()
        };
        let check = |what: &'static str| {
            let (store, index) = (store.clone(), &index);
            async move {
                let want = store.state_digest().await.expect("store digest");
                assert_eq!(
                    index.digest(store.as_ref()).await.expect("index"),
                    want,
                    "{what}"
                );
            }
        };
        check("empty store").await;
        let ids: Vec<EntityId> = (0..20).map(|_| EntityId::new_random()).collect();
        let v1: Vec<Version> = ids.iter().map(|_| Version::now("tester")).collect();
        push(
            &store,
            ids.iter()
                .zip(&v1)
                .map(|(id, v)| change(id, v, &[], ChangeType::Create))
                .collect(),
        )
        .await;
        check("twenty creates (first build)").await;
        let v2 = Version::now("tester");
        push(
            &store,
            vec![change(&ids[3], &v2, &[&v1[3]], ChangeType::Update)],
        )
        .await;
        check("a fast-forward").await;
        // A concurrent edit from an older parent: decided by the conflict rule either way.
        let other = Version::now("tester");
        push(
            &store,
            vec![change(&ids[3], &other, &[&v1[3]], ChangeType::Update)],
        )
        .await;
        check("a conflicting push").await;
        let gone = Version::now("tester");
        push(
            &store,
            vec![change(&ids[5], &gone, &[&v1[5]], ChangeType::Delete)],
        )
        .await;
        check("a tombstone").await;
        push(
            &store,
            vec![SyncChange {
                change_type: ChangeType::Update,
                entity: None,
                relationships: vec![RelationshipChange {
                    id: RelationshipId::new_random(),
                    from_entity_id: ids[0].clone(),
                    from_entity_version: v1[0].clone(),
                    to_entity_id: ids[1].clone(),
                    to_entity_version: v1[1].clone(),
                    relationship_type: RelationshipType::ConnectsTo,
                    properties: Default::default(),
                    user_id: None,
                    created_at: None,
                    updated_at: None,
                }],
            }],
        )
        .await;
        check("a relationship only").await;
        let more: Vec<EntityId> = (0..40).map(|_| EntityId::new_random()).collect();
        push(
            &store,
            more.iter()
                .map(|id| change(id, &Version::now("tester"), &[], ChangeType::Create))
                .collect(),
        )
        .await;
        check("forty creates at once (rebuilt)").await;
        assert_eq!(
            index.state.lock().await.as_ref().map(|ix| ix.latest.len()),
            Some(60)
        );
    }
}

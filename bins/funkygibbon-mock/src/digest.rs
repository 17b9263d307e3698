//! The state digest kept in memory: an index of every id's latest version, moved from one
//! state of the store to a later one by the latest rows written in between, and re-hashed
//! only when an entity changed, instead of reading every latest row again.
//!
//! The index moves in exact steps. A page is read together with the store's head and,
//! in the same state, the id and latest version of every entity whose latest row is
//! numbered after the index's position (`ServerStore::changes_with_latest`). Only newly
//! inserted rows ever become latest (goodies-store `SEMANTICS.md`), so those rows take the
//! index from its position to exactly the page's state, and the digest answered with the
//! page is the digest of that state. Writes made by other server processes on the same
//! database are followed the same way.
//!
//! Requests read their pages concurrently, so the index may have moved past a request's
//! state by the time it is answered. The digests of the last [`RECENT`] positions the
//! index stood at are kept for those; a request whose state is not among them reads again
//! from the index's new position, and the last attempt holds the index while it reads, so
//! every answer's digest is exact.
//!
//! The digest is one value for every client, whatever capabilities its request declared
//! (PROTOCOL §5.12): it covers entity ids and versions only, which every kind of page
//! carries, so unlike pages read ahead (`crate::readahead`) it needs no key beyond the
//! store position.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use goodies_store::{
    ChangePage, ChangeQuery, LatestAfter, Seq, ServerStore, StoreError, StoreHead,
};
use inbetweenies_conflict::DigestBuilder;
use inbetweenies_proto::{EntityId, Version};

/// Positions (with their digests) the index stood at that are kept for requests whose
/// page was read before the index moved on.
pub(crate) const RECENT: usize = 64;

/// Unlocked reads tried before a read that holds the index.
const OPTIMISTIC: usize = 2;

/// Ids the index holds at most, by default (`--digest-index-ids`).
pub const DEFAULT_MAX_IDS: usize = 250_000;

/// The digest index; built lazily by the first read.
///
/// It holds at most `max_ids` ids (about 100–150 bytes each): a store with more ids is
/// answered by the store's own digest (`ServerStore::state_digest`, cached by the store
/// per position) and the index is not kept, so the memory it takes is set by
/// configuration, not by the store.
#[derive(Debug)]
pub(crate) struct DigestIndex {
    state: tokio::sync::Mutex<Option<Index>>,
    max_ids: usize,
    /// Set once the store had more ids than `max_ids`: the store's digest answers.
    too_big: AtomicBool,
    /// Builds from every latest row.
    rebuilds: AtomicU64,
    /// Reads that had to be made again (the index had moved past their state).
    rereads: AtomicU64,
}

impl Default for DigestIndex {
    fn default() -> Self {
        DigestIndex::new(DEFAULT_MAX_IDS)
    }
}

#[derive(Debug)]
struct Index {
    /// The state the index is: every row numbered up to this one, and no later one.
    seq: Seq,
    /// Id → latest version, in id byte order (the digest's order).
    latest: BTreeMap<Box<str>, Box<str>>,
    /// The digest of `latest`.
    digest: String,
    /// Earlier positions and their digests, oldest first (at most [`RECENT`]).
    recent: VecDeque<(Seq, String)>,
}

/// A page and the digest of the state it was read from.
#[derive(Debug)]
pub(crate) struct PageDigest {
    /// The page (its `head` is the state it was read from).
    pub page: ChangePage,
    /// The convergence digest.
    pub digest: String,
    /// The position the digest is the state at: the page's head, unless the store's
    /// own digest answered (too many ids) and writes kept committing meanwhile.
    pub digest_seq: Seq,
}

impl DigestIndex {
    /// An index of at most `max_ids` ids (0: never kept; the store's digest answers).
    pub(crate) fn new(max_ids: usize) -> DigestIndex {
        DigestIndex {
            state: tokio::sync::Mutex::new(None),
            max_ids,
            too_big: AtomicBool::new(max_ids == 0),
            rebuilds: AtomicU64::new(0),
            rereads: AtomicU64::new(0),
        }
    }

    /// How many times the index was built from every latest row.
    #[cfg(test)]
    pub(crate) fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// How many reads were made again because the index had moved past their state.
    #[cfg(test)]
    pub(crate) fn rereads(&self) -> u64 {
        self.rereads.load(Ordering::Relaxed)
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
        let nothing = ChangeQuery {
            include_entities: false,
            include_relationships: false,
            limit: 1,
            ..ChangeQuery::default()
        };
        Ok(self.read(store, &nothing, None).await?.digest)
    }

    /// The page `query` asks for and the digest of the state it was read from.
    ///
    /// `before` is a position read before this call (read here when `None` and needed);
    /// it is used only when the store's own digest answers (more ids than the index may
    /// hold): that digest is read after `before`, then the page, and it is the page's
    /// state when the page's head is still `before` ([`PageDigest::digest_seq`]; read
    /// again a few times otherwise).
    pub(crate) async fn read(
        &self,
        store: &dyn ServerStore,
        query: &ChangeQuery,
        before: Option<Seq>,
    ) -> Result<PageDigest, StoreError> {
        if self.too_big.load(Ordering::Relaxed) {
            return self.read_store_digest(store, query, before).await;
        }
        for _ in 0..OPTIMISTIC {
            let Some(from) = self.position().await else {
                // Built by one request at a time: every latest row is read once.
                break;
            };
            let (page, rows) = store.changes_with_latest(query, from).await?;
            let mut state = self.state.lock().await;
            if let Some(digest) = self.settle(&mut state, Some(from), &page.head, rows)? {
                let digest_seq = page.head.seq;
                return Ok(PageDigest {
                    page,
                    digest,
                    digest_seq,
                });
            }
            drop(state);
            self.rereads.fetch_add(1, Ordering::Relaxed);
            if self.too_big.load(Ordering::Relaxed) {
                return self.read_store_digest(store, query, before).await;
            }
        }
        // Holding the index, nothing moves it past this read's state (and a build reads
        // every latest row once, whatever the number of requests waiting). A second read
        // only after a restore dropped the index (the first read's rows do not say what
        // the restore took away): from nothing, it cannot be refused.
        let mut state = self.state.lock().await;
        for _ in 0..2 {
            if self.too_big.load(Ordering::Relaxed) {
                break;
            }
            let from = from_of(state.as_ref());
            let (page, rows) = store.changes_with_latest(query, from.unwrap_or(0)).await?;
            if let Some(digest) = self.settle(&mut state, from, &page.head, rows)? {
                let digest_seq = page.head.seq;
                return Ok(PageDigest {
                    page,
                    digest,
                    digest_seq,
                });
            }
            self.rereads.fetch_add(1, Ordering::Relaxed);
        }
        // The index was just dropped (too many ids): the store's digest answers.
        drop(state);
        self.read_store_digest(store, query, before).await
    }

    /// The position to ask latest rows after: the index's, or `None` when there is no
    /// index to move (it is built from every latest row).
    async fn position(&self) -> Option<Seq> {
        from_of(self.state.lock().await.as_ref())
    }

    /// The digest of the state at `head`, given the latest rows after `from` in that
    /// state (every latest row when `from` is `None`: the index was not built); moves the
    /// index there when it is behind. `None` when the index has moved past that state and
    /// no longer knows its digest.
    fn settle(
        &self,
        state: &mut Option<Index>,
        from: Option<Seq>,
        head: &StoreHead,
        latest: LatestAfter,
    ) -> Result<Option<String>, StoreError> {
        let at = head.seq;
        // A restore of a backup replaces rows without the latest rows after a position
        // showing what went away: an index from before the restore's mark is built again.
        let restored_after = |seq: Seq| head.restore_mark.is_some_and(|m| m.seq > seq);
        if from.is_some_and(restored_after) {
            *state = None;
            return Ok(None);
        }
        if let Some(ix) = state.as_ref() {
            if ix.seq == at {
                return Ok(Some(ix.digest.clone()));
            }
            if ix.seq > at {
                return Ok(ix
                    .recent
                    .iter()
                    .rev()
                    .find(|(s, _)| *s == at)
                    .map(|(_, d)| d.clone())
                    .or_else(|| {
                        // Every latest row of that state is at hand: its digest is.
                        // (rows after position 0 are every latest row too).
                        (from.unwrap_or(0) == 0)
                            .then(|| hash_rows(&latest.rows))
                            .flatten()
                    }));
            }
            if from.is_some_and(|from| ix.seq < from) {
                // Built again meanwhile, at an earlier state than the rows start from.
                return Ok(None);
            }
        }
        let ix = match (state.take(), from) {
            (Some(mut ix), Some(_)) => {
                let mut changed = false;
                for (id, version) in latest.rows {
                    changed = true;
                    match ix.latest.get_mut(id.as_str()) {
                        Some(v) => *v = Box::from(version.as_str()),
                        None => {
                            ix.latest
                                .insert(Box::from(id.as_str()), Box::from(version.as_str()));
                        }
                    }
                }
                let digest = match changed {
                    true => hash(&ix.latest)?,
                    false => ix.digest.clone(),
                };
                let old = std::mem::replace(&mut ix.digest, digest);
                ix.recent.push_back((ix.seq, old));
                if ix.recent.len() > RECENT {
                    ix.recent.pop_front();
                }
                ix.seq = at;
                ix
            }
            (_, None) => {
                self.rebuilds.fetch_add(1, Ordering::Relaxed);
                let latest: BTreeMap<Box<str>, Box<str>> = latest
                    .rows
                    .into_iter()
                    .map(|(id, v)| (Box::from(id.as_str()), Box::from(v.as_str())))
                    .collect();
                let digest = hash(&latest)?;
                Index {
                    seq: at,
                    latest,
                    digest,
                    recent: VecDeque::new(),
                }
            }
            // Dropped meanwhile (a restore): read again from nothing.
            (None, Some(_)) => return Ok(None),
        };
        if ix.latest.len() > self.max_ids {
            self.too_big.store(true, Ordering::Relaxed);
            tracing::info!(
                ids = ix.latest.len(),
                max = self.max_ids,
                "more ids than --digest-index-ids: the store's digest answers from now on"
            );
            return Ok(Some(ix.digest));
        }
        Ok(Some(state.insert(ix).digest.clone()))
    }

    /// The store's own digest (no index kept), read between `before` and the page.
    async fn read_store_digest(
        &self,
        store: &dyn ServerStore,
        query: &ChangeQuery,
        before: Option<Seq>,
    ) -> Result<PageDigest, StoreError> {
        let mut before = match before {
            Some(seq) => seq,
            None => store.max_seq().await?,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let digest = store.state_digest().await?;
            let page = store.changes(query).await?;
            let at = page.head.seq;
            if at == before || attempt >= STORE_DIGEST_ATTEMPTS {
                if at != before {
                    tracing::debug!(
                        digest_seq = before,
                        seq = at,
                        "writes kept committing: page and digest from neighbouring states"
                    );
                }
                return Ok(PageDigest {
                    page,
                    digest,
                    digest_seq: before,
                });
            }
            before = at;
        }
    }
}

/// Reads tried with the store's own digest before an inexact answer.
const STORE_DIGEST_ATTEMPTS: usize = 4;

/// Where latest rows are asked from for an index in this state (`None`: no index).
fn from_of(ix: Option<&Index>) -> Option<Seq> {
    ix.map(|ix| ix.seq)
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

/// The digest of every latest row of a state, in any order (`None` if it cannot be made).
fn hash_rows(rows: &[(EntityId, Version)]) -> Option<String> {
    let mut sorted: Vec<(&str, &str)> =
        rows.iter().map(|(i, v)| (i.as_str(), v.as_str())).collect();
    sorted.sort_unstable();
    let mut builder = DigestBuilder::new();
    for (id, version) in sorted {
        builder.push(id, version).ok()?;
    }
    Some(builder.finish())
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

    /// A page read before another request moved the index on is answered with the
    /// digest of its own state: from the positions the index passed, or, when the index
    /// never stood there, by reading again; never by building the index from every
    /// latest row again.
    #[tokio::test]
    async fn a_page_read_before_the_index_moved_on_gets_the_digest_of_its_own_state() {
        let store = goodies_store::open_server_store("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        let index = DigestIndex::default();
        let id = |_| EntityId::new_random();
        let create = |i: &EntityId| change(i, &Version::now("tester"), &[], ChangeType::Create);
        let nothing = ChangeQuery {
            include_entities: false,
            include_relationships: false,
            ..ChangeQuery::default()
        };
        push(&store, (0..5).map(id).map(|i| create(&i)).collect()).await;
        index.digest(store.as_ref()).await.expect("first build");
        assert_eq!(index.rebuilds(), 1);
        push(&store, (0..3).map(id).map(|i| create(&i)).collect()).await;
        let state_one = store.state_digest().await.expect("digest");
        // Two requests read the same state; one of them moves the index there.
        let from = index.position().await;
        let (slow_page, slow_rows) = store
            .changes_with_latest(&nothing, from.expect("built"))
            .await
            .expect("read");
        assert_eq!(
            index.digest(store.as_ref()).await.expect("moved"),
            state_one
        );
        // Another write, and the index moves past the slow request's state.
        push(&store, vec![create(&EntityId::new_random())]).await;
        let state_two = store.state_digest().await.expect("digest");
        assert_eq!(
            index.digest(store.as_ref()).await.expect("moved"),
            state_two
        );
        let mut state = index.state.lock().await;
        let answered = index
            .settle(&mut state, from, &slow_page.head, slow_rows)
            .expect("settle");
        assert_eq!(
            answered.as_deref(),
            Some(state_one.as_str()),
            "its own state"
        );
        drop(state);
        // A request whose state the index never stood at reads again, and is exact.
        let (lost_page, _) = store
            .changes_with_latest(&nothing, index.position().await.expect("built"))
            .await
            .expect("read");
        push(&store, vec![create(&EntityId::new_random())]).await;
        push(&store, vec![create(&EntityId::new_random())]).await;
        let state_four = store.state_digest().await.expect("digest");
        let skipped = store.changes(&nothing).await.expect("head").head;
        push(&store, vec![create(&EntityId::new_random())]).await;
        let _ = index.digest(store.as_ref()).await.expect("moved");
        let mut state = index.state.lock().await;
        assert_eq!(
            index
                .settle(
                    &mut state,
                    Some(lost_page.head.seq),
                    &skipped,
                    Default::default()
                )
                .expect("settle"),
            None,
            "the index never stood at {}",
            skipped.seq
        );
        drop(state);
        let read = index
            .read(store.as_ref(), &nothing, None)
            .await
            .expect("read");
        assert_eq!(read.digest_seq, read.page.head.seq);
        assert_eq!(read.digest, store.state_digest().await.expect("digest"));
        assert_ne!(read.digest, state_four);
        assert_eq!(index.rebuilds(), 1, "never built again");
    }

    /// An index built on an empty store (position 0) is moved by the next read, not built
    /// again: position 0 is an index, not the absence of one.
    #[tokio::test]
    async fn an_index_built_on_an_empty_store_is_moved_not_built_again() {
        let store = goodies_store::open_server_store("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        let index = DigestIndex::default();
        let empty = index.digest(store.as_ref()).await.expect("built empty");
        assert_eq!(index.position().await, Some(0));
        let created = EntityId::new_random();
        push(
            &store,
            vec![change(
                &created,
                &Version::now("tester"),
                &[],
                ChangeType::Create,
            )],
        )
        .await;
        let moved = index.digest(store.as_ref()).await.expect("moved");
        assert_ne!(moved, empty);
        assert_eq!(moved, store.state_digest().await.expect("digest"));
        assert_eq!(index.rebuilds(), 1, "built once, on the empty store");
        assert_eq!(index.held().await, 1);
    }

    /// Creates, fast-forwards, conflicting pushes, tombstones and relationship-only writes,
    /// followed by the index (and rebuilt when it falls too far behind), always equal to
    /// the store's own digest.
    #[tokio::test]
    async fn follows_the_store_digest() {
        let store = goodies_store::open_server_store("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        let index = DigestIndex::default();
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
        check("forty creates at once").await;
        assert_eq!(
            index.state.lock().await.as_ref().map(|ix| ix.latest.len()),
            Some(60)
        );
    }
}

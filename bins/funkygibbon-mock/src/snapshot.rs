//! One answer's page, `server_time` and `state_digest`, read as of one state of the store.
//!
//! A page and the digest are two reads. They describe the same state when no write
//! committed between them, and that is checked with the store's highest committed
//! sequence number: every write of rows raises it, on every backend and from every
//! server process sharing a database (commits happen in sequence order). The digest
//! comes with the number it reflects: the number read just before it, or the digest
//! index's position when another request has moved it past that
//! ([`DigestIndex::digest_with_seq`]); the page is read next; the number is read again.
//! When it has not moved, page, watermark and digest are the state at that number, and
//! the snapshot is *exact*.
//!
//! Under a steady stream of writes the reads are retried a few times; after that the
//! last attempt is answered as it is, marked inexact: its digest is then the state at
//! a sequence number between the request's own push and the page, so a client that
//! applied the page can find a mismatch that the next pull clears, but never a false
//! match with a state that predates its own acknowledged writes. Only exact snapshots
//! are kept for read-ahead (`crate::readahead`).
//!
//! [`DigestIndex::digest_with_seq`]: crate::digest::DigestIndex::digest_with_seq

use goodies_store::{ChangePage, ChangeQuery, Seq, StoreError, StoreHead};
use inbetweenies_proto::{capability, SyncFilters, SyncType};

use crate::state::AppInner;

/// The optional features this server offers (PROTOCOL §5.12), in the order it lists them
/// to a request that declared any. A later feature adds its name here and asks
/// [`Capabilities::has`] where it changes an answer; pages are keyed on the whole set.
pub(crate) const OFFERED: &[&str] = &[
    capability::RELATIONSHIP_ROWS,
    capability::MERKLE,
    capability::AS_OF,
    capability::CHANGE_FEED,
    capability::BLOBS,
];

const _: () = assert!(OFFERED.len() <= 64, "one bit per offered capability");

/// The offered capabilities a request declared (names this server does not offer are
/// ignored). With none, the request is answered as the Python reference answers
/// (PROTOCOL §12.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Capabilities(u64);

impl Capabilities {
    /// No capability: a client written for the reference.
    pub(crate) const NONE: Capabilities = Capabilities(0);

    /// The offered capabilities among `names`.
    pub(crate) fn declared<S: AsRef<str>>(names: &[S]) -> Capabilities {
        Capabilities(
            names
                .iter()
                .filter_map(|n| OFFERED.iter().position(|o| *o == n.as_ref()))
                .fold(0, |bits, i| bits | 1 << i),
        )
    }

    /// Whether the offered capability `name` was declared.
    pub(crate) fn has(self, name: &str) -> bool {
        OFFERED
            .iter()
            .position(|o| *o == name)
            .is_some_and(|i| self.0 & 1 << i != 0)
    }

    /// Whether no offered capability was declared (PROTOCOL §12.4).
    pub(crate) fn is_none(self) -> bool {
        self == Capabilities::NONE
    }
}

/// What one page is read for: the change-feed query and the capabilities that shaped the
/// answer. Two requests with equal specs get equal pages, and a page read ahead is handed
/// only to a request with an equal spec (`crate::readahead`), so a page built for one kind
/// of client never reaches another.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PageSpec {
    /// The rows to read.
    pub query: ChangeQuery,
    /// The declared capabilities the page was built for.
    pub caps: Capabilities,
}

impl PageSpec {
    /// The page a `POST /api/v1/sync/` request asks for (PROTOCOL §6.4, §6.5, §12.4).
    ///
    /// Relationship rows only with `relationship_rows`: without it a page holds entity
    /// rows only, counted as entities, as the reference builds it (and `relationships`,
    /// which asks for nothing else, gets none). With delta, `since` and the cursor both
    /// apply; `full`, `entities` and `relationships` ignore both.
    pub(crate) fn for_sync(
        sync_type: SyncType,
        filters: Option<&SyncFilters>,
        after_seq: Option<Seq>,
        caps: Capabilities,
        limit: usize,
    ) -> PageSpec {
        let filters = filters.cloned().unwrap_or_default();
        let delta = sync_type == SyncType::Delta;
        PageSpec {
            query: ChangeQuery {
                after_seq: after_seq.filter(|_| delta),
                since: filters.since.filter(|_| delta),
                entity_types: filters.entity_types,
                modified_by: filters.modified_by,
                include_entities: sync_type != SyncType::Relationships,
                include_relationships: sync_type != SyncType::Entities
                    && caps.has(capability::RELATIONSHIP_ROWS),
                limit,
            },
            caps,
        }
    }

    /// The same spec from past `seq` on: the next page of a paged pull.
    pub(crate) fn after(&self, seq: Seq) -> PageSpec {
        PageSpec {
            query: ChangeQuery {
                after_seq: Some(seq),
                ..self.query.clone()
            },
            caps: self.caps,
        }
    }
}

/// Reads tried before an inexact snapshot is answered.
const ATTEMPTS: usize = 4;

/// A page with the digest and watermark of the same store state.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The page; its `server_time` is the watermark.
    pub page: ChangePage,
    /// The convergence digest.
    pub digest: String,
    /// The highest committed sequence number when the digest was read.
    pub digest_seq: Seq,
    /// The highest committed sequence number after the page was read.
    pub seq: Seq,
}

impl Snapshot {
    /// Whether page and digest are the state at [`Snapshot::seq`] (nothing committed between).
    pub(crate) fn is_exact(&self) -> bool {
        self.digest_seq == self.seq
    }
}

/// Reads the page `query` asks for and the digest, as of one store state when the store
/// lets it within a few attempts.
pub(crate) async fn read(app: &AppInner, spec: &PageSpec) -> Result<Snapshot, StoreError> {
    let head = app.store.head().await?;
    Ok(read_from(app, spec, head).await?.0)
}

/// [`read`] starting from a head of the store read just before (its sequence number is
/// the digest's position), and with the head read after the page: a sync answer checks
/// its position against the restore mark and the history horizon of that later head
/// (`crate::routes::backup::refuse_position_at`), so one read serves both.
pub(crate) async fn read_from(
    app: &AppInner,
    spec: &PageSpec,
    head: StoreHead,
) -> Result<(Snapshot, StoreHead), StoreError> {
    let (store, query) = (app.store.as_ref(), &spec.query);
    let mut attempt = 0;
    let mut before = head.seq;
    loop {
        attempt += 1;
        let (digest_seq, digest) = app.digest.digest_at(store, before).await?;
        let page = store.changes(query).await?;
        let after = store.head().await?;
        let seq = after.seq;
        before = seq;
        let snap = Snapshot {
            page,
            digest,
            digest_seq,
            seq,
        };
        if snap.is_exact() || attempt >= ATTEMPTS {
            if !snap.is_exact() {
                tracing::debug!(
                    digest_seq,
                    seq,
                    "writes kept committing: page and digest from neighbouring states"
                );
            }
            return Ok((snap, after));
        }
    }
}

#[cfg(test)]
mod tests {
    use goodies_store::{ChangeRecord, PushBatch};
    use inbetweenies_conflict::DigestBuilder;
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
    };

    use super::*;
    use crate::config::ServerConfig;

    fn change(id: &EntityId, version: &Version, parent: Option<&Version>) -> SyncChange {
        SyncChange {
            change_type: if parent.is_some() {
                ChangeType::Update
            } else {
                ChangeType::Create
            },
            entity: Some(EntityChange {
                id: id.clone(),
                version: version.clone(),
                entity_type: EntityType::Note,
                name: "note".into(),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "tester".into(),
                parent_versions: parent.into_iter().cloned().collect(),
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    /// Only offered names count; unknown ones are ignored, and none is the reference's answer.
    #[test]
    fn capabilities_keep_only_the_offered_names() {
        let rows = capability::RELATIONSHIP_ROWS;
        assert!(Capabilities::declared::<&str>(&[]).is_none());
        assert!(Capabilities::declared(&["some_later_feature"]).is_none());
        let both = Capabilities::declared(&["some_later_feature", rows]);
        assert!(both.has(rows) && !both.is_none());
        assert_eq!(both, Capabilities::declared(&[rows, rows]));
        assert!(!both.has("some_later_feature"));
        assert!(!Capabilities::NONE.has(rows));
        let spec = |caps| {
            PageSpec::for_sync(SyncType::Full, None, Some(7), caps, 500)
                .query
                .include_relationships
        };
        assert!(spec(both), "relationship rows with the capability");
        assert!(!spec(Capabilities::NONE), "entity rows only without it");
        let rels = PageSpec::for_sync(SyncType::Relationships, None, None, Capabilities::NONE, 9);
        assert!(!rels.query.include_entities && !rels.query.include_relationships);
        let full = PageSpec::for_sync(SyncType::Full, None, Some(7), both, 500);
        assert_eq!(full.query.after_seq, None, "full ignores the cursor");
        assert_eq!(full.after(9).query.after_seq, Some(9));
        assert_eq!(full.after(9).caps, both);
    }

    /// The digest of every id's latest version in a page that holds the whole state.
    fn digest_of(page: &ChangePage) -> String {
        let mut latest: Vec<(&str, &str)> = page
            .records
            .iter()
            .filter_map(|r| match r {
                ChangeRecord::Entity(se) => {
                    Some((se.entity.id.as_str(), se.entity.version.as_str()))
                }
                ChangeRecord::Relationship(_) => None,
            })
            .collect();
        latest.sort_unstable();
        let mut b = DigestBuilder::new();
        for (id, v) in latest {
            b.push(id, v).expect("id order");
        }
        b.finish()
    }

    /// While another task keeps writing, every exact snapshot's digest is the digest of
    /// the state its page shows, and an inexact one says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exact_snapshot_digest_is_the_digest_of_its_page() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let (_router, handle) = crate::build_app(
            ServerConfig::new(url)
                .with_admin_password("pw")
                .with_jwt_secret("secret"),
        )
        .await
        .expect("app");
        let app = handle.state;
        let ids: Vec<EntityId> = (0..20).map(|_| EntityId::new_random()).collect();
        let writer = {
            let store = app.store.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut latest: Vec<Option<Version>> = vec![None; ids.len()];
                for round in 0..300 {
                    let i = round % ids.len();
                    let v = Version::now("tester");
                    store
                        .apply_push(PushBatch {
                            device_id: "writer".into(),
                            user_id: "tester".into(),
                            changes: vec![change(&ids[i], &v, latest[i].as_ref())],
                        })
                        .await
                        .expect("push");
                    latest[i] = Some(v);
                }
            })
        };
        let whole = PageSpec {
            query: ChangeQuery {
                limit: 100_000,
                include_relationships: false,
                ..ChangeQuery::default()
            },
            caps: Capabilities::NONE,
        };
        let (mut exact, mut reads) = (0, 0);
        while !writer.is_finished() && reads < 5_000 {
            reads += 1;
            let snap = read(&app, &whole).await.expect("snapshot");
            if snap.is_exact() {
                exact += 1;
                assert_eq!(snap.digest, digest_of(&snap.page), "read {reads}");
            } else {
                assert!(snap.digest_seq < snap.seq);
            }
        }
        writer.await.expect("writer");
        let snap = read(&app, &whole).await.expect("snapshot");
        assert!(snap.is_exact(), "nothing is written any more");
        assert_eq!(snap.digest, digest_of(&snap.page));
        assert_eq!(snap.digest, app.store.state_digest().await.expect("digest"));
        eprintln!("{exact} exact snapshots of {reads} reads while writing");
    }
}

//! One answer's page, `server_time` and `state_digest`, read as of one state of the store.
//!
//! The page is read with the store's head and, in the same state, the latest rows the
//! digest index needs to reach that state (`crate::digest`): page, watermark and digest
//! are the state at the page's head, and the snapshot is *exact*. Only when the index
//! is not kept (more ids than `--digest-index-ids`) does the store's own digest answer,
//! read between a head and the page; under a steady stream of writes those reads are
//! retried a few times and the last is answered as it is, marked inexact: its digest is
//! then the state at a sequence number between the request's own push and the page, so
//! a client that applied the page can find a mismatch that the next pull clears, but
//! never a false match with a state that predates its own acknowledged writes. Only
//! exact snapshots are kept for read-ahead (`crate::readahead`).

use goodies_store::{ChangePage, ChangeQuery, Seq, StoreError};
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

/// A page with the digest and watermark of the same store state.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The page; its `server_time` is the watermark, its `head` the state it was read from.
    pub page: ChangePage,
    /// The convergence digest.
    pub digest: String,
    /// The highest committed sequence number of the state the digest is.
    pub digest_seq: Seq,
    /// The highest committed sequence number of the state the page was read from.
    pub seq: Seq,
}

impl Snapshot {
    /// Whether page and digest are the state at [`Snapshot::seq`].
    pub(crate) fn is_exact(&self) -> bool {
        self.digest_seq == self.seq
    }
}

/// Reads the page `spec` asks for and the digest of the same state.
pub(crate) async fn read(app: &AppInner, spec: &PageSpec) -> Result<Snapshot, StoreError> {
    read_from(app, spec, None).await
}

/// [`read`] with a position of the store read just before, if there is one (used only
/// when the store's own digest answers, see the module docs). The page's head (`Snapshot::page`) is the
/// state it was read from: a sync answer checks its position against that head's restore
/// mark and history horizon (`crate::routes::backup::refuse_position_at`).
pub(crate) async fn read_from(
    app: &AppInner,
    spec: &PageSpec,
    before: Option<Seq>,
) -> Result<Snapshot, StoreError> {
    let read = app
        .digest
        .read(app.store.as_ref(), &spec.query, before)
        .await?;
    let seq = read.page.head.seq;
    Ok(Snapshot {
        page: read.page,
        digest: read.digest,
        digest_seq: read.digest_seq,
        seq,
    })
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

    /// While another task keeps writing and several requests read at once, every
    /// snapshot is exact and its digest is the digest of the state its page shows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_snapshot_digest_is_the_digest_of_its_page() {
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
        let readers: Vec<_> = (0..6)
            .map(|r| {
                let (app, whole) = (app.clone(), whole.clone());
                let writer_done = writer.abort_handle();
                tokio::spawn(async move {
                    let (mut reads, mut seqs) = (0, std::collections::BTreeSet::new());
                    while !writer_done.is_finished() && reads < 2_000 {
                        reads += 1;
                        let snap = read(&app, &whole).await.expect("snapshot");
                        assert!(
                            snap.is_exact(),
                            "reader {r}, read {reads}: digest of {} with the page of {}",
                            snap.digest_seq,
                            snap.seq
                        );
                        assert_eq!(snap.seq, snap.page.head.seq);
                        assert_eq!(
                            snap.digest,
                            digest_of(&snap.page),
                            "reader {r}, read {reads}"
                        );
                        seqs.insert(snap.seq);
                    }
                    seqs.len()
                })
            })
            .collect();
        let mut states = 0;
        for r in readers {
            states += r.await.expect("reader");
        }
        writer.await.expect("writer");
        let snap = read(&app, &whole).await.expect("snapshot");
        assert!(snap.is_exact(), "nothing is written any more");
        assert_eq!(snap.digest, digest_of(&snap.page));
        assert_eq!(snap.digest, app.store.state_digest().await.expect("digest"));
        assert!(
            states > 20,
            "the reads saw only {states} states: they did not meet the writes"
        );
        assert_eq!(
            app.digest.rebuilds(),
            1,
            "every latest row read once, by one request"
        );
        eprintln!(
            "{states} states read while writing; {} reads made again, {} builds",
            app.digest.rereads(),
            app.digest.rebuilds()
        );
    }
}

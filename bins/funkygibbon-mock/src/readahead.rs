//! Page read-ahead for paged pulls: after answering a full page of a pull, the server
//! reads the next page in the background, so the client's request for it (same filters,
//! the returned cursor, nothing pushed) is answered without waiting for the store.
//!
//! A page read ahead is a snapshot taken a little earlier than the request that collects
//! it, exactly as if that request had arrived then: it never skips a row (rows committed
//! later get greater sequence numbers, PROTOCOL §6.5), and its `server_time` and digest
//! are taken with it, so the watermark stays exact. Only a request without changes may
//! collect one; unclaimed pages are dropped after a few seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use goodies_store::{ChangePage, ChangeQuery, StoreError};
use tokio::task::JoinHandle;

use crate::state::AppState;

/// At most this many pages are held at once (one per client paging right now)…
const SLOTS: usize = 32;

/// …and at most about this many rows in all (at least two pages, whatever their size).
const ROWS: usize = 20_000;

/// A page nobody collected within this time is dropped.
const KEEP: Duration = Duration::from_secs(10);

/// A page and the digest read right after it.
pub(crate) type PageAndDigest = (ChangePage, String);

struct Slot {
    query: ChangeQuery,
    started: Instant,
    task: JoinHandle<Result<PageAndDigest, StoreError>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pages being read ahead.
#[derive(Default)]
pub(crate) struct ReadAhead {
    slots: Mutex<Vec<Slot>>,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("ReadAhead").field("pages", &n).finish()
    }
}

impl ReadAhead {
    /// Starts reading the page `query` asks for.
    pub(crate) fn start(&self, app: &AppState, query: ChangeQuery) {
        let app2 = app.clone();
        let q = query.clone();
        let task = tokio::spawn(async move {
            let page = app2.store.changes(&q).await?;
            let digest = app2.state_digest().await?;
            Ok((page, digest))
        });
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|s| s.started.elapsed() < KEEP && s.query != query);
        let most = (ROWS / query.limit.max(1)).clamp(2, SLOTS);
        while slots.len() >= most {
            slots.remove(0);
        }
        slots.push(Slot {
            query,
            started: Instant::now(),
            task,
        });
    }

    /// The page read ahead for exactly this query, if there is one and it was read
    /// without error.
    pub(crate) async fn take(&self, query: &ChangeQuery) -> Option<PageAndDigest> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let at = slots.iter().position(|s| s.query == *query)?;
            slots.swap_remove(at)
        };
        if slot.started.elapsed() >= KEEP {
            return None;
        }
        let mut slot = slot;
        match (&mut slot.task).await {
            Ok(Ok(page)) => Some(page),
            Ok(Err(e)) => {
                tracing::debug!(error = %crate::error::error_chain(&e), "page read ahead failed; reading it again");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "page read ahead did not finish; reading it again");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use goodies_store::{ChangeRecord, PushBatch};
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
    };

    use super::*;
    use crate::config::ServerConfig;

    /// A page read ahead goes to the first request with exactly its query, once.
    #[tokio::test]
    async fn a_page_read_ahead_is_handed_out_once_for_its_query() {
        let (_router, handle) = crate::build_app(
            ServerConfig::new("sqlite::memory:")
                .with_admin_password("pw")
                .with_jwt_secret("secret"),
        )
        .await
        .expect("app");
        let app = handle.state;
        let changes = (0..10)
            .map(|i| SyncChange {
                change_type: ChangeType::Create,
                entity: Some(EntityChange {
                    id: EntityId::new_random(),
                    version: Version::now("tester"),
                    entity_type: EntityType::Note,
                    name: format!("note {i}"),
                    content: Default::default(),
                    source_type: SourceType::Manual,
                    user_id: "tester".into(),
                    parent_versions: vec![],
                    checksum: None,
                }),
                relationships: vec![],
            })
            .collect();
        app.store
            .apply_push(PushBatch {
                device_id: "d".into(),
                user_id: "tester".into(),
                changes,
            })
            .await
            .expect("push");
        let query = ChangeQuery {
            after_seq: Some(2),
            limit: 3,
            ..ChangeQuery::default()
        };
        app.read_ahead.start(&app, query.clone());
        let other = ChangeQuery {
            limit: 4,
            ..query.clone()
        };
        assert!(app.read_ahead.take(&other).await.is_none(), "another query");
        let (page, digest) = app.read_ahead.take(&query).await.expect("the page");
        let seqs: Vec<u64> = page.records.iter().map(ChangeRecord::seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(page.next_after_seq, Some(5));
        assert_eq!(digest, app.store.state_digest().await.expect("digest"));
        assert!(
            app.read_ahead.take(&query).await.is_none(),
            "handed out once"
        );
    }
}

//! Repairing a digest mismatch through the server's Merkle tree (PROTOCOL §15.1).
//!
//! When the server's `state_digest` and the mirror's disagree after a quiet sync and the
//! server announces the `merkle` capability, the sync does not pull everything again:
//!
//! 1. it walks the server's tree against a tree built over the mirror's latest
//!    `(id, version)` rows — the rows the local digest was just computed from
//!    ([`crate::merkle::differing_ids`]) — in at most depth + 1 requests;
//! 2. it reads each differing id's latest version (tombstones included) with
//!    `GET /api/v1/graph/entities/{id}`, skipping ids with a pending or quarantined
//!    local change (their next push settles them);
//! 3. it applies those versions in one transaction through the pull's own apply path
//!    (the pull-guard still keeps any id that got a pending edit meanwhile), leaving the
//!    sync position as it was;
//! 4. an id the server does not hold (`404`) is handled as a full repair handles it: a
//!    live version is queued again and pushed (the server lost it), a tombstone of an id
//!    the server never held is removed from the mirror;
//! 5. one more delta round trip pushes what was queued and brings a fresh digest, which
//!    must now agree.
//!
//! Whenever that path cannot finish — the tree cannot be read, too many ids differ
//! ([`MAX_MERKLE_REFETCH`]), an entity cannot be read, or the digests still disagree
//! afterwards — the sync falls back to the full pull that keeps pending changes.
//!
//! The tree over the mirror is built in memory for each repair rather than kept in the
//! mirror's own `merkle_*` tables: a repair is rare, building the tree over 10,000 rows
//! takes a few milliseconds, and keeping the tables would make every local write and
//! every pulled page rehash leaves. Built from the very rows the digest covers, the tree
//! cannot be stale, even when the rows were changed behind the store's back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use goodies_store::{AckSet, PulledPage};
use inbetweenies_proto::{ChangeType, Entity, EntityChange, EntityId, SyncChange};
use serde::{Deserialize, Serialize};

use crate::client::Inner;
use crate::error::{BoxError, ClientError};
use crate::events::ClientEvent;
use crate::http::{Http, RequestFailure};
use crate::merkle::{differing_ids, MerkleAnswer, MerkleSource};
use crate::settings::Settings;
use crate::sync::{Repair, RepairReason, SyncResult};
use crate::transport::Method;

/// The server's Merkle tree endpoint.
pub const MERKLE_PATH: &str = "/api/v1/sync/merkle";

/// The graph API's entity path (the id follows, percent-encoded).
pub const ENTITY_PATH: &str = "/api/v1/graph/entities/";

/// The most differing ids a Merkle repair reads one by one; past that a full pull is
/// cheaper and the repair takes it.
pub const MAX_MERKLE_REFETCH: usize = 256;

/// How a repair brought the mirror back in step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairMethod {
    /// The whole current state was pulled again.
    #[default]
    FullPull,
    /// The differing ids were found through the server's Merkle tree and only they
    /// were read again.
    Merkle,
}

/// A [`MerkleSource`] over the sync's own HTTP client (its token, retries and gzip).
struct SyncMerkleSource<'a, 'b> {
    http: &'a Http<'b>,
    retries: AtomicU32,
}

#[async_trait]
impl<'a, 'b> MerkleSource for SyncMerkleSource<'a, 'b> {
    async fn nodes(&self, level: u8, prefixes: &[String]) -> Result<MerkleAnswer, ClientError> {
        let path = format!("{MERKLE_PATH}?level={level}&prefix={}", prefixes.join(","));
        let mut retries = 0;
        let answer = self
            .http
            .call::<(), MerkleAnswer>(Method::Get, &path, None, &mut retries)
            .await;
        self.retries.fetch_add(retries, Ordering::Relaxed);
        answer.map_err(RequestFailure::into_client_error)
    }
}

/// `GET /api/v1/graph/entities/{id}`'s answer (its edges are not needed here).
#[derive(Debug, Deserialize)]
struct EntityAnswer {
    entity: Entity,
}

/// `s` as one URL path segment: every byte but the unreserved ones percent-encoded.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A server's latest version of an entity as a pulled change.
fn pulled_change(entity: &Entity) -> SyncChange {
    SyncChange {
        change_type: if entity.is_deleted() {
            ChangeType::Delete
        } else {
            ChangeType::Update
        },
        entity: Some(EntityChange::from_entity(entity)),
        relationships: Vec::new(),
    }
}

impl Inner {
    /// Repairs a digest mismatch through the server's Merkle tree (see the module
    /// documentation). `Ok(None)` when that path could not be taken or did not bring
    /// the digests together: the caller then repairs with a full pull.
    pub(crate) async fn merkle_repair(
        &self,
        http: &Http<'_>,
        settings: &Settings,
        res: &mut SyncResult,
    ) -> Result<Option<Repair>, ClientError> {
        let local = self.store.latest_versions().await?;
        let source = SyncMerkleSource {
            http,
            retries: AtomicU32::new(0),
        };
        let walk = differing_ids(&local, &source).await;
        res.retries += source.retries.load(Ordering::Relaxed);
        let diff = match walk {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(error = %crate::sync::error_chain(&e), "the server's Merkle tree cannot be read; repairing with a full pull");
                return Ok(None);
            }
        };
        res.requests += diff.requests as u32;
        tracing::info!(
            differing = diff.ids.len(),
            requests = diff.requests,
            leaves = diff.leaves,
            "Merkle walk done"
        );
        if diff.ids.len() > MAX_MERKLE_REFETCH {
            tracing::info!(
                differing = diff.ids.len(),
                "too many ids differ to read one by one; repairing with a full pull"
            );
            return Ok(None);
        }

        // Ids with a pending or quarantined change are settled by their push.
        let mut kept: HashSet<EntityId> = self.store.pending_ids().await?.into_iter().collect();
        kept.extend(
            self.store
                .quarantined()
                .await?
                .iter()
                .filter_map(|q| q.entry.entity_key().map(|(id, _)| id.clone())),
        );
        let mut changes = Vec::new();
        let mut absent = Vec::new();
        let mut fetched = Vec::new();
        let to_read: Vec<EntityId> = diff
            .ids
            .iter()
            .filter(|id| !kept.contains(*id))
            .cloned()
            .collect();
        for id in &to_read {
            let path = format!("{ENTITY_PATH}{}", path_segment(id.as_str()));
            let mut retries = 0;
            let answer = http
                .call::<(), EntityAnswer>(Method::Get, &path, None, &mut retries)
                .await;
            res.retries += retries;
            res.requests += 1;
            fetched.push(id.clone());
            match answer {
                Ok(a) if a.entity.id == *id => changes.push(pulled_change(&a.entity)),
                Ok(a) => {
                    let e = ClientError::InvalidResponse(BoxError::from(format!(
                        "asked for entity {id}, got {}",
                        a.entity.id
                    )));
                    tracing::warn!(error = %e, "repairing with a full pull");
                    return Ok(None);
                }
                Err(RequestFailure::Status { status: 404, .. }) => absent.push(id.clone()),
                Err(f) => {
                    let e = f.into_client_error();
                    tracing::info!(%id, error = %crate::sync::error_chain(&e), "an entity cannot be read; repairing with a full pull");
                    return Ok(None);
                }
            }
        }

        // The server's versions, applied as a pull applies a page; the sync position
        // is written back unchanged.
        let state = self.store.sync_state().await?;
        let Some(watermark) = state.watermark else {
            return Ok(None);
        };
        let page = PulledPage {
            changes,
            cursor: state.cursor,
            server_time: watermark,
        };
        let report = self.store.apply_response(&AckSet::default(), &page).await?;
        self.digest.applied(&page.changes, &report).await;
        let pulled = report.entities_applied.len() as u64;
        res.pulled_entities += pulled;
        res.synced_entities += pulled;
        res.deferred += report.entities_guarded.len() as u64;
        if self.events.has_listeners() {
            for id in report.entities_applied {
                self.events.emit(ClientEvent::EntityChangedBySync { id });
            }
            for id in report.entities_guarded {
                self.events.emit(ClientEvent::RemoteChangeDeferred { id });
            }
        }

        // What the server does not hold: given back, or (a tombstone) forgotten.
        let mut missing_live = Vec::new();
        let mut missing_deleted = Vec::new();
        for id in absent {
            match self.store.entity(&id).await? {
                Some(e) if e.is_deleted() => missing_deleted.push(id),
                Some(_) => missing_live.push(id),
                None => {}
            }
        }
        let forgotten = self.store.forget_deleted(&missing_deleted).await?;
        self.digest.counted_write();
        for id in &forgotten {
            self.digest.touched(id);
        }
        let requeued = self.store.requeue(&missing_live, &[]).await?;

        // A fresh digest (and the push of what was queued again).
        let pass = self.exchange(http, settings, res, None).await?;
        res.digest = None;
        let converged = self.check_digest(res, &pass).await?.is_none() && res.digest.is_some();
        let repair = Repair {
            reason: RepairReason::DigestMismatch,
            method: RepairMethod::Merkle,
            pulled_entities: pulled,
            requeued,
            forgotten: forgotten.len() as u64,
            converged,
            differing_ids: diff.ids,
            merkle_requests: diff.requests as u32,
            fetched,
        };
        if !converged {
            tracing::info!(
                ?repair,
                "the digests still differ after a Merkle repair; repairing with a full pull"
            );
            return Ok(None);
        }
        Ok(Some(repair))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_one_path_segment() {
        assert_eq!(path_segment("lamp-1"), "lamp-1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("é?#%"), "%C3%A9%3F%23%25");
    }
}

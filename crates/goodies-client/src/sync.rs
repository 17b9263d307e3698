//! The sync engine: push the outbox, pull every page, apply each page atomically, report.
//!
//! One sync is a series of `POST /api/v1/sync/` round trips, each `sync_type: "delta"`:
//!
//! 1. The request carries up to `batch_size` pending outbox entries (in outbox order) that
//!    this sync has not sent yet, `filters.since` = the stored watermark (absent on the
//!    first sync: the full state) and `cursor` = the stored cursor of an unfinished pull.
//! 2. Each answer is applied with one [`goodies_store::ClientStore::apply_response`] call:
//!    the outbox entries sent in that request whose id the server named are dropped, the
//!    page is applied without overwriting any id that still has a pending edit (the
//!    pull-guard), and the cursor — or, on the last page, the watermark (`server_time`) —
//!    is stored in the same transaction.
//! 3. Requests go on while entries remain unsent or the cursor is not null. During a pull
//!    (a request that pushed nothing and got a cursor back) the next page is requested
//!    while the current one is being applied.
//!
//! A transport failure, a 5xx, a 408 or a 429 is retried with backoff; when retries run
//! out, the sync stops, reports the error and keeps everything pending. After a sync that
//! leaves the outbox empty without errors, the last answer's `state_digest` is compared
//! with the local digest, taken from an in-memory index of latest versions that local
//! writes and applied pages keep up to date; when they differ, the store's own digest
//! decides.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use goodies_store::{AckSet, OutboxEntry, PulledPage};
use inbetweenies_proto::{
    capability, ConflictInfo, Cursor, EntityId, ErrorCode, RelationshipId, SyncRequest,
    SyncResponse, SyncType, Timestamp, Version,
};
use serde::{Deserialize, Serialize};

use crate::client::Inner;
use crate::config::{ClientConfig, RetryPolicy};
use crate::error::{ClientError, SyncError};
use crate::events::{ClientEvent, SyncPhase};
use crate::http::{Http, RequestFailure};
use crate::repair::RepairMethod;
use crate::settings::{DigestCheck, LastSync, RecordedConflict};
use crate::transport::Method;

/// The sync endpoint.
pub const SYNC_PATH: &str = "/api/v1/sync/";

/// Upper bound on round trips in one sync (a server whose cursor never ends cannot hang a
/// client).
const MAX_REQUESTS: u32 = 1_000_000;

/// A limit that reads the whole outbox.
const ALL: usize = 1 << 40;

/// How old the stored watermark may be before an empty answer moves it forward. Until
/// then an idle sync writes nothing to the mirror; an older `since` only asks the
/// server for more (never misses a change).
pub(crate) const WATERMARK_REFRESH: Duration = Duration::from_secs(3600);

/// Whether an answer leaves nothing to store: no changes, no cursor, nothing
/// acknowledged or decided, and the stored watermark `since` is less than `refresh`
/// older than the answer's `server_time` (so keeping it loses nothing: the server sent
/// nothing newer than it). Applying such an answer would only rewrite the watermark.
pub(crate) fn quiet_answer(
    acks: &AckSet,
    page: &PulledPage,
    since: Option<Timestamp>,
    refresh: Duration,
) -> bool {
    let Some(since) = since else {
        return false;
    };
    let age = page
        .server_time
        .unix_micros()
        .saturating_sub(since.unix_micros());
    page.changes.is_empty()
        && page.cursor.is_none()
        && acks.sent_positions.is_empty()
        && acks.entities.is_empty()
        && acks.relationships.is_empty()
        && acks.resolved_versions.is_empty()
        && (0..i64::try_from(refresh.as_micros()).unwrap_or(i64::MAX)).contains(&age)
}

fn request_limit_error() -> SyncError {
    SyncError::InvalidResponse(std::sync::Arc::from(Box::<
        dyn std::error::Error + Send + Sync,
    >::from(
        "the server kept paging past the request limit",
    )))
}

/// The server's and the client's digests disagree after a quiet sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DigestMismatch {
    /// The server's `state_digest`.
    pub server: String,
    /// The local digest.
    pub local: String,
}

/// A change the server refused as invalid (or too large even alone), set aside in the
/// outbox: kept, not sent again until an edit of its id or
/// [`crate::BlowingOffClient::retry_quarantined`] releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuarantinedChange {
    /// Its outbox position.
    pub position: i64,
    /// The entity it changes, for an entity change.
    pub entity_id: Option<EntityId>,
    /// The version it pushes, for an entity change.
    pub version: Option<Version>,
    /// The relationship it pushes, for a relationship change.
    pub relationship_id: Option<RelationshipId>,
    /// The server's status, code and message.
    pub reason: String,
}

/// The public view of a quarantined outbox entry.
pub(crate) fn quarantined_change(entry: &OutboxEntry, reason: String) -> QuarantinedChange {
    QuarantinedChange {
        position: entry.position,
        entity_id: entry.entity_key().map(|(id, _)| id.clone()),
        version: entry.entity_key().map(|(_, v)| v.clone()),
        relationship_id: entry.relationship_id().cloned(),
        reason,
    }
}

/// Why a sync repaired the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairReason {
    /// The server's `state_digest` and ours disagreed after a quiet sync.
    DigestMismatch,
    /// The server answered `INVALID_SYNC_STATE`: it does not know our cursor (its
    /// database was replaced or restored).
    InvalidSyncState,
}

/// What a repair did: a full pull that kept every pending change (or, through the
/// server's Merkle tree, a read of just the differing ids: see [`RepairMethod`]), then
/// what the server lacked given back to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Repair {
    /// Why.
    pub reason: RepairReason,
    /// How.
    #[serde(default)]
    pub method: RepairMethod,
    /// Entity versions the full pull made latest locally.
    pub pulled_entities: u64,
    /// Local entity versions and relationships the server did not hold, queued again and pushed.
    pub requeued: u64,
    /// Local tombstones of ids the server never held, removed from the mirror.
    pub forgotten: u64,
    /// Whether the digests agreed afterwards.
    pub converged: bool,
    /// The ids the Merkle walk found differing (a [`RepairMethod::Merkle`] repair).
    #[serde(default)]
    pub differing_ids: Vec<EntityId>,
    /// Requests the Merkle walk made (at most the tree's depth + 1).
    #[serde(default)]
    pub merkle_requests: u32,
    /// The ids whose latest version was read from the server one by one.
    #[serde(default)]
    pub fetched: Vec<EntityId>,
}

/// The ids the pages of a full pull carried.
#[derive(Debug, Default)]
pub(crate) struct ServerIds {
    entities: HashSet<EntityId>,
    relationships: HashSet<RelationshipId>,
}

/// How one pass of round trips ended.
#[derive(Debug)]
pub(crate) struct Pass {
    /// Nothing failed, the pull reached its last page.
    complete: bool,
    /// The server answered `INVALID_SYNC_STATE`.
    invalid_state: bool,
    /// The last answer's `state_digest`.
    state_digest: Option<String>,
    /// The server announced the `merkle` capability.
    merkle: bool,
    /// The pages were filtered by a selection (`crate::Selection`): the server's digest
    /// covers more than they did.
    selective: bool,
}

/// What a refused request means for the pass.
#[derive(Debug)]
enum Refusal {
    /// The batch was too large (or refused without naming a change): send fewer at once.
    Split,
    /// The blamed changes were quarantined: send the rest.
    Quarantined,
    /// The push cannot go on this sync; pulling still can (with one try when the server
    /// itself is failing).
    StopPushing { server_failing: bool },
    /// Forget the sync position and pull in full.
    InvalidState,
    /// Nothing more can be done this sync.
    Stop,
}

/// What one [`crate::BlowingOffClient::sync`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SyncResult {
    /// Entity versions pushed and acknowledged, plus entity versions pulled that became
    /// latest locally.
    pub synced_entities: u64,
    /// Outbox entries sent (counting each once).
    pub pushed: u64,
    /// Outbox entries the server acknowledged (and that were dropped).
    pub acknowledged: u64,
    /// Pulled entity versions that became latest locally.
    pub pulled_entities: u64,
    /// Pulled relationships stored locally.
    pub pulled_relationships: u64,
    /// Pulled versions kept aside because the id had a pending local edit.
    pub deferred: u64,
    /// Conflicts the server decided over our pushed changes.
    pub conflicts_resolved: u64,
    /// Those conflicts.
    pub conflicts: Vec<ConflictInfo>,
    /// Problems met; everything not acknowledged stays pending.
    pub errors: Vec<SyncError>,
    /// Wall time of the whole sync.
    pub duration: Duration,
    /// Round trips made (retries not counted).
    pub requests: u32,
    /// Retries made.
    pub retries: u32,
    /// Outbox entries still pending afterwards.
    pub pending: u64,
    /// The stored watermark afterwards.
    pub watermark: Option<Timestamp>,
    /// The digest comparison, when one was made (quiet syncs only).
    pub digest: Option<DigestCheck>,
    /// Set when the digests disagreed (and a repair did not bring them together).
    pub digest_mismatch: Option<DigestMismatch>,
    /// Changes the server refused during this sync, now quarantined.
    pub quarantined: Vec<QuarantinedChange>,
    /// Quarantined outbox entries afterwards (from this sync or earlier ones).
    pub quarantined_total: u64,
    /// Set when the sync repaired the mirror (full pull keeping pending changes).
    pub repair: Option<Repair>,
    /// Every conflict this sync recorded, with both versions' content: those in
    /// [`Self::conflicts`], and those in which another device's edit replaced this
    /// device's (see [`crate::ConflictOrigin`]).
    pub recorded: Vec<RecordedConflict>,
    /// What this device authored, as the sync learnt it.
    pub(crate) authored: crate::conflicts::AuthoredNotes,
    /// An `INVALID_SYNC_STATE` answer was met (one repair per sync).
    pub(crate) invalid_state_seen: bool,
}

impl SyncResult {
    /// Whether the sync finished without errors, without a digest mismatch left standing
    /// and without a change refused.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty() && self.digest_mismatch.is_none() && self.quarantined.is_empty()
    }

    /// Whether every error is the server being unreachable.
    pub fn is_unreachable(&self) -> bool {
        !self.errors.is_empty() && self.errors.iter().all(SyncError::is_unreachable)
    }

    /// A short summary (as events carry it).
    pub fn summary(&self) -> SyncSummary {
        SyncSummary {
            ok: self.is_ok(),
            synced_entities: self.synced_entities,
            conflicts_resolved: self.conflicts_resolved,
            pending: self.pending,
            errors: self.errors.iter().map(|e| error_chain(e)).collect(),
            duration: self.duration,
        }
    }
}

/// A short summary of a finished sync.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncSummary {
    /// No errors, no digest mismatch.
    pub ok: bool,
    /// See [`SyncResult::synced_entities`].
    pub synced_entities: u64,
    /// See [`SyncResult::conflicts_resolved`].
    pub conflicts_resolved: u64,
    /// Outbox entries still pending.
    pub pending: u64,
    /// Error messages with their causes.
    pub errors: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

/// An error's message followed by its causes, `: `-separated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Inner {
    /// Runs one sync (serialised with any other sync of this client).
    pub(crate) async fn sync(&self) -> Result<SyncResult, ClientError> {
        let _running = self.sync_lock.lock().await;
        self.events.emit(ClientEvent::SyncStarted);
        let started = Instant::now();
        let mut result = SyncResult::default();
        let mut outcome = self.load_authored(&mut result).await;
        if outcome.is_ok() {
            outcome = self.signalled_rounds(&mut result).await;
        }
        // Conflicts are recorded whether or not the sync finished.
        let settled = self.settle_conflicts(&mut result).await;
        let outcome = outcome.and(settled);
        result.duration = started.elapsed();
        match outcome {
            Ok(()) => {
                self.record_sync(&result).await?;
                if let Some(m) = &result.digest_mismatch {
                    self.events.emit(ClientEvent::DigestMismatch {
                        server: m.server.clone(),
                        local: m.local.clone(),
                    });
                }
                self.events
                    .emit(ClientEvent::SyncFinished(result.summary()));
                Ok(result)
            }
            Err(e) => {
                self.events.emit(ClientEvent::SyncFailed {
                    message: error_chain(&e),
                });
                // Keep what the failed sync learnt (conflicts) and say it failed.
                let failed = LastSync {
                    at: Timestamp::now(),
                    ok: false,
                    synced_entities: result.synced_entities,
                    conflicts_resolved: result.conflicts_resolved,
                    errors: vec![error_chain(&e)],
                    duration_ms: result.duration.as_millis() as u64,
                };
                let _ = self.save_sync_record(&failed, None).await;
                Err(e)
            }
        }
    }

    pub(crate) async fn sync_rounds(&self, res: &mut SyncResult) -> Result<(), ClientError> {
        let settings = self.settings().await?;
        let base_url = settings
            .server_url
            .clone()
            .ok_or(ClientError::NotConnected)?;
        let http = Http {
            transport: self.transport.as_ref(),
            base_url: &base_url,
            token: settings.auth_token.as_deref(),
            config: &self.config,
            compress: &self.compress,
        };
        // Pages applied from here on keep the digest index up to date.
        self.digest.ensure(self.store.as_ref()).await?;
        let pass = self.exchange(&http, &settings, res, None).await?;
        let mut merkle = pass.merkle;
        let reason = if pass.invalid_state {
            Some(RepairReason::InvalidSyncState)
        } else if self.check_digest(res, &pass).await?.is_some() {
            // A write that committed between the page and the digest the server read can
            // make them disagree for a moment: a fresh delta settles that before a full pull.
            let again = self.exchange(&http, &settings, res, None).await?;
            merkle = again.merkle;
            if again.invalid_state {
                Some(RepairReason::InvalidSyncState)
            } else {
                self.check_digest(res, &again)
                    .await?
                    .map(|_| RepairReason::DigestMismatch)
            }
        } else {
            None
        };
        if let Some(reason) = reason {
            // A mismatch against a server with a Merkle tree: just the differing ids.
            let by_merkle = if reason == RepairReason::DigestMismatch && merkle {
                self.merkle_repair(&http, &settings, res).await?
            } else {
                None
            };
            match by_merkle {
                Some(repair) => {
                    tracing::info!(?repair, "repair finished");
                    self.events.emit(ClientEvent::Repaired(repair.clone()));
                    res.repair = Some(repair);
                }
                None => self.repair(&http, &settings, res, reason).await?,
            }
        }
        res.pending = self.store.pending_count().await?;
        res.quarantined_total = self.store.quarantined().await?.len() as u64;
        res.watermark = self.store.sync_state().await?.watermark;
        Ok(())
    }

    /// Brings the mirror back in step with the server after a digest mismatch or an
    /// `INVALID_SYNC_STATE` answer (PROTOCOL §9.2), keeping every pending change:
    ///
    /// 1. the cursor and watermark are forgotten and the whole current state is pulled
    ///    again (pending changes are pushed first, and the pull-guard still keeps their ids);
    /// 2. what the mirror holds and the server does not is given back to it: each such
    ///    id's latest version and each such relationship is queued again and pushed,
    ///    except a tombstone of an id the server never held, which is removed locally
    ///    (the server cannot hold a delete of an id it does not know);
    /// 3. the digest is compared again.
    async fn repair(
        &self,
        http: &Http<'_>,
        settings: &crate::settings::Settings,
        res: &mut SyncResult,
        reason: RepairReason,
    ) -> Result<(), ClientError> {
        tracing::info!(?reason, "repairing the local mirror with a full pull");
        res.digest_mismatch = None;
        self.store.reset_sync_state().await?;
        let mut seen = ServerIds::default();
        let pulled_before = res.pulled_entities;
        let pass = self.exchange(http, settings, res, Some(&mut seen)).await?;
        let mut repair = Repair {
            reason,
            method: RepairMethod::FullPull,
            pulled_entities: res.pulled_entities - pulled_before,
            requeued: 0,
            forgotten: 0,
            converged: false,
            differing_ids: Vec::new(),
            merkle_requests: 0,
            fetched: Vec::new(),
        };
        // Under a selection the pages leave out what is not selected: nothing can be
        // told missing on the server from them.
        if pass.complete && !pass.invalid_state && !pass.selective {
            // Everything the server holds was in the pages: what else the mirror holds
            // is missing on the server.
            let mut kept: HashSet<EntityId> = self.store.pending_ids().await?.into_iter().collect();
            let quarantined = self.store.quarantined().await?;
            kept.extend(
                quarantined
                    .iter()
                    .filter_map(|q| q.entry.entity_key().map(|(id, _)| id.clone())),
            );
            let mut missing_live = Vec::new();
            let mut missing_deleted = Vec::new();
            for (id, _) in self.store.latest_versions().await? {
                if seen.entities.contains(&id) || kept.contains(&id) {
                    continue;
                }
                match self.store.entity(&id).await? {
                    Some(e) if e.is_deleted() => missing_deleted.push(id),
                    Some(_) => missing_live.push(id),
                    None => {}
                }
            }
            let queued_rels: HashSet<RelationshipId> = self
                .store
                .pending(ALL)
                .await?
                .iter()
                .chain(quarantined.iter().map(|q| &q.entry))
                .filter_map(|e| e.relationship_id().cloned())
                .collect();
            let missing_rels: Vec<RelationshipId> = self
                .store
                .relationships(&goodies_store::RelationshipQuery::default())
                .await?
                .into_iter()
                .map(|r| r.id)
                .filter(|id| !seen.relationships.contains(id) && !queued_rels.contains(id))
                .collect();
            let forgotten = self.store.forget_deleted(&missing_deleted).await?;
            self.digest.counted_write();
            for id in &forgotten {
                self.digest.touched(id);
            }
            repair.forgotten = forgotten.len() as u64;
            repair.requeued = self.store.requeue(&missing_live, &missing_rels).await?;
            let pass = if repair.requeued > 0 {
                self.exchange(http, settings, res, None).await?
            } else {
                pass
            };
            repair.converged =
                self.check_digest(res, &pass).await?.is_none() && res.digest.is_some();
        }
        tracing::info!(?repair, "repair finished");
        self.events.emit(ClientEvent::Repaired(repair.clone()));
        res.repair = Some(repair);
        Ok(())
    }

    /// Compares the last answer's `state_digest` with the local digest when the pass
    /// left nothing pending; records the check (and a mismatch) in `res`.
    pub(crate) async fn check_digest(
        &self,
        res: &mut SyncResult,
        pass: &Pass,
    ) -> Result<Option<DigestMismatch>, ClientError> {
        res.digest_mismatch = None;
        let Some(server) = pass.state_digest.as_ref() else {
            return Ok(None);
        };
        if pass.selective {
            // The server's digest is over every entity; the mirror holds a selection.
            return Ok(None);
        }
        if !pass.complete
            || self.store.pending_count().await? != 0
            || !self.store.quarantined().await?.is_empty()
        {
            return Ok(None);
        }
        let mut local = self.digest.digest(self.store.as_ref()).await?;
        if local != *server {
            // The index is a hint: the store has the last word.
            local = self.digest.rebuild_from_store(self.store.as_ref()).await?;
        }
        let check = DigestCheck {
            at: Timestamp::now(),
            server: server.clone(),
            local: local.clone(),
        };
        let mismatch = (!check.matches()).then(|| DigestMismatch {
            server: server.clone(),
            local,
        });
        if let Some(m) = &mismatch {
            tracing::warn!(server = %m.server, local = %m.local, "state digest mismatch after sync");
        }
        res.digest = Some(check);
        res.digest_mismatch = mismatch.clone();
        Ok(mismatch)
    }

    /// One pass of round trips: pushes the outbox in batches and pulls every page from
    /// the stored watermark and cursor, until nothing is left to send and the pull is
    /// complete. A refused push never stops the pull: a batch refused as too large is
    /// split, a change refused as invalid is quarantined and the rest go on, and any
    /// other refusal stops pushing for this sync. `seen` collects every id the pages
    /// carried (for a repair).
    pub(crate) async fn exchange(
        &self,
        http: &Http<'_>,
        settings: &crate::settings::Settings,
        res: &mut SyncResult,
        mut seen: Option<&mut ServerIds>,
    ) -> Result<Pass, ClientError> {
        let batch_size = self.config.batch_size.max(1);
        let errors_before = res.errors.len();
        let total_pending = self.store.pending_count().await?;
        let mut sent: HashSet<i64> = HashSet::new();
        let mut answered = false;
        let mut pulling = false;
        // Halved each time a batch is refused as too large (or refused without saying
        // which change is to blame); never below one change.
        let mut push_limit = batch_size;
        let mut pushing = true;
        let mut server_failing = false;
        let mut invalid_state = false;
        let mut pulled_so_far: u64 = 0;
        let mut last: Option<(Option<String>, Timestamp)> = None; // (state_digest, server_time)
        let mut not_acked_entities: Vec<EntityId> = Vec::new();
        let mut not_acked_rels: Vec<RelationshipId> = Vec::new();
        let mut last_cursor_sent: Option<String> = None;
        let mut offers_merkle = false;
        let listening = self.events.has_listeners();
        let selection = self.stored_selection().await?;

        // The answer to a page request sent while the previous page was being applied.
        let mut prefetched: Option<Result<SyncResponse, RequestFailure>> = None;
        // The `since` of the requests: stored only when a pull completes.
        let mut watermark: Option<Timestamp> = None;
        // Whether the request being answered carried a (stored) cursor.
        let mut sent_cursor;

        loop {
            let (batch, outcome) = match prefetched.take() {
                // A pull page: nothing pushed with it.
                Some(outcome) => {
                    sent_cursor = true;
                    (Vec::new(), outcome)
                }
                None => {
                    // The next batch: pending entries this sync has not sent yet, in outbox order.
                    let batch: Vec<_> = if pushing {
                        self.store
                            .pending(push_limit + sent.len())
                            .await?
                            .into_iter()
                            .filter(|e| !sent.contains(&e.position))
                            .take(push_limit)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    if answered && batch.is_empty() && !pulling {
                        break;
                    }
                    if res.requests >= MAX_REQUESTS {
                        res.errors.push(request_limit_error());
                        break;
                    }
                    let state = self.store.sync_state().await?;
                    watermark = state.watermark;
                    sent_cursor = state.cursor.is_some();
                    let mut request =
                        self.sync_request(settings, selection.as_ref(), watermark, state.cursor);
                    request.changes = batch.iter().map(|e| e.change.clone()).collect();
                    // After a server error that outlasted the retries, the pull gets one
                    // try: enough to get past a change the server cannot take, without
                    // waiting out the retries again for a server that is down.
                    let once;
                    let via = if server_failing {
                        once = ClientConfig {
                            retry: RetryPolicy {
                                max_retries: 0,
                                ..self.config.retry.clone()
                            },
                            ..self.config.clone()
                        };
                        &Http {
                            config: &once,
                            ..*http
                        }
                    } else {
                        http
                    };
                    let outcome = via
                        .call(Method::Post, SYNC_PATH, Some(&request), &mut res.retries)
                        .await;
                    (batch, outcome)
                }
            };
            let positions: Vec<i64> = batch.iter().map(|e| e.position).collect();
            let response: SyncResponse = match outcome {
                Ok(r) => r,
                Err(failure) => match self.refused(failure, &batch, res).await? {
                    Refusal::Split => {
                        push_limit = (batch.len() / 2).max(1);
                        continue;
                    }
                    Refusal::Quarantined => continue,
                    Refusal::StopPushing {
                        server_failing: failing,
                    } => {
                        pushing = false;
                        server_failing = failing;
                        continue;
                    }
                    Refusal::InvalidState => {
                        invalid_state = true;
                        break;
                    }
                    Refusal::Stop => break,
                },
            };
            if let Some(signals) = crate::signals::current() {
                signals.server_time(response.server_time);
            }
            answered = true;
            res.requests += 1;
            res.pushed += positions.len() as u64;
            sent.extend(positions.iter().copied());

            // A server that hands back the cursor it was given with nothing new never ends.
            if let (Some(c), Some(prev)) = (&response.cursor, &last_cursor_sent) {
                if &c.0 == prev && response.changes.is_empty() && batch.is_empty() {
                    res.errors
                        .push(SyncError::InvalidResponse(std::sync::Arc::from(Box::<
                            dyn std::error::Error + Send + Sync,
                        >::from(
                            format!(
                            "the server returned the same cursor {prev:?} without progress"
                        )
                        ))));
                    break;
                }
            }
            last_cursor_sent = response.cursor.as_ref().map(|c| c.0.clone());
            if let Some(offered) = &response.capabilities {
                offers_merkle = offered.iter().any(|c| c == capability::MERKLE);
            }

            // Acknowledgements: count them, and remember what was sent but not named.
            let acked_entities: HashSet<&EntityId> = response.applied.iter().collect();
            let acked_rels: HashSet<&RelationshipId> =
                response.applied_relationships.iter().collect();
            for entry in &batch {
                let acked = match (&entry.change.entity, entry.relationship_id()) {
                    (Some(e), _) => acked_entities.contains(&e.id),
                    (None, Some(r)) => acked_rels.contains(r),
                    (None, None) => false,
                };
                if acked {
                    res.acknowledged += 1;
                    if entry.change.entity.is_some() {
                        res.synced_entities += 1;
                    }
                } else if let Some(e) = &entry.change.entity {
                    not_acked_entities.push(e.id.clone());
                } else if let Some(r) = entry.relationship_id() {
                    not_acked_rels.push(r.clone());
                }
            }
            if let Some(seen) = seen.as_deref_mut() {
                for c in &response.changes {
                    if let Some(e) = &c.entity {
                        seen.entities.insert(e.id.clone());
                    }
                    for r in &c.relationships {
                        seen.relationships.insert(r.id.clone());
                    }
                }
            }

            let acks = AckSet {
                sent_positions: positions,
                entities: response.applied.clone(),
                relationships: response.applied_relationships.clone(),
                // A push that lost converges: the store makes the winner latest again
                // when it holds it and the id has nothing pending.
                resolved_versions: response
                    .conflicts
                    .iter()
                    .map(|c| (c.entity_id.clone(), c.resolved_version.clone()))
                    .collect(),
            };
            let page_len = response.changes.len() as u64;
            let page = PulledPage {
                changes: response.changes,
                cursor: response.cursor.map(|c| c.0),
                server_time: response.server_time,
            };
            // An answer with nothing in it, to a request that pushed nothing and carried
            // no cursor, from a recent watermark: nothing to write (see `quiet_answer`).
            let quiet = batch.is_empty()
                && !sent_cursor
                && quiet_answer(&acks, &page, watermark, WATERMARK_REFRESH);
            let apply = async {
                if quiet {
                    return Ok(goodies_store::ApplyReport::default());
                }
                let report = self.store.apply_response(&acks, &page).await?;
                self.digest.applied(&page.changes, &report).await;
                Ok::<_, ClientError>(report)
            };
            // While a pull page is applied, the next one is already on its way: the
            // request the next round would send (no changes, the same watermark, this
            // page's cursor). Local edits made meanwhile go out once the pull is done.
            let next_page = match &page.cursor {
                Some(cursor) if batch.is_empty() && res.requests < MAX_REQUESTS => {
                    Some(self.sync_request(
                        settings,
                        selection.as_ref(),
                        watermark,
                        Some(cursor.clone()),
                    ))
                }
                _ => None,
            };
            let report = match next_page {
                Some(request) => {
                    let mut retries = 0;
                    let fetch = async {
                        Ok(http
                            .call(Method::Post, SYNC_PATH, Some(&request), &mut retries)
                            .await)
                    };
                    // A failed apply ends the sync at once, dropping the request in flight.
                    let (report, outcome) = futures::future::try_join(apply, fetch).await?;
                    res.retries += retries;
                    prefetched = Some(outcome);
                    report
                }
                None => apply.await?,
            };
            for (id, _) in &acks.resolved_versions {
                self.digest.touched(id);
            }
            res.authored.round(
                &batch,
                &acks,
                &response.conflicts,
                &page.changes,
                &report.entities_applied,
            );
            pulling = page.cursor.is_some();
            pulled_so_far += page_len;

            res.pulled_entities += report.entities_applied.len() as u64;
            res.synced_entities += report.entities_applied.len() as u64;
            res.pulled_relationships += report.relationships_applied.len() as u64;
            res.deferred += report.entities_guarded.len() as u64;
            res.conflicts_resolved += response.conflicts.len() as u64;
            if listening {
                for id in report.entities_applied {
                    self.events.emit(ClientEvent::EntityChangedBySync { id });
                }
                for id in report.entities_guarded {
                    self.events.emit(ClientEvent::RemoteChangeDeferred { id });
                }
                for c in &response.conflicts {
                    self.events.emit(ClientEvent::ConflictDecided(c.clone()));
                }
                if !batch.is_empty() {
                    self.events.emit(ClientEvent::Progress {
                        phase: SyncPhase::Push,
                        done: res.pushed,
                        total: Some(total_pending.max(res.pushed)),
                    });
                }
                self.events.emit(ClientEvent::Progress {
                    phase: SyncPhase::Pull,
                    done: pulled_so_far,
                    total: (!pulling).then_some(pulled_so_far),
                });
            }
            res.conflicts.extend(response.conflicts);
            last = Some((response.state_digest, response.server_time));
        }

        // Entries acknowledged by a later request are not missing.
        let pending_ids: HashSet<EntityId> = self.store.pending_ids().await?.into_iter().collect();
        not_acked_entities.retain(|id| pending_ids.contains(id));
        not_acked_entities.sort();
        not_acked_entities.dedup();
        if !not_acked_rels.is_empty() {
            let still: HashSet<RelationshipId> = self
                .store
                .pending(ALL)
                .await?
                .iter()
                .filter_map(|e| e.relationship_id().cloned())
                .collect();
            not_acked_rels.retain(|r| still.contains(r));
            not_acked_rels.sort();
            not_acked_rels.dedup();
        }
        if !not_acked_entities.is_empty() || !not_acked_rels.is_empty() {
            res.errors.push(SyncError::NotAcknowledged {
                entity_ids: not_acked_entities,
                relationship_ids: not_acked_rels,
            });
        }
        Ok(Pass {
            complete: res.errors.len() == errors_before && !pulling && !invalid_state && answered,
            invalid_state,
            state_digest: last.and_then(|(d, _)| d),
            merkle: offers_merkle,
            selective: selection.is_some(),
        })
    }

    /// Decides what a refused request means for the pass (see [`Refusal`]); quarantines
    /// the changes the server blamed, and records errors in `res`.
    async fn refused(
        &self,
        failure: RequestFailure,
        batch: &[OutboxEntry],
        res: &mut SyncResult,
    ) -> Result<Refusal, ClientError> {
        let positions: Vec<i64> = batch.iter().map(|e| e.position).collect();
        if let RequestFailure::Status {
            status,
            code,
            message,
            blame,
            ..
        } = &failure
        {
            if *code == Some(ErrorCode::InvalidSyncState) && !res.invalid_state_seen {
                res.invalid_state_seen = true;
                tracing::info!(%message, "the server does not know our sync position");
                return Ok(Refusal::InvalidState);
            }
            if !batch.is_empty() {
                let why = |detail: &str| match code {
                    Some(c) => format!("{status} {c}: {detail}"),
                    None => format!("{status}: {detail}"),
                };
                match *status {
                    413 if batch.len() > 1 => {
                        tracing::info!(
                            changes = batch.len(),
                            "batch refused as too large; splitting it"
                        );
                        return Ok(Refusal::Split);
                    }
                    413 => {
                        self.quarantine(&[(&batch[0], why(message))], res).await?;
                        return Ok(Refusal::Quarantined);
                    }
                    400 | 422 if !blame.changes.is_empty() => {
                        let mut blamed: Vec<(&OutboxEntry, String)> = Vec::new();
                        for (i, detail) in &blame.changes {
                            let Some(entry) = batch.get(*i) else { continue };
                            match blamed
                                .iter_mut()
                                .find(|(e, _)| e.position == entry.position)
                            {
                                Some((_, reasons)) => {
                                    reasons.push_str("; ");
                                    reasons.push_str(detail);
                                }
                                None => blamed.push((entry, why(detail))),
                            }
                        }
                        if !blamed.is_empty() {
                            self.quarantine(&blamed, res).await?;
                            return Ok(Refusal::Quarantined);
                        }
                    }
                    400 | 422 if !blame.request && batch.len() > 1 => {
                        // Refused without saying which change: find it by halves.
                        return Ok(Refusal::Split);
                    }
                    400 | 422 if !blame.request => {
                        self.quarantine(&[(&batch[0], why(message))], res).await?;
                        return Ok(Refusal::Quarantined);
                    }
                    _ => {}
                }
            }
        }
        if !positions.is_empty() {
            self.store.mark_attempted(&positions).await?;
        }
        let stop_pushing = !batch.is_empty() && matches!(&failure, RequestFailure::Status { .. });
        let server_failing = matches!(&failure, RequestFailure::Status { status, .. } if *status >= 500 || *status == 408 || *status == 429);
        let error = failure.into_sync_error()?;
        res.errors.push(error);
        // Whatever happened to a push, the pull still goes on (a server that cannot be
        // reached, or answers a pull with an error, ends the pass).
        Ok(if stop_pushing {
            Refusal::StopPushing { server_failing }
        } else {
            Refusal::Stop
        })
    }

    /// Sets refused outbox entries aside with their reasons, and reports them.
    async fn quarantine(
        &self,
        entries: &[(&OutboxEntry, String)],
        res: &mut SyncResult,
    ) -> Result<(), ClientError> {
        let rows: Vec<(i64, String)> = entries
            .iter()
            .map(|(e, why)| (e.position, why.clone()))
            .collect();
        self.store.quarantine(&rows).await?;
        for (entry, reason) in entries {
            let q = quarantined_change(entry, reason.clone());
            tracing::warn!(position = q.position, entity = ?q.entity_id, relationship = ?q.relationship_id, reason = %q.reason, "change refused by the server; quarantined");
            self.events.emit(ClientEvent::ChangeQuarantined(q.clone()));
            res.quarantined.push(q);
        }
        Ok(())
    }

    /// A pull request: no changes, `since` = the watermark, the cursor of a pull in progress.
    fn sync_request(
        &self,
        settings: &crate::settings::Settings,
        selection: Option<&crate::selection::Selection>,
        watermark: Option<Timestamp>,
        cursor: Option<String>,
    ) -> SyncRequest {
        let mut request = SyncRequest::new(
            settings.client_id.clone(),
            settings.user_id.clone(),
            SyncType::Delta,
        );
        request.filters = crate::selection::filters(selection, watermark);
        request.cursor = cursor.map(Cursor);
        request.capabilities = vec![capability::RELATIONSHIP_ROWS.to_owned()];
        request
    }

    async fn record_sync(&self, res: &SyncResult) -> Result<(), ClientError> {
        let last = LastSync {
            at: Timestamp::now(),
            ok: res.is_ok(),
            synced_entities: res.synced_entities,
            conflicts_resolved: res.conflicts_resolved,
            errors: res.errors.iter().map(|e| error_chain(e)).collect(),
            duration_ms: res.duration.as_millis() as u64,
        };
        self.save_sync_record(&last, res.digest.as_ref()).await?;
        // The conflicts were recorded by `settle_conflicts`, with their contents.
        Ok(())
    }
}

#[cfg(test)]
mod quiet_tests {
    use super::*;

    fn page(server_time: Timestamp) -> PulledPage {
        PulledPage {
            changes: vec![],
            cursor: None,
            server_time,
        }
    }

    /// An empty answer from a recent watermark is not stored; anything in it, a cursor,
    /// an acknowledgement, no watermark yet, a watermark older than the refresh, or a
    /// server clock behind the watermark, is.
    #[test]
    fn only_an_empty_answer_from_a_recent_watermark_is_left_unstored() {
        let now = Timestamp::now();
        let since = |ago_s: i64| Some(now.saturating_add_micros(-ago_s * 1_000_000));
        let none = AckSet::default();
        let refresh = WATERMARK_REFRESH;
        assert!(quiet_answer(&none, &page(now), since(5), refresh));
        assert!(
            !quiet_answer(&none, &page(now), None, refresh),
            "first pull"
        );
        assert!(
            !quiet_answer(&none, &page(now), since(2 * 3600), refresh),
            "a watermark older than the refresh is moved forward"
        );
        assert!(
            !quiet_answer(&none, &page(now), since(-5), refresh),
            "a server clock behind the watermark"
        );
        let mut with_cursor = page(now);
        with_cursor.cursor = Some("c".into());
        assert!(!quiet_answer(&none, &with_cursor, since(5), refresh));
        let acked = AckSet {
            sent_positions: vec![1],
            ..AckSet::default()
        };
        assert!(!quiet_answer(&acked, &page(now), since(5), refresh));
        let resolved = AckSet {
            resolved_versions: vec![(EntityId::new("e"), Version::new("v"))],
            ..AckSet::default()
        };
        assert!(!quiet_answer(&resolved, &page(now), since(5), refresh));
    }
}

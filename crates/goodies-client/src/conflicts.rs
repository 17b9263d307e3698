//! Conflicts people can see: the server's review queue, resolving a queued conflict by
//! hand, and telling this device about every conflict that touched an entity it edited.
//!
//! **Whose edit is whose.** The client remembers the versions it authored and pushed
//! (the setting [`keys::AUTHORED_VERSIONS`]: for each entity id, this device's last
//! acknowledged version that did not lose a conflict; at most [`AUTHORED_KEPT`] ids,
//! the least recently edited forgotten first). A conflict is told from that side:
//! "this device's edit" and "the other device's edit".
//!
//! **The overwritten device is told.** A conflict decided on another device's push
//! changes this device's state only on a later pull. When a pull makes a version `P`
//! of an id latest locally while this device's own version `L` of that id was latest,
//! and `L` is not an ancestor of `P` (not in `P`'s `parent_versions`, nor in theirs,
//! walked through the server's history of the id, `GET /api/v1/graph/entities/{id}/versions`),
//! another device's edit replaced this device's edit without building on it. The sync
//! records a conflict with both versions' content ([`ConflictOrigin::OtherDevice`]),
//! emits [`ClientEvent::ConflictRecorded`], and `status` counts it. When the server's
//! history cannot be read (a server without the graph API), the direct parents decide.

use std::collections::{HashMap, HashSet};

use goodies_store::{AckSet, OutboxEntry};
use inbetweenies_proto::{ConflictInfo, Entity, EntityId, JsonObject, Timestamp, Version};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{BlowingOffClient, Inner};
use crate::config::RetryPolicy;
use crate::error::ClientError;
use crate::events::ClientEvent;
use crate::http::Http;
use crate::settings::{keys, ConflictOrigin, RecordedConflict, RECENT_CONFLICTS_KEPT};
use crate::sync::SyncResult;
use crate::transport::Method;

/// The conflict queue endpoint (PROTOCOL §8.5).
pub const CONFLICTS_PATH: &str = "/api/v1/sync/conflicts";

/// How many entity ids' authored versions are remembered.
pub const AUTHORED_KEPT: usize = 10_000;

/// At most this many versions of one id are walked looking for an ancestor.
const ANCESTRY_WALK_LIMIT: usize = 10_000;

/// At most this many conflicts of one sync have their contents fetched from the server
/// (the rest are recorded with the contents the mirror holds).
const FETCH_CONTENTS_LIMIT: usize = 50;

/// A conflict in the server's queue (PROTOCOL §8.5), with both sides' content when the
/// server's history has them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueuedConflict {
    /// The server's id of the conflict (what [`BlowingOffClient::resolve_conflict`] takes).
    pub id: i64,
    /// The contested entity.
    pub entity_id: EntityId,
    /// The server's version when the edit was pushed (it stays latest while queued).
    pub server_version: Version,
    /// The pushed version (kept, not latest).
    pub client_version: Version,
    /// The version that is latest (for a pending conflict: the server's).
    pub resolved_version: Version,
    /// The decision in machine form (`manual` for a queued one).
    #[serde(default)]
    pub reason: Option<String>,
    /// The decision in the server's words.
    #[serde(default)]
    pub resolution_strategy: String,
    /// `pending`, `auto`, `resolved` or `dismissed`.
    pub status: String,
    /// The device that pushed `client_version`.
    #[serde(default)]
    pub device_id: String,
    /// When the server recorded it.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// Whether this device pushed `client_version`.
    #[serde(default)]
    pub pushed_by_this_device: bool,
    /// Whether this device authored `server_version`.
    #[serde(default)]
    pub server_version_by_this_device: bool,
    /// The server's version, in full (when the server's history has it).
    #[serde(default)]
    pub server_side: Option<Entity>,
    /// The pushed version, in full (when the server's history has it).
    #[serde(default)]
    pub pushed_side: Option<Entity>,
}

impl QueuedConflict {
    /// Which side is this device's edit: `Some(true)` the pushed one, `Some(false)` the
    /// server's, `None` neither.
    pub fn ours_is_pushed(&self) -> Option<bool> {
        if self.pushed_by_this_device {
            Some(true)
        } else if self.server_version_by_this_device {
            Some(false)
        } else {
            None
        }
    }
}

/// How a person resolves a queued conflict. Every choice makes the server write a new
/// latest version whose `parent_versions` names both sides.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Resolution {
    /// Keep this device's edit (whichever side it is; an error when neither is).
    Ours,
    /// Keep the other device's edit (an error when neither side is this device's).
    Theirs,
    /// Keep the server's version (the one latest while the conflict waits).
    Server,
    /// Keep the pushed version.
    Pushed,
    /// Write this content (a merge of both, made by a person).
    Merged(JsonObject),
}

#[derive(Deserialize)]
struct QueueAnswer {
    conflicts: Vec<QueuedConflict>,
}

#[derive(Deserialize)]
struct VersionsAnswer {
    versions: Vec<Entity>,
}

#[derive(Deserialize)]
struct ResolveAnswer {
    entity: Option<Entity>,
}

/// An id as one path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one sync learnt about this device's own versions, in order (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct AuthoredNotes {
    /// The remembered versions (loaded at the start of the sync): id → (version, order).
    map: Option<HashMap<EntityId, (Version, u64)>>,
    next: u64,
    changed: bool,
    /// Pulled versions that replaced one of ours.
    replaced: Vec<Replaced>,
}

impl AuthoredNotes {
    fn map(&mut self) -> &mut HashMap<EntityId, (Version, u64)> {
        self.map.get_or_insert_with(HashMap::new)
    }

    fn remember(&mut self, id: EntityId, v: Version) {
        let n = self.next;
        self.next += 1;
        self.map().insert(id, (v, n));
        self.changed = true;
    }

    fn forget(&mut self, id: &EntityId) {
        if self.map().remove(id).is_some() {
            self.changed = true;
        }
    }

    /// After one round trip: the acknowledged entity pushes of `batch` become ours
    /// unless they lost a conflict; pulled versions in `applied` that replace one of ours
    /// are noted.
    pub(crate) fn round(
        &mut self,
        batch: &[OutboxEntry],
        acks: &AckSet,
        conflicts: &[ConflictInfo],
        changes: &[inbetweenies_proto::SyncChange],
        applied: &[EntityId],
    ) {
        let acked: HashSet<&EntityId> = acks.entities.iter().collect();
        for (id, v) in batch
            .iter()
            .filter_map(|e| e.change.entity.as_ref())
            .map(|e| (&e.id, &e.version))
        {
            if !acked.contains(id) {
                continue;
            }
            let lost = conflicts
                .iter()
                .any(|c| &c.entity_id == id && &c.remote_version == v && &c.resolved_version != v);
            if lost {
                self.forget(id);
            } else {
                self.remember(id.clone(), v.clone());
            }
        }
        if applied.is_empty() || self.map.as_ref().is_none_or(HashMap::is_empty) {
            return;
        }
        let applied: HashSet<&EntityId> = applied.iter().collect();
        for e in changes.iter().filter_map(|c| c.entity.as_ref()) {
            let ours = match self.map().get(&e.id) {
                Some((v, _)) if v != &e.version && applied.contains(&e.id) => v.clone(),
                _ => continue,
            };
            self.forget(&e.id);
            self.replaced.push(Replaced {
                id: e.id.clone(),
                ours,
                theirs: e.version.clone(),
                parents: e.parent_versions.clone(),
            });
        }
    }
}

/// A pulled version that replaced one this device authored.
#[derive(Clone, Debug)]
struct Replaced {
    id: EntityId,
    ours: Version,
    theirs: Version,
    parents: Vec<Version>,
}

#[derive(Serialize, Deserialize)]
struct AuthoredEntry(EntityId, Version);

impl Inner {
    /// Loads the remembered authored versions for this sync.
    pub(crate) async fn load_authored(&self, res: &mut SyncResult) -> Result<(), ClientError> {
        let list: Vec<AuthoredEntry> = self
            .get_json(keys::AUTHORED_VERSIONS)
            .await?
            .unwrap_or_default();
        let notes = &mut res.authored;
        let mut map = HashMap::with_capacity(list.len());
        for (n, AuthoredEntry(id, v)) in list.into_iter().enumerate() {
            map.insert(id, (v, n as u64));
        }
        notes.next = map.len() as u64;
        notes.map = Some(map);
        Ok(())
    }

    /// After a sync (finished or not): decides which replaced versions were conflicts,
    /// records every conflict with both contents, emits them, and saves what this device
    /// authored. Failures to reach the server only lose detail (contents, ancestry).
    pub(crate) async fn settle_conflicts(&self, res: &mut SyncResult) -> Result<(), ClientError> {
        let replaced = std::mem::take(&mut res.authored.replaced);
        let mut records: Vec<RecordedConflict> = Vec::new();
        let now = Timestamp::now();
        let mut fetched = 0usize;
        for c in &res.conflicts {
            let mut ours = self
                .store
                .entity_version(&c.entity_id, &c.remote_version)
                .await?;
            let mut theirs = self
                .store
                .entity_version(&c.entity_id, &c.local_version)
                .await?;
            if (ours.is_none() || theirs.is_none()) && fetched < FETCH_CONTENTS_LIMIT {
                fetched += 1;
                if let Ok(history) = self.server_versions(&c.entity_id).await {
                    let find = |v: &Version| history.iter().find(|e| &e.version == v).cloned();
                    ours = ours.or_else(|| find(&c.remote_version));
                    theirs = theirs.or_else(|| find(&c.local_version));
                }
            }
            records.push(RecordedConflict {
                at: now,
                conflict: c.clone(),
                origin: ConflictOrigin::ThisDevice,
                ours,
                theirs,
            });
        }
        for r in replaced {
            let linear = if r.parents.contains(&r.ours) {
                true
            } else {
                match self.server_versions(&r.id).await {
                    Ok(history) => descends_from(&history, &r.parents, &r.ours),
                    Err(e) => {
                        tracing::debug!(entity = %r.id, error = %e, "the server's history of an entity cannot be read; its direct parents decide");
                        false
                    }
                }
            };
            if linear {
                continue;
            }
            let ours = self.store.entity_version(&r.id, &r.ours).await?;
            let theirs = self.store.entity_version(&r.id, &r.theirs).await?;
            tracing::info!(entity = %r.id, ours = %r.ours, theirs = %r.theirs, "another device's edit replaced this device's edit");
            records.push(RecordedConflict {
                at: now,
                conflict: ConflictInfo {
                    entity_id: r.id.clone(),
                    local_version: r.ours,
                    remote_version: r.theirs.clone(),
                    resolution_strategy: "another device's edit replaced this device's edit"
                        .to_owned(),
                    resolved_version: r.theirs,
                    reason: None,
                },
                origin: ConflictOrigin::OtherDevice,
                ours,
                theirs,
            });
        }
        if res.authored.changed {
            self.save_authored(&res.authored).await?;
            res.authored.changed = false;
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut all: Vec<RecordedConflict> = self
            .get_json(keys::RECENT_CONFLICTS)
            .await?
            .unwrap_or_default();
        all.extend(records.iter().cloned());
        let excess = all.len().saturating_sub(RECENT_CONFLICTS_KEPT);
        all.drain(..excess);
        self.set_json(keys::RECENT_CONFLICTS, &all).await?;
        for r in &records {
            self.events
                .emit(ClientEvent::ConflictRecorded(Box::new(r.clone())));
        }
        res.recorded = records;
        Ok(())
    }

    async fn save_authored(&self, notes: &AuthoredNotes) -> Result<(), ClientError> {
        let Some(map) = &notes.map else {
            return Ok(());
        };
        let mut list: Vec<(&EntityId, &(Version, u64))> = map.iter().collect();
        list.sort_by_key(|(_, (_, n))| *n);
        let skip = list.len().saturating_sub(AUTHORED_KEPT);
        let out: Vec<AuthoredEntry> = list[skip..]
            .iter()
            .map(|(id, (v, _))| AuthoredEntry((*id).clone(), v.clone()))
            .collect();
        self.set_json(keys::AUTHORED_VERSIONS, &out).await
    }

    /// One JSON request to the stored server; `once` turns retries off.
    async fn api<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        once: bool,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let s = self.settings().await?;
        let url = s.server_url.ok_or(ClientError::NotConnected)?;
        let config = if once {
            self.config.clone().with_retry(RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            })
        } else {
            self.config.clone()
        };
        let http = Http {
            transport: self.transport.as_ref(),
            base_url: &url,
            token: s.auth_token.as_deref(),
            config: &config,
            compress: &self.compress,
        };
        let mut retries = 0;
        http.call(method, path, body, &mut retries)
            .await
            .map_err(|f| f.into_client_error())
    }

    /// Every version of `id` the server holds (`GET /api/v1/graph/entities/{id}/versions`).
    pub(crate) async fn server_versions(&self, id: &EntityId) -> Result<Vec<Entity>, ClientError> {
        let path = format!(
            "/api/v1/graph/entities/{}/versions",
            path_segment(id.as_str())
        );
        let answer: VersionsAnswer = self.api::<(), _>(true, Method::Get, &path, None).await?;
        Ok(answer.versions)
    }

    /// Whether this device authored `v` of `id` (it is the remembered version).
    async fn authored(&self, id: &EntityId, v: &Version) -> Result<bool, ClientError> {
        let list: Vec<AuthoredEntry> = self
            .get_json(keys::AUTHORED_VERSIONS)
            .await?
            .unwrap_or_default();
        Ok(list.iter().any(|AuthoredEntry(i, x)| i == id && x == v))
    }
}

/// Whether `ancestor` is reachable from a version with parents `parents_of_from` through `parent_versions`, walking the
/// versions in `history` (bounded).
fn descends_from(history: &[Entity], parents_of_from: &[Version], ancestor: &Version) -> bool {
    let parents: HashMap<&Version, &Vec<Version>> = history
        .iter()
        .map(|e| (&e.version, &e.parent_versions))
        .collect();
    let mut seen: HashSet<&Version> = HashSet::new();
    let mut todo: Vec<&Version> = parents_of_from.iter().collect();
    while let Some(v) = todo.pop() {
        if v == ancestor {
            return true;
        }
        if seen.len() >= ANCESTRY_WALK_LIMIT || !seen.insert(v) {
            continue;
        }
        if let Some(ps) = parents.get(v) {
            todo.extend(ps.iter());
        }
    }
    false
}

impl BlowingOffClient {
    /// The server's review queue (PROTOCOL §8.5): conflicts waiting for a person, newest
    /// first, each with both sides' content and which side is this device's.
    pub async fn review_queue(&self) -> Result<Vec<QueuedConflict>, ClientError> {
        self.server_conflicts("pending").await
    }

    /// Conflicts the server recorded with these statuses (`pending`, `auto`,
    /// `resolved`, `dismissed`, a comma-separated list, or `all`), newest first, at most
    /// 100, each with both sides' content.
    pub async fn server_conflicts(&self, status: &str) -> Result<Vec<QueuedConflict>, ClientError> {
        let path = format!("{CONFLICTS_PATH}?status={}", path_segment(status));
        let answer: QueueAnswer = self
            .inner
            .api::<(), _>(false, Method::Get, &path, None)
            .await?;
        let mut list = answer.conflicts;
        let me = self.inner.settings().await?.client_id;
        let mut histories: HashMap<EntityId, Vec<Entity>> = HashMap::new();
        for c in &mut list {
            c.pushed_by_this_device = !me.is_empty() && c.device_id == me;
            c.server_version_by_this_device =
                self.inner.authored(&c.entity_id, &c.server_version).await?;
            if !histories.contains_key(&c.entity_id) {
                let h = self
                    .inner
                    .server_versions(&c.entity_id)
                    .await
                    .unwrap_or_default();
                histories.insert(c.entity_id.clone(), h);
            }
            let h = &histories[&c.entity_id];
            let find = |v: &Version| h.iter().find(|e| &e.version == v).cloned();
            c.server_side = find(&c.server_version);
            c.pushed_side = find(&c.client_version);
        }
        Ok(list)
    }

    /// Resolves a queued conflict (`POST /api/v1/sync/conflicts/{id}/resolve`): the server
    /// writes a new latest version whose `parent_versions` names both sides, with the
    /// chosen side's content or the merged content, and returns it. The next sync brings
    /// it into the mirror (and every other device's). A conflict no longer pending is
    /// [`ClientError::Server`] with status 409; an unknown id, 404;
    /// [`Resolution::Ours`] or [`Resolution::Theirs`] when neither side is this device's
    /// edit, [`ClientError::Invalid`].
    pub async fn resolve_conflict(
        &self,
        id: i64,
        resolution: Resolution,
    ) -> Result<Entity, ClientError> {
        let side = |pushed: bool| if pushed { "client" } else { "server" };
        let body = match resolution {
            Resolution::Server => json!({"resolution": "server"}),
            Resolution::Pushed => json!({"resolution": "client"}),
            Resolution::Merged(content) => {
                json!({"resolution": "custom", "content": Value::Object(content)})
            }
            r @ (Resolution::Ours | Resolution::Theirs) => {
                let all = self.server_conflicts("all").await?;
                let c = all
                    .iter()
                    .find(|c| c.id == id)
                    .ok_or_else(|| ClientError::NotFound(format!("conflict {id} on the server")))?;
                if c.status != "pending" {
                    return Err(ClientError::Server {
                        status: 409,
                        code: Some(inbetweenies_proto::ErrorCode::SyncConflict),
                        message: format!("conflict {id} is not pending (it is {})", c.status),
                    });
                }
                let ours_pushed = c.ours_is_pushed().ok_or_else(|| {
                    ClientError::Invalid(format!(
                        "neither side of conflict {id} is this device's edit: choose the server's version or the pushed one"
                    ))
                })?;
                let pushed = if r == Resolution::Ours {
                    ours_pushed
                } else {
                    !ours_pushed
                };
                json!({"resolution": side(pushed)})
            }
        };
        let path = format!("{CONFLICTS_PATH}/{id}/resolve");
        let answer: ResolveAnswer = self
            .inner
            .api(false, Method::Post, &path, Some(&body))
            .await?;
        answer.entity.ok_or_else(|| {
            ClientError::Invalid(format!("the server wrote no version for conflict {id}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: &str, parents: &[&str]) -> Entity {
        let mut x: Entity = serde_json::from_value(json!({
            "id": "x", "version": v, "entity_type": "note", "name": "n", "content": {},
            "source_type": "manual", "user_id": "u", "parent_versions": [],
            "created_at": "2026-01-01T00:00:00.000000+00:00",
            "updated_at": "2026-01-01T00:00:00.000000+00:00"
        }))
        .unwrap();
        x.parent_versions = parents.iter().map(|p| Version::new(*p)).collect();
        x
    }

    #[test]
    fn ancestry_is_walked_through_the_history() {
        let history = vec![e("a", &[]), e("b", &["a"]), e("c", &["b"]), e("d", &["x"])];
        assert!(descends_from(
            &history,
            &[Version::new("b")],
            &Version::new("a")
        ));
        assert!(!descends_from(
            &history,
            &[Version::new("x")],
            &Version::new("a")
        ));
        // A cycle in bad data ends.
        let cyclic = vec![e("p", &["q"]), e("q", &["p"])];
        assert!(!descends_from(
            &cyclic,
            &[Version::new("p")],
            &Version::new("a")
        ));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("ab-1_2.~"), "ab-1_2.~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}

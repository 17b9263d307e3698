//! [`BlowingOffClient`]: the local-first API over a SQLite mirror, and its settings.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use futures::Stream;
use goodies_store::{
    ClientStore, Direction, EntityQuery, GraphStats, LocalEdit, Neighbour, RelationshipQuery,
    StoreOptions, StoredEntity,
};
use inbetweenies_proto::{
    Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipType, SourceType,
    Timestamp, Version,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::background::BackgroundSync;
use crate::config::ClientConfig;
use crate::digest::LocalDigest;
use crate::error::ClientError;
use crate::events::{ClientEvent, EventHub, SubscriptionHandle};
use crate::http::Http;
use crate::model::{Device, Home, Room, DEVICE_TYPE_KEY, FLOOR_KEY, MANUFACTURER_KEY};
use crate::settings::{
    keys, normalize_server_url, ClientStatus, GzipRefusals, RecordedConflict, Settings,
};
use crate::signing::{SigningKey, SigningTransport};
use crate::sync::SyncResult;
use crate::tls::TlsConfig;
use crate::transport::{HyperTransport, Method, Transport};

/// SQLite page cache of each of the mirror's connections, in KiB.
const CLIENT_CACHE_KIB: u32 = 2048;

/// The login endpoint.
pub const LOGIN_PATH: &str = "/api/v1/auth/admin/login";

/// The client's shared state.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ClientStore>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) config: ClientConfig,
    pub(crate) events: EventHub,
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
    pub(crate) compress: AtomicBool,
    /// The local state digest, kept in memory.
    pub(crate) digest: LocalDigest,
    /// What the server signals besides the data (connectivity, clock skew).
    pub(crate) signals: Arc<crate::signals::Signals>,
    /// Syncs again by itself when pending changes found the server unreachable.
    pub(crate) retry_timer: crate::live::RetryTimer,
    /// Where the record of the last sync is kept, for a mirror that is a file
    /// (`crate::record`).
    pub(crate) record_file: Option<PathBuf>,
    user_id: RwLock<String>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("store", &self.store)
            .field("transport", &self.transport)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The Blowing-Off client: a local SQLite mirror of the graph, an outbox of local edits,
/// and a sync engine.
///
/// Every read and write works offline; [`BlowingOffClient::sync`] exchanges changes with
/// the server. Cloning is cheap and clones share everything (store, events, sync lock).
///
/// ```no_run
/// # async fn demo() -> Result<(), goodies_client::ClientError> {
/// use goodies_client::BlowingOffClient;
///
/// let client = BlowingOffClient::open("my-home.db").await?;
/// let home = client.create_home("Home").await?;
/// let kitchen = client.create_room(&home.id, "Kitchen", Some(0)).await?;
/// let lamp = client.create_device(&kitchen.id, "Lamp", "light", Some("Acme")).await?;
/// client
///     .update_device_state(&lamp.id, serde_json::json!({"power": "on"}).as_object().unwrap().clone())
///     .await?;
///
/// client.login("http://127.0.0.1:8000", "demo-password").await?;
/// let result = client.sync().await?;
/// println!("synced {} entities", result.synced_entities);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BlowingOffClient {
    pub(crate) inner: Arc<Inner>,
}

/// Opens a [`BlowingOffClient`] with a chosen configuration or transport.
#[derive(Debug)]
pub struct ClientBuilder {
    path: PathBuf,
    config: ClientConfig,
    transport: Option<Arc<dyn Transport>>,
    tls: TlsConfig,
    signing_key: Option<SigningKey>,
}

impl ClientBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses this transport instead of [`HyperTransport`].
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Which servers `https://` connections of the default transport trust (default:
    /// the platform's roots). Not used with [`Self::transport`].
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Signs every request and checks every answer's signature with a key shared with
    /// the server (PROTOCOL §2.6), whichever transport carries them.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// Opens (creating if missing) the local database and the client. The database
    /// file (which holds the token) is made readable by its owner only.
    pub async fn open(self) -> Result<BlowingOffClient, ClientError> {
        let url = store_url(&self.path);
        let options = StoreOptions {
            max_connections: Some(self.config.max_connections.max(1)),
            clock_offset: self.config.clock_offset,
            // A mirror's working set is a page of rows and the indexes it touches; the
            // default 32 MiB per connection only made the client's peak RSS grow.
            cache_kib: Some(CLIENT_CACHE_KIB),
            ..StoreOptions::default()
        };
        let store = goodies_store::open_client_store(&url, options).await?;
        let transport: Arc<dyn Transport> = match self.transport {
            Some(t) => t,
            None => Arc::new(HyperTransport::with_tls(
                self.config.request_timeout,
                &self.tls,
            )?),
        };
        let transport: Arc<dyn Transport> = match self.signing_key {
            Some(key) => Arc::new(SigningTransport::new(
                transport,
                key,
                self.config.max_response_bytes,
            )),
            None => transport,
        };
        let db_path = self.path.display().to_string();
        let record_file = crate::record::record_path(&self.path);
        let client =
            BlowingOffClient::assemble(store, transport, self.config, &db_path, record_file)
                .await?;
        crate::account::restrict_to_owner(&self.path);
        Ok(client)
    }
}

fn store_url(path: &Path) -> String {
    let s = path.display().to_string();
    if s == ":memory:" {
        "sqlite::memory:".to_owned()
    } else if s.starts_with("sqlite:") {
        s
    } else {
        format!("sqlite://{s}")
    }
}

#[derive(Deserialize)]
struct LoginResponse {
    access_token: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// What a login obtained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LoginInfo {
    /// The user the token names (its `sub`), now the user edits are made by.
    pub user_id: String,
    /// The role the server granted.
    pub role: Option<String>,
    /// Seconds until the token expires, as the server said.
    pub expires_in: Option<u64>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// The `sub` claim of a JWT, read without verifying it (the server verifies).
fn token_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?.as_str().map(str::to_owned)
}

impl BlowingOffClient {
    /// Opens (creating if missing) the local database at `path` with the default
    /// configuration and transport. `":memory:"` opens a throw-away in-memory mirror.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::builder(path).open().await
    }

    /// A builder to choose the configuration or the transport.
    pub fn builder(path: impl AsRef<Path>) -> ClientBuilder {
        ClientBuilder {
            path: path.as_ref().to_path_buf(),
            config: ClientConfig::default(),
            transport: None,
            tls: TlsConfig::default(),
            signing_key: None,
        }
    }

    /// A client over an already opened store.
    pub async fn from_parts(
        store: Arc<dyn ClientStore>,
        transport: Arc<dyn Transport>,
        config: ClientConfig,
        db_path: &str,
    ) -> Result<Self, ClientError> {
        Self::assemble(store, transport, config, db_path, None).await
    }

    async fn assemble(
        store: Arc<dyn ClientStore>,
        transport: Arc<dyn Transport>,
        config: ClientConfig,
        db_path: &str,
        record_file: Option<PathBuf>,
    ) -> Result<Self, ClientError> {
        if store.setting(keys::CLIENT_ID).await?.is_none() {
            store
                .set_setting(keys::CLIENT_ID, &uuid::Uuid::new_v4().to_string())
                .await?;
        }
        let user_id = match non_empty(store.setting(keys::USER_ID).await?) {
            Some(u) => u,
            None => {
                store
                    .set_setting(keys::USER_ID, &config.default_user_id)
                    .await?;
                config.default_user_id.clone()
            }
        };
        store.set_setting(keys::DB_PATH, db_path).await?;
        let events = EventHub::new(config.event_capacity);
        let inner = Inner {
            store,
            transport,
            compress: AtomicBool::new(config.compress_requests),
            digest: LocalDigest::default(),
            signals: Arc::new(crate::signals::Signals::new(
                events.clone(),
                config.clock_offset,
            )),
            retry_timer: crate::live::RetryTimer::default(),
            record_file,
            events,
            config,
            sync_lock: tokio::sync::Mutex::new(()),
            user_id: RwLock::new(user_id),
        };
        Ok(BlowingOffClient {
            inner: Arc::new(inner),
        })
    }

    /// The local store (for queries this API does not cover).
    pub fn store(&self) -> &Arc<dyn ClientStore> {
        &self.inner.store
    }

    /// Closes the local store once the calls in progress are done (every clone of this
    /// client shares it; later calls fail). A SQLite mirror is then written whole into
    /// its file and synced to disk: a commit alone survives the process ending but not
    /// a power loss, so a program that exits after local edits calls this first (the
    /// command-line client does, after every command). A command that wrote nothing
    /// closes without touching the disk.
    pub async fn close(&self) {
        self.inner.store.close().await;
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    // ----- settings ------------------------------------------------------------------

    /// The persisted connection settings.
    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.inner.settings().await
    }

    /// Stores the server URL and (when given) a bearer token. Works offline: nothing is
    /// sent. Pointing the client at another server forgets the sync position, so the next
    /// sync pulls that server's full state.
    pub async fn connect(
        &self,
        server_url: &str,
        auth_token: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = normalize_server_url(server_url)?;
        let url = url.as_str();
        let store = &self.inner.store;
        let previous = non_empty(store.setting(keys::SERVER_URL).await?);
        if previous.as_deref().is_some_and(|p| p != url) {
            store.reset_sync_state().await?;
        }
        store.set_setting(keys::SERVER_URL, url).await?;
        if let Some(token) = auth_token {
            store.set_setting(keys::AUTH_TOKEN, token).await?;
            if let Some(sub) = token_subject(token) {
                self.set_user_id(&sub).await?;
            }
        }
        Ok(())
    }

    /// Logs in with the admin password (`POST /api/v1/auth/admin/login`), then stores the
    /// server URL and the token, and makes the token's user the user edits are made by.
    pub async fn login(&self, server_url: &str, password: &str) -> Result<LoginInfo, ClientError> {
        let url = normalize_server_url(server_url)?;
        let http = Http {
            transport: self.inner.transport.as_ref(),
            base_url: &url,
            token: None,
            config: &self.inner.config,
            compress: &self.inner.compress,
        };
        let mut retries = 0;
        let body = serde_json::json!({ "password": password });
        let resp: LoginResponse = http
            .call(Method::Post, LOGIN_PATH, Some(&body), &mut retries)
            .await
            .map_err(|f| f.into_client_error())?;
        self.connect(&url, Some(&resp.access_token)).await?;
        let user_id = self.user_id();
        Ok(LoginInfo {
            user_id,
            role: resp.role,
            expires_in: resp.expires_in,
        })
    }

    /// Forgets the stored token.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.inner.store.set_setting(keys::AUTH_TOKEN, "").await?;
        Ok(())
    }

    /// The user edits are made by.
    pub fn user_id(&self) -> String {
        self.inner.user_id()
    }

    /// Sets the user edits are made by.
    pub async fn set_user_id(&self, user_id: &str) -> Result<(), ClientError> {
        if user_id.is_empty() {
            return Err(ClientError::Invalid("user id must not be empty".into()));
        }
        self.inner.store.set_setting(keys::USER_ID, user_id).await?;
        if let Ok(mut u) = self.inner.user_id.write() {
            *u = user_id.to_owned();
        }
        Ok(())
    }

    /// What `status` shows: settings, pending changes, sync position, last sync and
    /// digest check.
    pub async fn status(&self) -> Result<ClientStatus, ClientError> {
        let s = self.settings().await?;
        let state = self.inner.store.sync_state().await?;
        let conflicts = self.recent_conflicts().await?;
        let (last_sync, last_digest_check) = self.inner.sync_record().await?;
        Ok(ClientStatus {
            server_url: s.server_url,
            logged_in: s.auth_token.is_some(),
            client_id: s.client_id,
            user_id: s.user_id,
            db_path: s.db_path,
            pending_changes: self.inner.store.pending_count().await?,
            quarantined_changes: self.inner.store.quarantined().await?.len() as u64,
            watermark: state.watermark,
            cursor: state.cursor,
            last_sync,
            last_digest_check,
            conflicts: conflicts.len() as u64,
            conflicts_from_other_devices: conflicts
                .iter()
                .filter(|c| c.origin == crate::settings::ConflictOrigin::OtherDevice)
                .count() as u64,
            last_conflict: conflicts.last().cloned(),
        })
    }

    /// Changes the server refused as invalid, kept aside in the outbox (oldest first):
    /// each with the server's reason. An edit of the same entity, or
    /// [`BlowingOffClient::retry_quarantined`], sends them again.
    pub async fn quarantined(&self) -> Result<Vec<crate::QuarantinedChange>, ClientError> {
        Ok(self
            .inner
            .store
            .quarantined()
            .await?
            .into_iter()
            .map(|q| crate::sync::quarantined_change(&q.entry, q.reason))
            .collect())
    }

    /// Makes quarantined changes pending again (all of them when `positions` is None), so
    /// the next sync sends them; returns how many were released.
    pub async fn retry_quarantined(&self, positions: Option<&[i64]>) -> Result<u64, ClientError> {
        Ok(self.inner.store.release_quarantined(positions).await?)
    }

    /// Conflicts recent syncs reported, oldest first.
    pub async fn recent_conflicts(&self) -> Result<Vec<RecordedConflict>, ClientError> {
        Ok(self
            .inner
            .get_json(keys::RECENT_CONFLICTS)
            .await?
            .unwrap_or_default())
    }

    /// Number of local changes waiting to be pushed.
    pub async fn pending_changes(&self) -> Result<u64, ClientError> {
        Ok(self.inner.store.pending_count().await?)
    }

    // ----- sync, observers, background -----------------------------------------------

    /// Runs one sync: push the outbox, pull until the cursor is null, compare digests.
    ///
    /// Transport failures and server errors (after retries) are reported in
    /// [`SyncResult::errors`] with everything kept pending; `Err` means the sync could not
    /// run at all (not connected, token refused or expired, local store failure).
    ///
    /// Blob uploads still owed (see [`Self::attach_blob`]) are finished first; their
    /// failures are reported in [`SyncResult::errors`] too, and they stay queued.
    pub async fn sync(&self) -> Result<SyncResult, ClientError> {
        self.refresh_token_if_due().await;
        let blob_errors = self.upload_blobs_for_sync().await;
        let gzip = self.inner.gzip_before_sync().await?;
        let outcome = self.inner.sync().await;
        self.inner.retry_timer.after_sync(self, &outcome);
        self.inner.gzip_after_sync(gzip).await;
        outcome.map(|mut r| {
            r.errors.extend(blob_errors);
            r
        })
    }

    /// A stream of every event from now on. A subscriber that falls more than
    /// [`ClientConfig::event_capacity`] events behind receives [`ClientEvent::Lagged`].
    pub fn observe_changes(&self) -> impl Stream<Item = ClientEvent> + Send + Unpin + 'static {
        self.inner.events.subscribe()
    }

    /// Calls `callback` for every event, synchronously and in order, until the returned
    /// handle is dropped. Keep callbacks short: they run on the thread that emits.
    pub fn on_change(
        &self,
        callback: impl Fn(&ClientEvent) + Send + Sync + 'static,
    ) -> SubscriptionHandle {
        self.inner.events.register(callback)
    }

    /// Syncs now and then every `interval` until the handle is stopped or dropped.
    /// Must be called within a tokio runtime.
    pub fn start_background_sync(&self, interval: Duration) -> BackgroundSync {
        BackgroundSync::start(self.clone(), interval, None)
    }

    /// Like [`Self::start_background_sync`], but stops by itself after `runs` syncs.
    pub fn start_background_sync_limited(&self, interval: Duration, runs: u64) -> BackgroundSync {
        BackgroundSync::start(self.clone(), interval, Some(runs))
    }

    // ----- local writes ----------------------------------------------------------------

    pub(crate) async fn write(&self, edit: LocalEdit) -> Result<Entity, ClientError> {
        let user = self.user_id();
        let e = self.inner.store.write_local(edit, &user).await?;
        self.inner.digest.counted_write();
        self.inner.digest.touched(&e.id);
        if self.inner.events.has_listeners() {
            self.inner
                .events
                .emit(ClientEvent::EntityChangedLocally(e.clone()));
        }
        Ok(e)
    }

    async fn live(&self, id: &EntityId, of_type: &EntityType) -> Result<Entity, ClientError> {
        match self.inner.store.entity(id).await? {
            Some(e) if &e.entity_type == of_type && !e.is_deleted() => Ok(e),
            _ => Err(ClientError::NotFound(format!("{of_type} {id}"))),
        }
    }

    /// Creates an entity of any type.
    pub async fn create_entity(
        &self,
        entity_type: EntityType,
        name: &str,
        content: JsonObject,
    ) -> Result<Entity, ClientError> {
        if name.trim().is_empty() {
            return Err(ClientError::Invalid("name must not be empty".into()));
        }
        self.write(LocalEdit::Create {
            id: None,
            entity_type,
            name: name.to_owned(),
            content,
            source_type: SourceType::Manual,
        })
        .await
    }

    /// Writes a new version of an entity; `None` keeps the name or content.
    pub async fn update_entity(
        &self,
        id: &EntityId,
        name: Option<&str>,
        content: Option<JsonObject>,
    ) -> Result<Entity, ClientError> {
        self.write(LocalEdit::Update {
            id: id.clone(),
            name: name.map(str::to_owned),
            content,
        })
        .await
    }

    /// Sets keys of an entity's content (a null value removes the key).
    pub async fn merge_content(
        &self,
        id: &EntityId,
        patch: JsonObject,
    ) -> Result<Entity, ClientError> {
        self.write(LocalEdit::MergeContent {
            id: id.clone(),
            patch,
        })
        .await
    }

    /// Deletes an entity (writes a tombstone version).
    pub async fn delete_entity(&self, id: &EntityId) -> Result<Entity, ClientError> {
        self.write(LocalEdit::Delete { id: id.clone() }).await
    }

    /// Adds an edge between the latest versions of two entities.
    pub async fn relate(
        &self,
        from: &EntityId,
        to: &EntityId,
        relationship_type: RelationshipType,
        properties: JsonObject,
    ) -> Result<Relationship, ClientError> {
        let user = self.user_id();
        Ok(self
            .inner
            .store
            .write_local_relationship(from, to, relationship_type, properties, &user)
            .await?)
    }

    // ----- graph reads ---------------------------------------------------------------

    /// The latest version of an entity (tombstones included).
    pub async fn entity(&self, id: &EntityId) -> Result<Option<Entity>, ClientError> {
        Ok(self.inner.store.entity(id).await?)
    }

    /// One version of an entity.
    pub async fn entity_version(
        &self,
        id: &EntityId,
        version: &Version,
    ) -> Result<Option<Entity>, ClientError> {
        Ok(self.inner.store.entity_version(id, version).await?)
    }

    /// Latest entities matching a query, ordered by name then id.
    pub async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>, ClientError> {
        Ok(self.inner.store.entities(query).await?)
    }

    /// Live entities of one type.
    pub async fn entities_of_type(
        &self,
        entity_type: EntityType,
    ) -> Result<Vec<Entity>, ClientError> {
        self.entities(&EntityQuery {
            entity_types: Some(vec![entity_type]),
            ..EntityQuery::default()
        })
        .await
    }

    /// Live entities whose name contains `text` (case-insensitive).
    pub async fn search(&self, text: &str) -> Result<Vec<Entity>, ClientError> {
        self.entities(&EntityQuery {
            name_contains: Some(text.to_owned()),
            ..EntityQuery::default()
        })
        .await
    }

    /// Every stored version of an entity, in the order they were stored locally.
    pub async fn history(&self, id: &EntityId) -> Result<Vec<StoredEntity>, ClientError> {
        Ok(self.inner.store.history(id).await?)
    }

    /// Relationships matching a query.
    pub async fn relationships(
        &self,
        query: &RelationshipQuery,
    ) -> Result<Vec<Relationship>, ClientError> {
        Ok(self.inner.store.relationships(query).await?)
    }

    /// Entities one edge away.
    pub async fn neighbours(
        &self,
        id: &EntityId,
        relationship_type: Option<&RelationshipType>,
        direction: Direction,
    ) -> Result<Vec<Neighbour>, ClientError> {
        Ok(self
            .inner
            .store
            .neighbours(id, relationship_type, direction)
            .await?)
    }

    /// The shortest path from one entity to another, at most `max_depth` edges.
    pub async fn path(
        &self,
        from: &EntityId,
        to: &EntityId,
        max_depth: usize,
    ) -> Result<Option<Vec<EntityId>>, ClientError> {
        Ok(self.inner.store.path(from, to, max_depth).await?)
    }

    /// The local graph as it was at time `at`.
    pub async fn entities_as_of(&self, at: Timestamp) -> Result<Vec<Entity>, ClientError> {
        Ok(self.inner.store.entities_as_of(at, None).await?)
    }

    /// Counts of the local graph.
    pub async fn stats(&self) -> Result<GraphStats, ClientError> {
        Ok(self.inner.store.stats().await?)
    }

    /// The local convergence digest.
    pub async fn state_digest(&self) -> Result<String, ClientError> {
        Ok(self.inner.store.state_digest().await?)
    }

    // ----- the seeds' vocabulary -----------------------------------------------------

    /// Where every device and room is, from the containment edges of the whole mirror
    /// (see [`crate::model`] for the rules).
    async fn placement(&self) -> Result<Placement, ClientError> {
        let mut kinds = HashMap::new();
        for t in PLACED_TYPES {
            for e in self.entities_of_type(t.clone()).await? {
                kinds.insert(e.id, t.clone());
            }
        }
        let mut edges = self
            .inner
            .store
            .relationships(&RelationshipQuery::default())
            .await?;
        edges.sort_by_key(|r| r.updated_at);
        Ok(Placement::from_edges(&edges, &kinds))
    }

    /// Where one entity is: its own containment edges and, for a room placed only in a
    /// zone, the zone's.
    async fn placement_of(&self, id: &EntityId) -> Result<Placement, ClientError> {
        let mut edges = self.edges_touching(id).await?;
        let mut kinds = self.kinds_of(&edges).await?;
        let mut placement = Placement::from_edges(&edges, &kinds);
        if !placement.home_of_room.contains_key(id) {
            if let Some(zone) = placement.zone_of_room.get(id).cloned() {
                edges.extend(self.edges_touching(&zone).await?);
                kinds = self.kinds_of(&edges).await?;
                placement = Placement::from_edges(&edges, &kinds);
            }
        }
        Ok(placement)
    }

    /// Every edge from or to `id`, oldest `updated_at` first.
    async fn edges_touching(&self, id: &EntityId) -> Result<Vec<Relationship>, ClientError> {
        let store = &self.inner.store;
        let mut edges = store
            .relationships(&RelationshipQuery {
                from_entity_id: Some(id.clone()),
                ..RelationshipQuery::default()
            })
            .await?;
        edges.extend(
            store
                .relationships(&RelationshipQuery {
                    to_entity_id: Some(id.clone()),
                    ..RelationshipQuery::default()
                })
                .await?,
        );
        edges.sort_by_key(|r| r.updated_at);
        Ok(edges)
    }

    /// The types of the live endpoints of containment edges that can place something.
    async fn kinds_of(
        &self,
        edges: &[Relationship],
    ) -> Result<HashMap<EntityId, EntityType>, ClientError> {
        let mut kinds = HashMap::new();
        for r in edges
            .iter()
            .filter(|r| is_containment(&r.relationship_type))
        {
            for id in [&r.from_entity_id, &r.to_entity_id] {
                if kinds.contains_key(id) {
                    continue;
                }
                if let Some(e) = self.inner.store.entity(id).await? {
                    if !e.is_deleted() && PLACED_TYPES.contains(&e.entity_type) {
                        kinds.insert(e.id, e.entity_type);
                    }
                }
            }
        }
        Ok(kinds)
    }

    /// The home (the first by name when there are several), if any.
    pub async fn get_home(&self) -> Result<Option<Home>, ClientError> {
        Ok(self.get_homes().await?.into_iter().next())
    }

    /// The seeds' name for [`Self::get_home`].
    pub async fn get_house(&self) -> Result<Option<Home>, ClientError> {
        self.get_home().await
    }

    /// Every home.
    pub async fn get_homes(&self) -> Result<Vec<Home>, ClientError> {
        Ok(self
            .entities_of_type(EntityType::Home)
            .await?
            .into_iter()
            .map(Home::from)
            .collect())
    }

    /// Creates a home.
    pub async fn create_home(&self, name: &str) -> Result<Home, ClientError> {
        Ok(self
            .create_entity(EntityType::Home, name, JsonObject::new())
            .await?
            .into())
    }

    /// Renames a home and/or replaces its content.
    pub async fn update_home(
        &self,
        id: &EntityId,
        name: Option<&str>,
        content: Option<JsonObject>,
    ) -> Result<Home, ClientError> {
        self.live(id, &EntityType::Home).await?;
        Ok(self.update_entity(id, name, content).await?.into())
    }

    /// Deletes a home.
    pub async fn delete_home(&self, id: &EntityId) -> Result<(), ClientError> {
        self.live(id, &EntityType::Home).await?;
        self.delete_entity(id).await.map(drop)
    }

    /// Every room, each with its home.
    pub async fn get_rooms(&self) -> Result<Vec<Room>, ClientError> {
        let placement = self.placement().await?;
        Ok(self
            .entities_of_type(EntityType::Room)
            .await?
            .into_iter()
            .map(|e| {
                let home = placement.home_of(&e.id);
                Room::from_entity(e, home)
            })
            .collect())
    }

    /// The rooms of one home.
    pub async fn get_rooms_in_home(&self, home_id: &EntityId) -> Result<Vec<Room>, ClientError> {
        let mut rooms = self.get_rooms().await?;
        rooms.retain(|r| r.home_id.as_ref() == Some(home_id));
        Ok(rooms)
    }

    /// One room.
    pub async fn get_room(&self, id: &EntityId) -> Result<Room, ClientError> {
        let e = self.live(id, &EntityType::Room).await?;
        let home = self.placement_of(id).await?.home_of(id);
        Ok(Room::from_entity(e, home))
    }

    /// Creates a room located in a home.
    pub async fn create_room(
        &self,
        home_id: &EntityId,
        name: &str,
        floor: Option<i64>,
    ) -> Result<Room, ClientError> {
        self.live(home_id, &EntityType::Home).await?;
        let mut content = JsonObject::new();
        if let Some(f) = floor {
            content.insert(FLOOR_KEY.into(), Value::from(f));
        }
        let e = self.create_entity(EntityType::Room, name, content).await?;
        self.relate(
            &e.id,
            home_id,
            RelationshipType::LocatedIn,
            JsonObject::new(),
        )
        .await?;
        Ok(Room::from_entity(e, Some(home_id.clone())))
    }

    /// Renames a room and/or replaces its content.
    pub async fn update_room(
        &self,
        id: &EntityId,
        name: Option<&str>,
        content: Option<JsonObject>,
    ) -> Result<Room, ClientError> {
        self.live(id, &EntityType::Room).await?;
        self.update_entity(id, name, content).await?;
        self.get_room(id).await
    }

    /// Deletes a room.
    pub async fn delete_room(&self, id: &EntityId) -> Result<(), ClientError> {
        self.live(id, &EntityType::Room).await?;
        self.delete_entity(id).await.map(drop)
    }

    /// Every device, each with its room.
    pub async fn get_devices(&self) -> Result<Vec<Device>, ClientError> {
        let placement = self.placement().await?;
        Ok(self
            .entities_of_type(EntityType::Device)
            .await?
            .into_iter()
            .map(|e| {
                let room = placement.room_of_device.get(&e.id).cloned();
                Device::from_entity(e, room)
            })
            .collect())
    }

    /// The devices of one room.
    pub async fn get_devices_in_room(
        &self,
        room_id: &EntityId,
    ) -> Result<Vec<Device>, ClientError> {
        let mut devices = self.get_devices().await?;
        devices.retain(|d| d.room_id.as_ref() == Some(room_id));
        Ok(devices)
    }

    /// One device.
    pub async fn get_device(&self, id: &EntityId) -> Result<Device, ClientError> {
        let e = self.live(id, &EntityType::Device).await?;
        let room = self.placement_of(id).await?.room_of_device.remove(id);
        Ok(Device::from_entity(e, room))
    }

    /// Creates a device located in a room.
    pub async fn create_device(
        &self,
        room_id: &EntityId,
        name: &str,
        device_type: &str,
        manufacturer: Option<&str>,
    ) -> Result<Device, ClientError> {
        self.live(room_id, &EntityType::Room).await?;
        let mut content = JsonObject::new();
        content.insert(DEVICE_TYPE_KEY.into(), Value::from(device_type));
        if let Some(m) = manufacturer {
            content.insert(MANUFACTURER_KEY.into(), Value::from(m));
        }
        let e = self
            .create_entity(EntityType::Device, name, content)
            .await?;
        self.relate(
            &e.id,
            room_id,
            RelationshipType::LocatedIn,
            JsonObject::new(),
        )
        .await?;
        Ok(Device::from_entity(e, Some(room_id.clone())))
    }

    /// Renames a device and/or replaces its content.
    pub async fn update_device(
        &self,
        id: &EntityId,
        name: Option<&str>,
        content: Option<JsonObject>,
    ) -> Result<Device, ClientError> {
        self.live(id, &EntityType::Device).await?;
        self.update_entity(id, name, content).await?;
        self.get_device(id).await
    }

    /// Moves a device to another room (a new `located_in` edge).
    pub async fn move_device(
        &self,
        id: &EntityId,
        room_id: &EntityId,
    ) -> Result<Device, ClientError> {
        self.live(id, &EntityType::Device).await?;
        self.live(room_id, &EntityType::Room).await?;
        self.relate(id, room_id, RelationshipType::LocatedIn, JsonObject::new())
            .await?;
        self.get_device(id).await
    }

    /// Deletes a device.
    pub async fn delete_device(&self, id: &EntityId) -> Result<(), ClientError> {
        self.live(id, &EntityType::Device).await?;
        self.delete_entity(id).await.map(drop)
    }

    /// A device's state (its content).
    pub async fn get_device_state(&self, id: &EntityId) -> Result<JsonObject, ClientError> {
        Ok(self.live(id, &EntityType::Device).await?.content)
    }

    /// Merges keys into a device's state (a null value removes the key).
    pub async fn update_device_state(
        &self,
        id: &EntityId,
        state: JsonObject,
    ) -> Result<Device, ClientError> {
        self.live(id, &EntityType::Device).await?;
        let e = self.merge_content(id, state).await?;
        let room = self.placement_of(id).await?.room_of_device.remove(id);
        Ok(Device::from_entity(e, room))
    }

    /// Sets one characteristic (one key of the state) of a device.
    pub async fn update_characteristic(
        &self,
        device_id: &EntityId,
        name: &str,
        value: Value,
    ) -> Result<Device, ClientError> {
        if name.is_empty() {
            return Err(ClientError::Invalid(
                "characteristic name must not be empty".into(),
            ));
        }
        let mut patch = JsonObject::new();
        patch.insert(name.to_owned(), value);
        self.update_device_state(device_id, patch).await
    }
}

impl Inner {
    pub(crate) fn user_id(&self) -> String {
        self.user_id
            .read()
            .map(|u| u.clone())
            .unwrap_or_else(|_| self.config.default_user_id.clone())
    }

    pub(crate) async fn settings(&self) -> Result<Settings, ClientError> {
        // One read of the four.
        let mut values = self
            .store
            .settings_of(&[
                keys::SERVER_URL,
                keys::AUTH_TOKEN,
                keys::CLIENT_ID,
                keys::DB_PATH,
            ])
            .await?
            .into_iter();
        let mut next = || values.next().flatten();
        Ok(Settings {
            server_url: non_empty(next()),
            auth_token: non_empty(next()),
            client_id: next().unwrap_or_default(),
            user_id: self.user_id(),
            db_path: next().unwrap_or_default(),
        })
    }

    /// Sets whether this sync may gzip request bodies: not to a server that refused them
    /// within [`crate::settings::GZIP_RETRY_AFTER_DAYS`] (remembered across processes).
    /// Returns the server and whether gzip was allowed, for [`Self::gzip_after_sync`].
    async fn gzip_before_sync(&self) -> Result<Option<(String, bool)>, ClientError> {
        let Some(url) = non_empty(self.store.setting(keys::SERVER_URL).await?) else {
            return Ok(None);
        };
        let refusals: GzipRefusals = self.get_json(keys::GZIP_REFUSED).await?.unwrap_or_default();
        let allowed =
            self.config.compress_requests && !refusals.refused_recently(&url, Timestamp::now());
        self.compress.store(allowed, Ordering::Relaxed);
        Ok(Some((url, allowed)))
    }

    /// Remembers that the server refused a gzipped body during the sync (the transport
    /// layer cleared the flag and resent plain), so the next process does not try again.
    async fn gzip_after_sync(&self, before: Option<(String, bool)>) {
        let Some((url, true)) = before else {
            return;
        };
        if self.compress.load(Ordering::Relaxed) {
            return;
        }
        let remember = async {
            let mut refusals: GzipRefusals =
                self.get_json(keys::GZIP_REFUSED).await?.unwrap_or_default();
            refusals.record(&url, Timestamp::now());
            self.set_json(keys::GZIP_REFUSED, &refusals).await
        };
        match remember.await {
            Ok(()) => tracing::info!(server = %url, "server refuses gzipped bodies; remembered"),
            Err(e) => tracing::warn!(error = %e, "cannot remember that the server refuses gzip"),
        }
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ClientError> {
        Ok(non_empty(self.store.setting(key).await?).and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub(crate) async fn set_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), ClientError> {
        let json = serde_json::to_string(value).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.store.set_setting(key, &json).await?;
        Ok(())
    }
}

/// The entity types containment edges place (devices in rooms, rooms in zones and homes).
const PLACED_TYPES: [EntityType; 4] = [
    EntityType::Device,
    EntityType::Room,
    EntityType::Zone,
    EntityType::Home,
];

/// Whether an edge of this type says one entity is inside another: `located_in`,
/// `part_of`, `contained_in`, or the reverse-named `contains`.
fn is_containment(t: &RelationshipType) -> bool {
    matches!(
        t,
        RelationshipType::LocatedIn | RelationshipType::PartOf | RelationshipType::ContainedIn
    ) || t.as_str() == "contains"
}

/// How far out a type sits: a device is inside a room, a room inside a zone or a home, a
/// zone inside a home.
fn nesting(t: &EntityType) -> Option<u8> {
    match t {
        EntityType::Device => Some(0),
        EntityType::Room => Some(1),
        EntityType::Zone => Some(2),
        EntityType::Home => Some(3),
        _ => None,
    }
}

/// Which room each device is in, and which zone and home each room (and zone) is in.
#[derive(Debug, Default)]
struct Placement {
    room_of_device: HashMap<EntityId, EntityId>,
    home_of_room: HashMap<EntityId, EntityId>,
    zone_of_room: HashMap<EntityId, EntityId>,
    home_of_zone: HashMap<EntityId, EntityId>,
}

impl Placement {
    /// Reads containment edges in the order given (a later edge of an entity wins: the
    /// callers sort by the edges' `updated_at`, so a move is the newest edge). An
    /// edge's direction does not matter: the entity types say which end is inside the
    /// other, so `room part_of home`, `home contains room` and `room located_in home`
    /// all place the room in the home. Edges to entities not in `kinds` (deleted, or of
    /// other types) place nothing.
    fn from_edges(edges: &[Relationship], kinds: &HashMap<EntityId, EntityType>) -> Self {
        let mut p = Placement::default();
        for r in edges
            .iter()
            .filter(|r| is_containment(&r.relationship_type))
        {
            let (a, b) = (&r.from_entity_id, &r.to_entity_id);
            let (Some(ka), Some(kb)) = (kinds.get(a), kinds.get(b)) else {
                continue;
            };
            let (Some(na), Some(nb)) = (nesting(ka), nesting(kb)) else {
                continue;
            };
            let ((inner, ni), (outer, no)) = if na < nb {
                ((a, na), (b, nb))
            } else {
                ((b, nb), (a, na))
            };
            let map = match (ni, no) {
                (0, 1) => &mut p.room_of_device,
                (1, 2) => &mut p.zone_of_room,
                (1, 3) => &mut p.home_of_room,
                (2, 3) => &mut p.home_of_zone,
                _ => continue,
            };
            map.insert(inner.clone(), outer.clone());
        }
        p
    }

    /// A room's home: the one it is placed in directly, else its zone's.
    fn home_of(&self, room: &EntityId) -> Option<EntityId> {
        self.home_of_room.get(room).cloned().or_else(|| {
            self.zone_of_room
                .get(room)
                .and_then(|z| self.home_of_zone.get(z))
                .cloned()
        })
    }
}

/// Turns a JSON value into a content object (non-objects give an empty object).
pub fn json_object(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_subject_of_a_reference_token() {
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiIsInBlcm1pc3Npb25zIjpbInJlYWQiLCJ3cml0ZSIsImRlbGV0ZSIsImNvbmZpZ3VyZSJdLCJleHAiOjE3OTU5MDc0MzAsImlhdCI6MTc5NTMwMjYzMH0.ql1EBApsZrF1I3iA7KOyQiKNpJuwRPGda0tEyTVNByM";
        assert_eq!(token_subject(t).as_deref(), Some("admin"));
        assert_eq!(token_subject("opaque-token"), None);
    }

    fn edge(from: &str, to: &str, t: &str, at_micros: i64) -> Relationship {
        let at = Timestamp::from_unix_micros(1_800_000_000_000_000 + at_micros).unwrap();
        Relationship {
            id: inbetweenies_proto::RelationshipId::new(format!("{from}-{t}-{to}")),
            from_entity_id: EntityId::new(from),
            from_entity_version: Version::new("v"),
            to_entity_id: EntityId::new(to),
            to_entity_version: Version::new("v"),
            relationship_type: RelationshipType::parse(t),
            properties: JsonObject::new(),
            user_id: "u".into(),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn containment_in_either_direction() {
        let kinds: HashMap<EntityId, EntityType> = [
            ("home", EntityType::Home),
            ("other-home", EntityType::Home),
            ("zone", EntityType::Zone),
            ("kitchen", EntityType::Room),
            ("hall", EntityType::Room),
            ("attic", EntityType::Room),
            ("lamp", EntityType::Device),
            ("fan", EntityType::Device),
            ("tv", EntityType::Device),
            ("note", EntityType::Note),
        ]
        .into_iter()
        .map(|(id, t)| (EntityId::new(id), t))
        .collect();
        let edges = vec![
            // The reference: room located_in zone, zone part_of home, device located_in room.
            edge("kitchen", "zone", "located_in", 0),
            edge("zone", "home", "part_of", 1),
            edge("lamp", "kitchen", "located_in", 2),
            // Drawn the other way round.
            edge("other-home", "hall", "contains", 3),
            edge("hall", "fan", "contains", 4),
            edge("attic", "tv", "part_of", 5),
            // Not containment, or not between placeable types: ignored.
            edge("tv", "kitchen", "monitors", 6),
            edge("note", "kitchen", "located_in", 7),
            edge("lamp", "ghost", "located_in", 8),
            // A later edge moves the lamp.
            edge("lamp", "hall", "located_in", 9),
        ];
        let p = Placement::from_edges(&edges, &kinds);
        let id = |s: &str| EntityId::new(s);
        assert_eq!(p.home_of(&id("kitchen")), Some(id("home")), "via its zone");
        assert_eq!(p.home_of(&id("hall")), Some(id("other-home")));
        assert_eq!(p.home_of(&id("attic")), None);
        assert_eq!(p.room_of_device.get(&id("lamp")), Some(&id("hall")));
        assert_eq!(p.room_of_device.get(&id("fan")), Some(&id("hall")));
        assert_eq!(p.room_of_device.get(&id("tv")), Some(&id("attic")));
        assert!(!p.room_of_device.contains_key(&id("note")));
        assert!(is_containment(&RelationshipType::ContainedIn));
        assert!(!is_containment(&RelationshipType::Monitors));
    }

    #[test]
    fn device_type_from_either_key() {
        let mut e = Entity {
            id: EntityId::new("d"),
            version: Version::new("v"),
            entity_type: EntityType::Device,
            name: "d".into(),
            content: JsonObject::new(),
            source_type: SourceType::Generated,
            user_id: "u".into(),
            parent_versions: vec![],
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        };
        assert_eq!(Device::from_entity(e.clone(), None).device_type, None);
        e.content.insert("type".into(), Value::from("climate"));
        assert_eq!(
            Device::from_entity(e.clone(), None).device_type.as_deref(),
            Some("climate")
        );
        e.content
            .insert(DEVICE_TYPE_KEY.into(), Value::from("light"));
        assert_eq!(
            Device::from_entity(e, None).device_type.as_deref(),
            Some("light"),
            "device_type wins when both are there"
        );
    }

    #[test]
    fn store_urls() {
        assert_eq!(store_url(Path::new(":memory:")), "sqlite::memory:");
        assert_eq!(store_url(Path::new("/tmp/x.db")), "sqlite:///tmp/x.db");
        assert_eq!(store_url(Path::new("x.db")), "sqlite://x.db");
    }
}

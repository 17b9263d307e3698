//! `POST /api/v1/sync/` (inbetweenies-v2), sync status, and the manual-review conflict queue.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::Json;
use goodies_store::{
    ChangePage, ChangeRecord, ConflictRecord, ConflictStatus, EntityOutcome, ManualResolution,
    PushBatch, PushOutcome, ServerStore, StoreError,
};
use inbetweenies_proto::validate::{sync_request_checked, Checks};
use inbetweenies_proto::{
    ChangeType, Cursor, Entity, EntityChange, EntityId, EntityType, RelationshipChange, SourceType,
    SyncChange, SyncRequest, SyncResponse, SyncStats, SyncType, Timestamp, VectorClockWire,
    Version, PROTOCOL_VERSION,
};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::pydantic::{
    bad_query_int, enum_item, item, missing_query, validation_error, validation_items, Fields,
};
use crate::snapshot::{Capabilities, PageSpec, OFFERED};
use crate::state::AppState;

/// The wire strings of the known entity types.
pub(crate) fn known_entity_types() -> Vec<&'static str> {
    EntityType::KNOWN.iter().map(|t| t.as_str()).collect()
}

/// The wire strings of the known source types.
pub(crate) fn known_source_types() -> Vec<&'static str> {
    SourceType::KNOWN.iter().map(|t| t.as_str()).collect()
}

/// Validates a sync request body (docs/PROTOCOL.md §5.10): every field problem
/// of the request — in strict mode (§12.5) also every unknown enumeration value
/// and every version without a timestamp — is listed in one 422 FastAPI-style
/// detail list; an unsupported `protocol_version` alone is a 400.
pub(crate) fn parse_sync_request(app: &AppState, value: Value) -> Result<SyncRequest, ApiError> {
    let checks = Checks {
        strict: app.config.strict,
    };
    let req = sync_request_checked(value, checks).map_err(|e| {
        if e.is_protocol_version() {
            unsupported_protocol()
        } else {
            validation_error(&e)
        }
    })?;
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(unsupported_protocol());
    }
    Ok(req)
}

/// 400 for a cursor that is not a sequence number, worded as the reference words it.
pub(crate) fn bad_cursor(raw: &str) -> ApiError {
    ApiError::bad_request(format!(
        "cursor must be a server_seq integer, got {}",
        py_repr(raw)
    ))
    .with_field("cursor")
}

/// A string as Python's `repr` writes it (single quotes unless the text has one).
fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// 400 `INVALID_SYNC_STATE` for a cursor past every sequence number assigned (PROTOCOL §6.5).
pub(crate) async fn check_cursor_issued(app: &AppState, seq: u64) -> Result<(), ApiError> {
    check_cursor_at(app.store.max_seq().await?, seq)
}

/// [`check_cursor_issued`] against the highest sequence number `max`, already read.
pub(crate) fn check_cursor_at(max: u64, seq: u64) -> Result<(), ApiError> {
    if seq > max {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            inbetweenies_proto::ErrorCode::InvalidSyncState,
            format!("cursor {seq} was never issued by this server; clear the cursor and watermark and pull in full"),
        )
        .with_field("cursor"));
    }
    Ok(())
}

fn unsupported_protocol() -> ApiError {
    ApiError::bad_request("Unsupported protocol version").with_field("protocol_version")
}

/// Counts the values of a valid request that lie outside the known vocabulary
/// (`crate::vocabulary`). They are stored and served unchanged; a strict server
/// refused them already, in [`parse_sync_request`].
pub(crate) fn check_types(app: &AppState, req: &SyncRequest) {
    if !app.config.strict {
        app.unknown_values.record_request(req);
    }
}

/// `GET /api/v1/sync/vocabulary`: the known values of each open enumeration, whether
/// the server is strict, and how many values outside them it accepted since it
/// started, per field and value (docs/SERVER.md).
pub(crate) async fn vocabulary(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(json!({
        "strict": app.config.strict,
        "known": crate::vocabulary::known_json(),
        "unknown": app.unknown_values.to_json(),
    }))
}

/// Which acknowledged ids an answer carries the server's latest row of (PROTOCOL §6.7, §12.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckRows {
    /// Those whose latest is not the version the push carried for it: a client of this
    /// protocol drops what `applied` names and then holds the server's latest of each.
    Superseded,
    /// Every acknowledged id: a client of the reference confirms a pushed change by
    /// finding its id in `changes`, wherever the page would end.
    Every,
}

impl AckRows {
    /// What a sync request that declared `caps` is carried.
    pub(crate) fn for_caps(caps: Capabilities) -> AckRows {
        if caps.is_none() {
            AckRows::Every
        } else {
            AckRows::Superseded
        }
    }
}

/// The server's latest row of the acknowledged ids `which` names, in `applied` order
/// (PROTOCOL §6.7); an id the server holds no row of (a delete of an id it never held)
/// has none.
///
/// Read after the push committed. With [`AckRows::Superseded`] only ids where the latest
/// can differ are looked up: one pushed more than once, or with an outcome other than
/// stored as latest (re-sent, lost, merged, queued, a delete of a deleted or unknown id).
pub(crate) async fn ack_rows(
    store: &dyn ServerStore,
    changes: &[SyncChange],
    outcome: &PushOutcome,
    which: AckRows,
) -> Result<Vec<Entity>, StoreError> {
    let mut pushed: HashMap<&EntityId, (&Version, usize)> = HashMap::new();
    for e in changes.iter().filter_map(|c| c.entity.as_ref()) {
        let at = pushed.entry(&e.id).or_insert((&e.version, 0));
        *at = (&e.version, at.1 + 1);
    }
    let unsure: HashSet<&EntityId> = outcome
        .entity_outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, EntityOutcome::Applied | EntityOutcome::Won))
        .filter_map(|(id, _)| id.as_ref())
        .collect();
    let look: Vec<(&EntityId, &Version)> = outcome
        .applied
        .iter()
        .filter_map(|id| {
            let (version, times) = pushed.get(id)?;
            let maybe_superseded = *times > 1 || unsure.contains(id);
            (which == AckRows::Every || maybe_superseded).then_some((id, *version))
        })
        .collect();
    if look.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<EntityId> = look.iter().map(|(id, _)| (*id).clone()).collect();
    let mut latest: HashMap<EntityId, Entity> = store
        .latest_entities(&ids)
        .await?
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    Ok(look
        .iter()
        .filter_map(|(id, pushed)| {
            latest
                .remove(*id)
                .filter(|e| which == AckRows::Every || e.version != **pushed)
        })
        .collect())
}

/// An acknowledgement's rows (before the page's own, without repeating one the page holds).
fn with_acks(acks: Vec<Entity>, page: Vec<ChangeRecord>) -> Vec<SyncChange> {
    let in_page: HashSet<(&EntityId, &Version)> = page
        .iter()
        .filter_map(|r| match r {
            ChangeRecord::Entity(se) => Some((&se.entity.id, &se.entity.version)),
            ChangeRecord::Relationship(_) => None,
        })
        .collect();
    let acks: Vec<Entity> = acks
        .into_iter()
        .filter(|e| !in_page.contains(&(&e.id, &e.version)))
        .collect();
    let mut out = Vec::with_capacity(acks.len() + page.len());
    out.extend(acks.into_iter().map(wire_entity));
    out.extend(page.into_iter().map(wire_change));
    out
}

/// The wire form of an entity row, as a pull sends it.
pub(crate) fn wire_entity(e: Entity) -> SyncChange {
    SyncChange {
        change_type: if e.is_deleted() {
            ChangeType::Delete
        } else {
            ChangeType::Update
        },
        entity: Some(EntityChange {
            id: e.id,
            version: e.version,
            entity_type: e.entity_type,
            name: e.name,
            content: e.content,
            source_type: e.source_type,
            user_id: e.user_id,
            parent_versions: e.parent_versions,
            checksum: None,
            created_at: None,
            updated_at: None,
        }),
        relationships: Vec::new(),
    }
}

/// The wire form of one change-feed row (moved, not copied: a page is large).
pub(crate) fn wire_change(rec: ChangeRecord) -> SyncChange {
    match rec {
        ChangeRecord::Entity(se) => wire_entity(se.entity),
        ChangeRecord::Relationship(sr) => {
            let r = sr.relationship;
            SyncChange {
                change_type: ChangeType::Update,
                entity: None,
                relationships: vec![RelationshipChange {
                    id: r.id,
                    from_entity_id: r.from_entity_id,
                    from_entity_version: r.from_entity_version,
                    to_entity_id: r.to_entity_id,
                    to_entity_version: r.to_entity_version,
                    relationship_type: r.relationship_type,
                    properties: r.properties,
                    user_id: Some(r.user_id),
                    created_at: Some(r.created_at),
                    updated_at: Some(r.updated_at),
                }],
            }
        }
    }
}

/// `POST /api/v1/sync/`: apply the pushed changes (one transaction), then answer one page of the change feed.
#[tracing::instrument(
    name = "sync",
    skip_all,
    fields(
        user = tracing::field::Empty,
        device_id = tracing::field::Empty,
        sync_type = tracing::field::Empty,
        pushed = tracing::field::Empty,
        applied = tracing::field::Empty,
        conflicts = tracing::field::Empty,
        pulled = tracing::field::Empty,
    )
)]
pub(crate) async fn sync(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<SyncResponse>, ApiError> {
    let started = Instant::now();
    let span = tracing::Span::current();
    span.record("user", caller.0.sub.as_str());
    let req = parse_sync_request(&app, body.json()?)?;
    span.record("device_id", req.device_id.as_str());
    app.auth
        .claim_device(app.store.as_ref(), &req.device_id, &caller.0.sub)
        .await?;
    span.record("sync_type", req.sync_type.as_str());
    span.record("pushed", req.changes.len());
    check_types(&app, &req);
    // The cursor is honoured with delta only (PROTOCOL §6.4); `full` ignores
    // it as the reference does, so old clients behave the same.
    let after_seq = match (&req.cursor, req.sync_type) {
        (Some(c), SyncType::Delta) => Some(c.seq().map_err(|_| bad_cursor(&c.0))?),
        _ => None,
    };
    // The head of the store, read once: the cursor's bound, the restore mark and the
    // history horizon, and the digest's position when nothing is pushed.
    let head = app.store.head().await?;
    if let Some(seq) = after_seq {
        check_cursor_at(head.seq, seq)?;
    }
    // A position from before a restore of a backup (docs/SERVER.md "Backups").
    let since_asked = match req.sync_type {
        SyncType::Delta => req.filters.as_ref().and_then(|f| f.since),
        _ => None,
    };
    crate::routes::backup::refuse_position_at(&head, after_seq, since_asked)?;
    if !req.changes.is_empty() {
        caller.require_write()?;
    }
    let outcome = if req.changes.is_empty() {
        PushOutcome::default()
    } else {
        let pushed_at = Instant::now();
        let outcome = app
            .store
            .apply_push(PushBatch {
                device_id: req.device_id.clone(),
                user_id: req.user_id.clone(),
                changes: req.changes.clone(),
            })
            .await?;
        app.metrics.store_time("apply_push", pushed_at);
        app.metrics.push_batch(req.changes.len());
        for c in &outcome.conflicts {
            app.metrics
                .conflict(crate::metrics::conflict_reason(c.reason.as_deref()));
        }
        outcome
    };
    // What the answer holds depends on the capabilities declared (PROTOCOL §5.12, §12.4).
    let caps = Capabilities::declared(&req.capabilities);
    // What an acknowledgement carries (PROTOCOL §6.7, §12.4): read after the push
    // committed, before the page, so a newer row in the page comes after it.
    let acks = ack_rows(
        app.store.as_ref(),
        &req.changes,
        &outcome,
        AckRows::for_caps(caps),
    )
    .await?;
    span.record("applied", outcome.applied.len());
    span.record("conflicts", outcome.conflicts.len());
    // With delta, `since` and the cursor both apply (PROTOCOL §6.4, §12.3).
    let spec = PageSpec::for_sync(
        req.sync_type,
        req.filters.as_ref(),
        after_seq,
        caps,
        app.config.page_size,
    );
    // A pull page this device asks for next may have been read ahead while the last one
    // went out; it is used only when nothing was written since (crate::readahead).
    // A delta from the watermark of the empty page kept at the head (or later), with
    // nothing written since, is answered with that page (crate::readahead, "Quiet deltas").
    let quiet = match req.changes.is_empty() {
        true => app.read_ahead.quiet_page(&spec, &head),
        false => None,
    };
    let ahead = match (req.changes.is_empty(), &quiet) {
        (true, None) => {
            app.read_ahead
                .take(app.store.as_ref(), &req.device_id, &spec)
                .await
        }
        _ => None,
    };
    let snap = match (quiet, ahead) {
        (Some(snap), _) => snap,
        (None, Some(snap)) => snap,
        (None, None) => {
            let read_at = Instant::now();
            let read = crate::snapshot::read_from(&app, &spec, Some(head.seq)).await?;
            app.metrics.store_time("read_page", read_at);
            app.read_ahead.remember_empty(&spec, &read);
            read
        }
    };
    app.metrics.page_served();
    let (page, state_digest) = (snap.page, snap.digest);
    // Again with the page's own head: a restore that committed before the page was read
    // is seen here.
    crate::routes::backup::refuse_position_at(&page.head, after_seq, since_asked)?;
    // Bookkeeping only: the push is committed already, so a failure here must not fail the answer.
    if let Err(e) = app.store.record_sync(&req.device_id).await {
        tracing::warn!(error = %crate::error::error_chain(&e), "cannot record the device's sync");
    }
    // Started after the bookkeeping write, which would otherwise wait for the read.
    if let (true, SyncType::Delta, Some(next)) =
        (req.changes.is_empty(), req.sync_type, page.next_after_seq)
    {
        app.read_ahead.start(&app, &req.device_id, spec.after(next));
    }
    span.record("pulled", page.records.len());
    let clock = app
        .clock
        .merge(&req.device_id, caller.0.can_write(), &req.vector_clock);
    let mut answer = response(&req, outcome, acks, page, state_digest, started);
    answer.vector_clock = clock;
    tracing::info!(
        user = %caller.0.sub,
        device_id = %req.device_id,
        sync_type = req.sync_type.as_str(),
        pushed = req.changes.len(),
        applied = answer.applied.len(),
        conflicts = answer.conflicts.len(),
        pulled = answer.changes.len(),
        more = answer.cursor.is_some(),
        ms = started.elapsed().as_millis() as u64,
        "sync"
    );
    Ok(Json(answer))
}

fn response(
    req: &SyncRequest,
    outcome: PushOutcome,
    acks: Vec<Entity>,
    page: ChangePage,
    state_digest: String,
    started: Instant,
) -> SyncResponse {
    SyncResponse {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        sync_type: req.sync_type,
        changes: with_acks(acks, page.records),
        sync_stats: SyncStats {
            entities_synced: outcome.applied.len() as u64,
            relationships_synced: outcome.applied_relationships.len() as u64,
            conflicts_resolved: outcome.conflicts.len() as u64,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        conflicts: outcome.conflicts,
        vector_clock: VectorClockWire::default(),
        cursor: page.next_after_seq.map(Cursor::from_seq),
        state_digest: Some(state_digest),
        server_time: page.server_time,
        applied: outcome.applied,
        applied_relationships: outcome.applied_relationships,
        // Only to a request that declared any (PROTOCOL §5.12): older clients see the
        // reference's keys and nothing else.
        capabilities: (!req.capabilities.is_empty())
            .then(|| OFFERED.iter().map(|c| (*c).to_owned()).collect()),
    }
}

/// `GET /api/v1/sync/status?device_id=`: the reference's fields plus what this server knows of the device.
pub(crate) async fn status(
    State(app): State<AppState>,
    _caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let device_id = q
        .get("device_id")
        .ok_or_else(|| missing_query("device_id"))?;
    // The same key rule as a sync's device_id: every backend answers alike.
    let items = crate::pydantic::string_items(
        "query",
        [(
            "device_id",
            &Value::from(device_id.as_str()),
            crate::pydantic::Rule::Key,
        )],
    );
    if !items.is_empty() {
        return Err(validation_items(items));
    }
    let known = app.store.client_status(device_id).await?;
    let pending = app
        .store
        .conflicts(Some(&[ConflictStatus::Pending]), 100_000)
        .await?
        .len();
    let state_digest = app.state_digest().await?;
    Ok(Json(json!({
        "device_id": device_id,
        "server_time": Timestamp::now(),
        "protocol_version": PROTOCOL_VERSION,
        "last_seen": known.as_ref().and_then(|k| k.last_seen),
        "last_ack": known.as_ref().and_then(|k| k.last_ack),
        "sync_count": known.as_ref().map_or(0, |k| k.sync_count),
        "pending_conflicts": pending,
        "state_digest": state_digest,
    })))
}

/// The JSON form of a conflict record.
pub(crate) fn conflict_json(c: &ConflictRecord) -> Value {
    json!({
        "id": c.id,
        "entity_id": c.entity_id,
        "server_version": c.server_version,
        "client_version": c.client_version,
        "resolved_version": c.resolved_version,
        "reason": c.reason,
        "resolution_strategy": c.strategy,
        "status": c.status.as_str(),
        "device_id": c.device_id,
        "created_at": c.created_at,
        "resolved_at": c.resolved_at,
    })
}

fn parse_statuses(s: &str) -> Result<Option<Vec<ConflictStatus>>, ApiError> {
    if s == "all" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match ConflictStatus::parse(part) {
            Some(st) => out.push(st),
            None => {
                let allowed = ["pending", "auto", "resolved", "dismissed", "all"];
                return Err(validation_items(vec![enum_item(
                    vec![Value::from("query"), Value::from("status")],
                    &allowed,
                    Value::from(part),
                )]));
            }
        }
    }
    Ok(Some(out))
}

/// `GET /api/v1/sync/conflicts?status=&limit=`: the manual-review queue (pending
/// conflicts by default; `status=all` or a comma-separated list for the audit trail).
pub(crate) async fn conflicts(
    State(app): State<AppState>,
    _caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let statuses = parse_statuses(q.get("status").map_or("pending", String::as_str))?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| bad_query_int("limit", l))?
            .clamp(1, 10_000),
    };
    let list = app.store.conflicts(statuses.as_deref(), limit).await?;
    Ok(Json(json!({
        "conflicts": list.iter().map(conflict_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/v1/sync/conflicts/{id}/resolve` `{"resolution": "local"|"server"|"remote"|"client"|"custom"|"dismiss", "content"?, "name"?}`.
pub(crate) async fn resolve(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found("Conflict not found");
    let id: i64 = id.trim().parse().map_err(|_| not_found())?;
    caller.require_write()?;
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let choice = f.req_str(&["resolution"], 1);
    let content = f.opt_obj("content");
    let name = f.opt_str(&["name"]);
    const CHOICES: [&str; 6] = ["local", "server", "remote", "client", "custom", "dismiss"];
    if let Some(c) = &choice {
        if !CHOICES.contains(&c.as_str()) {
            f.enum_error("resolution", &CHOICES, c);
        }
    }
    if choice.as_deref() == Some("custom") && content.is_none() {
        f.errors.push(item(
            "missing",
            vec![Value::from("body"), Value::from("content")],
            "Field required",
            value.clone(),
        ));
    }
    f.finish()?;
    let map_err = |e: StoreError| match e {
        StoreError::NotFound(_) => not_found(),
        StoreError::Invalid(why) => ApiError::new(
            axum::http::StatusCode::CONFLICT,
            inbetweenies_proto::ErrorCode::SyncConflict,
            format!("Conflict is not pending: {why}"),
        ),
        other => ApiError::from(other),
    };
    let resolution = match choice.as_deref().unwrap_or_default() {
        "dismiss" => {
            let rec = app.store.dismiss_conflict(id).await.map_err(map_err)?;
            return Ok(Json(
                json!({"conflict": conflict_json(&rec), "entity": null}),
            ));
        }
        "local" | "server" => ManualResolution::KeepServer,
        "remote" | "client" => ManualResolution::KeepClient,
        _ => {
            let name = match name {
                Some(n) => n,
                None => {
                    let pending = app
                        .store
                        .conflicts(None, 100_000)
                        .await?
                        .into_iter()
                        .find(|c| c.id == id)
                        .ok_or_else(not_found)?;
                    app.store
                        .entity(&pending.entity_id)
                        .await?
                        .map(|e| e.name)
                        .unwrap_or_default()
                }
            };
            ManualResolution::Custom {
                name,
                content: content.unwrap_or_default(),
            }
        }
    };
    let (rec, entity) = app
        .store
        .resolve_conflict(id, resolution, &caller.0.sub)
        .await
        .map_err(map_err)?;
    tracing::info!(conflict = id, version = %entity.version, "conflict resolved by hand");
    Ok(Json(
        json!({"conflict": conflict_json(&rec), "entity": entity}),
    ))
}

//! The graph REST API that test set-ups use to seed and inspect a server. Writes go
//! through the same one-transaction push path as sync, so versions, sequence
//! numbers, the digest and conflicts stay consistent.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use goodies_store::graph::GraphAsOf;
use goodies_store::{
    Direction, EntityOutcome, EntityQuery, PushBatch, PushOutcome, RelationshipOutcome,
    RelationshipQuery, StoredEntity,
};
use inbetweenies_proto::{
    is_tombstone, ChangeType, Entity, EntityChange, EntityId, EntityType, JsonObject,
    RelationshipChange, RelationshipId, RelationshipType, SourceType, SyncChange, Timestamp,
    Version, DELETED_KEY,
};
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::pydantic::{bad_query_int, enum_item, string_items, validation_items, Fields, Rule};
use crate::routes::sync::{known_entity_types, known_source_types};
use crate::state::AppState;
use crate::vocabulary::field::{ENTITY_TYPE, FILTER_ENTITY_TYPE, RELATIONSHIP_TYPE, SOURCE_TYPE};

/// The device id recorded for writes made through this API.
const GRAPH_DEVICE: &str = "graph-api";
/// Default and largest page for list endpoints.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(&e))
}

fn known_relationship_types() -> Vec<&'static str> {
    RelationshipType::KNOWN.iter().map(|t| t.as_str()).collect()
}

fn query_usize(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| bad_query_int(name, s)),
    }
}

/// The named values of a body, present and not null, each with its rule:
/// `keys` are key strings, except `name` (an entity name) and
/// `parent_versions` (a list of keys), each with its own limit (PROTOCOL §5.10).
fn named<'v>(
    value: &'v Value,
    keys: &'v [&'v str],
    nul_free: &'v [&'v str],
) -> impl Iterator<Item = (&'v str, &'v Value, Rule)> {
    let key_rule = |n: &str| match n {
        "name" => Rule::Name,
        "parent_versions" => Rule::KeyList,
        _ => Rule::Key,
    };
    let pick = move |names: &'v [&'v str], rule: Option<Rule>| {
        names.iter().filter_map(move |n| {
            value
                .get(*n)
                .filter(|v| !v.is_null())
                .map(|v| (*n, v, rule.unwrap_or_else(|| key_rule(n))))
        })
    };
    pick(keys, None).chain(pick(nul_free, Some(Rule::NulFree)))
}

/// Refuses in a body, as a sync request would be refused, a key string with
/// U+0000 or past the cap (`keys`) and U+0000 anywhere in a value the store
/// keeps or selects by (`nul_free`).
fn check_body(f: &mut Fields<'_>, value: &Value, keys: &[&str], nul_free: &[&str]) {
    f.errors
        .extend(string_items("body", named(value, keys, nul_free)));
}

/// The same for query parameters that select: a 422 at `["query", name]`.
fn check_query(
    q: &HashMap<String, String>,
    keys: &[&str],
    nul_free: &[&str],
) -> Result<(), ApiError> {
    let value = Value::Object(
        q.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    );
    let items = string_items("query", named(&value, keys, nul_free));
    if items.is_empty() {
        Ok(())
    } else {
        Err(validation_items(items))
    }
}

/// The same for an entity id in the path: a 422 at `["path", "id"]`.
fn check_path_id(id: &str) -> Result<(), ApiError> {
    let id = Value::from(id);
    let items = string_items("path", [("id", &id, Rule::Key)]);
    if items.is_empty() {
        Ok(())
    } else {
        Err(validation_items(items))
    }
}

fn query_enum_error(name: &str, allowed: &[&str], input: &str) -> ApiError {
    validation_items(vec![enum_item(
        vec![Value::from("query"), Value::from(name)],
        allowed,
        Value::from(input),
    )])
}

fn query_entity_type(
    app: &AppState,
    q: &HashMap<String, String>,
) -> Result<Option<EntityType>, ApiError> {
    let Some(s) = q.get("entity_type").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let t = EntityType::parse(s);
    if !t.is_known() && app.config.strict {
        return Err(query_enum_error("entity_type", &known_entity_types(), s));
    }
    note_unknown(app, FILTER_ENTITY_TYPE, t.is_known(), s);
    Ok(Some(t))
}

fn query_relationship_type(
    app: &AppState,
    q: &HashMap<String, String>,
) -> Result<Option<RelationshipType>, ApiError> {
    let Some(s) = q.get("relationship_type").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let t = RelationshipType::parse(s);
    note_unknown(app, RELATIONSHIP_TYPE, t.is_known(), s);
    if !t.is_known() && app.config.strict {
        return Err(query_enum_error(
            "relationship_type",
            &known_relationship_types(),
            s,
        ));
    }
    Ok(Some(t))
}

/// Counts an accepted value outside the known vocabulary (`crate::vocabulary`);
/// a strict server refuses it instead.
fn note_unknown(app: &AppState, field: &'static str, known: bool, value: &str) {
    if !known && !app.config.strict {
        app.unknown_values.record(field, value, 1);
    }
}

fn query_bool(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

async fn push_one(
    app: &AppState,
    user_id: &str,
    change: SyncChange,
) -> Result<PushOutcome, ApiError> {
    Ok(app
        .store
        .apply_push(PushBatch {
            device_id: GRAPH_DEVICE.to_owned(),
            user_id: user_id.to_owned(),
            changes: vec![change],
        })
        .await?)
}

async fn stored_version(
    app: &AppState,
    id: &EntityId,
    version: &Version,
) -> Result<Entity, ApiError> {
    match app.store.entity_version(id, version).await? {
        Some(e) => Ok(e),
        // A delete of an entity already deleted writes nothing: answer the current tombstone.
        None => app
            .store
            .entity(id)
            .await?
            .ok_or_else(|| ApiError::not_found("Entity not found")),
    }
}

/// The time `?at=` names (PROTOCOL §15.2): `None` without it; 400 (field `at`) for a
/// time that is not RFC 3339 or that lies before the history horizon.
async fn as_of_time(app: &AppState, raw: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let at = Timestamp::parse(raw).map_err(|e| {
        ApiError::bad_request(format!("at must be an RFC 3339 time: {e}")).with_field("at")
    })?;
    if let Some(h) = app.store.history_horizon().await? {
        if !h.covers(at) {
            return Err(ApiError::bad_request(format!(
                "history before the horizon {} was pruned; ask about a later time",
                h.at
            ))
            .with_field("at"));
        }
    }
    Ok(Some(at))
}

/// `?offset=` and `?limit=` applied to an as-of answer.
fn page<T: Clone>(items: &[T], offset: usize, limit: usize) -> Vec<T> {
    items.iter().skip(offset).take(limit).cloned().collect()
}

async fn latest_or_404(app: &AppState, id: &str) -> Result<Entity, ApiError> {
    check_path_id(id)?;
    app.store
        .entity(&EntityId::new(id))
        .await?
        .ok_or_else(|| ApiError::not_found("Entity not found"))
}

/// `POST /api/v1/graph/entities` `{entity_type, name, content?, source_type?, user_id?, parent_versions?, id?}`:
/// the server assigns the id (unless given) and the version.
pub(crate) async fn create_entity(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let entity_type = f.req_str(&["entity_type"], 1);
    let name = f.req_str(&["name"], 0);
    let content = f.opt_obj("content").unwrap_or_default();
    let source_type = f
        .opt_str(&["source_type"])
        .unwrap_or_else(|| "manual".into());
    let user_id = f
        .opt_str(&["user_id"])
        .unwrap_or_else(|| caller.0.sub.clone());
    let parents = f.opt_str_list("parent_versions").unwrap_or_default();
    let id = f.opt_str(&["id"]).filter(|i| !i.trim().is_empty());
    check_body(
        &mut f,
        &value,
        &[
            "id",
            "entity_type",
            "name",
            "source_type",
            "user_id",
            "parent_versions",
        ],
        &["content"],
    );
    let entity_type = entity_type.map(|t| EntityType::parse(&t));
    let source_type = SourceType::parse(&source_type);
    if app.config.strict {
        if let Some(t) = entity_type.as_ref().filter(|t| !t.is_known()) {
            f.enum_error("entity_type", &known_entity_types(), t.as_str());
        }
        if !source_type.is_known() {
            f.enum_error("source_type", &known_source_types(), source_type.as_str());
        }
    }
    f.finish()?;
    if let Some(t) = &entity_type {
        note_unknown(&app, ENTITY_TYPE, t.is_known(), t.as_str());
    }
    note_unknown(
        &app,
        SOURCE_TYPE,
        source_type.is_known(),
        source_type.as_str(),
    );
    caller.require_write()?;
    let (Some(entity_type), Some(name)) = (entity_type, name) else {
        return Err(ApiError::bad_request("entity_type and name are required"));
    };
    let id = id.map_or_else(EntityId::new_random, EntityId::new);
    if app.store.entity(&id).await?.is_some() {
        return Err(ApiError::conflict("Entity already exists"));
    }
    let version = Version::generate(Timestamp::now(), &user_id);
    let deleted = is_tombstone(&content);
    let change = EntityChange {
        id: id.clone(),
        version: version.clone(),
        entity_type,
        name,
        content,
        source_type,
        user_id: user_id.clone(),
        parent_versions: parents.into_iter().map(Version::new).collect(),
        checksum: None,
        created_at: None,
        updated_at: None,
    };
    let change_type = if deleted {
        ChangeType::Delete
    } else {
        ChangeType::Create
    };
    push_one(
        &app,
        &user_id,
        SyncChange {
            change_type,
            entity: Some(change),
            relationships: Vec::new(),
        },
    )
    .await?;
    let entity = stored_version(&app, &id, &version).await?;
    tracing::info!(id = %id, version = %version, "entity created");
    Ok(Json(json!({"entity": to_json(&entity)?})))
}

/// Writes a new version of an existing entity on top of its latest.
async fn new_version(
    app: &AppState,
    caller: &Caller,
    latest: Entity,
    edit: impl FnOnce(&mut EntityChange),
    user_id: String,
) -> Result<Json<Value>, ApiError> {
    let mut change = EntityChange::from_entity(&latest);
    change.user_id = user_id.clone();
    change.version = Version::generate(Timestamp::now(), &user_id);
    change.parent_versions = vec![latest.version.clone()];
    edit(&mut change);
    caller.require_write()?;
    let change_type = if change.is_deleted() {
        ChangeType::Delete
    } else {
        ChangeType::Update
    };
    let (id, version) = (change.id.clone(), change.version.clone());
    let outcome = push_one(
        app,
        &user_id,
        SyncChange {
            change_type,
            entity: Some(change),
            relationships: Vec::new(),
        },
    )
    .await?;
    let entity = stored_version(app, &id, &version).await?;
    let latest = app.store.entity(&id).await?;
    let outcome_word = match outcome.entity_outcomes.first().map(|(_, o)| o) {
        Some(EntityOutcome::Applied) => "applied",
        Some(EntityOutcome::AlreadyDeleted) => "already_deleted",
        Some(EntityOutcome::Won) => "won",
        Some(EntityOutcome::Lost) => "lost",
        Some(EntityOutcome::Merged(_)) => "merged",
        Some(EntityOutcome::Queued) => "queued",
        _ => "applied",
    };
    Ok(Json(json!({
        "entity": to_json(&entity)?,
        "outcome": outcome_word,
        "latest_version": latest.map(|e| e.version),
    })))
}

/// `PUT /api/v1/graph/entities/{id}` `{name?, content?, entity_type?, source_type?, user_id?}`: a new version.
pub(crate) async fn update_entity(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let latest = latest_or_404(&app, &id).await?;
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let name = f.opt_str(&["name"]);
    let content = f.opt_obj("content");
    let entity_type = f.opt_str(&["entity_type"]).map(|t| EntityType::parse(&t));
    let source_type = f.opt_str(&["source_type"]).map(|t| SourceType::parse(&t));
    let user_id = f
        .opt_str(&["user_id"])
        .unwrap_or_else(|| caller.0.sub.clone());
    check_body(
        &mut f,
        &value,
        &["entity_type", "name", "source_type", "user_id"],
        &["content"],
    );
    if app.config.strict {
        if let Some(t) = entity_type.as_ref().filter(|t| !t.is_known()) {
            f.enum_error("entity_type", &known_entity_types(), t.as_str());
        }
        if let Some(t) = source_type.as_ref().filter(|t| !t.is_known()) {
            f.enum_error("source_type", &known_source_types(), t.as_str());
        }
    }
    f.finish()?;
    if let Some(t) = &entity_type {
        note_unknown(&app, ENTITY_TYPE, t.is_known(), t.as_str());
    }
    if let Some(t) = &source_type {
        note_unknown(&app, SOURCE_TYPE, t.is_known(), t.as_str());
    }
    new_version(
        &app,
        &caller,
        latest,
        |c| {
            if let Some(n) = name {
                c.name = n;
            }
            if let Some(content) = content {
                c.content = content;
            }
            if let Some(t) = entity_type {
                c.entity_type = t;
            }
            if let Some(t) = source_type {
                c.source_type = t;
            }
        },
        user_id,
    )
    .await
}

/// `DELETE /api/v1/graph/entities/{id}`: a tombstone version.
pub(crate) async fn delete_entity(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let latest = latest_or_404(&app, &id).await?;
    let user_id = caller.0.sub.clone();
    new_version(
        &app,
        &caller,
        latest,
        |c| {
            c.content.insert(DELETED_KEY.to_owned(), Value::Bool(true));
        },
        user_id,
    )
    .await
}

/// `GET /api/v1/graph/entities?entity_type=&name=&include_deleted=&limit=&offset=`.
pub(crate) async fn list_entities(
    State(app): State<AppState>,
    _caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_query(&q, &["entity_type"], &["name"])?;
    let entity_type = query_entity_type(&app, &q)?;
    let limit = query_usize(&q, "limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = query_usize(&q, "offset", 0, usize::MAX)?;
    let include_deleted = query_bool(&q, "include_deleted");
    let name_contains = q.get("name").filter(|n| !n.is_empty()).cloned();
    if let Some(at) = as_of_time(&app, q.get("at").map(String::as_str)).await? {
        // As of `at`: the latest-by-then version of every id that existed (tombstoned and
        // losing versions out), in name then id order.
        let types = entity_type.clone().map(|t| vec![t]);
        let mut all = app.store.entities_as_of(at, types.as_deref()).await?;
        if let Some(needle) = &name_contains {
            let needle = needle.to_ascii_lowercase();
            all.retain(|e| e.name.to_ascii_lowercase().contains(&needle));
        }
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        return Ok(Json(json!({
            "entities": to_json(&page(&all, offset, limit))?,
            "total": all.len(),
            "limit": limit,
            "offset": offset,
            "at": at,
        })));
    }
    let mut query = EntityQuery {
        entity_types: entity_type.clone().map(|t| vec![t]),
        name_contains: name_contains.clone(),
        include_deleted,
        limit: Some(limit),
        offset,
    };
    let entities = app.store.entities(&query).await?;
    let total = if include_deleted || name_contains.is_some() {
        query.limit = None;
        query.offset = 0;
        app.store.entities(&query).await?.len() as u64
    } else {
        let stats = app.store.stats().await?;
        match &entity_type {
            None => stats.entities,
            Some(t) => stats
                .entities_by_type
                .iter()
                .find(|(k, _)| k == t)
                .map_or(0, |(_, n)| *n),
        }
    };
    Ok(Json(json!({
        "entities": to_json(&entities)?,
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

/// `GET /api/v1/graph/entities/{id}`: the latest version with its outgoing and incoming relationships.
pub(crate) async fn get_entity(
    State(app): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(at) = as_of_time(&app, q.get("at").map(String::as_str)).await? {
        check_path_id(&id)?;
        let graph = GraphAsOf::read(app.store.as_ref(), at).await?;
        let entity = graph
            .entities
            .get(&EntityId::new(&id))
            .ok_or_else(|| ApiError::not_found("Entity not found at that time"))?;
        let outgoing: Vec<_> = graph
            .relationships
            .iter()
            .filter(|r| r.from_entity_id == entity.id)
            .collect();
        let incoming: Vec<_> = graph
            .relationships
            .iter()
            .filter(|r| r.to_entity_id == entity.id)
            .collect();
        return Ok(Json(json!({
            "entity": to_json(entity)?,
            "outgoing": to_json(&outgoing)?,
            "incoming": to_json(&incoming)?,
            "at": at,
        })));
    }
    let entity = latest_or_404(&app, &id).await?;
    let outgoing = app
        .store
        .relationships(&RelationshipQuery {
            from_entity_id: Some(entity.id.clone()),
            ..RelationshipQuery::default()
        })
        .await?;
    let incoming = app
        .store
        .relationships(&RelationshipQuery {
            to_entity_id: Some(entity.id.clone()),
            ..RelationshipQuery::default()
        })
        .await?;
    Ok(Json(json!({
        "entity": to_json(&entity)?,
        "outgoing": to_json(&outgoing)?,
        "incoming": to_json(&incoming)?,
    })))
}

fn version_json(s: &StoredEntity) -> Result<Value, ApiError> {
    let mut v = to_json(&s.entity)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("seq".into(), Value::from(s.seq));
        obj.insert("received_at".into(), to_json(&s.received_at)?);
        obj.insert("is_latest".into(), Value::Bool(s.latest));
        obj.insert("became_latest".into(), Value::Bool(s.became_latest));
        obj.insert("is_deleted".into(), Value::Bool(s.entity.is_deleted()));
    }
    Ok(v)
}

/// `GET /api/v1/graph/entities/{id}/versions`: every stored row of the id (losers and tombstones included).
pub(crate) async fn versions(
    State(app): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_path_id(&id)?;
    let id = EntityId::new(id);
    let history = app.store.history(&id).await?;
    if history.is_empty() {
        return Err(ApiError::not_found("Entity not found"));
    }
    let versions = history
        .iter()
        .map(version_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({
        "entity_id": id,
        "count": versions.len(),
        "versions": versions,
    })))
}

/// `POST /api/v1/graph/relationships` `{source_id|from_entity_id, target_id|to_entity_id, relationship_type, properties?, user_id?, id?}`:
/// an edge between the endpoints' latest versions.
pub(crate) async fn create_relationship(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let source = f.req_str(&["source_id", "from_entity_id"], 1);
    let target = f.req_str(&["target_id", "to_entity_id"], 1);
    let rel_type = f
        .req_str(&["relationship_type"], 1)
        .map(|t| RelationshipType::parse(&t));
    let properties: JsonObject = f.opt_obj("properties").unwrap_or_default();
    let user_id = f
        .opt_str(&["user_id"])
        .unwrap_or_else(|| caller.0.sub.clone());
    let id = f.opt_str(&["id"]).filter(|i| !i.trim().is_empty());
    check_body(
        &mut f,
        &value,
        &[
            "id",
            "source_id",
            "from_entity_id",
            "target_id",
            "to_entity_id",
            "relationship_type",
            "user_id",
        ],
        &["properties"],
    );
    if let Some(t) = rel_type.as_ref().filter(|t| !t.is_known()) {
        if app.config.strict {
            f.enum_error("relationship_type", &known_relationship_types(), t.as_str());
        }
    }
    f.finish()?;
    if let Some(t) = &rel_type {
        note_unknown(&app, RELATIONSHIP_TYPE, t.is_known(), t.as_str());
    }
    caller.require_write()?;
    let (Some(source), Some(target), Some(rel_type)) = (source, target, rel_type) else {
        return Err(ApiError::bad_request(
            "source_id, target_id and relationship_type are required",
        ));
    };
    let from = app
        .store
        .entity(&EntityId::new(&source))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Source entity not found: {source}")))?;
    let to = app
        .store
        .entity(&EntityId::new(&target))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Target entity not found: {target}")))?;
    let id = id.map_or_else(RelationshipId::new_random, RelationshipId::new);
    if app.store.relationship(&id).await?.is_some() {
        return Err(ApiError::conflict("Relationship already exists"));
    }
    let rel = RelationshipChange {
        id: id.clone(),
        from_entity_id: from.id,
        from_entity_version: from.version,
        to_entity_id: to.id,
        to_entity_version: to.version,
        relationship_type: rel_type,
        properties,
        user_id: Some(user_id.clone()),
        created_at: None,
        updated_at: None,
    };
    let outcome = push_one(
        &app,
        &user_id,
        SyncChange {
            change_type: ChangeType::Update,
            entity: None,
            relationships: vec![rel],
        },
    )
    .await?;
    if matches!(
        outcome.relationship_outcomes.first(),
        Some((_, RelationshipOutcome::MissingEndpoint))
    ) {
        return Err(ApiError::conflict("An endpoint changed meanwhile; retry"));
    }
    let stored = app
        .store
        .relationship(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("Relationship not found"))?;
    Ok(Json(json!({"relationship": to_json(&stored)?})))
}

/// `GET /api/v1/graph/relationships?from_entity_id|source_id=&to_entity_id|target_id=&relationship_type=&limit=&offset=`.
pub(crate) async fn list_relationships(
    State(app): State<AppState>,
    _caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_query(
        &q,
        &["from_entity_id", "source_id", "to_entity_id", "target_id"],
        &["relationship_type"],
    )?;
    let pick = |a: &str, b: &str| {
        q.get(a)
            .or_else(|| q.get(b))
            .filter(|s| !s.is_empty())
            .map(EntityId::new)
    };
    let query = RelationshipQuery {
        from_entity_id: pick("from_entity_id", "source_id"),
        to_entity_id: pick("to_entity_id", "target_id"),
        relationship_type: query_relationship_type(&app, &q)?,
        limit: Some(query_usize(&q, "limit", DEFAULT_LIMIT, MAX_LIMIT)?),
        offset: query_usize(&q, "offset", 0, usize::MAX)?,
    };
    if let Some(at) = as_of_time(&app, q.get("at").map(String::as_str)).await? {
        let graph = GraphAsOf::read(app.store.as_ref(), at).await?;
        let matching: Vec<_> = graph
            .relationships
            .into_iter()
            .filter(|r| {
                query
                    .from_entity_id
                    .as_ref()
                    .is_none_or(|f| &r.from_entity_id == f)
                    && query
                        .to_entity_id
                        .as_ref()
                        .is_none_or(|t| &r.to_entity_id == t)
                    && query
                        .relationship_type
                        .as_ref()
                        .is_none_or(|t| &r.relationship_type == t)
            })
            .collect();
        let rels = page(
            &matching,
            query.offset,
            query.limit.unwrap_or(DEFAULT_LIMIT),
        );
        return Ok(Json(
            json!({"relationships": to_json(&rels)?, "count": rels.len(), "at": at}),
        ));
    }
    let rels = app.store.relationships(&query).await?;
    Ok(Json(
        json!({"relationships": to_json(&rels)?, "count": rels.len()}),
    ))
}

/// `POST /api/v1/graph/search` `{query, entity_types?, limit?}`: latest entities whose name contains `query`.
pub(crate) async fn search(
    State(app): State<AppState>,
    _caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let text = f.req_str(&["query"], 1);
    let types = f.opt_str_list("entity_types");
    let limit = f
        .opt_uint("limit", MAX_LIMIT as u64)
        .map_or(50, |n| n as usize);
    check_body(&mut f, &value, &[], &["query", "entity_types"]);
    let types: Option<Vec<EntityType>> =
        types.map(|v| v.iter().map(|s| EntityType::parse(s)).collect());
    if let (false, Some(ts)) = (app.config.strict, &types) {
        for t in ts {
            note_unknown(&app, FILTER_ENTITY_TYPE, t.is_known(), t.as_str());
        }
    }
    if app.config.strict {
        if let Some(ts) = &types {
            let ets = known_entity_types();
            for (i, t) in ts.iter().enumerate().filter(|(_, t)| !t.is_known()) {
                f.errors.push(enum_item(
                    vec![
                        Value::from("body"),
                        Value::from("entity_types"),
                        Value::from(i),
                    ],
                    &ets,
                    Value::from(t.as_str()),
                ));
            }
        }
    }
    f.finish()?;
    let text = text.unwrap_or_default();
    let found = app
        .store
        .entities(&EntityQuery {
            entity_types: types,
            name_contains: Some(text.clone()),
            include_deleted: false,
            limit: Some(limit),
            offset: 0,
        })
        .await?;
    let needle = text.to_lowercase();
    let mut results: Vec<(f64, Entity)> = found
        .into_iter()
        .map(|e| {
            let name = e.name.to_lowercase();
            let score = if name == needle {
                1.0
            } else if name.starts_with(&needle) {
                0.8
            } else {
                0.5
            };
            (score, e)
        })
        .collect();
    results.sort_by(|a, b| b.0.total_cmp(&a.0));
    let results = results
        .into_iter()
        .map(|(score, e)| Ok(json!({"entity": to_json(&e)?, "score": score})))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(Json(
        json!({"query": text, "count": results.len(), "results": results}),
    ))
}

/// `POST /api/v1/graph/path` `{from_id|source_id, to_id|target_id, max_depth?}`: the shortest path over edges in either direction.
pub(crate) async fn path(
    State(app): State<AppState>,
    _caller: Caller,
    Query(q): Query<HashMap<String, String>>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let at_raw = match (value.get("at"), q.get("at")) {
        (Some(Value::String(s)), _) => Some(s.clone()),
        (Some(Value::Null) | None, q) => q.cloned(),
        (Some(other), _) => {
            return Err(
                ApiError::bad_request(format!("at must be an RFC 3339 time, got {other}"))
                    .with_field("at"),
            )
        }
    };
    let at = as_of_time(&app, at_raw.as_deref()).await?;
    let mut f = Fields::new(&value)?;
    let from = f.req_str(&["from_id", "source_id", "from_entity_id"], 1);
    let to = f.req_str(&["to_id", "target_id", "to_entity_id"], 1);
    let depth = f.opt_uint("max_depth", 50).map_or(6, |d| d as usize);
    check_body(
        &mut f,
        &value,
        &[
            "from_id",
            "source_id",
            "from_entity_id",
            "to_id",
            "target_id",
            "to_entity_id",
        ],
        &[],
    );
    f.finish()?;
    let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
    if let Some(at) = at {
        // Over the graph as of `at`: only entities that existed then, only edges stored by then.
        let graph = GraphAsOf::read(app.store.as_ref(), at).await?;
        let (from, to) = (EntityId::new(&from), EntityId::new(&to));
        for id in [&from, &to] {
            if !graph.entities.contains_key(id) {
                return Err(ApiError::not_found("Entity not found at that time"));
            }
        }
        let ids = graph.path(&from, &to, depth).unwrap_or_default();
        let entities: Vec<&Entity> = ids.iter().filter_map(|i| graph.entities.get(i)).collect();
        return Ok(Json(json!({
            "found": !ids.is_empty(),
            "path": ids,
            "length": ids.len().saturating_sub(1),
            "entities": to_json(&entities)?,
            "at": at,
        })));
    }
    latest_or_404(&app, &from).await?;
    latest_or_404(&app, &to).await?;
    let found = app
        .store
        .path(&EntityId::new(&from), &EntityId::new(&to), depth)
        .await?;
    let ids = found.unwrap_or_default();
    let mut entities = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(e) = app.store.entity(id).await? {
            entities.push(e);
        }
    }
    Ok(Json(json!({
        "found": !ids.is_empty(),
        "path": ids,
        "length": ids.len().saturating_sub(1),
        "entities": to_json(&entities)?,
    })))
}

/// `GET /api/v1/graph/entities/{id}/connected?relationship_type=&direction=outgoing|incoming|both`.
pub(crate) async fn connected(
    State(app): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_query(&q, &[], &["relationship_type"])?;
    let at = as_of_time(&app, q.get("at").map(String::as_str)).await?;
    let rel_type = query_relationship_type(&app, &q)?;
    if let Some(at) = at {
        check_path_id(&id)?;
        let graph = GraphAsOf::read(app.store.as_ref(), at).await?;
        let here = EntityId::new(&id);
        if !graph.entities.contains_key(&here) {
            return Err(ApiError::not_found("Entity not found at that time"));
        }
        let want = q.get("direction").map(String::as_str).unwrap_or("both");
        if !["outgoing", "incoming", "both", ""].contains(&want) {
            return Err(query_enum_error(
                "direction",
                &["outgoing", "incoming", "both"],
                want,
            ));
        }
        let mut connected = Vec::new();
        for r in &graph.relationships {
            if rel_type.as_ref().is_some_and(|t| &r.relationship_type != t) {
                continue;
            }
            let (dir, other) = if r.from_entity_id == here {
                ("outgoing", &r.to_entity_id)
            } else if r.to_entity_id == here {
                ("incoming", &r.from_entity_id)
            } else {
                continue;
            };
            if want != "both" && !want.is_empty() && want != dir {
                continue;
            }
            if let Some(e) = graph.entities.get(other) {
                connected.push(json!({
                    "entity": to_json(e)?,
                    "relationship": to_json(r)?,
                    "direction": dir,
                }));
            }
        }
        return Ok(Json(json!({
            "entity_id": here,
            "count": connected.len(),
            "connected": connected,
            "at": at,
        })));
    }
    let entity = latest_or_404(&app, &id).await?;
    let direction = match q.get("direction").map(String::as_str) {
        None | Some("both") | Some("") => Direction::Both,
        Some("outgoing") => Direction::Outgoing,
        Some("incoming") => Direction::Incoming,
        Some(other) => {
            return Err(query_enum_error(
                "direction",
                &["outgoing", "incoming", "both"],
                other,
            ))
        }
    };
    let found = app
        .store
        .neighbours(&entity.id, rel_type.as_ref(), direction)
        .await?;
    let connected = found
        .iter()
        .map(|n| {
            let dir = if n.relationship.from_entity_id == entity.id {
                "outgoing"
            } else {
                "incoming"
            };
            Ok(json!({
                "entity": to_json(&n.entity)?,
                "relationship": to_json(&n.relationship)?,
                "direction": dir,
            }))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(Json(json!({
        "entity_id": entity.id,
        "count": connected.len(),
        "connected": connected,
    })))
}

/// `GET /api/v1/graph/statistics`.
pub(crate) async fn statistics(
    State(app): State<AppState>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let s = app.store.stats().await?;
    let digest = app.state_digest().await?;
    let max_seq = app.store.max_seq().await?;
    let by_type: Map<String, Value> = s
        .entities_by_type
        .iter()
        .map(|(t, n)| (t.as_str().to_owned(), Value::from(*n)))
        .collect();
    let rel_types: Map<String, Value> = s
        .relationships_by_type
        .iter()
        .map(|(t, n)| (t.as_str().to_owned(), Value::from(*n)))
        .collect();
    Ok(Json(json!({
        "total_entities": s.entities,
        "total_versions": s.entity_versions,
        "total_relationships": s.relationships,
        "entity_types": by_type,
        "relationship_types": rel_types,
        "pending_conflicts": s.pending_conflicts,
        "state_digest": digest,
        "max_seq": max_seq,
    })))
}

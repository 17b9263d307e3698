//! `/api/v1/backup/*`: whole-store backups as files, restores that take effect at once (admin only).
//!
//! A backup is the store's snapshot (`goodies_store::snapshot`, one read snapshot) written
//! as `<id>.snapshot.json` in the backup directory, with `<id>.meta.json` beside it
//! (created_at, description, size_bytes and the SHA-256 checksum of the snapshot file).
//! Ids are the UTC time to the second, `YYYYMMDD_HHMMSS`; a second backup in the same
//! second gets `_2`, then `_3`, … (the id is reserved by creating its metadata file
//! exclusively, so two backups never share one). A restore reads and checks the file,
//! then replaces the store in one write transaction under the store's write lock; cursors
//! and watermarks issued before it are answered `INVALID_SYNC_STATE` (docs/SERVER.md).

use std::io::Write as _;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use goodies_store::{Seq, StoreSnapshot};
use inbetweenies_proto::{ErrorCode, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::pydantic::{item, validation_items};
use crate::state::{AppInner, AppState};

/// What `<id>.meta.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackupMeta {
    backup_id: String,
    created_at: Timestamp,
    description: String,
    size_bytes: u64,
    checksum: String,
}

/// The backup directory: `--backup-dir`, else `backups` beside the SQLite database
/// file, else `backups` in the working directory.
pub(crate) fn backup_dir(app: &AppInner) -> PathBuf {
    if let Some(dir) = &app.config.backup_dir {
        return dir.clone();
    }
    let url = app.config.database_url.trim();
    let file = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|r| r.split_once('?').map_or(r, |(p, _)| p))
        .filter(|p| !p.is_empty() && *p != ":memory:");
    match file.and_then(|f| FsPath::new(f).parent()) {
        Some(parent) => parent.join("backups"),
        None => PathBuf::from("backups"),
    }
}

/// Whether a path segment is a backup id this server could have made.
fn valid_id(id: &str) -> bool {
    let (stamp, suffix) = match id.get(15..) {
        Some(rest) if !rest.is_empty() => (&id[..15], Some(rest)),
        _ => (id, None),
    };
    let b = stamp.as_bytes();
    b.len() == 15
        && b[8] == b'_'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
        && suffix.is_none_or(|s| {
            s.len() <= 8
                && s.starts_with('_')
                && s.len() > 1
                && s[1..].bytes().all(|c| c.is_ascii_digit())
        })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Backup {id} not found"))
}

fn meta_path(dir: &FsPath, id: &str) -> PathBuf {
    dir.join(format!("{id}.meta.json"))
}

fn data_path(dir: &FsPath, id: &str) -> PathBuf {
    dir.join(format!("{id}.snapshot.json"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))
}

/// One backup as list and get answer it: `integrity_ok` is whether the file is there and
/// matches its checksum; `error` says what is wrong otherwise.
fn item_json(meta: &BackupMeta, dir: &FsPath) -> Value {
    let error = match std::fs::read(data_path(dir, &meta.backup_id)) {
        Err(_) => Some("Backup file missing"),
        Ok(bytes) if hex_sha256(&bytes) != meta.checksum => Some("Checksum mismatch"),
        Ok(_) => None,
    };
    json!({
        "backup_id": meta.backup_id,
        "created_at": meta.created_at,
        "description": meta.description,
        "size_bytes": meta.size_bytes,
        "checksum": meta.checksum,
        "integrity_ok": error.is_none(),
        "error": error,
    })
}

fn read_meta(dir: &FsPath, id: &str) -> std::io::Result<Option<BackupMeta>> {
    match std::fs::read(meta_path(dir, id)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes a backup: the snapshot file first (under a temporary name), then the id is
/// reserved by creating its metadata file exclusively, then the file is moved into place.
async fn take_backup(app: &AppInner, description: String) -> Result<BackupMeta, ApiError> {
    let snapshot = app.store.export_snapshot().await?;
    let bytes = serde_json::to_vec(&snapshot).map_err(|e| ApiError::internal(&e))?;
    let dir = backup_dir(app);
    blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let checksum = hex_sha256(&bytes);
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        let created_at = Timestamp::now();
        let stamp = created_at
            .as_datetime()
            .format(time::macros::format_description!(
                "[year][month][day]_[hour][minute][second]"
            ))
            .map_err(std::io::Error::other)?;
        for n in 1..=10_000u32 {
            let id = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}_{n}")
            };
            let meta = BackupMeta {
                backup_id: id.clone(),
                created_at,
                description: description.clone(),
                size_bytes: bytes.len() as u64,
                checksum: checksum.clone(),
            };
            let mut file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(meta_path(&dir, &id))
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            tmp.persist(data_path(&dir, &id)).map_err(|e| e.error)?;
            file.write_all(&serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            return Ok(meta);
        }
        Err(std::io::Error::other("no free backup id in this second"))
    })
    .await
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    caller.require_admin()
}

/// A JSON object body, required (FastAPI's 422 for a missing body).
fn object_body(body: &RawBody) -> Result<serde_json::Map<String, Value>, ApiError> {
    match body.json()? {
        Value::Object(map) => Ok(map),
        other => Err(validation_items(vec![item(
            "model_attributes_type",
            vec![Value::from("body")],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        )])),
    }
}

/// `POST /api/v1/backup/create` `{"description"?}`: 201 with the id and size.
pub(crate) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let map = object_body(&body)?;
    let description = match map.get("description") {
        None | Some(Value::Null) => "Full database backup".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(validation_items(vec![item(
                "string_type",
                vec![Value::from("body"), Value::from("description")],
                "Input should be a valid string",
                other.clone(),
            )]))
        }
    };
    let meta = take_backup(&app, description).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "backup_id": meta.backup_id,
            "message": "Backup created successfully",
            "size_bytes": meta.size_bytes,
        })),
    )
        .into_response())
}

/// `GET /api/v1/backup/list`: newest first.
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let dir = backup_dir(&app);
    let items = blocking(move || {
        let mut metas = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".meta.json").filter(|id| valid_id(id)) {
                if let Some(m) = read_meta(&dir, id)? {
                    metas.push(m);
                }
            }
        }
        metas.sort_by(|a, b| {
            (b.created_at, b.backup_id.len(), &b.backup_id).cmp(&(
                a.created_at,
                a.backup_id.len(),
                &a.backup_id,
            ))
        });
        Ok(metas.iter().map(|m| item_json(m, &dir)).collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(Value::Array(items)))
}

/// `GET /api/v1/backup/{id}`.
pub(crate) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    if id == "scheduler" {
        return Err(ApiError::not_found(
            "Not Found: the scheduler's status is at /api/v1/backup/scheduler/status",
        ));
    }
    if !valid_id(&id) {
        return Err(not_found(&id));
    }
    let dir = backup_dir(&app);
    let found = {
        let (dir, id) = (dir.clone(), id.clone());
        blocking(move || Ok(read_meta(&dir, &id)?.map(|m| item_json(&m, &dir)))).await?
    };
    found.map(Json).ok_or_else(|| not_found(&id))
}

/// `DELETE /api/v1/backup/{id}`: 204, empty body.
pub(crate) async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if !valid_id(&id) {
        return Err(not_found(&id));
    }
    let dir = backup_dir(&app);
    let existed = {
        let id = id.clone();
        blocking(move || {
            let existed = match std::fs::remove_file(meta_path(&dir, &id)) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(data_path(&dir, &id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(existed)
        })
        .await?
    };
    if !existed {
        return Err(not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/backup/{id}/restore` `{"verify_checksum"?: bool}` (default true): the
/// store is replaced at once, atomically; a missing or damaged file is a 400 and changes
/// nothing.
pub(crate) async fn restore(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let map = object_body(&body)?;
    let verify = match map.get("verify_checksum") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(validation_items(vec![item(
                "bool_type",
                vec![Value::from("body"), Value::from("verify_checksum")],
                "Input should be a valid boolean",
                other.clone(),
            )]))
        }
    };
    if !valid_id(&id) {
        return Err(not_found(&id));
    }
    let dir = backup_dir(&app);
    let loaded = {
        let id = id.clone();
        blocking(move || {
            let Some(meta) = read_meta(&dir, &id)? else {
                return Ok(None);
            };
            let bytes = match std::fs::read(data_path(&dir, &id)) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Some(Err("Backup file missing".to_owned())))
                }
                Err(e) => return Err(e),
            };
            if verify && hex_sha256(&bytes) != meta.checksum {
                return Ok(Some(Err("Checksum mismatch".to_owned())));
            }
            Ok(Some(
                serde_json::from_slice::<StoreSnapshot>(&bytes)
                    .map_err(|e| format!("Backup file unreadable: {e}")),
            ))
        })
        .await?
    };
    let snapshot = match loaded {
        None => return Err(not_found(&id)),
        Some(Err(why)) => {
            return Err(
                ApiError::bad_request(format!("Cannot restore: {why}")).with_field("backup_id")
            )
        }
        Some(Ok(s)) => s,
    };
    let report = app
        .store
        .restore_snapshot(snapshot)
        .await
        .map_err(|e| match e {
            goodies_store::StoreError::Invalid(why) => {
                ApiError::bad_request(format!("Cannot restore: {why}")).with_field("backup_id")
            }
            other => ApiError::from(other),
        })?;
    tracing::info!(
        backup_id = %id,
        entities = report.entities,
        relationships = report.relationships,
        mark = report.mark.seq,
        "store restored from backup"
    );
    Ok(Json(json!({
        "message": "Database restored successfully from backup",
        "backup_id": id,
        "restored_entities": report.entities,
        "restored_relationships": report.relationships,
    })))
}

/// `GET /api/v1/backup/scheduler/status`: this server has no backup scheduler.
pub(crate) async fn scheduler_status(caller: Caller) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(json!({
        "enabled": false,
        "running": false,
        "interval_hours": 24,
        "retention_days": 30,
        "max_count": 10,
        "next_backup": null,
        "next_cleanup": null,
    })))
}

/// `POST /api/v1/backup/scheduler/trigger`: a backup now (201, no `size_bytes`).
pub(crate) async fn scheduler_trigger(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let meta = take_backup(&app, "Manually triggered backup".to_owned()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "backup_id": meta.backup_id,
            "message": "Backup triggered successfully",
        })),
    )
        .into_response())
}

/// 400 `INVALID_SYNC_STATE` for a cursor or watermark issued before the last restore
/// (PROTOCOL §9.2): the client clears both and pulls in full, keeping its pending changes.
pub(crate) async fn refuse_pre_restore_position(
    app: &AppInner,
    cursor: Option<Seq>,
    since: Option<Timestamp>,
) -> Result<(), ApiError> {
    if cursor.is_none() && since.is_none() {
        return Ok(());
    }
    refuse_position_at(&app.store.head().await?, cursor, since)
}

/// [`refuse_pre_restore_position`] against a head of the store already read.
pub(crate) fn refuse_position_at(
    head: &goodies_store::StoreHead,
    cursor: Option<Seq>,
    since: Option<Timestamp>,
) -> Result<(), ApiError> {
    if cursor.is_none() && since.is_none() {
        return Ok(());
    }
    match head.restore_mark {
        Some(mark) if mark.predates(cursor, since) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSyncState,
            "the store was restored from a backup after this sync position was issued; clear the cursor and watermark and pull in full",
        )
        .with_field(if cursor.is_some_and(|c| c <= mark.seq) {
            "cursor"
        } else {
            "filters.since"
        })),
        // Behind the history horizon (PROTOCOL §15.3): history this position may rest on
        // was pruned, so the same answer: pull in full.
        _ => match head.horizon {
            Some(h) if h.predates(cursor, since) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidSyncState,
                "this sync position is behind the history horizon (older history was pruned); clear the cursor and watermark and pull in full",
            )
            .with_field(if cursor.is_some_and(|c| c <= h.seq) {
                "cursor"
            } else {
                "filters.since"
            })),
            _ => Ok(()),
        },
    }
}

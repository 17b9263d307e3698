//! The assistant tool endpoints (`/api/v1/mcp/tools`): list, describe and call the tools
//! of `goodies-tools` over the server's store. Reads need any valid token; the writing
//! tools need a write token and go through the same one-transaction push as a sync
//! push, so their versions reach every client and meet the conflict rule there.

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::Json;
use goodies_store::{GraphRead, PushBatch, RelationshipOutcome};
use goodies_tools::{GraphWrite, ToolError, Toolbox};
use inbetweenies_proto::{
    ChangeType, Entity, EntityChange, EntityId, EntityType, JsonObject, Relationship,
    RelationshipChange, RelationshipId, RelationshipType, SourceType, SyncChange, Timestamp,
    Version,
};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::state::AppState;

/// The device id recorded for pushes made by the tools.
const MCP_DEVICE: &str = "mcp";

/// `GET /api/v1/mcp/tools`: every tool with its JSON-schema parameters.
pub(crate) async fn list(_caller: Caller) -> Json<Value> {
    let tools = goodies_tools::tools();
    Json(json!({"tools": tools, "count": tools.len()}))
}

/// `GET /api/v1/mcp/tools/{name}`: one tool's definition; 404 for an unknown name.
pub(crate) async fn describe(
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let spec = goodies_tools::tool(&name)
        .ok_or_else(|| ApiError::not_found(format!("Tool '{name}' not found")))?;
    Ok(Json(json!(spec)))
}

/// `POST /api/v1/mcp/tools/{name}` `{"arguments": {...}}`: `{"success": true, "result": …}`,
/// or 400 with the tool's error as `detail` (unknown tool, bad arguments, unknown id), 403
/// for a writing tool without write permission, 422 when `arguments` is not an object.
pub(crate) async fn execute(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let arguments = arguments_of(&value)?;
    let spec = goodies_tools::tool(&name)
        .ok_or_else(|| tool_error(ToolError::UnknownTool(name.clone())))?;
    if spec.writes() {
        caller.require_write()?;
    }
    let writer = ServerWriter {
        app: &app,
        user_id: caller.0.sub.clone(),
    };
    let graph: &dyn GraphRead = app.store.as_ref();
    let result = Toolbox::new(graph, Some(&writer))
        .call(&name, arguments)
        .await
        .map_err(tool_error)?;
    tracing::info!(tool = %name, "tool called");
    Ok(Json(json!({"success": true, "result": result})))
}

/// The `arguments` object of a call body, else FastAPI's 422.
fn arguments_of(body: &Value) -> Result<&JsonObject, ApiError> {
    let (kind, msg, input) = match body {
        Value::Object(map) => match map.get("arguments") {
            Some(Value::Object(args)) => return Ok(args),
            Some(other) => ("dict_type", "Input should be a valid dictionary", other),
            None => ("missing", "Field required", body),
        },
        other => (
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            other,
        ),
    };
    let loc = if kind == "model_attributes_type" {
        json!(["body"])
    } else {
        json!(["body", "arguments"])
    };
    Err(ApiError::validation(
        json!([{"type": kind, "loc": loc, "msg": msg, "input": input}]),
        format!("arguments: {}", msg.to_lowercase()),
        Some("arguments".to_owned()),
    ))
}

/// A tool error as an HTTP answer: the caller's mistakes are 400 with the message as
/// `detail` (and the argument as `field` where there is one).
fn tool_error(e: ToolError) -> ApiError {
    let field = match &e {
        ToolError::MissingArgument { argument, .. }
        | ToolError::InvalidArgument { argument, .. } => Some((*argument).to_owned()),
        ToolError::UnexpectedArgument { argument, .. } => Some(argument.clone()),
        _ => None,
    };
    match e {
        ToolError::Store(s) => ApiError::from(s),
        ToolError::Write(w) => ApiError::internal(w.as_ref()),
        caller_error => {
            let mut err = ApiError::bad_request(caller_error.to_string());
            if let Some(f) = field {
                err = err.with_field(f);
            }
            err
        }
    }
}

/// An edge endpoint changed between the check and the push.
#[derive(Debug, thiserror::Error)]
#[error("an endpoint of the relationship changed meanwhile")]
struct EndpointChanged;

/// A stored row the push just wrote cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("the version just written is missing")]
struct WrittenRowMissing;

/// The tools' writes on the server: one push each, through the sync push path.
struct ServerWriter<'a> {
    app: &'a AppState,
    user_id: String,
}

impl ServerWriter<'_> {
    async fn push(
        &self,
        user_id: &str,
        change: SyncChange,
    ) -> Result<goodies_store::PushOutcome, ToolError> {
        Ok(self
            .app
            .store
            .apply_push(PushBatch {
                device_id: MCP_DEVICE.to_owned(),
                user_id: user_id.to_owned(),
                changes: vec![change],
            })
            .await?)
    }

    async fn written(&self, id: &EntityId, version: &Version) -> Result<Entity, ToolError> {
        self.app
            .store
            .entity_version(id, version)
            .await?
            .ok_or_else(|| ToolError::Write(Box::new(WrittenRowMissing)))
    }
}

#[async_trait]
impl GraphWrite for ServerWriter<'_> {
    async fn create_entity(
        &self,
        entity_type: EntityType,
        name: String,
        content: JsonObject,
    ) -> Result<Entity, ToolError> {
        let id = EntityId::new_random();
        let version = Version::generate(Timestamp::now(), &self.user_id);
        let change = EntityChange {
            id: id.clone(),
            version: version.clone(),
            entity_type,
            name,
            content,
            source_type: SourceType::Manual,
            user_id: self.user_id.clone(),
            parent_versions: Vec::new(),
            checksum: None,
            created_at: None,
            updated_at: None,
        };
        self.push(
            &self.user_id,
            SyncChange {
                change_type: ChangeType::Create,
                entity: Some(change),
                relationships: Vec::new(),
            },
        )
        .await?;
        self.written(&id, &version).await
    }

    async fn update_entity(
        &self,
        latest: &Entity,
        name: String,
        content: JsonObject,
        user_id: &str,
    ) -> Result<Entity, ToolError> {
        let mut change = EntityChange::from_entity(latest);
        change.name = name;
        change.content = content;
        change.user_id = user_id.to_owned();
        change.version = Version::generate(Timestamp::now(), user_id);
        change.parent_versions = vec![latest.version.clone()];
        let (id, version) = (change.id.clone(), change.version.clone());
        self.push(
            user_id,
            SyncChange {
                change_type: ChangeType::Update,
                entity: Some(change),
                relationships: Vec::new(),
            },
        )
        .await?;
        self.written(&id, &version).await
    }

    async fn create_relationship(
        &self,
        from: &Entity,
        to: &Entity,
        relationship_type: RelationshipType,
        properties: JsonObject,
    ) -> Result<Relationship, ToolError> {
        let id = RelationshipId::new_random();
        let rel = RelationshipChange {
            id: id.clone(),
            from_entity_id: from.id.clone(),
            from_entity_version: from.version.clone(),
            to_entity_id: to.id.clone(),
            to_entity_version: to.version.clone(),
            relationship_type,
            properties,
            user_id: Some(self.user_id.clone()),
            created_at: None,
            updated_at: None,
        };
        let outcome = self
            .push(
                &self.user_id,
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
            return Err(ToolError::Write(Box::new(EndpointChanged)));
        }
        self.app
            .store
            .relationship(&id)
            .await?
            .ok_or_else(|| ToolError::Write(Box::new(WrittenRowMissing)))
    }
}

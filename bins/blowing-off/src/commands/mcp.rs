//! `blowing-off mcp`: the house-graph tools (`goodies-tools`) for an assistant, as a
//! Model Context Protocol server on stdin/stdout. Reads answer from the local mirror, so
//! they work with no server; writes are local edits (new versions plus outbox entries)
//! that reach the server at the next sync, here every `--sync-every` seconds while
//! connected. Nothing but protocol messages goes to stdout; logs go to stderr.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use goodies_client::{BlowingOffClient, Entity, EntityType, JsonObject, Relationship};
use goodies_store::GraphRead;
use goodies_tools::{GraphWrite, ToolError, Toolbox};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};

use crate::exit::Exit;

/// `blowing-off mcp` options.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (an assistant starts it; see docs/CLIENT.md):\n  \
    blowing-off --db ~/home.db mcp --sync-every 60"
)]
pub struct Args {
    /// Sync with the server every this many seconds while serving (0: never; local edits
    /// then wait for the next `blowing-off sync`).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub sync_every: u64,
}

/// Serves the tools on stdio until the assistant closes the connection.
pub async fn run(client: &BlowingOffClient, args: Args) -> anyhow::Result<Exit> {
    let background = (args.sync_every > 0)
        .then(|| client.start_background_sync(Duration::from_secs(args.sync_every)));
    let service = GraphTools {
        client: client.clone(),
    }
    .serve(rmcp::transport::stdio())
    .await
    .context("cannot start the tool server on stdio")?;
    let ended = service.waiting().await;
    if let Some(bg) = background {
        bg.stop().await;
    }
    ended.context("the tool server stopped with an error")?;
    Ok(Exit::Ok)
}

/// The MCP server: the shared tools over this client's mirror.
#[derive(Clone, Debug)]
struct GraphTools {
    client: BlowingOffClient,
}

/// The catalog as MCP tools (writers marked as such).
fn mcp_tools() -> Vec<Tool> {
    goodies_tools::tools()
        .iter()
        .map(|t| {
            let schema = t.parameters.as_object().cloned().unwrap_or_default();
            let mut tool = Tool::new(t.name.clone(), t.description.clone(), Arc::new(schema));
            tool.annotations = Some(ToolAnnotations::new().read_only(!t.writes()));
            tool
        })
        .collect()
}

impl ServerHandler for GraphTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "blowing-off",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "The Goodies house graph (homes, rooms, devices, procedures, manuals, \
                 automations) from the local mirror. Reads work offline; writes are queued \
                 and reach the server at the next sync.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(mcp_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if goodies_tools::tool(&request.name).is_none() {
            return Err(ErrorData::invalid_params(
                format!("Unknown tool: {}", request.name),
                None,
            ));
        }
        let arguments = request.arguments.unwrap_or_default();
        let writer = ClientWriter {
            client: &self.client,
        };
        let graph: &dyn GraphRead = self.client.store().as_ref();
        let answer = Toolbox::new(graph, Some(&writer))
            .call(&request.name, &arguments)
            .await;
        Ok(match answer {
            Ok(result) => CallToolResult::structured(result),
            Err(e) => {
                if !e.is_caller_error() {
                    tracing::error!(tool = %request.name, error = %goodies_client::error_chain(&e), "tool failed");
                }
                CallToolResult::error(vec![ContentBlock::text(goodies_client::error_chain(&e))])
            }
        }
        .into())
    }
}

/// The tools' writes on the client: local edits, each a new version and an outbox entry.
/// Versions are by the mirror's user (`update_entity`'s `user_id` argument is not used).
struct ClientWriter<'a> {
    client: &'a BlowingOffClient,
}

fn write_error(e: goodies_client::ClientError) -> ToolError {
    ToolError::Write(Box::new(e))
}

#[async_trait]
impl GraphWrite for ClientWriter<'_> {
    async fn create_entity(
        &self,
        entity_type: EntityType,
        name: String,
        content: JsonObject,
    ) -> Result<Entity, ToolError> {
        self.client
            .create_entity(entity_type, &name, content)
            .await
            .map_err(write_error)
    }

    async fn update_entity(
        &self,
        latest: &Entity,
        name: String,
        content: JsonObject,
        _user_id: &str,
    ) -> Result<Entity, ToolError> {
        self.client
            .update_entity(&latest.id, Some(&name), Some(content))
            .await
            .map_err(write_error)
    }

    async fn create_relationship(
        &self,
        from: &Entity,
        to: &Entity,
        relationship_type: goodies_client::RelationshipType,
        properties: JsonObject,
    ) -> Result<Relationship, ToolError> {
        self.client
            .relate(&from.id, &to.id, relationship_type, properties)
            .await
            .map_err(write_error)
    }
}

//! The house-graph tools for assistants, implemented once and shared by the server
//! (`POST /api/v1/mcp/tools/{name}`) and the client (`blowing-off mcp`, over its local
//! mirror).
//!
//! - [`catalog`]: the twelve tools with their JSON-schema parameters, as listed to callers.
//! - [`Toolbox`]: each tool's logic over [`goodies_store::GraphRead`] for reads and a
//!   [`GraphWrite`] for the three writing tools (`create_entity`, `create_relationship`,
//!   `update_entity`). [`Toolbox::call`] checks a call's arguments against the catalog and
//!   answers the tool's typed result ([`results`]) as JSON.
//! - [`ToolError`]: what the caller did wrong (unknown tool, missing or unexpected
//!   argument, unknown id or type, a relationship the rules refuse) or what failed below.
//!
//! Tombstoned entities are not found and never listed. This crate does no I/O of its own
//! and knows no transport: no HTTP, no MCP, no SQL.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
pub mod catalog;
mod error;
pub mod results;
pub mod rules;
pub mod text;
mod toolbox;

pub use catalog::{tool, tools, ToolSpec, WRITE_TOOLS};
pub use error::ToolError;
pub use toolbox::{GraphWrite, Toolbox, MAX_DEPTH, MAX_LIMIT};

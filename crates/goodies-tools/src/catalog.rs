//! The tool catalog: each tool's name, description and JSON-schema parameters, exactly as
//! the reference server lists them at `GET /api/v1/mcp/tools`.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tool as listed: name, description, JSON-schema `parameters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's name (the path segment and the MCP tool name).
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// A JSON schema of type `object` for the arguments.
    pub parameters: Value,
}

impl ToolSpec {
    /// Whether the tool writes to the graph.
    pub fn writes(&self) -> bool {
        WRITE_TOOLS.contains(&self.name.as_str())
    }
}

/// The tools that write (new entity versions or relationships).
pub const WRITE_TOOLS: &[&str] = &["create_entity", "create_relationship", "update_entity"];

/// The catalog in listing order.
pub fn tools() -> &'static [ToolSpec] {
    static TOOLS: OnceLock<Vec<ToolSpec>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        serde_json::from_str(include_str!("catalog.json"))
            .expect("the built-in tool catalog is valid JSON")
    })
}

/// One tool by name.
pub fn tool(name: &str) -> Option<&'static ToolSpec> {
    tools().iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_tools_each_an_object_schema_and_three_writers() {
        let names: Vec<&str> = tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "get_devices_in_room",
                "find_device_controls",
                "get_room_connections",
                "search_entities",
                "create_entity",
                "create_relationship",
                "find_path",
                "get_entity_details",
                "find_similar_entities",
                "get_procedures_for_device",
                "get_automations_in_room",
                "update_entity",
            ]
        );
        for t in tools() {
            assert_eq!(t.parameters["type"], "object", "{}", t.name);
            assert!(t.parameters["required"].is_array(), "{}", t.name);
        }
        let writers: Vec<&str> = tools()
            .iter()
            .filter(|t| t.writes())
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(writers, WRITE_TOOLS);
        assert!(tool("turn_on_everything").is_none());
    }
}

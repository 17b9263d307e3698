//! Why a tool call failed: the caller's mistake (a 400 on the server, a tool error over
//! MCP) or the store's.

use goodies_store::StoreError;

/// A failed tool call. Every variant but [`ToolError::Store`] and [`ToolError::Write`] is
/// the caller's mistake; its `Display` text is the message the caller reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No tool has this name.
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    /// A required argument is absent.
    #[error("{tool}() missing 1 required argument: '{argument}'")]
    MissingArgument {
        /// The tool called.
        tool: &'static str,
        /// The argument it needs.
        argument: &'static str,
    },
    /// An argument the tool does not take.
    #[error("{tool}() got an unexpected keyword argument '{argument}'")]
    UnexpectedArgument {
        /// The tool called.
        tool: &'static str,
        /// The argument sent.
        argument: String,
    },
    /// An argument of the wrong JSON type or out of range.
    #[error("{tool}() argument '{argument}': {problem}")]
    InvalidArgument {
        /// The tool called.
        tool: &'static str,
        /// The argument.
        argument: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An entity type outside the vocabulary.
    #[error("'{0}' is not a valid EntityType")]
    UnknownEntityType(String),
    /// A relationship type outside the vocabulary.
    #[error("'{0}' is not a valid RelationshipType")]
    UnknownRelationshipType(String),
    /// The id names no live entity of the kind the tool needs (e.g. "Room … not found").
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked for: "Room", "Device", "Entity", "From entity", "To entity".
        kind: &'static str,
        /// The id given.
        id: String,
    },
    /// The relationship type does not join these two entity types.
    #[error("Invalid relationship: {from_type} cannot have {relationship_type} relationship to {to_type}")]
    InvalidRelationship {
        /// The source's type.
        from_type: String,
        /// The relationship type.
        relationship_type: String,
        /// The target's type.
        to_type: String,
    },
    /// This side cannot write (a read-only toolbox).
    #[error("writes are not available here")]
    ReadOnly,
    /// The graph store failed.
    #[error("the graph store failed")]
    Store(#[source] StoreError),
    /// The writer failed for a reason of its own (e.g. the client's local database).
    #[error("the write failed")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ToolError {
    /// Whether the caller caused the failure (bad name, arguments or ids), as opposed to
    /// the store or the writer.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, ToolError::Store(_) | ToolError::Write(_))
    }
}

impl From<StoreError> for ToolError {
    fn from(e: StoreError) -> Self {
        ToolError::Store(e)
    }
}

//! Wire types and codecs of the Inbetweenies sync protocol (inbetweenies-v2). No I/O.
//!
//! This crate is the vocabulary every other Goodies crate speaks:
//!
//! - the graph's domain types ([`Entity`], [`Relationship`], and the open enums
//!   [`EntityType`], [`SourceType`], [`RelationshipType`], whose unknown values
//!   round-trip unchanged);
//! - the wire messages of one `POST /api/v1/sync/` round trip ([`SyncRequest`],
//!   [`SyncResponse`], [`SyncChange`], [`EntityChange`], [`RelationshipChange`],
//!   [`ConflictInfo`], [`SyncStats`], [`SyncFilters`], [`VectorClockWire`],
//!   [`Cursor`]) and the seeds' five-step messages ([`flow`]);
//! - version strings ([`Version`]) and wire timestamps ([`Timestamp`]);
//! - the JSON error body ([`ErrorBody`], [`ErrorCode`]);
//! - content checksums ([`checksum`]), gzip and HMAC helpers ([`codec`]);
//! - validation that turns a bad body into a [`ValidationError`] naming each
//!   bad field ([`validate`]).
//!
//! The specification is `docs/PROTOCOL.md` in the repository.
//!
//! # Example
//!
//! Build a request that pushes one new room, then read a server's answer:
//!
//! ```
//! use inbetweenies_proto::*;
//!
//! let room = EntityChange {
//!     id: EntityId::new_random(),
//!     version: Version::now("alice"),
//!     entity_type: EntityType::Room,
//!     name: "Kitchen".into(),
//!     content: serde_json::json!({"floor": 1}).as_object().unwrap().clone(),
//!     source_type: SourceType::Manual,
//!     user_id: "alice".into(),
//!     parent_versions: vec![],
//!     checksum: None,
//!     created_at: None,
//!     updated_at: None,
//! };
//! let mut request = SyncRequest::new("phone-1", "alice", SyncType::Delta);
//! request.changes.push(SyncChange {
//!     change_type: ChangeType::Create,
//!     entity: Some(room.clone()),
//!     relationships: vec![],
//! });
//! let body = serde_json::to_string(&request).unwrap();
//! assert!(body.starts_with(r#"{"protocol_version":"inbetweenies-v2""#));
//!
//! // What the server answers: the room is acknowledged by id.
//! let answer = format!(r#"{{
//!   "protocol_version": "inbetweenies-v2", "sync_type": "delta",
//!   "changes": [], "conflicts": [], "vector_clock": {{"clocks": {{}}}},
//!   "cursor": null,
//!   "state_digest": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
//!   "sync_stats": {{"entities_synced": 1, "relationships_synced": 0,
//!                   "conflicts_resolved": 0, "duration_ms": 1.5}},
//!   "server_time": "2026-06-15T09:41:02.581234+00:00",
//!   "applied": ["{}"], "applied_relationships": []
//! }}"#, room.id);
//! let response: SyncResponse = serde_json::from_str(&answer).unwrap();
//! assert_eq!(response.applied, vec![room.id]);
//! assert!(response.cursor.is_none());
//! // The next pull's watermark is the server's time, never the client's clock.
//! assert_eq!(response.server_time.to_string(), "2026-06-15T09:41:02.581234+00:00");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
pub mod codec;
pub mod error;
pub mod flow;
mod ids;
mod model;
mod timestamp;
pub mod validate;
mod version;
mod wire;

pub use error::{
    CodecError, CursorError, ErrorBody, ErrorCode, ErrorInfo, FieldError, FieldErrorKind,
    FieldPath, PathSegment, TimestampError, ValidationError, VersionError,
};
pub use ids::{EntityId, RelationshipId};
pub use model::{
    is_tombstone, Entity, EntityType, JsonObject, Relationship, RelationshipType, SourceType,
    DELETED_KEY,
};
pub use timestamp::Timestamp;
pub use version::{Version, VersionParts};
pub use wire::{
    capability, ChangeType, ConflictInfo, Cursor, EntityChange, RelationshipChange, SyncChange,
    SyncFilters, SyncRequest, SyncResponse, SyncStats, SyncType, VectorClockWire, PROTOCOL_VERSION,
};

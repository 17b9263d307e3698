//! Conflict resolution, vector clocks and convergence digests for Inbetweenies: pure and synchronous.
//!
//! The server runs this crate to arbitrate pushes; the client runs it to
//! explain outcomes and to settle conflicts queued for manual review. Nothing
//! here does I/O or reads a clock: the caller passes "now".
//!
//! - **The canonical rule** ([`decide`]): a version whose parent is the
//!   current latest is a fast-forward; otherwise, edit times (clamped to
//!   `now + skew_allowance` so a clock from the future cannot win) within
//!   1 s are broken by a lone tombstone, then by the lexically greater
//!   version; else the newer edit wins. Swapping the arguments only swaps
//!   the labels.
//! - **Strategies per entity type** ([`resolve`], [`ResolverConfig`]):
//!   last-write-wins, three-way merge over the `parent_versions` DAG
//!   ([`Ancestry`]), manual review, or a [`CustomResolver`]. The outcome
//!   ([`Resolution`]) names the winner, the reason and the strategy, and
//!   turns into the wire's [`ConflictInfo`](inbetweenies_proto::ConflictInfo)
//!   with the reference's wording ([`conflict_info`]).
//! - **Vector clocks** ([`VectorClock`]) that read and write the wire's
//!   `vector_clock`.
//! - **Convergence**: [`state_digest`] (byte-identical to the Python
//!   reference's), its streaming form [`DigestBuilder`], and a [`MerkleTree`]
//!   that finds exactly which ids two parties disagree on in at most `depth`
//!   round trips.
//!
//! # Example
//!
//! A phone pushes an edit made from a stale parent; the server's latest was
//! edited two seconds earlier, so the phone's newer edit wins:
//!
//! ```
//! use inbetweenies_conflict::{conflict_info, resolve, NoAncestry, Reason, Resolution, ResolverConfig, Side};
//! use inbetweenies_proto::{Entity, EntityType, SourceType, Timestamp, Version};
//!
//! fn room(version: &str, parent: Option<&str>, floor: u64) -> Entity {
//!     let v = Version::new(version);
//!     let at = v.timestamp().unwrap();
//!     Entity {
//!         id: "room-1".into(),
//!         version: v,
//!         entity_type: EntityType::Room,
//!         name: "Kitchen".into(),
//!         content: serde_json::json!({ "floor": floor }).as_object().unwrap().clone(),
//!         source_type: SourceType::Manual,
//!         user_id: "alice".into(),
//!         parent_versions: parent.map(Version::new).into_iter().collect(),
//!         created_at: at,
//!         updated_at: at,
//!     }
//! }
//!
//! let v1 = "2026-06-15T09:00:00.000000+00:00-000001-alice";
//! let server = room("2026-06-15T09:41:00.000000+00:00-000002-tablet", Some(v1), 2);
//! let client = room("2026-06-15T09:41:02.000000+00:00-000003-phone", Some(v1), 3);
//! let now = Timestamp::parse("2026-06-15T09:45:00+00:00").unwrap();
//!
//! let outcome = resolve(&server, &client, now, &ResolverConfig::default(), &NoAncestry);
//! assert!(matches!(
//!     outcome,
//!     Resolution::Winner { winner: Side::Client, reason: Reason::NewerOnClient, .. }
//! ));
//!
//! let report = conflict_info(&server, &client, &outcome).unwrap();
//! assert_eq!(report.resolution_strategy, "remote has newer timestamp");
//! assert_eq!(report.reason.as_deref(), Some("newer_on_client"));
//! assert_eq!(report.resolved_version, client.version);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ancestry;
mod digest;
mod error;
mod merge;
pub mod merkle;
mod resolve;
mod rule;
mod vclock;

pub use ancestry::{common_ancestor, Ancestry, MapAncestry, NoAncestry};
pub use digest::{state_digest, DigestBuilder, EMPTY_DIGEST};
pub use error::{CompareError, DigestError, MerkleError, VectorClockError};
pub use merge::{merge_version, three_way_merge, MergeOutcome};
pub use merkle::{
    diff_rows, diff_trees, differing_leaves, empty_hash, hash_children, hash_leaf, leaf_of,
    MerkleTree, NodeHash, NodeId, DEFAULT_DEPTH, FANOUT,
};
pub use resolve::{
    conflict_info, resolve, resolve_manual, CustomChoice, CustomInput, CustomResolver, Fallback,
    ManualChoice, Resolution, Resolver, ResolverConfig, Strategy,
};
pub use rule::{
    decide, is_fast_forward, is_timestamped, ordering_time, rule_wording, Clamped, Decision,
    Reason, Side, DEFAULT_SKEW_ALLOWANCE, TIEBREAK_WINDOW_MICROS,
};
pub use vclock::{ClockOrdering, VectorClock};

//! Property tests: every wire type survives JSON and back unchanged, and versions and timestamps keep their parts and order.

use std::collections::BTreeMap;
use std::fmt::Debug;

use inbetweenies_proto::flow::*;
use inbetweenies_proto::validate::parse_sync_request;
use inbetweenies_proto::*;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The last microsecond of year 9999.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

// ---------------------------------------------------------------------------
// Strategies.

fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (0..=MAX_MICROS).prop_map(|m| Timestamp::from_unix_micros(m).expect("in range"))
}

/// User ids as they occur: short, often with dashes, sometimes not ASCII.
fn arb_user() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,15}",
        "\\PC{1,12}",
        Just("blowing-off-cli".to_owned()),
    ]
}

fn arb_version() -> impl Strategy<Value = Version> {
    (arb_timestamp(), arb_user()).prop_map(|(t, u)| Version::generate(t, &u))
}

/// Any string is carried as a version (the wire treats it as opaque).
fn arb_any_version() -> impl Strategy<Value = Version> {
    prop_oneof![arb_version(), "\\PC{0,40}".prop_map(Version::new)]
}

fn arb_entity_id() -> impl Strategy<Value = EntityId> {
    prop_oneof![
        Just(()).prop_map(|_| EntityId::new_random()),
        "[a-z0-9][a-z0-9-]{0,20}".prop_map(EntityId::new),
        "\\PC{1,20}".prop_filter_map("not blank", |s| {
            (!s.trim().is_empty()).then(|| EntityId::new(s))
        }),
    ]
}

fn arb_relationship_id() -> impl Strategy<Value = RelationshipId> {
    arb_entity_id().prop_map(|id| RelationshipId::new(id.into_string()))
}

/// Floats of at most 15 significant digits. serde_json, as the workspace
/// configures it (without its `float_roundtrip` feature), may read a float
/// with more digits back one ULP off.
fn arb_float() -> impl Strategy<Value = f64> {
    (-999_999_999_999_999_i64..=999_999_999_999_999, 0..=22_i32)
        .prop_map(|(m, k)| m as f64 / 10f64.powi(k))
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_float().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = JsonObject> {
    prop::collection::vec(("\\PC{0,10}", arb_json()), 0..5).prop_map(|kv| kv.into_iter().collect())
}

macro_rules! arb_open_enum {
    ($name:ident, $t:ty) => {
        /// A known value, or any string (which reads as `Other` unless it is a known one).
        fn $name() -> impl Strategy<Value = $t> {
            prop_oneof![
                prop::sample::select(<$t>::KNOWN.to_vec()),
                "\\PC{0,16}".prop_map(|s| <$t>::parse(&s)),
            ]
        }
    };
}
arb_open_enum!(arb_entity_type, EntityType);
arb_open_enum!(arb_source_type, SourceType);
arb_open_enum!(arb_relationship_type, RelationshipType);

fn arb_sync_type() -> impl Strategy<Value = SyncType> {
    prop::sample::select(vec![
        SyncType::Full,
        SyncType::Delta,
        SyncType::Entities,
        SyncType::Relationships,
    ])
}

fn arb_change_type() -> impl Strategy<Value = ChangeType> {
    prop::sample::select(vec![
        ChangeType::Create,
        ChangeType::Update,
        ChangeType::Delete,
    ])
}

fn arb_entity_change() -> impl Strategy<Value = EntityChange> {
    (
        arb_entity_id(),
        arb_version(),
        arb_entity_type(),
        "\\PC{0,20}",
        arb_object(),
        arb_source_type(),
        arb_user(),
        prop::collection::vec(arb_any_version(), 0..3),
        prop::option::of("[0-9a-f]{64}"),
    )
        .prop_map(
            |(id, version, entity_type, name, content, source_type, user_id, parents, checksum)| {
                // A checksum, when sent, matches its content (a mismatch is refused).
                let checksum = checksum.map(|_: String| checksum::content_checksum(&content));
                EntityChange {
                    id,
                    version,
                    entity_type,
                    name,
                    content,
                    source_type,
                    user_id,
                    parent_versions: parents,
                    checksum,
                    created_at: None,
                    updated_at: None,
                }
            },
        )
}

fn arb_relationship_change() -> impl Strategy<Value = RelationshipChange> {
    (
        arb_relationship_id(),
        (arb_entity_id(), arb_any_version()),
        (arb_entity_id(), arb_any_version()),
        arb_relationship_type(),
        arb_object(),
        prop::option::of(arb_user()),
        prop::option::of(arb_timestamp()),
        prop::option::of(arb_timestamp()),
    )
        .prop_map(
            |(id, (from_id, from_v), (to_id, to_v), t, properties, user_id, created, updated)| {
                RelationshipChange {
                    id,
                    from_entity_id: from_id,
                    from_entity_version: from_v,
                    to_entity_id: to_id,
                    to_entity_version: to_v,
                    relationship_type: t,
                    properties,
                    user_id,
                    created_at: created,
                    updated_at: updated,
                }
            },
        )
}

fn arb_sync_change() -> impl Strategy<Value = SyncChange> {
    (
        arb_change_type(),
        prop::option::of(arb_entity_change()),
        prop::collection::vec(arb_relationship_change(), 0..3),
    )
        .prop_map(|(change_type, entity, relationships)| SyncChange {
            change_type,
            entity,
            relationships,
        })
}

fn arb_filters() -> impl Strategy<Value = SyncFilters> {
    (
        prop::option::of(prop::collection::vec(arb_entity_type(), 0..4)),
        prop::option::of(arb_timestamp()),
        prop::option::of(prop::collection::vec(arb_user(), 0..3)),
    )
        .prop_map(|(entity_types, since, modified_by)| SyncFilters {
            entity_types,
            since,
            modified_by,
        })
}

fn arb_vector_clock() -> impl Strategy<Value = VectorClockWire> {
    prop::collection::btree_map("\\PC{0,12}", "[0-9]{1,6}|\\PC{0,8}", 0..4)
        .prop_map(|clocks| VectorClockWire { clocks })
}

fn arb_cursor() -> impl Strategy<Value = Cursor> {
    prop_oneof![
        any::<u64>().prop_map(Cursor::from_seq),
        "\\PC{0,12}".prop_map(Cursor)
    ]
}

fn arb_sync_request() -> impl Strategy<Value = SyncRequest> {
    (
        "\\PC{0,16}",
        arb_user(),
        arb_sync_type(),
        prop::collection::vec(arb_sync_change(), 0..4),
        prop::option::of(arb_filters()),
        arb_vector_clock(),
        prop::option::of(arb_cursor()),
    )
        .prop_map(
            |(device_id, user_id, sync_type, changes, filters, vector_clock, cursor)| {
                let mut r = SyncRequest::new(device_id, user_id, sync_type);
                r.changes = changes;
                r.filters = filters;
                r.vector_clock = vector_clock;
                r.cursor = cursor;
                r
            },
        )
}

fn arb_conflict() -> impl Strategy<Value = ConflictInfo> {
    (
        arb_entity_id(),
        arb_version(),
        arb_version(),
        prop_oneof![
            Just("local has newer timestamp".to_owned()),
            Just("remote has newer timestamp".to_owned()),
            Just("timestamps within 1s, local has greater version".to_owned()),
            Just("timestamps within 1s, remote has greater version".to_owned()),
            "\\PC{0,30}",
        ],
        any::<bool>(),
        prop::option::of("[a-z_]{1,16}"),
    )
        .prop_map(|(entity_id, local, remote, strategy, remote_won, reason)| {
            let resolved_version = if remote_won {
                remote.clone()
            } else {
                local.clone()
            };
            ConflictInfo {
                entity_id,
                local_version: local,
                remote_version: remote,
                resolution_strategy: strategy,
                resolved_version,
                reason,
            }
        })
}

fn arb_stats() -> impl Strategy<Value = SyncStats> {
    (any::<u64>(), any::<u64>(), any::<u64>(), arb_float()).prop_map(|(e, r, c, d)| SyncStats {
        entities_synced: e,
        relationships_synced: r,
        conflicts_resolved: c,
        duration_ms: d,
    })
}

fn arb_sync_response() -> impl Strategy<Value = SyncResponse> {
    (
        arb_sync_type(),
        prop::collection::vec(arb_sync_change(), 0..4),
        prop::collection::vec(arb_conflict(), 0..3),
        arb_vector_clock(),
        prop::option::of(arb_cursor()),
        prop::option::of("[0-9a-f]{64}"),
        arb_stats(),
        arb_timestamp(),
        prop::collection::vec(arb_entity_id(), 0..4),
        prop::collection::vec(arb_relationship_id(), 0..4),
    )
        .prop_map(
            |(
                sync_type,
                changes,
                conflicts,
                vector_clock,
                cursor,
                state_digest,
                sync_stats,
                server_time,
                applied,
                applied_relationships,
            )| SyncResponse {
                protocol_version: PROTOCOL_VERSION.to_owned(),
                sync_type,
                changes,
                conflicts,
                vector_clock,
                cursor,
                state_digest,
                sync_stats,
                server_time,
                applied,
                applied_relationships,
                capabilities: None,
            },
        )
}

fn arb_flow_data() -> impl Strategy<Value = FlowData> {
    (
        "\\PC{0,16}",
        arb_object(),
        arb_source_type(),
        arb_user(),
        prop::collection::vec(arb_any_version(), 0..3),
        prop::option::of(arb_timestamp()),
    )
        .prop_map(
            |(name, content, source_type, user_id, parent_versions, updated_at)| FlowData {
                name,
                content,
                source_type,
                user_id,
                parent_versions,
                updated_at,
            },
        )
}

fn arb_flow_message() -> impl Strategy<Value = FlowMessage> {
    let request = (
        "\\PC{0,16}",
        prop::option::of(arb_timestamp()),
        prop::option::of(prop::collection::vec(arb_entity_type(), 0..3)),
        any::<bool>(),
        prop::option::of(arb_cursor()),
    )
        .prop_map(
            |(client_id, last_sync, entity_types, include_deleted, cursor)| {
                FlowMessage::SyncRequest(FlowSyncRequest {
                    client_id,
                    last_sync,
                    entity_types,
                    include_deleted,
                    cursor,
                })
            },
        );
    let change = (
        arb_entity_type(),
        arb_entity_id(),
        arb_change_type(),
        arb_flow_data(),
        arb_timestamp(),
        arb_version(),
    )
        .prop_map(
            |(entity_type, entity_id, operation, data, updated_at, sync_id)| FlowChange {
                entity_type,
                entity_id,
                operation,
                data,
                updated_at,
                sync_id,
            },
        );
    let delta = (
        arb_timestamp(),
        prop::collection::vec(change, 0..3),
        prop::collection::vec(arb_json(), 0..2),
        any::<bool>(),
        prop::option::of(arb_cursor()),
        prop::option::of("[0-9a-f]{64}"),
    )
        .prop_map(
            |(server_time, changes, conflicts, more, cursor, state_digest)| {
                FlowMessage::SyncDelta(FlowSyncDelta {
                    server_time,
                    changes,
                    conflicts,
                    more,
                    cursor,
                    state_digest,
                })
            },
        );
    let push_change = (
        arb_entity_type(),
        arb_entity_id(),
        arb_change_type(),
        arb_flow_data(),
        arb_version(),
    )
        .prop_map(
            |(entity_type, entity_id, operation, data, client_sync_id)| FlowPushChange {
                entity_type,
                entity_id,
                operation,
                data,
                client_sync_id,
            },
        );
    let push = (
        "\\PC{0,16}",
        prop::option::of(arb_user()),
        prop::collection::vec(push_change, 0..3),
    )
        .prop_map(|(client_id, user_id, changes)| {
            FlowMessage::SyncPush(FlowSyncPush {
                client_id,
                user_id,
                changes,
            })
        });
    let applied = (
        arb_version(),
        arb_version(),
        prop_oneof![
            Just("applied".to_owned()),
            Just("conflict".to_owned()),
            Just("rejected".to_owned())
        ],
    )
        .prop_map(|(client_sync_id, server_sync_id, status)| FlowApplied {
            client_sync_id,
            server_sync_id,
            status,
        });
    let conflict = (
        arb_entity_type(),
        arb_entity_id(),
        "[a-z_]{1,16}",
        arb_json(),
        arb_json(),
        prop_oneof![
            Just("server_wins".to_owned()),
            Just("client_wins".to_owned())
        ],
    )
        .prop_map(
            |(entity_type, entity_id, reason, server_version, client_version, resolution)| {
                FlowConflict {
                    entity_type,
                    entity_id,
                    reason,
                    server_version,
                    client_version,
                    resolution,
                }
            },
        );
    let result = (
        prop::collection::vec(applied, 0..3),
        prop::collection::vec(conflict, 0..2),
    )
        .prop_map(|(applied, conflicts)| {
            FlowMessage::SyncResult(FlowSyncResult {
                applied,
                conflicts,
                changes: Vec::new(),
            })
        });
    let ack = ("\\PC{0,16}", arb_timestamp()).prop_map(|(client_id, sync_completed_at)| {
        FlowMessage::SyncAck(FlowSyncAck {
            client_id,
            sync_completed_at,
        })
    });
    prop_oneof![request, delta, push, result, ack]
}

fn arb_error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        prop::sample::select(vec![
            ErrorCode::SyncConflict,
            ErrorCode::InvalidSyncState,
            ErrorCode::RateLimited,
            ErrorCode::AuthExpired,
            ErrorCode::InvalidRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Internal,
        ]),
        "[A-Z_]{0,20}".prop_map(|s| ErrorCode::parse(&s)),
    ]
}

fn arb_error_body() -> impl Strategy<Value = ErrorBody> {
    (
        arb_error_code(),
        "\\PC{0,30}",
        // `detail: null` reads back as no detail; null and absent mean the same.
        prop::option::of(arb_json().prop_filter("not null", |v| !v.is_null())),
        prop::option::of("[a-z_.\\[\\]0-9]{1,30}"),
    )
        .prop_map(|(code, message, detail, field)| {
            let mut b = ErrorBody::new(code, message);
            b.detail = detail;
            if let Some(f) = field {
                b = b.with_field(f);
            }
            b
        })
}

// ---------------------------------------------------------------------------
// Properties.

/// JSON text and JSON value both come back unchanged, and writing is stable.
fn round_trip<T>(x: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(x).expect("serialize");
    let back: T = serde_json::from_str(&text).expect("deserialize");
    prop_assert_eq!(&back, x, "{}", text);
    let value = serde_json::to_value(x).expect("to_value");
    let back: T = serde_json::from_value(value.clone()).expect("from_value");
    prop_assert_eq!(&back, x);
    prop_assert_eq!(serde_json::to_string(&back).expect("again"), text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sync_request(r in arb_sync_request()) {
        round_trip(&r)?;
        // Through validation too: what we write, we accept.
        let body = serde_json::to_vec(&r).expect("encode");
        let parsed = parse_sync_request(&body);
        prop_assert_eq!(parsed.as_ref(), Ok(&r));
    }

    #[test]
    fn sync_response(r in arb_sync_response()) {
        round_trip(&r)?;
        // Keys in the reference's order.
        let v = serde_json::to_value(&r).expect("value");
        let keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
        prop_assert_eq!(keys, [
            "protocol_version", "sync_type", "changes", "conflicts", "vector_clock", "cursor",
            "state_digest", "sync_stats", "server_time", "applied", "applied_relationships",
        ]);
    }

    #[test]
    fn sync_change(c in arb_sync_change()) {
        round_trip(&c)?;
    }

    #[test]
    fn entity_change(e in arb_entity_change()) {
        round_trip(&e)?;
        // `checksum` is always written, null when unset.
        let v = serde_json::to_value(&e).expect("value");
        prop_assert!(v.as_object().expect("object").contains_key("checksum"));
        // Through the stored form and back (the checksum is not stored).
        let fallback = Timestamp::UNIX_EPOCH;
        let stored = e.to_entity(None, fallback);
        prop_assert_eq!(Ok(stored.updated_at), e.version.timestamp());
        prop_assert_eq!(stored.created_at, stored.updated_at);
        let mut back = EntityChange::from_entity(&stored);
        back.checksum = e.checksum.clone();
        prop_assert_eq!(back, e);
    }

    #[test]
    fn relationship_change(r in arb_relationship_change()) {
        round_trip(&r)?;
        let now = Timestamp::UNIX_EPOCH;
        let stored = r.to_relationship("someone", now);
        let back = RelationshipChange::from_relationship(&stored);
        prop_assert_eq!(back.user_id.as_deref(), Some(r.user_id.as_deref().unwrap_or("someone")));
        prop_assert_eq!(back.created_at, Some(r.created_at.unwrap_or(now)));
        prop_assert_eq!(back.updated_at, Some(r.updated_at.or(r.created_at).unwrap_or(now)));
        prop_assert_eq!(&back.id, &r.id);
        prop_assert_eq!(&back.properties, &r.properties);
    }

    #[test]
    fn conflict_info(c in arb_conflict()) {
        round_trip(&c)?;
        let v = serde_json::to_value(&c).expect("value");
        prop_assert_eq!(v.as_object().expect("object").contains_key("reason"), c.reason.is_some());
    }

    #[test]
    fn sync_stats(s in arb_stats()) {
        round_trip(&s)?;
    }

    #[test]
    fn sync_filters(f in arb_filters()) {
        round_trip(&f)?;
    }

    #[test]
    fn vector_clock(c in arb_vector_clock()) {
        round_trip(&c)?;
        let v = serde_json::to_value(&c).expect("value");
        prop_assert!(v["clocks"].is_object());
    }

    #[test]
    fn cursor(c in arb_cursor(), seq in any::<u64>()) {
        round_trip(&c)?;
        prop_assert_eq!(serde_json::to_value(&c).expect("value"), Value::String(c.0.clone()));
        let from_seq = Cursor::from_seq(seq);
        prop_assert_eq!(from_seq.seq(), Ok(seq));
        round_trip(&from_seq)?;
        // A cursor that is not a decimal number names no sequence.
        if c.0.trim().parse::<u64>().is_err() {
            prop_assert_eq!(c.seq(), Err(CursorError(c.0.clone())));
        }
    }

    #[test]
    fn flow_message(m in arb_flow_message()) {
        round_trip(&m)?;
        let v = serde_json::to_value(&m).expect("value");
        let tag = match &m {
            FlowMessage::SyncRequest(_) => "sync_request",
            FlowMessage::SyncDelta(_) => "sync_delta",
            FlowMessage::SyncPush(_) => "sync_push",
            FlowMessage::SyncResult(_) => "sync_result",
            FlowMessage::SyncAck(_) => "sync_ack",
        };
        prop_assert_eq!(&v["type"], tag);
        if let FlowMessage::SyncPush(p) = &m {
            for c in &p.changes {
                let e = c.to_entity_change();
                prop_assert_eq!(&e.id, &c.entity_id);
                prop_assert_eq!(&e.version, &c.client_sync_id);
                prop_assert_eq!(&e.content, &c.data.content);
                prop_assert_eq!(&e.parent_versions, &c.data.parent_versions);
            }
        }
    }

    #[test]
    fn error_body(b in arb_error_body()) {
        round_trip(&b)?;
        let v = serde_json::to_value(&b).expect("value");
        prop_assert_eq!(&v["error"]["code"], b.error.code.as_str());
        prop_assert_eq!(v["error"].as_object().expect("error").contains_key("field"), b.error.field.is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn open_enums_keep_any_string(s in "\\PC{0,20}") {
        let e = EntityType::parse(&s);
        prop_assert_eq!(e.as_str(), s.as_str());
        prop_assert_eq!(e.is_known(), EntityType::KNOWN.contains(&e));
        round_trip(&e)?;
        let t = SourceType::parse(&s);
        prop_assert_eq!(t.as_str(), s.as_str());
        prop_assert_eq!(t.is_known(), SourceType::KNOWN.contains(&t));
        round_trip(&t)?;
        let r = RelationshipType::parse(&s);
        prop_assert_eq!(r.as_str(), s.as_str());
        prop_assert_eq!(r.is_known(), RelationshipType::KNOWN.contains(&r));
        round_trip(&r)?;
        let c = ErrorCode::parse(&s);
        prop_assert_eq!(c.as_str(), s.as_str());
        round_trip(&c)?;
    }

    #[test]
    fn open_enums_known_values(
        e in prop::sample::select(EntityType::KNOWN.to_vec()),
        t in prop::sample::select(SourceType::KNOWN.to_vec()),
        r in prop::sample::select(RelationshipType::KNOWN.to_vec()),
    ) {
        prop_assert_eq!(EntityType::parse(e.as_str()), e.clone());
        prop_assert!(e.is_known());
        prop_assert_eq!(SourceType::parse(t.as_str()), t.clone());
        prop_assert!(t.is_known());
        prop_assert_eq!(RelationshipType::parse(r.as_str()), r.clone());
        prop_assert!(r.is_known());
        // Wire values are lowercase snake_case.
        for s in [e.as_str(), t.as_str(), r.as_str()] {
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", s);
        }
    }

    #[test]
    fn timestamp_display_parse(t in arb_timestamp()) {
        let s = t.to_string();
        // `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`
        prop_assert_eq!(s.len(), 32);
        prop_assert!(s.ends_with("+00:00"));
        prop_assert_eq!(&s[19..20], ".");
        prop_assert_eq!(Timestamp::parse(&s), Ok(t));
        prop_assert_eq!(s.parse::<Timestamp>(), Ok(t));
        prop_assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Ok(t));
        round_trip(&t)?;
        // The legacy `Z` form and the naive form read as the same instant.
        let z = format!("{}Z", &s[..26]);
        prop_assert_eq!(Timestamp::parse(&z), Ok(t));
        prop_assert_eq!(Timestamp::parse(&s[..26]), Ok(t));
    }

    #[test]
    fn timestamp_order_is_string_order(a in arb_timestamp(), b in arb_timestamp()) {
        prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        prop_assert_eq!(a.cmp(&b), a.unix_micros().cmp(&b.unix_micros()));
    }

    #[test]
    fn version_generate_parse(t in arb_timestamp(), user in arb_user()) {
        let v = Version::generate(t, &user);
        let parts = v.parse().expect("a generated version parses");
        prop_assert_eq!(parts.timestamp, t);
        prop_assert_eq!(parts.user_id, user.clone());
        let counter = parts.counter.expect("a generated version has a counter");
        prop_assert!(counter < 1_000_000);
        let expected = format!("{t}-{counter:06}-{user}");
        prop_assert_eq!(v.as_str(), expected.as_str());
        prop_assert!(!v.as_str()[..32].contains('Z'));
        prop_assert_eq!(v.timestamp(), Ok(t));
        prop_assert_eq!(v.clone().validated(), Ok(v.clone()));
        round_trip(&v)?;
        // Two versions made in a row never collide.
        prop_assert_ne!(Version::generate(t, &user), v);
    }

    #[test]
    fn version_order_is_time_order(
        a in arb_timestamp(),
        b in arb_timestamp(),
        ua in arb_user(),
        ub in arb_user(),
    ) {
        prop_assume!(a != b);
        let va = Version::generate(a, &ua);
        let vb = Version::generate(b, &ub);
        // Lexical order of versions is chronological order, whoever made them.
        prop_assert_eq!(va.cmp(&vb), a.cmp(&b));
    }

    #[test]
    fn any_string_is_carried_as_a_version(s in "\\PC{0,40}") {
        let v = Version::new(s.clone());
        prop_assert_eq!(v.as_str(), s.as_str());
        round_trip(&v)?;
        // Parsing never panics, and what parses has a non-empty user.
        if let Ok(p) = v.parse() {
            prop_assert!(!p.user_id.is_empty());
        }
    }
}

#[test]
fn legacy_versions_keep_their_parts() {
    let cases: BTreeMap<&str, (&str, Option<u32>, &str)> = [
        (
            "2024-01-15T10:30:00.123456Z-alice",
            ("2024-01-15T10:30:00.123456+00:00", None, "alice"),
        ),
        (
            "2026-11-21T23:10:35.907338+00:00Z-blowing-off-cli",
            ("2026-11-21T23:10:35.907338+00:00", None, "blowing-off-cli"),
        ),
        (
            "2026-11-21T23:08:52.696899+00:00-000001-vec-user",
            ("2026-11-21T23:08:52.696899+00:00", Some(1), "vec-user"),
        ),
    ]
    .into_iter()
    .collect();
    for (v, (ts, counter, user)) in cases {
        let p = Version::new(v).parse().expect(v);
        assert_eq!(p.timestamp.to_string(), ts, "{v}");
        assert_eq!(p.counter, counter, "{v}");
        assert_eq!(p.user_id, user, "{v}");
    }
}

#[test]
fn timestamp_range_ends() {
    let first = Timestamp::from_unix_micros(0).expect("epoch");
    assert_eq!(first, Timestamp::UNIX_EPOCH);
    assert_eq!(first.to_string(), "1970-01-01T00:00:00.000000+00:00");
    let last = Timestamp::from_unix_micros(MAX_MICROS).expect("last");
    assert_eq!(last.to_string(), "9999-12-31T23:59:59.999999+00:00");
    assert!(Timestamp::from_unix_micros(MAX_MICROS + 1).is_err());
    assert_eq!(last.saturating_add_micros(1), last);
}

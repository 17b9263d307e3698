//! The body of every fuzz target: each takes arbitrary bytes, must never panic, and checks what the code promises.
//!
//! The libFuzzer binaries in `fuzz_targets/` call these, and the server's
//! test suite replays every committed seed and regression input through
//! them, so a crash once found stays fixed without a sanitizer build.

use inbetweenies_conflict::{
    decide, merge_version, resolve, Decision, MapAncestry, Resolution, ResolverConfig, Side,
    Strategy,
};
use inbetweenies_proto::validate::{parse_json, parse_sync_request, sync_request_checked, Checks};
use inbetweenies_proto::{codec, Cursor, Entity, Timestamp, Version};
use serde_json::Value;

/// The body limit the body target decodes under, at most (64 KiB).
const MAX_LIMIT: usize = 64 * 1024;

/// Request decoding and validation: a `SyncRequest` body, leniently and strictly.
///
/// Whatever strict mode accepts, lenient mode accepts too; an accepted
/// request written back as JSON is accepted again and reads back the same.
pub fn sync_request(data: &[u8]) {
    let lenient = parse_sync_request(data);
    if let Ok(value) = parse_json(data) {
        let strict = sync_request_checked(value, Checks::STRICT);
        if let Ok(req) = &strict {
            assert_eq!(
                lenient.as_ref().ok(),
                Some(req),
                "strict accepts, lenient refuses"
            );
        }
    }
    match lenient {
        Ok(req) => {
            let text = serde_json::to_vec(&req).expect("a request writes as JSON");
            let again = parse_sync_request(&text)
                .unwrap_or_else(|e| panic!("written request refused: {e}"));
            assert_eq!(again, req, "a request changes on a trip through JSON");
        }
        Err(e) => {
            // Every refusal can be reported.
            let _ = e.to_string();
        }
    }
}

/// Versions, timestamps and cursors read from any text.
///
/// A timestamp read is written in the wire form and reads back equal; a
/// version that parses has the timestamp its parts say; a cursor is ASCII
/// digits and writes back the same.
pub fn version_timestamp(data: &[u8]) {
    if data.len() >= 8 {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&data[..8]);
        if let Ok(t) = Timestamp::from_unix_number(f64::from_le_bytes(eight)) {
            round_trips(t);
        }
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Timestamp::parse(s) {
        round_trips(t);
    }
    if let Ok(t) = serde_json::from_str::<Timestamp>(s) {
        round_trips(t);
    }
    let v = Version::new(s);
    match v.parse() {
        Ok(parts) => {
            assert_eq!(v.timestamp().ok(), Some(parts.timestamp));
            round_trips(parts.timestamp);
            assert!(s.contains(&parts.user_id), "user id not from the version");
        }
        Err(_) => assert!(v.timestamp().is_err()),
    }
    let cursor = Cursor(s.to_owned());
    if let Ok(seq) = cursor.seq() {
        assert!(s.bytes().all(|b| b.is_ascii_digit()), "cursor {s:?}");
        assert_eq!(Cursor::from_seq(seq).seq().ok(), Some(seq));
    }
}

fn round_trips(t: Timestamp) {
    let text = t.to_string();
    let back = Timestamp::parse(&text).unwrap_or_else(|e| panic!("{text} does not read: {e}"));
    assert_eq!(back, t, "{text}");
    assert_eq!(Timestamp::from_unix_micros(t.unix_micros()).ok(), Some(t));
}

/// The three-way merge and the resolver: `[ancestor, server, client]` entities as JSON.
///
/// Resolving is deterministic; a merge is the same whichever order the
/// sides' versions come in to [`merge_version`]; a content key that only one
/// side changed takes that side's value, and one that neither changed keeps
/// the ancestor's.
pub fn three_way_merge(data: &[u8]) {
    let Ok([ancestor, server, client]) = serde_json::from_slice::<[Entity; 3]>(data) else {
        return;
    };
    let now = Timestamp::from_unix_micros(1_700_000_000_000_000).expect("in range");
    let config = ResolverConfig::default().with_default_strategy(Strategy::ThreeWayMerge);
    let ancestry: MapAncestry = [ancestor.clone()].into_iter().collect();
    let first = resolve(&server, &client, now, &config, &ancestry);
    let second = resolve(&server, &client, now, &config, &ancestry);
    assert_eq!(first, second, "resolving is not deterministic");
    if let Resolution::Merged { entity, .. } = &first {
        assert_eq!(entity.id, server.id);
    }
    assert_eq!(
        merge_version(&server.version, &client.version, now, "u"),
        merge_version(&client.version, &server.version, now, "u"),
    );
    if server.is_deleted() || client.is_deleted() {
        return;
    }
    for winner in [Side::Server, Side::Client] {
        let rule = Decision {
            winner,
            ..decide(&server, &client, now, config.skew_allowance)
        };
        let out = inbetweenies_conflict::three_way_merge(
            &ancestor,
            &server,
            &client,
            rule,
            now,
            config.skew_allowance,
        );
        let again = inbetweenies_conflict::three_way_merge(
            &ancestor,
            &server,
            &client,
            rule,
            now,
            config.skew_allowance,
        );
        assert_eq!(out, again, "merging is not deterministic");
        for (key, merged) in &out.entity.content {
            let (a, s, c) = (
                ancestor.content.get(key),
                server.content.get(key),
                client.content.get(key),
            );
            let expected = if s == a {
                c
            } else if c == a || s == c {
                s
            } else {
                continue;
            };
            assert_eq!(Some(merged), expected, "key {key:?}");
        }
        let mut parents = out.entity.parent_versions.clone();
        parents.sort();
        assert_eq!(parents, out.entity.parent_versions, "parents not in order");
    }
}

/// The HTTP body path: a gzip body decoded under a limit, then read as JSON
/// and as a sync request.
///
/// The first two bytes choose the limit. Decoding never yields more than
/// the limit (a gzip bomb is refused, not inflated); what decodes is read
/// like any body; and any body gzipped by the codec decodes to itself.
pub fn body(data: &[u8]) {
    let (limit, rest) = match data {
        [a, b, rest @ ..] => (
            (usize::from(u16::from_le_bytes([*a, *b])) % MAX_LIMIT) + 1,
            rest,
        ),
        _ => return,
    };
    match codec::gzip_decode(rest, limit) {
        Ok(out) => {
            assert!(
                out.len() <= limit,
                "{} bytes past the limit {limit}",
                out.len()
            );
            read_body(&out);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    read_body(rest);
    let packed = codec::gzip_encode(rest);
    let unpacked = codec::gzip_decode(&packed, rest.len()).expect("own gzip decodes");
    assert_eq!(unpacked, rest);
    if !rest.is_empty() {
        assert!(codec::gzip_decode(&packed, rest.len() - 1).is_err());
    }
}

fn read_body(bytes: &[u8]) {
    if let Ok(v) = parse_json(bytes) {
        // What was read writes back as JSON that reads as the same value.
        let text = serde_json::to_vec(&v).expect("a value writes as JSON");
        let back: Value = serde_json::from_slice(&text).expect("written JSON reads");
        assert_eq!(back, v);
    }
    let _ = parse_sync_request(bytes);
}

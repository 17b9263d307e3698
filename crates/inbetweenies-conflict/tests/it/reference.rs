//! Against the Python reference's captured exchanges: state_digest of full syncs, and conflict reports.

use std::path::PathBuf;

use inbetweenies_conflict::{
    conflict_info, resolve, state_digest, DigestBuilder, NoAncestry, ResolverConfig, EMPTY_DIGEST,
};
use inbetweenies_proto::{Entity, EntityType, SourceType, Timestamp, Version};
use proptest::prelude::*;
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/reference"
    ))
}

fn load(number: &str, kind: &str) -> Value {
    let dir = vectors_dir();
    let prefix = format!("{number}_");
    let suffix = format!(".{kind}.json");
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|name| name.starts_with(&prefix) && name.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no vector {number} {kind}"));
    serde_json::from_str(&std::fs::read_to_string(dir.join(entry)).unwrap()).unwrap()
}

/// The `(id, version)` rows a set of full-sync responses list, and their `state_digest`.
fn full_sync(numbers: &[&str]) -> (Vec<(String, String)>, String) {
    let mut rows = Vec::new();
    let mut digest = None;
    for n in numbers {
        let response = load(n, "response");
        for change in response["changes"].as_array().unwrap() {
            let e = &change["entity"];
            rows.push((
                e["id"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap().to_owned(),
            ));
        }
        let d = response["state_digest"].as_str().unwrap().to_owned();
        assert!(digest.is_none() || digest.as_deref() == Some(d.as_str()));
        digest = Some(d);
    }
    (rows, digest.unwrap())
}

const FULL_SYNCS: &[&[&str]] = &[
    &["06"],
    &["09"],
    &["21"],
    &["28"],
    &["30"],
    &["38"],
    &["79", "80"],
];

#[test]
fn state_digest_matches_the_reference_full_syncs() {
    for set in FULL_SYNCS {
        let (rows, expected) = full_sync(set);
        let got = state_digest(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())));
        assert_eq!(got, expected, "vectors {set:?}");
        // Streaming in id order gives the same.
        let mut sorted = rows.clone();
        sorted.sort();
        let mut b = DigestBuilder::new();
        for (i, v) in &sorted {
            b.push(i, v).unwrap();
        }
        assert_eq!(b.rows(), rows.len() as u64);
        assert_eq!(b.finish(), expected, "vectors {set:?} streamed");
    }
    assert_eq!(full_sync(&["06"]).1, EMPTY_DIGEST);
    assert_eq!(full_sync(&["79", "80"]).0.len(), 524);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any order of the 524 rows of vectors 79+80 gives the reference's digest.
    #[test]
    fn reference_digest_does_not_depend_on_row_order(seed in any::<u64>()) {
        let (mut rows, expected) = full_sync(&["79", "80"]);
        // A seeded Fisher-Yates shuffle.
        let mut x = seed | 1;
        for i in (1..rows.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rows.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let got = state_digest(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())));
        prop_assert_eq!(got, expected);
    }
}

fn version_only_entity(id: &str, version: &str, parents: &[Version]) -> Entity {
    let v = Version::new(version);
    let at = v.timestamp().unwrap();
    Entity {
        id: id.into(),
        version: v,
        entity_type: EntityType::Room,
        name: String::new(),
        content: Default::default(),
        source_type: SourceType::Manual,
        user_id: String::new(),
        parent_versions: parents.to_vec(),
        created_at: at,
        updated_at: at,
    }
}

/// Vectors 23, 25 and 27: the same conflicts, decided and worded as the reference did.
#[test]
fn conflict_reports_match_the_reference() {
    for n in ["23", "25", "27"] {
        let request = load(n, "request");
        let response = load(n, "response");
        let pushed = &request["changes"][0]["entity"];
        let reported = &response["conflicts"][0];
        let id = reported["entity_id"].as_str().unwrap();
        let server = version_only_entity(id, reported["local_version"].as_str().unwrap(), &[]);
        let parents: Vec<Version> = pushed["parent_versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Version::new(p.as_str().unwrap()))
            .collect();
        let client = version_only_entity(id, pushed["version"].as_str().unwrap(), &parents);
        let now = Timestamp::parse(response["server_time"].as_str().unwrap()).unwrap();
        let r = resolve(
            &server,
            &client,
            now,
            &ResolverConfig::default(),
            &NoAncestry,
        );
        let info = conflict_info(&server, &client, &r).unwrap();
        let mut ours = serde_json::to_value(&info).unwrap();
        ours.as_object_mut().unwrap().remove("reason");
        assert_eq!(&ours, reported, "vector {n}");
    }
}

//! Every fuzz target's body replayed over its committed inputs: the seeds and any crash once found, so none comes back unnoticed without a sanitizer build.
//!
//! The targets live in `fuzz/src/targets.rs` (the libFuzzer binaries in
//! `fuzz/` call the same functions); their inputs in `fuzz/seeds/<target>/`
//! and, for crashes found and fixed, `fuzz/regressions/<target>/`. Each
//! target must have seeds, and every input must run without a panic.

#[path = "../../../fuzz/src/targets.rs"]
mod targets;

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("input");
            out.push((path, bytes));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, body: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(inputs.len() >= 20, "{target}: only {} inputs", inputs.len());
    for (path, bytes) in inputs {
        if std::panic::catch_unwind(|| body(&bytes)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
}

#[test]
fn sync_request_inputs_replay() {
    replay("sync_request", targets::sync_request);
}

#[test]
fn version_timestamp_inputs_replay() {
    replay("version_timestamp", targets::version_timestamp);
}

#[test]
fn three_way_merge_inputs_replay() {
    replay("three_way_merge", targets::three_way_merge);
}

#[test]
fn body_inputs_replay() {
    replay("body", targets::body);
}

//! `blob put`, `blob get` and `blob list`, the binary run as a fresh process against the
//! real server: a file attached on one client arrives byte for byte on another (by
//! entity and by SHA-256), tables and `--json`, an upload queued offline finished by
//! `sync`, and clear errors with the documented exit codes.

use std::path::Path;

mod support;

use serde_json::Value;
use support::{json, ok, run, start_server, two_clients, PASSWORD};

/// Runs and returns (exit code, stderr).
fn fails(db: &Path, args: &[&str]) -> (i32, String) {
    let out = run(db, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn connect(db: &Path, url: &str) {
    ok(
        db,
        &["connect", "--server-url", url, "--password", PASSWORD],
    );
}

/// A device to attach files to: house, room, device.
fn device(db: &Path) -> String {
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let home = id(json(db, &["house", "create", "--name", "Home"]));
    let room = id(json(
        db,
        &["room", "create", "--house-id", &home, "--name", "Kitchen"],
    ));
    id(json(
        db,
        &[
            "device",
            "create",
            "--room-id",
            &room,
            "--name",
            "Oven",
            "--type",
            "oven",
        ],
    ))
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_file_put_on_one_client_is_got_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let (_url, _stop, a, b) = two_clients(dir.path());
    let oven = device(&a);
    let bytes = data(2_500_000);
    let file = dir.path().join("oven manual.pdf");
    std::fs::write(&file, &bytes).unwrap();

    let put = json(&a, &["blob", "put", &oven, file.to_str().unwrap()]);
    assert_eq!(put["uploaded"], true, "{put}");
    let sha = put["blob"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    assert_eq!(put["blob"]["size"], bytes.len());
    assert_eq!(put["blob"]["content_type"], "application/pdf");
    assert_eq!(put["blob"]["filename"], "oven manual.pdf");
    ok(&a, &["sync"]);

    ok(&b, &["sync"]);
    let table = ok(&b, &["blob", "list", &oven]);
    assert!(
        table.contains(&sha) && table.contains("oven manual.pdf"),
        "{table}"
    );
    let list = json(&b, &["blob", "list", &oven]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // By entity, to a chosen file; the table names the path.
    let out = dir.path().join("got.pdf");
    let shown = ok(&b, &["blob", "get", &oven, "-o", out.to_str().unwrap()]);
    assert!(shown.contains(&sha) && shown.contains("got.pdf"), "{shown}");
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    // By SHA-256, to the attached file's name in the current directory.
    let got = json(&b, &["blob", "get", &sha]);
    assert_eq!(got["size"], bytes.len());
    let home = support::home_of(&b);
    assert_eq!(std::fs::read(home.join("oven manual.pdf")).unwrap(), bytes);
}

#[test]
fn an_offline_put_is_uploaded_by_sync_and_errors_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let c = dir.path().join("c.db");
    let oven = device(&c);
    let bytes = data(300_000);
    let file = dir.path().join("photo.jpg");
    std::fs::write(&file, &bytes).unwrap();

    // Not connected: attached and queued, exit 0, a note on stderr.
    let out = run(&c, &["blob", "put", &oven, file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("queued"), "{stderr}");
    connect(&c, &url);
    let synced = json(&c, &["sync"]);
    assert_eq!(synced["errors"], Value::Array(vec![]), "{synced}");
    let back = dir.path().join("back.jpg");
    ok(&c, &["blob", "get", &oven, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    // A file that is not there: usage (2).
    let (code, err) = fails(&c, &["blob", "put", &oven, "/no/such/file"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such/file"), "{err}");
    // An entity that does not exist: 1.
    let (code, err) = fails(
        &c,
        &["blob", "put", "no-such-entity", file.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-entity"), "{err}");
    // A blob the server does not hold: 1, and no file is written.
    let missing = dir.path().join("missing.bin");
    let (code, err) = fails(
        &c,
        &[
            "blob",
            "get",
            &"0".repeat(64),
            "-o",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(!missing.exists());
    // Under --json, the error is one object.
    let (code, err) = fails(&c, &["--json", "blob", "get", "no-such-entity"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(err.trim()).expect("JSON error");
    assert_eq!(v["error"]["exit_code"], 1);
    // The server gone: unreachable (4), the upload stays queued.
    drop(_stop);
    let other = dir.path().join("other.bin");
    std::fs::write(&other, data(1000)).unwrap();
    let (code, err) = fails(&c, &["blob", "get", &"1".repeat(64)]);
    assert_eq!(code, 4, "{err}");
    let out = run(
        &c,
        &["--json", "blob", "put", &oven, other.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uploaded"], false);
}

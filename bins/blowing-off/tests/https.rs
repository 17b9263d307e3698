//! The CLI over https against the real server: `connect` with `--ca-file` or
//! `--pin-sha256` (remembered in the config file for the next runs), with the platform's
//! roots (here `SSL_CERT_FILE`), an untrusted server refused at once, signed messages
//! with `--signing-key-file`, and the token kept private: files of mode 0600 and never
//! in the logs.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

mod support;

use support::{command, run, start_server_with, PASSWORD};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A CA, a server certificate it signed for 127.0.0.1, and the files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    leaf_sha256: String,
}

fn pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let p = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        leaf_sha256: goodies_client::certificate_sha256(leaf.der()),
    };
    std::fs::write(&p.ca, ca.pem()).expect("ca file");
    std::fs::write(&p.cert, leaf.pem()).expect("cert file");
    std::fs::write(&p.key, leaf_key.serialize_pem()).expect("key file");
    p
}

fn https_server(
    dir: &Path,
    pki: &Pki,
    key: Option<&'static str>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (cert, tls_key) = (pki.cert.clone(), pki.key.clone());
    let (url, stop) = start_server_with(dir, move |c| {
        let c = c.with_tls(cert, tls_key);
        match key {
            Some(k) => c.with_hmac_key(k),
            None => c,
        }
    });
    (url.replacen("http://", "https://", 1), stop)
}

fn config_file(db: &Path) -> PathBuf {
    support::home_of(db).join("config/blowing-off/config.json")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// `connect https://…` with the hub's CA file or its pinned certificate, then runs that
/// give no flag at all: the config file carries the trust settings.
#[test]
fn connect_and_sync_over_https_with_a_ca_file_or_a_pin() {
    let dir = tempfile::tempdir().expect("dir");
    let hub = pki(dir.path(), "hub");
    let (url, _stop) = https_server(dir.path(), &hub, None);
    let ca = hub.ca.display().to_string();
    for (name, trust) in [
        ("ca", vec!["--ca-file", ca.as_str()]),
        ("pin", vec!["--pin-sha256", hub.leaf_sha256.as_str()]),
    ] {
        let db = dir.path().join(format!("{name}.db"));
        let mut args = vec!["connect", "--server-url", &url, "--password", PASSWORD];
        args.extend(&trust);
        ok(run(&db, &args), name);
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(config_file(&db)).expect("config file"))
                .expect("config JSON");
        assert!(
            file.get("ca_file").is_some() || file.get("pin_sha256").is_some(),
            "{name}: {file}"
        );
        ok(run(&db, &["house", "create", "--name", "Home"]), name);
        ok(run(&db, &["sync"]), name);
        let status: serde_json::Value =
            serde_json::from_str(&ok(run(&db, &["--json", "status"]), name)).expect("status");
        assert_eq!(status["pending_changes"], 0, "{name}: {status}");
    }
}

/// With no flag, the platform's trust roots decide: a hub whose CA is among them (here
/// through `SSL_CERT_FILE`) is trusted; one whose CA is not is refused at once (not after
/// the default five retries, which back off for half a minute) with the reason.
#[test]
fn platform_roots_decide_and_an_untrusted_hub_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let hub = pki(dir.path(), "hub");
    let (url, _stop) = https_server(dir.path(), &hub, None);

    let db = dir.path().join("platform.db");
    let mut cmd = command(
        &db,
        &["connect", "--server-url", &url, "--password", PASSWORD],
    );
    cmd.env("SSL_CERT_FILE", &hub.ca).env_remove("SSL_CERT_DIR");
    ok(cmd.output().expect("run"), "platform roots");

    let db = dir.path().join("untrusted.db");
    let other = pki(dir.path(), "other");
    for args in [
        vec!["connect", "--server-url", &url, "--password", PASSWORD],
        vec![
            "connect",
            "--server-url",
            &url,
            "--password",
            PASSWORD,
            "--pin-sha256",
            &other.leaf_sha256,
        ],
    ] {
        let mut cmd = command(&db, &args);
        cmd.env_remove("BLOWING_OFF_RETRIES")
            .env("SSL_CERT_FILE", &other.ca)
            .env_remove("SSL_CERT_DIR");
        let start = Instant::now();
        let out = cmd.output().expect("run");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot be trusted")
                && (stderr.contains("not trusted") || stderr.contains("not the pinned one")),
            "{args:?}: {stderr}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{args:?}: retried"
        );
    }
}

/// A hub that requires signed messages: with `--signing-key-file` (remembered by
/// `connect`) the CLI syncs; without a key it gets the server's clear refusal.
#[test]
fn signed_messages_with_a_key_file() {
    let dir = tempfile::tempdir().expect("dir");
    let hub = pki(dir.path(), "hub");
    let (url, _stop) = https_server(dir.path(), &hub, Some("cli-signing-key"));
    let key_file = dir.path().join("signing.key");
    std::fs::write(&key_file, "cli-signing-key\n").expect("key file");
    let ca = hub.ca.display().to_string();
    let key = key_file.display().to_string();

    let db = dir.path().join("signed.db");
    ok(
        run(
            &db,
            &[
                "connect",
                "--server-url",
                &url,
                "--password",
                PASSWORD,
                "--ca-file",
                &ca,
                "--signing-key-file",
                &key,
            ],
        ),
        "signed connect",
    );
    ok(run(&db, &["house", "create", "--name", "Home"]), "create");
    ok(run(&db, &["sync"]), "signed sync");

    let db = dir.path().join("unsigned.db");
    let out = run(
        &db,
        &[
            "connect",
            "--server-url",
            &url,
            "--password",
            PASSWORD,
            "--ca-file",
            &ca,
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("x-inbetweenies-signature"), "{stderr}");
}

/// The config file and the mirror are readable by their owner only, and a config file
/// found open to others is closed again; the token never shows in the most verbose logs.
#[cfg(unix)]
#[test]
fn the_token_is_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let hub = pki(dir.path(), "hub");
    let (url, _stop) = https_server(dir.path(), &hub, None);
    let ca = hub.ca.display().to_string();
    let db = dir.path().join("private.db");
    ok(
        run(
            &db,
            &[
                "connect",
                "--server-url",
                &url,
                "--password",
                PASSWORD,
                "--ca-file",
                &ca,
            ],
        ),
        "connect",
    );
    let file = config_file(&db);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&db), 0o600);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let token = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&file).expect("file"))
        .expect("JSON")["auth_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let secret = token.rsplit('.').next().expect("signature").to_owned();
    ok(run(&db, &["house", "create", "--name", "Home"]), "create");
    let out = run(&db, &["-vvv", "sync"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.lines().count() > 10, "verbose logs: {stderr}");
    assert!(
        !stderr.contains(&secret) && !stdout.contains(&secret),
        "{stderr}"
    );
    assert_eq!(mode(&file), 0o600, "fixed on open");
    assert_eq!(mode(&db), 0o600, "fixed on open");
}

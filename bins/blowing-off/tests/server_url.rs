//! A server URL without a scheme or otherwise malformed is a usage error at once (exit 2,
//! a readable message), for every command that takes one, not a run of retries.

use std::time::{Duration, Instant};

mod support;

use support::run;

#[test]
fn malformed_server_urls_are_usage_errors_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    // The default retries (5, backoff up to 31 s) so a URL that reached the network would
    // take far longer than the bound below.
    let retried = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_blowing-off"))
            .arg("--db")
            .arg(&db)
            .args(args)
            .env_remove("BLOWING_OFF_DB")
            .env_remove("BLOWING_OFF_RETRIES")
            .output()
            .expect("run blowing-off")
    };
    for url in [
        "localhost:8000",
        "127.0.0.1:8000",
        "ftp://127.0.0.1:8000",
        "http://",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:80x",
        "http://127.0.0.1 :8000",
        "http://user:pw@127.0.0.1:8000",
    ] {
        for args in [
            vec!["connect", "--server-url", url, "--password", "pw"],
            vec!["connect", "--server-url", url, "--auth-token", "token"],
            vec!["login", "--server-url", url, "--password", "pw"],
            vec!["--json", "login", "--server-url", url, "--password", "pw"],
        ] {
            let start = Instant::now();
            let out = retried(&args);
            let took = start.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.starts_with("error: invalid argument: server url")
                    && stderr.contains("expected e.g. http://"),
                "{args:?}: {stderr}"
            );
            assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    // Nothing was stored: the mirror is still not connected (exit 3).
    let out = run(&db, &["sync"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

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
        let mut cmd = support::command(&db, args);
        cmd.env_remove("BLOWING_OFF_RETRIES");
        cmd.output().expect("run blowing-off")
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
            let message = if args[0] == "--json" {
                // Under --json the error is one JSON object on stderr.
                let e: serde_json::Value = serde_json::from_str(&stderr).expect("JSON error");
                assert_eq!(e["error"]["exit_code"], 2, "{e}");
                format!(
                    "error: {}",
                    e["error"]["message"].as_str().unwrap_or_default()
                )
            } else {
                stderr.to_string()
            };
            assert!(
                message.starts_with("error: invalid argument: server url")
                    && message.contains("expected e.g. http://"),
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

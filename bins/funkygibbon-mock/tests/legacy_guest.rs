//! Guest QR codes as the reference's clients use them: `custom_server` of generate-qr
//! names where the guest connects (the QR payload's `server` and `port`), the guest logs
//! in at the address the payload gives (`http://{server}:{port}`, as the reference's
//! client builds it), reads, and cannot write. Without `custom_server` the payload names
//! the public host and port as before; a `custom_server` that is no address is a 422.

mod support;

use base64::Engine as _;
use qrcode::{Color, QrCode};
use serde_json::{json, Value};
use support::{create_change, http_client, read, sync_body, Backend, TestServer};

/// A name that never resolves (RFC 2606), as the public host: only `custom_server` can
/// make a QR code a guest can use.
const UNRESOLVABLE: &str = "funkygibbon.invalid";

/// The keys of the reference's guest verify answer.
const VERIFY_KEYS: [&str; 4] = ["access_token", "token_type", "expires_in", "role"];

async fn start(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |mut c| {
        c.public_host = UNRESOLVABLE.to_owned();
        c
    })
    .await
}

fn port_of(s: &TestServer) -> u16 {
    s.base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port of the base URL")
}

/// The QR code's modules as the PNG shows them, compared with the QR code of the JSON
/// text of `qr_data`: the image carries exactly the payload the answer spells out.
fn assert_png_encodes(qr_code: &str, qr_data: &Value) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(qr_code)
        .expect("qr_code is base64");
    let mut reader = png::Decoder::new(bytes.as_slice())
        .read_info()
        .expect("a PNG");
    let mut pixels = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("PNG frame");
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let side = frame.width as usize;
    let expected = QrCode::new(qr_data.to_string().as_bytes()).expect("payload fits a QR code");
    let modules = expected.width();
    let quiet = 4;
    assert_eq!(side % (modules + 2 * quiet), 0, "PNG side {side}");
    let scale = side / (modules + 2 * quiet);
    for (i, want) in expected.to_colors().iter().enumerate() {
        let (x, y) = (i % modules + quiet, i / modules + quiet);
        let centre = (y * scale + scale / 2) * side + x * scale + scale / 2;
        let dark = pixels[centre] < 128;
        assert_eq!(dark, *want == Color::Dark, "module ({x}, {y})");
    }
}

async fn generate(s: &TestServer, admin: &str, body: &Value) -> (u16, Value) {
    s.post_json(admin, "/api/v1/auth/guest/generate-qr", body)
        .await
}

/// What the reference's guest login does with a scanned payload: verify the token at
/// `http://{server}:{port}`, then use that address from then on.
async fn guest_login(qr_data: &Value) -> (String, Value) {
    assert_eq!(qr_data["type"], "guest_access");
    for key in ["version", "type", "server", "port", "token", "expires"] {
        assert!(qr_data.get(key).is_some(), "payload lacks {key}: {qr_data}");
    }
    let base = format!(
        "http://{}:{}",
        qr_data["server"].as_str().expect("server is a string"),
        qr_data["port"].as_u64().expect("port is a number")
    );
    let res = http_client()
        .post(format!("{base}/api/v1/auth/guest/verify"))
        .json(&json!({"token": qr_data["token"]}))
        .send()
        .await
        .expect("verify at the payload's address");
    let (status, body) = read(res).await;
    assert_eq!(status, 200, "{body}");
    (base, body)
}

async fn post(base: &str, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let res = http_client()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    read(res).await
}

async fn custom_server_names_where_guests_log_in(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let port = port_of(&s);
    let (status, _) = s
        .post_json(
            &admin,
            "/api/v1/sync/",
            &sync_body(
                "admin-tablet",
                "full",
                json!([create_change("hall", "room", "Hall", json!({}))]),
            ),
        )
        .await;
    assert_eq!(status, 200);

    let custom = format!("127.0.0.1:{port}");
    let (status, qr) = generate(
        &s,
        &admin,
        &json!({"duration_hours": 2, "custom_server": custom}),
    )
    .await;
    assert_eq!(status, 200, "{qr}");
    let data = &qr["qr_data"];
    assert_eq!(data["server"], "127.0.0.1");
    assert_eq!(data["port"], port);
    assert_eq!(data["permissions"], json!(["read"]));
    assert!(data.get("url").is_none(), "no url without a scheme: {data}");
    assert_png_encodes(qr["qr_code"].as_str().expect("qr_code"), data);

    let (base, verified) = guest_login(data).await;
    assert_eq!(verified["role"], "guest");
    assert_eq!(verified["server_url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(verified["server_url"], base.as_str());
    let guest = verified["access_token"].as_str().expect("guest jwt");

    // Reads work at that address.
    let (status, pulled) = post(
        &base,
        guest,
        "/api/v1/sync/",
        &sync_body("guest-phone", "full", json!([])),
    )
    .await;
    assert_eq!(status, 200, "{pulled}");
    let names: Vec<&str> = pulled["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["entity"]["name"].as_str())
        .collect();
    assert_eq!(names, ["Hall"]);

    // Writes do not.
    let digest_before = s.handle.store().state_digest().await.expect("digest");
    let (status, refused) = post(
        &base,
        guest,
        "/api/v1/sync/",
        &sync_body(
            "guest-phone",
            "delta",
            json!([create_change("g1", "note", "guest note", json!({}))]),
        ),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "FORBIDDEN");
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest_before
    );

    // The grant list names the address.
    let (_, list) = s.get_json(&admin, "/api/v1/auth/guest/list").await;
    assert_eq!(
        list["guests"][0]["server_url"],
        format!("http://127.0.0.1:{port}")
    );
    s.shutdown().await.expect("clean shutdown");
}

async fn custom_server_forms(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let port = port_of(&s);

    // A host alone keeps the public port (the reference's own behaviour).
    let (status, qr) = generate(&s, &admin, &json!({"custom_server": "127.0.0.1"})).await;
    assert_eq!(status, 200, "{qr}");
    assert_eq!(qr["qr_data"]["server"], "127.0.0.1");
    assert_eq!(qr["qr_data"]["port"], port);
    let (base, _) = guest_login(&qr["qr_data"]).await;
    assert_eq!(base, s.base);

    // A URL: its scheme and port, spelled out as `url` too; the scheme's port by default.
    let (status, qr) = generate(
        &s,
        &admin,
        &json!({"custom_server": "https://Gibbon.Example.org/"}),
    )
    .await;
    assert_eq!(status, 200, "{qr}");
    let data = &qr["qr_data"];
    assert_eq!(data["server"], "gibbon.example.org");
    assert_eq!(data["port"], 443);
    assert_eq!(data["url"], "https://gibbon.example.org:443");
    assert_png_encodes(qr["qr_code"].as_str().expect("qr_code"), data);
    let (status, verified) = s
        .post_json(
            "",
            "/api/v1/auth/guest/verify",
            &json!({"token": data["token"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(verified["server_url"], "https://gibbon.example.org:443");

    // IPv6 is bracketed so that `http://{server}:{port}` stays a URL.
    let (status, qr) = generate(&s, &admin, &json!({"custom_server": "[::1]:8001"})).await;
    assert_eq!(status, 200, "{qr}");
    assert_eq!(qr["qr_data"]["server"], "[::1]");
    assert_eq!(qr["qr_data"]["port"], 8001);
    s.shutdown().await.expect("clean shutdown");
}

async fn without_custom_server_nothing_changes(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let port = port_of(&s);
    for body in [
        json!({"duration_hours": 1}),
        json!({"duration_hours": 1, "custom_server": null}),
    ] {
        let (status, qr) = generate(&s, &admin, &body).await;
        assert_eq!(status, 200, "{qr}");
        let data = &qr["qr_data"];
        let keys: Vec<&str> = data
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "version",
                "type",
                "server",
                "port",
                "token",
                "expires",
                "permissions"
            ]
        );
        assert_eq!(data["server"], UNRESOLVABLE);
        assert_eq!(data["port"], port);
        assert_png_encodes(qr["qr_code"].as_str().expect("qr_code"), data);
        let (status, verified) = s
            .post_json(
                "",
                "/api/v1/auth/guest/verify",
                &json!({"token": data["token"]}),
            )
            .await;
        assert_eq!(status, 200);
        let keys: Vec<&str> = verified
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys, VERIFY_KEYS,
            "the reference's verify answer, unchanged"
        );
    }
    s.shutdown().await.expect("clean shutdown");
}

async fn custom_server_that_is_no_address_is_refused(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let admin = s.login().await;
    for bad in [
        json!(""),
        json!("ftp://gibbon.local"),
        json!("gibbon.local:0"),
        json!("gibbon.local:99999"),
        json!("http://gibbon.local/api"),
        json!("gibbon local"),
        json!("[::1"),
        json!(8000),
    ] {
        let (status, body) = generate(&s, &admin, &json!({"custom_server": bad})).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{bad}");
        assert_eq!(body["error"]["field"], "custom_server", "{bad}: {body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["body", "custom_server"]),
            "{bad}"
        );
    }
    // No grant was made by any of them.
    let (_, list) = s.get_json(&admin, "/api/v1/auth/guest/list").await;
    assert_eq!(list["count"], 0, "{list}");
    s.shutdown().await.expect("clean shutdown");
}

on_both_backends!(
    custom_server_names_where_guests_log_in,
    custom_server_forms,
    without_custom_server_nothing_changes,
    custom_server_that_is_no_address_is_refused,
);

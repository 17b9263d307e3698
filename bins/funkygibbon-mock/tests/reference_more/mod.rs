//! Replay helpers for the sync-metadata and backup exchanges captured from the Python reference
//! (`tests/vectors/reference-more/`): load them, send them, compare answers structurally.

#![allow(dead_code, reason = "each replay uses a different part")]

use serde_json::Value;

/// The vectors' directory.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/reference-more");

/// One captured exchange.
pub struct Exchange {
    pub num: usize,
    pub name: String,
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Value,
    pub status: u16,
    pub response: Value,
}

/// The exchanges of one directory (`backup`, `sync-metadata`), in order.
pub fn load(group: &str) -> Vec<Exchange> {
    let dir = format!("{DIR}/{group}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("vector directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".request.json").map(str::to_owned))
        .collect();
    names.sort();
    let read = |p: String| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&p).expect("vector file")).expect("json")
    };
    names
        .into_iter()
        .map(|name| {
            let req = read(format!("{dir}/{name}.request.json"));
            let res = read(format!("{dir}/{name}.response.json"));
            Exchange {
                num: name[..2].parse().expect("number"),
                method: req["method"].as_str().expect("method").to_owned(),
                path: req["path"].as_str().expect("path").to_owned(),
                content_type: req["headers"]["Content-Type"].as_str().map(str::to_owned),
                body: req["body"].clone(),
                status: res["status"].as_u64().expect("status") as u16,
                response: res["body"].clone(),
                name,
            }
        })
        .collect()
}

/// Sends an exchange's request with `token` (none: no Authorization header) to `path`.
pub async fn send(
    http: &reqwest::Client,
    base: &str,
    x: &Exchange,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let url = format!("{base}{path}");
    let mut req = match x.method.as_str() {
        "GET" => http.get(&url),
        "POST" => http.post(&url),
        "DELETE" => http.delete(&url),
        other => panic!("{}: method {other}", x.name),
    };
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = &x.content_type {
        req = req.header("Content-Type", ct.as_str());
    }
    if !x.body.is_null() {
        req = req.body(serde_json::to_vec(&x.body).expect("json"));
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", x.name))
    };
    (status, body)
}

/// Our error body minus the `error` object (asserted to carry a code), for comparing with
/// the reference's.
pub fn strip_error(name: &str, status: u16, mut body: Value) -> Value {
    if status >= 400 {
        let code = body
            .as_object_mut()
            .and_then(|o| o.remove("error"))
            .unwrap_or_else(|| panic!("{name}: error body without `error`: {body}"));
        assert!(code["code"].is_string(), "{name}: error without code");
    }
    body
}

fn is_timestamp(s: &str) -> bool {
    s.len() >= 19 && inbetweenies_proto::Timestamp::parse(s).is_ok()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_backup_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 15 && b[8] == b'_' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Keys whose integer values are this run's (row ids, file sizes).
const RUN_NUMBERS: &[&str] = &["id", "size_bytes"];

/// Whether `ours` has the reference's shape: same keys, same values except timestamps,
/// checksums, backup ids and per-run numbers, which only need the same kind.
pub fn same_shape(reference: &Value, ours: &Value, key: &str) -> Result<(), String> {
    match (reference, ours) {
        (Value::Object(r), Value::Object(o)) => {
            let rk: Vec<&String> = r.keys().collect();
            let mut ok: Vec<&String> = o.keys().collect();
            let mut rks = rk.clone();
            rks.sort();
            ok.sort();
            if rks != ok {
                return Err(format!("keys differ: reference {rks:?}, ours {ok:?}"));
            }
            for (k, v) in r {
                same_shape(v, &o[k], k).map_err(|e| format!("{k}: {e}"))?;
            }
            Ok(())
        }
        (Value::Array(r), Value::Array(o)) => {
            if r.len() != o.len() {
                return Err(format!("lengths differ: {} vs {}", r.len(), o.len()));
            }
            for (i, (a, b)) in r.iter().zip(o).enumerate() {
                same_shape(a, b, key).map_err(|e| format!("[{i}]: {e}"))?;
            }
            Ok(())
        }
        (Value::String(r), Value::String(o)) => {
            let same_kind = (is_timestamp(r) && is_timestamp(o))
                || (is_hex64(r) && is_hex64(o))
                || (is_backup_id(r) && is_backup_id(o));
            if r == o || same_kind {
                Ok(())
            } else {
                Err(format!("{r:?} vs {o:?}"))
            }
        }
        (Value::Number(_), Value::Number(_)) if RUN_NUMBERS.contains(&key) => Ok(()),
        (r, o) if r == o => Ok(()),
        (r, o) => Err(format!("{r} vs {o}")),
    }
}

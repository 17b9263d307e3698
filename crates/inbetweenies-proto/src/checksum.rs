//! Content checksums: SHA-256 over a canonical JSON encoding.
//!
//! The canonical encoding sorts object keys (by their UTF-8 bytes) at every
//! depth and writes no insignificant white space; strings and numbers are
//! written as `serde_json` writes them. Equal content therefore gives equal
//! checksums whatever the key order it was built or received in.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::CodecError;
use crate::model::JsonObject;

/// Writes `value` in canonical form.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, v) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The checksum of an entity's `content`: lowercase hex SHA-256 of its canonical JSON.
pub fn content_checksum(content: &JsonObject) -> String {
    value_checksum(&Value::Object(content.clone()))
}

/// The checksum of any JSON value.
pub fn value_checksum(value: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(value).as_bytes()))
}

/// Checks `content` against a checksum that was sent with it (case-insensitive hex).
pub fn verify_content_checksum(content: &JsonObject, expected: &str) -> Result<(), CodecError> {
    let actual = content_checksum(content);
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(CodecError::ChecksumMismatch {
            expected: expected.to_owned(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a: JsonObject = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"é"}}"#).unwrap();
        let b: JsonObject = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(content_checksum(&a), content_checksum(&b));
        assert_eq!(
            canonical_json(&Value::Object(a.clone())),
            r#"{"a":{"x":"é","y":[1,2]},"b":1}"#
        );
        verify_content_checksum(&a, &content_checksum(&b)).unwrap();
    }

    #[test]
    fn different_content_differs() {
        let a = json!({"power": "on"});
        let b = json!({"power": "off"});
        assert_ne!(value_checksum(&a), value_checksum(&b));
        let a = a.as_object().unwrap();
        assert!(verify_content_checksum(a, &value_checksum(&b)).is_err());
    }
}

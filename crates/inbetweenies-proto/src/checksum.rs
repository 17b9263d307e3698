//! Content checksums: SHA-256 over a canonical JSON encoding.
//!
//! The canonical encoding sorts object keys (by their UTF-8 bytes) at every
//! depth and writes no insignificant white space; strings are written as
//! `serde_json` writes them, and numbers with every digit as they were sent
//! (see [`canonical_number`]). Equal content therefore gives equal checksums
//! whatever the key order it was built or received in.

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
        Value::Number(n) => canonical_number(&n.to_string(), out),
        other => out.push_str(&other.to_string()),
    }
}

/// Writes a JSON number token in canonical form (PROTOCOL §4.6): its sign,
/// integer digits and fraction exactly as sent (`-0`, `1.0`, `1.50` and
/// integers of any size stay as they are), and an exponent as a lowercase
/// `e`, an explicit sign (`+` when none was sent) and its digits as sent:
/// `1E2` and `1e2` are written `1e+2`, `5E-07` is written `5e-07`. The
/// integer `-0` is the integer zero and is written `0` (`-0.0` stays).
pub fn canonical_number(token: &str, out: &mut String) {
    if token == "-0" {
        out.push('0');
        return;
    }
    match token.find(['e', 'E']) {
        None => out.push_str(token),
        Some(at) => {
            out.push_str(&token[..at]);
            out.push('e');
            let exp = &token[at + 1..];
            if !exp.starts_with(['+', '-']) {
                out.push('+');
            }
            out.push_str(exp);
        }
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

    #[test]
    fn numbers_keep_every_digit() {
        let sent = r#"{"a":-9223372036854775809,"b":18446744073709551616,"c":-0,"d":-0.0,"e":1.0,"f":1,"g":1E2,"h":1e2,"i":1e400,"j":5E-07,"k":3.14159265358979323846264338327950288419716939937510,"l":1e+2}"#;
        let canonical = r#"{"a":-9223372036854775809,"b":18446744073709551616,"c":0,"d":-0.0,"e":1.0,"f":1,"g":1e+2,"h":1e+2,"i":1e+400,"j":5e-07,"k":3.14159265358979323846264338327950288419716939937510,"l":1e+2}"#;
        let v: Value = serde_json::from_str(sent).unwrap();
        assert_eq!(canonical_json(&v), canonical);
        // `1.0` and `1`, `100` and `1e2` are different content.
        assert_ne!(
            value_checksum(&json!({"n": 1.0})),
            value_checksum(&json!({"n": 1}))
        );
        let hundred: Value = serde_json::from_str(r#"{"n":100}"#).unwrap();
        let exp: Value = serde_json::from_str(r#"{"n":1e2}"#).unwrap();
        assert_ne!(value_checksum(&hundred), value_checksum(&exp));
    }

    #[test]
    fn exponents_are_spelled_one_way() {
        for (token, want) in [
            ("1e2", "1e+2"),
            ("1E2", "1e+2"),
            ("1E+2", "1e+2"),
            ("1e-2", "1e-2"),
            ("-2.50E-007", "-2.50e-007"),
            ("12", "12"),
            ("-0.0", "-0.0"),
            ("-0", "0"),
        ] {
            let mut out = String::new();
            canonical_number(token, &mut out);
            assert_eq!(out, want, "{token}");
        }
    }
}

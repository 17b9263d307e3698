//! FastAPI/pydantic-style validation details, so `detail` reads as the reference's does.

use inbetweenies_proto::{FieldError, FieldErrorKind, ValidationError};
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// One item of a FastAPI validation `detail` list.
pub(crate) fn item(kind: &str, loc: Vec<Value>, msg: impl Into<String>, input: Value) -> Value {
    json!({"type": kind, "loc": loc, "msg": msg.into(), "input": input})
}

/// The same with a `ctx` object.
pub(crate) fn item_ctx(
    kind: &str,
    loc: Vec<Value>,
    msg: impl Into<String>,
    input: Value,
    ctx: Value,
) -> Value {
    json!({"type": kind, "loc": loc, "msg": msg.into(), "input": input, "ctx": ctx})
}

/// `["body", …path]`.
pub(crate) fn body_loc(path: &[Value]) -> Vec<Value> {
    let mut loc = vec![Value::from("body")];
    loc.extend_from_slice(path);
    loc
}

/// The detail item for one invalid field of a body.
pub(crate) fn field_item(f: &FieldError) -> Value {
    let loc = body_loc(&f.path.to_json());
    let input = f.input.clone();
    match &f.kind {
        FieldErrorKind::Missing => item("missing", loc, "Field required", input),
        FieldErrorKind::NotAnObject => item(
            "model_attributes_type",
            loc,
            "Input should be a valid dictionary or object to extract fields from",
            input,
        ),
        FieldErrorKind::NotAString => {
            item("string_type", loc, "Input should be a valid string", input)
        }
        FieldErrorKind::NotAList => item("list_type", loc, "Input should be a valid list", input),
        FieldErrorKind::NotADict => item(
            "dict_type",
            loc,
            "Input should be a valid dictionary",
            input,
        ),
        FieldErrorKind::NotAllowed { allowed } => pattern_item(loc, allowed, input),
        // A value outside an open enumeration, refused in strict mode (PROTOCOL §12.5).
        FieldErrorKind::UnknownValue { allowed } => enum_item(loc, allowed, input),
        FieldErrorKind::BadTimestamp(why) => item_ctx(
            "datetime_from_date_parsing",
            loc,
            format!("Input should be a valid datetime or date, {why}"),
            input,
            json!({"error": why}),
        ),
        FieldErrorKind::Empty => item_ctx(
            "string_too_short",
            loc,
            "String should have at least 1 character",
            input,
            json!({"min_length": 1}),
        ),
        // Pydantic's item for a `max_length`, worded in bytes, which is what is counted.
        FieldErrorKind::TooLong { max_bytes } => item_ctx(
            "string_too_long",
            loc,
            format!("String should have at most {max_bytes} bytes (UTF-8)"),
            input,
            json!({"max_length": max_bytes}),
        ),
        other => {
            let why = FieldError {
                path: Default::default(),
                kind: other.clone(),
                input: Value::Null,
            }
            .to_string();
            let why = why.trim_start_matches("<body>: ").to_owned();
            item_ctx(
                "value_error",
                loc,
                format!("Value error, {why}"),
                input,
                json!({"error": why}),
            )
        }
    }
}

/// How a string a request hands the store is checked (the rules of
/// `inbetweenies_proto::validate`, through its own functions).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rule {
    /// A key string: no U+0000, at most `MAX_KEY_BYTES` bytes.
    Key,
    /// A list of key strings (parent versions): each as [`Rule::Key`].
    KeyList,
    /// An entity name: no U+0000, at most `MAX_NAME_BYTES` bytes.
    Name,
    /// A stored or selecting value: no U+0000 in any string or object key, at any depth.
    NulFree,
}

/// The detail items, with `loc` starting at `source` (`"body"`, `"query"` or
/// `"path"`), for the named values that break their [`Rule`]. A value of the
/// wrong JSON type is left to the reader of the field to report.
pub(crate) fn string_items<'v>(
    source: &str,
    values: impl IntoIterator<Item = (&'v str, &'v Value, Rule)>,
) -> Vec<Value> {
    let mut errs = Vec::new();
    for (name, value, rule) in values {
        let at = inbetweenies_proto::FieldPath::default().key(name);
        match (rule, value) {
            (Rule::Key, Value::String(s)) => {
                errs.extend(inbetweenies_proto::validate::check_key(s, &at));
            }
            (Rule::KeyList, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(s) = item {
                        errs.extend(inbetweenies_proto::validate::check_key(s, &at.index(i)));
                    }
                }
            }
            (Rule::Name, Value::String(s)) => {
                errs.extend(inbetweenies_proto::validate::check_name(s, &at));
            }
            (Rule::Key | Rule::KeyList | Rule::Name, _) => {}
            (Rule::NulFree, v) => errs.extend(inbetweenies_proto::validate::nul_characters(v, &at)),
        }
    }
    errs.iter()
        .map(|e| {
            let mut item = field_item(e);
            item["loc"][0] = Value::from(source);
            item
        })
        .collect()
}

/// A `string_pattern_mismatch` item for a value outside `allowed`.
pub(crate) fn pattern_item(loc: Vec<Value>, allowed: &[&str], input: Value) -> Value {
    let pattern = format!("^({})$", allowed.join("|"));
    item_ctx(
        "string_pattern_mismatch",
        loc,
        format!("String should match pattern '{pattern}'"),
        input,
        json!({"pattern": pattern}),
    )
}

/// An `enum` item for a value outside a known set (pydantic's wording).
pub(crate) fn enum_item(loc: Vec<Value>, allowed: &[&str], input: Value) -> Value {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    let expected = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    };
    item_ctx(
        "enum",
        loc,
        format!("Input should be {expected}"),
        input,
        json!({"expected": expected}),
    )
}

/// The 422 answer for a body that failed validation.
pub(crate) fn validation_error(err: &ValidationError) -> ApiError {
    let detail = match err {
        ValidationError::Json { position, message } => vec![item_ctx(
            "json_invalid",
            vec![Value::from("body"), Value::from(*position)],
            "JSON decode error",
            Value::Object(Map::new()),
            json!({"error": message}),
        )],
        ValidationError::EmptyBody => vec![item(
            "missing",
            vec![Value::from("body")],
            "Field required",
            Value::Null,
        )],
        ValidationError::Fields(fields) => fields.iter().map(field_item).collect(),
        _ => vec![item(
            "value_error",
            vec![Value::from("body")],
            err.to_string(),
            Value::Null,
        )],
    };
    ApiError::validation(
        Value::Array(detail),
        err.to_string(),
        err.first_field().map(|f| f.path.to_string()),
    )
}

/// The 422 answer for a list of detail items (the first names the field).
pub(crate) fn validation_items(items: Vec<Value>) -> ApiError {
    let first = items.first().cloned().unwrap_or(Value::Null);
    let field = loc_to_field(&first["loc"]);
    let msg = first["msg"]
        .as_str()
        .unwrap_or("invalid request")
        .to_owned();
    let message = match &field {
        Some(f) => format!("invalid request: {f}: {}", msg.to_lowercase()),
        None => format!("invalid request: {}", msg.to_lowercase()),
    };
    ApiError::validation(Value::Array(items), message, field)
}

/// `["body","changes",0,"entity"]` → `changes[0].entity`.
fn loc_to_field(loc: &Value) -> Option<String> {
    let parts = loc.as_array()?;
    let mut out = String::new();
    for p in parts.iter().skip(1) {
        match p {
            Value::String(s) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(s);
            }
            Value::Number(n) => out.push_str(&format!("[{n}]")),
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Reads typed fields from a JSON object body, collecting pydantic-style errors.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: Vec<Value>,
    pub errors: Vec<Value>,
}

impl<'a> Fields<'a> {
    /// Starts reading `value`, which must be an object (else the error is returned).
    pub fn new(value: &'a Value) -> Result<Self, ApiError> {
        match value.as_object() {
            Some(obj) => Ok(Fields {
                obj,
                prefix: vec![Value::from("body")],
                errors: Vec::new(),
            }),
            None => Err(validation_items(vec![item(
                "model_attributes_type",
                vec![Value::from("body")],
                "Input should be a valid dictionary or object to extract fields from",
                value.clone(),
            )])),
        }
    }

    fn loc(&self, key: &str) -> Vec<Value> {
        let mut l = self.prefix.clone();
        l.push(Value::from(key));
        l
    }

    fn missing(&mut self, key: &str) {
        let e = item(
            "missing",
            self.loc(key),
            "Field required",
            Value::Object(self.obj.clone()),
        );
        self.errors.push(e);
    }

    /// The first present, non-null key of `keys` (aliases).
    fn get_any(&self, keys: &[&str]) -> Option<(&'a str, &'a Value)> {
        for k in keys {
            if let Some((key, v)) = self.obj.get_key_value(*k) {
                if !v.is_null() {
                    return Some((key.as_str(), v));
                }
            }
        }
        None
    }

    /// A required string (first of the aliases); `min_len` 1 rejects "".
    pub fn req_str(&mut self, keys: &[&str], min_len: usize) -> Option<String> {
        match self.get_any(keys) {
            None => {
                self.missing(keys[0]);
                None
            }
            Some((k, v)) => self.string(k, v, min_len),
        }
    }

    /// An optional string.
    pub fn opt_str(&mut self, keys: &[&str]) -> Option<String> {
        let (k, v) = self.get_any(keys)?;
        self.string(k, v, 0)
    }

    fn string(&mut self, key: &str, v: &Value, min_len: usize) -> Option<String> {
        match v {
            Value::String(s) if s.chars().count() >= min_len => Some(s.clone()),
            Value::String(s) => {
                let e = item_ctx(
                    "string_too_short",
                    self.loc(key),
                    format!(
                        "String should have at least {min_len} character{}",
                        if min_len == 1 { "" } else { "s" }
                    ),
                    Value::String(s.clone()),
                    json!({"min_length": min_len}),
                );
                self.errors.push(e);
                None
            }
            other => {
                let e = item(
                    "string_type",
                    self.loc(key),
                    "Input should be a valid string",
                    other.clone(),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// An optional JSON object.
    pub fn opt_obj(&mut self, key: &str) -> Option<Map<String, Value>> {
        let (k, v) = self.get_any(&[key])?;
        match v {
            Value::Object(m) => Some(m.clone()),
            other => {
                let e = item(
                    "dict_type",
                    self.loc(k),
                    "Input should be a valid dictionary",
                    other.clone(),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// An optional list of strings.
    pub fn opt_str_list(&mut self, key: &str) -> Option<Vec<String>> {
        let (k, v) = self.get_any(&[key])?;
        match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    match it {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            let mut loc = self.loc(k);
                            loc.push(Value::from(i));
                            self.errors.push(item(
                                "string_type",
                                loc,
                                "Input should be a valid string",
                                other.clone(),
                            ));
                        }
                    }
                }
                Some(out)
            }
            other => {
                let e = item(
                    "list_type",
                    self.loc(k),
                    "Input should be a valid list",
                    other.clone(),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// An optional non-negative integer no larger than `max`.
    pub fn opt_uint(&mut self, key: &str, max: u64) -> Option<u64> {
        let (k, v) = self.get_any(&[key])?;
        match v.as_u64() {
            Some(n) if n <= max => Some(n),
            Some(n) => {
                let e = item_ctx(
                    "less_than_equal",
                    self.loc(k),
                    format!("Input should be less than or equal to {max}"),
                    Value::from(n),
                    json!({"le": max}),
                );
                self.errors.push(e);
                None
            }
            None => {
                let e = item(
                    "int_type",
                    self.loc(k),
                    "Input should be a valid integer",
                    v.clone(),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// An optional number (integer or float) greater than zero.
    pub fn opt_positive_f64(&mut self, key: &str) -> Option<f64> {
        let (k, v) = self.get_any(&[key])?;
        match v.as_f64() {
            Some(n) if n > 0.0 && n.is_finite() => Some(n),
            Some(_) => {
                let e = item_ctx(
                    "greater_than",
                    self.loc(k),
                    "Input should be greater than 0",
                    v.clone(),
                    json!({"gt": 0}),
                );
                self.errors.push(e);
                None
            }
            None => {
                let e = item(
                    "float_type",
                    self.loc(k),
                    "Input should be a valid number",
                    v.clone(),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// Records an error for a value outside a known set.
    pub fn enum_error(&mut self, key: &str, allowed: &[&str], input: &str) {
        let e = enum_item(self.loc(key), allowed, Value::from(input));
        self.errors.push(e);
    }

    /// Ends reading: the 422 answer if anything was wrong.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(validation_items(self.errors))
        }
    }
}

/// The 422 for a missing query parameter.
pub(crate) fn missing_query(name: &str) -> ApiError {
    validation_items(vec![item(
        "missing",
        vec![Value::from("query"), Value::from(name)],
        "Field required",
        Value::Null,
    )])
}

/// The 422 for a query parameter that is not a non-negative integer.
pub(crate) fn bad_query_int(name: &str, input: &str) -> ApiError {
    validation_items(vec![item(
        "int_parsing",
        vec![Value::from("query"), Value::from(name)],
        "Input should be a valid integer, unable to parse string as an integer",
        Value::from(input),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_wording_matches_pydantic() {
        let v = enum_item(
            vec![Value::from("body")],
            &["a", "b", "c"],
            Value::from("x"),
        );
        assert_eq!(v["msg"], "Input should be 'a', 'b' or 'c'");
        assert_eq!(v["ctx"]["expected"], "'a', 'b' or 'c'");
    }

    #[test]
    fn loc_becomes_a_field_path() {
        let loc = json!(["body", "changes", 0, "entity", "source_type"]);
        assert_eq!(loc_to_field(&loc).unwrap(), "changes[0].entity.source_type");
    }
}

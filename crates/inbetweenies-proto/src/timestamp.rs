//! Wire timestamps: UTC, explicit `+00:00` offset, microsecond precision.

use std::fmt;
use std::str::FromStr;

use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::error::TimestampError;

/// A point in time as the protocol carries it.
///
/// Always UTC and truncated to whole microseconds, so that a value survives a
/// trip over the wire unchanged. It is written as
/// `2026-06-15T09:41:02.581234+00:00`; when read, an explicit offset is
/// converted to UTC, a trailing `Z` or a naive timestamp (no offset) is taken
/// as UTC, and a number is taken as seconds since the Unix epoch (milliseconds
/// when it is larger than `2e10`), as the reference server accepts. Years
/// outside 0000 to 9999 (after conversion to UTC) are refused, so every value
/// read can be written back in the wire form and read again.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

const WIRE_FORMAT: &[time::format_description::FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00");

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp(OffsetDateTime::UNIX_EPOCH);

    /// The current time, read from the system clock.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Wraps a `time` value, converting it to UTC and truncating to microseconds.
    ///
    /// Meant for trusted values such as the system clock; input from the wire
    /// goes through [`Timestamp::parse`], which refuses what cannot be written
    /// back.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        // `to_offset` panics when UTC falls outside `time`'s range; saturate instead.
        let dt = dt
            .checked_to_offset(UtcOffset::UTC)
            .unwrap_or(if dt.year() < 0 {
                time::PrimitiveDateTime::MIN.assume_utc()
            } else {
                time::PrimitiveDateTime::MAX.assume_utc()
            });
        let micros = dt.microsecond();
        // Truncation to microseconds cannot fail: the value is in range.
        let dt = dt.replace_microsecond(micros).unwrap_or(dt);
        Timestamp(dt)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    /// Builds a timestamp from microseconds since the Unix epoch (years 0000 to 9999).
    pub fn from_unix_micros(micros: i64) -> Result<Self, TimestampError> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .ok()
            .and_then(Self::checked)
            .ok_or_else(|| TimestampError::OutOfRange(micros.to_string()))
    }

    /// Converts to UTC, keeping only years the wire form can carry (0000 to
    /// 9999, four digits), so every timestamp read can be written and read back.
    fn checked(dt: OffsetDateTime) -> Option<Self> {
        let utc = dt.checked_to_offset(UtcOffset::UTC)?;
        (0..=9999)
            .contains(&utc.year())
            .then(|| Self::from_datetime(utc))
    }

    /// The underlying `time` value (always UTC).
    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    /// Parses any accepted form (see the type's docs).
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TimestampError::Invalid(s.to_owned()));
        }
        let out_of_range = || TimestampError::OutOfRange(s.to_owned());
        if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
            return Self::checked(dt).ok_or_else(out_of_range);
        }
        // Naive form: read as UTC, as the reference does.
        if let Ok(dt) = OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339) {
            return Self::checked(dt).ok_or_else(out_of_range);
        }
        // A space instead of `T`, as Python's `str(datetime)` writes.
        if s.len() > 10 && s.as_bytes()[10] == b' ' {
            let t = format!("{}T{}", &s[..10], &s[11..]);
            return Self::parse(&t);
        }
        Err(TimestampError::Invalid(s.to_owned()))
    }

    /// Reads a number of seconds (or milliseconds above `2e10`) since the epoch.
    pub fn from_unix_number(n: f64) -> Result<Self, TimestampError> {
        if !n.is_finite() {
            return Err(TimestampError::OutOfRange(n.to_string()));
        }
        let secs = if n.abs() > 2e10 { n / 1000.0 } else { n };
        let micros = (secs * 1_000_000.0).round();
        if micros.abs() > 2.5e17 {
            return Err(TimestampError::OutOfRange(n.to_string()));
        }
        Self::from_unix_micros(micros as i64)
    }

    /// Adds a number of microseconds (negative to subtract), saturating at the range ends.
    pub fn saturating_add_micros(&self, micros: i64) -> Self {
        let d = time::Duration::microseconds(micros);
        Timestamp(self.0.checked_add(d).unwrap_or(self.0))
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(dt: OffsetDateTime) -> Self {
        Self::from_datetime(dt)
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(WIRE_FORMAT) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// Reads a string in any accepted form, or a JSON number of seconds (or
    /// milliseconds) in any spelling: `1700000000`, `1.7e9` and
    /// `1700000000.000` alike. The number goes through a JSON value, whose
    /// number keeps its exact text, so no spelling is lost on the way.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Timestamp::parse(&s).map_err(de::Error::custom),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) => Timestamp::from_unix_number(f).map_err(de::Error::custom),
                None => Err(de::Error::custom(TimestampError::OutOfRange(n.to_string()))),
            },
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"an ISO-8601 timestamp or a Unix time in seconds",
            )),
        }
    }
}

/// How a JSON value that is neither a string nor a number is named in an error.
fn unexpected(v: &serde_json::Value) -> de::Unexpected<'_> {
    match v {
        serde_json::Value::Null => de::Unexpected::Unit,
        serde_json::Value::Bool(b) => de::Unexpected::Bool(*b),
        serde_json::Value::Array(_) => de::Unexpected::Seq,
        _ => de::Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_offset_and_micros() {
        let t = Timestamp::parse("2026-06-15T09:41:02.5812349Z").unwrap();
        assert_eq!(t.to_string(), "2026-06-15T09:41:02.581234+00:00");
    }

    #[test]
    fn reads_naive_and_offsets_as_utc() {
        let naive = Timestamp::parse("2020-01-01T00:00:00").unwrap();
        let z = Timestamp::parse("2020-01-01T00:00:00Z").unwrap();
        let plus2 = Timestamp::parse("2020-01-01T02:00:00+02:00").unwrap();
        assert_eq!(naive, z);
        assert_eq!(naive, plus2);
        assert_eq!(naive.to_string(), "2020-01-01T00:00:00.000000+00:00");
    }

    #[test]
    fn rejects_garbage_and_out_of_range() {
        assert!(Timestamp::parse("not-a-date").is_err());
        assert!(Timestamp::parse("2026-13-45T25:61:00+00:00").is_err());
        assert!(Timestamp::parse("").is_err());
    }

    #[test]
    fn reads_epoch_numbers() {
        let t: Timestamp = serde_json::from_str("1700000000").unwrap();
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.000000+00:00");
        let ms: Timestamp = serde_json::from_str("1700000000000").unwrap();
        assert_eq!(t, ms);
    }

    #[test]
    fn reads_numbers_in_any_spelling() {
        let t: Timestamp = serde_json::from_str("1700000000").unwrap();
        for text in ["1.7e9", "1.7E+9", "1700000000.000", "17e8"] {
            let from_text: Timestamp = serde_json::from_str(text).unwrap();
            assert_eq!(from_text, t, "{text}");
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let from_value: Timestamp = serde_json::from_value(value).unwrap();
            assert_eq!(from_value, t, "{text}");
        }
        assert!(serde_json::from_str::<Timestamp>("1e400").is_err());
        assert!(serde_json::from_str::<Timestamp>("true").is_err());
    }
}

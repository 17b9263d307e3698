//! Version strings: `{utc-iso8601}-{6-digit counter}-{user_id}`, lexically chronological.

use std::cmp::Ordering;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use serde::{Deserialize, Serialize};

use crate::error::VersionError;
use crate::timestamp::Timestamp;

/// A version string naming one immutable edit of an entity.
///
/// The canonical form is `2026-06-15T09:41:02.581234+00:00-000417-alice`:
/// the editor's clock at the time of the edit, a per-process counter (six
/// digits, wrapping) that keeps versions made in the same microsecond apart,
/// and the editing user's id. Lexical order of canonical versions is
/// chronological order, which is why [`Ord`] compares the raw strings.
///
/// Any string is carried unchanged (the wire treats versions as opaque); use
/// [`Version::parse`] to read its parts. Legacy forms parse too: a trailing
/// `Z` instead of `+00:00`, `+00:00Z`, and no counter at all
/// (`2024-01-15T10:30:00.000000Z-alice`). They are never generated.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(String);

/// The parts of a parsed version string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionParts {
    /// The editor's clock when the edit was made.
    pub timestamp: Timestamp,
    /// The per-process counter, when the version carries one.
    pub counter: Option<u32>,
    /// The editing user's id.
    pub user_id: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Version {
    /// Wraps a version string as it is, without checking its form.
    pub fn new(s: impl Into<String>) -> Self {
        Version(s.into())
    }

    /// Makes a fresh version for an edit by `user_id` at `at` (the editor's clock).
    ///
    /// The counter is shared by the whole process and increases with each call,
    /// so two versions made in one process never collide.
    pub fn generate(at: Timestamp, user_id: &str) -> Self {
        let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed) % 1_000_000;
        Version(format!("{at}-{n:06}-{user_id}"))
    }

    /// Makes a fresh version stamped with the system clock.
    pub fn now(user_id: &str) -> Self {
        Self::generate(Timestamp::now(), user_id)
    }

    /// The version string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the version, returning its string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Reads the parts of the version string.
    pub fn parse(&self) -> Result<VersionParts, VersionError> {
        parse_version(&self.0)
    }

    /// The editor's clock at the time of the edit.
    pub fn timestamp(&self) -> Result<Timestamp, VersionError> {
        self.parse().map(|p| p.timestamp)
    }

    /// Checks that the string parses, returning it unchanged.
    pub fn validated(self) -> Result<Self, VersionError> {
        self.parse()?;
        Ok(self)
    }
}

fn parse_version(s: &str) -> Result<VersionParts, VersionError> {
    let bad = |why: &'static str| VersionError {
        version: s.to_owned(),
        reason: why,
    };
    // The timestamp ends at the offset: `+00:00`, `Z`, `+00:00Z`, or another `+hh:mm`/`-hh:mm`.
    // Find the `T` separating date and time, then the first offset marker after it.
    let t_pos = s.find('T').ok_or_else(|| bad("no timestamp"))?;
    let rest = &s[t_pos..];
    let off_rel = rest
        .find(['+', 'Z', 'z'])
        .or_else(|| rest[1..].find('-').map(|p| p + 1))
        .ok_or_else(|| bad("no timestamp offset"))?;
    let mut ts_end = t_pos + off_rel;
    let bytes = s.as_bytes();
    match bytes[ts_end] {
        b'Z' | b'z' => ts_end += 1,
        _ => {
            // `+hh:mm` or `-hh:mm`
            if s.len() < ts_end + 6 {
                return Err(bad("truncated offset"));
            }
            ts_end += 6;
            if matches!(bytes.get(ts_end), Some(b'Z' | b'z')) {
                // The `+00:00Z` form some clients write.
                ts_end += 1;
            }
        }
    }
    // The offset is ASCII in any valid version; anything else ends mid-character.
    let ts_str = s
        .get(..ts_end)
        .ok_or_else(|| bad("unparseable timestamp"))?;
    let ts_clean = ts_str
        .strip_suffix(['Z', 'z'])
        .filter(|t| {
            t.ends_with(":00")
                && t.len() > 6
                && (t.as_bytes()[t.len() - 6] == b'+' || t.as_bytes()[t.len() - 6] == b'-')
        })
        .unwrap_or(ts_str);
    let timestamp = Timestamp::parse(ts_clean).map_err(|_| bad("unparseable timestamp"))?;
    let tail = s[ts_end..]
        .strip_prefix('-')
        .ok_or_else(|| bad("missing '-' after timestamp"))?;
    let (counter, user_id) = match tail.split_once('-') {
        Some((digits, user)) if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            (
                Some(digits.parse::<u32>().map_err(|_| bad("bad counter"))?),
                user,
            )
        }
        _ => (None, tail),
    };
    if user_id.is_empty() {
        return Err(bad("empty user id"));
    }
    Ok(VersionParts {
        timestamp,
        counter,
        user_id: user_id.to_owned(),
    })
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", self.0)
    }
}

impl From<&str> for Version {
    fn from(s: &str) -> Self {
        Version(s.to_owned())
    }
}

impl From<String> for Version {
    fn from(s: String) -> Self {
        Version(s)
    }
}

impl AsRef<str> for Version {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip() {
        let v = Version::new("2026-06-15T09:41:02.581234+00:00-000417-alice");
        let p = v.parse().unwrap();
        assert_eq!(p.timestamp.to_string(), "2026-06-15T09:41:02.581234+00:00");
        assert_eq!(p.counter, Some(417));
        assert_eq!(p.user_id, "alice");
    }

    #[test]
    fn user_ids_with_dashes() {
        let p = Version::new("2020-01-01T00:00:00.000000+00:00-000001-old-device")
            .parse()
            .unwrap();
        assert_eq!(p.user_id, "old-device");
        assert_eq!(p.counter, Some(1));
    }

    #[test]
    fn legacy_forms() {
        let z = Version::new("2024-01-15T10:30:00.123456Z-alice")
            .parse()
            .unwrap();
        assert_eq!(z.counter, None);
        assert_eq!(z.user_id, "alice");
        assert_eq!(z.timestamp.to_string(), "2024-01-15T10:30:00.123456+00:00");
        let pz = Version::new("2026-11-21T23:10:35.907338+00:00Z-blowing-off-cli")
            .parse()
            .unwrap();
        assert_eq!(pz.user_id, "blowing-off-cli");
        assert_eq!(pz.timestamp.to_string(), "2026-11-21T23:10:35.907338+00:00");
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "v1",
            "2026-06-15T09:41:02",
            "2026-06-15T09:41:02+00:00",
            "2026-06-15T09:41:02+00:00-",
            "2026-99-15T09:41:02+00:00-000001-a",
        ] {
            assert!(Version::new(s).parse().is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn generated_versions_are_canonical_and_increasing() {
        let t = Timestamp::parse("2026-06-15T09:41:02.581234+00:00").unwrap();
        let a = Version::generate(t, "bob");
        let b = Version::generate(t, "bob");
        assert!(a.as_str().starts_with("2026-06-15T09:41:02.581234+00:00-"));
        assert_ne!(a, b);
        assert_eq!(a.parse().unwrap().user_id, "bob");
        assert!(!a.as_str().contains('Z'));
    }
}

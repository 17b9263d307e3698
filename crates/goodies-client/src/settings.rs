//! Connection settings and sync records persisted in the local store's settings table.

use inbetweenies_proto::{ConflictInfo, Entity, Timestamp, Version};

use crate::ClientError;
use serde::{Deserialize, Serialize};

/// Setting keys.
pub mod keys {
    /// The server's base URL.
    pub const SERVER_URL: &str = "server_url";
    /// The bearer token.
    pub const AUTH_TOKEN: &str = "auth_token";
    /// This client's id (a UUID made on first open; sent as `device_id`).
    pub const CLIENT_ID: &str = "client_id";
    /// The user edits are made by.
    pub const USER_ID: &str = "user_id";
    /// Where the local database lives.
    pub const DB_PATH: &str = "db_path";
    /// The last sync's summary (JSON).
    pub const LAST_SYNC: &str = "last_sync";
    /// The last digest comparison (JSON).
    pub const LAST_DIGEST_CHECK: &str = "last_digest_check";
    /// Conflicts recent syncs reported (JSON list).
    pub const RECENT_CONFLICTS: &str = "recent_conflicts";
    /// The versions this device authored and pushed, per entity id (JSON list of
    /// `[id, version]`, least recently edited first).
    pub const AUTHORED_VERSIONS: &str = "authored_versions";
    /// The servers that refused a gzipped request body, and when (JSON: see
    /// [`super::GzipRefusals`]).
    pub const GZIP_REFUSED: &str = "gzip_refused";
}

/// How long a server's refusal of gzipped request bodies is remembered: for this long
/// the client sends that server plain bodies only, then tries gzip once more (and
/// remembers again if it is still refused).
pub const GZIP_RETRY_AFTER_DAYS: i64 = 7;

/// How many servers' refusals are remembered (the oldest are forgotten first).
pub const GZIP_REFUSALS_KEPT: usize = 32;

/// The servers that refused a gzipped request body, by server URL, with when the
/// refusal was last seen (local clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GzipRefusals(pub std::collections::BTreeMap<String, Timestamp>);

impl GzipRefusals {
    /// Whether `server_url` refused gzip less than [`GZIP_RETRY_AFTER_DAYS`] before `now`.
    pub fn refused_recently(&self, server_url: &str, now: Timestamp) -> bool {
        self.0.get(server_url).is_some_and(|at| {
            let age = now.unix_micros().saturating_sub(at.unix_micros());
            age < GZIP_RETRY_AFTER_DAYS * 86_400 * 1_000_000
        })
    }

    /// Records a refusal by `server_url` at `now`, dropping expired entries and, past
    /// [`GZIP_REFUSALS_KEPT`], the oldest.
    pub fn record(&mut self, server_url: &str, now: Timestamp) {
        self.0.insert(server_url.to_owned(), now);
        let live: std::collections::BTreeMap<String, Timestamp> = self
            .0
            .iter()
            .filter(|(url, _)| self.refused_recently(url, now))
            .map(|(u, t)| (u.clone(), *t))
            .collect();
        self.0 = live;
        while self.0.len() > GZIP_REFUSALS_KEPT {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(u, _)| u.clone());
            match oldest {
                Some(u) => self.0.remove(&u),
                None => break,
            };
        }
    }
}

/// How many decided conflicts are kept for [`crate::BlowingOffClient::recent_conflicts`].
pub const RECENT_CONFLICTS_KEPT: usize = 200;

/// The connection settings. Their `Debug` does not show the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Settings {
    /// The server's base URL (e.g. `http://127.0.0.1:8000`).
    pub server_url: Option<String>,
    /// The bearer token.
    pub auth_token: Option<String>,
    /// This client's id, sent as `device_id`.
    pub client_id: String,
    /// The user edits are made by.
    pub user_id: String,
    /// Where the local database lives.
    pub db_path: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("server_url", &self.server_url)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("client_id", &self.client_id)
            .field("user_id", &self.user_id)
            .field("db_path", &self.db_path)
            .finish()
    }
}

/// The outcome of comparing the server's `state_digest` with the local one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DigestCheck {
    /// When it was made (local clock).
    pub at: Timestamp,
    /// The server's digest.
    pub server: String,
    /// The local digest.
    pub local: String,
}

impl DigestCheck {
    /// Whether both sides agree.
    pub fn matches(&self) -> bool {
        self.server == self.local
    }
}

/// A short record of the last sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastSync {
    /// When it finished (local clock).
    pub at: Timestamp,
    /// Whether it finished without errors.
    pub ok: bool,
    /// Entities pushed and pulled.
    pub synced_entities: u64,
    /// Conflicts the server decided.
    pub conflicts_resolved: u64,
    /// The errors, as messages.
    pub errors: Vec<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// Whose push met the conflict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictOrigin {
    /// This device pushed an edit and the server decided against or for it at once
    /// (`conflict.remote_version` is this device's edit, `local_version` the server's).
    #[default]
    ThisDevice,
    /// Another device's push replaced this device's edit, learnt on a later pull
    /// (`conflict.local_version` is this device's edit, `remote_version` the other
    /// device's, which is latest).
    OtherDevice,
}

/// Which edit is latest after a conflict, from this device's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictOutcome {
    /// This device's edit.
    Ours,
    /// The other device's edit (or the server's version).
    Theirs,
    /// A version the server merged from both.
    Merged,
    /// Nothing decided yet: the conflict waits in the server's review queue (the
    /// server's version stays latest meanwhile).
    AwaitingReview,
}

/// A conflict a sync reported, with when it was received and both versions' content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordedConflict {
    /// When the sync received it (local clock).
    pub at: Timestamp,
    /// The server's decision (for [`ConflictOrigin::OtherDevice`], made up from the two
    /// versions: `local_version` this device's, `remote_version` and `resolved_version`
    /// the other device's).
    pub conflict: ConflictInfo,
    /// Whose push met it.
    #[serde(default)]
    pub origin: ConflictOrigin,
    /// This device's edit, in full (absent when neither the mirror nor the server had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours: Option<Entity>,
    /// The other side (another device's edit, or the server's version), in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theirs: Option<Entity>,
}

impl RecordedConflict {
    /// This device's version.
    pub fn ours_version(&self) -> &Version {
        match self.origin {
            ConflictOrigin::OtherDevice => &self.conflict.local_version,
            _ => &self.conflict.remote_version,
        }
    }

    /// The other side's version.
    pub fn theirs_version(&self) -> &Version {
        match self.origin {
            ConflictOrigin::OtherDevice => &self.conflict.remote_version,
            _ => &self.conflict.local_version,
        }
    }

    /// Which edit is latest afterwards.
    pub fn outcome(&self) -> ConflictOutcome {
        let c = &self.conflict;
        if c.reason.as_deref() == Some("manual") {
            ConflictOutcome::AwaitingReview
        } else if &c.resolved_version == self.ours_version() {
            ConflictOutcome::Ours
        } else if &c.resolved_version == self.theirs_version() {
            ConflictOutcome::Theirs
        } else {
            ConflictOutcome::Merged
        }
    }

    /// What happened, in words from this device's side ("this device's edit", "the
    /// other device's edit", "the server's").
    pub fn explain(&self) -> String {
        let kept = match self.outcome() {
            ConflictOutcome::Ours => "this device's edit",
            ConflictOutcome::Theirs => match self.origin {
                ConflictOrigin::OtherDevice => "the other device's edit",
                _ => "the server's version (the other device's edit)",
            },
            ConflictOutcome::Merged => "a merge of both edits",
            ConflictOutcome::AwaitingReview => "the server's version for now",
        };
        if self.origin == ConflictOrigin::OtherDevice {
            return "another device pushed an edit that did not build on this device's edit; \
                    the server kept the other device's edit, which replaced this device's edit here"
                .to_owned();
        }
        let why = match self.conflict.reason.as_deref() {
            Some("newer_on_server") => "it was made later than this device's edit".to_owned(),
            Some("newer_on_client") => "it was made later than the server's version".to_owned(),
            Some("tiebreak_version") => {
                "both edits were made within 1 s of each other, so the server compared their version strings".to_owned()
            }
            Some("delete_wins") => {
                "both edits were made within 1 s of each other and one of them is a delete, which wins".to_owned()
            }
            Some("merged") => "fields changed on only one side were combined".to_owned(),
            Some("manual") => {
                "the server queues conflicts for a person to review (`blowing-off conflicts queue`)".to_owned()
            }
            _ => format!("the server said: {}", self.conflict.resolution_strategy),
        };
        format!("the server kept {kept}: {why}")
    }
}

/// Everything `status` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ClientStatus {
    /// The connection settings (the token is not included).
    pub server_url: Option<String>,
    /// Whether a token is stored.
    pub logged_in: bool,
    /// This client's id.
    pub client_id: String,
    /// The user edits are made by.
    pub user_id: String,
    /// Where the local database lives.
    pub db_path: String,
    /// Pending outbox entries (quarantined ones not counted).
    pub pending_changes: u64,
    /// Outbox entries the server refused, kept aside until an edit or a retry.
    pub quarantined_changes: u64,
    /// The watermark (the next `filters.since`).
    pub watermark: Option<Timestamp>,
    /// The cursor of an unfinished pull.
    pub cursor: Option<String>,
    /// The last sync.
    pub last_sync: Option<LastSync>,
    /// The last digest comparison.
    pub last_digest_check: Option<DigestCheck>,
    /// Conflicts recorded by recent syncs (at most [`RECENT_CONFLICTS_KEPT`]).
    pub conflicts: u64,
    /// Of those, conflicts in which another device's edit replaced this device's.
    pub conflicts_from_other_devices: u64,
    /// The most recent conflict, with both versions' content.
    pub last_conflict: Option<RecordedConflict>,
}

/// Checks a server URL and returns it in the form the client stores: trimmed, without a
/// trailing `/`, with a lower-case scheme. The rule: `http://` or `https://`, a host (a
/// name, an IPv4 address, or an IPv6 address in brackets), an optional port 1-65535, an
/// optional path; no spaces, credentials (`user@`), query or fragment. A URL that breaks
/// it is [`ClientError::Invalid`] at once, before any request is tried (`localhost:8000`
/// would otherwise only fail after every retry).
pub fn normalize_server_url(server_url: &str) -> Result<String, ClientError> {
    let bad = |why: &str| {
        ClientError::Invalid(format!(
            "server url {server_url:?} {why} (expected e.g. http://127.0.0.1:8000)"
        ))
    };
    let url = server_url.trim().trim_end_matches('/');
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("must start with http:// or https://"));
    }
    if let Some(c) = rest
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\'))
    {
        return Err(bad(&format!("must not contain {c:?}")));
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '[' in its host"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("has an invalid IPv6 address"));
        }
        match after {
            "" => (authority, None),
            p => (
                authority,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("has text after its host"))?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if !host.starts_with('[')
        && (!host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            || host.starts_with(['.', '-'])
            || host.contains(".."))
    {
        return Err(bad("has an invalid host"));
    }
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return Err(bad("has an invalid port (1-65535)"));
        }
    }
    Ok(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_and_normalized() {
        for (given, stored) in [
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("  HTTP://Example.org:80/ ", "http://Example.org:80"),
            ("https://goodies.local/api/", "https://goodies.local/api"),
            ("http://[::1]:8000", "http://[::1]:8000"),
            ("http://[::1]", "http://[::1]"),
            ("http://home_hub", "http://home_hub"),
        ] {
            assert_eq!(normalize_server_url(given).unwrap(), stored, "{given}");
        }
        for bad in [
            "",
            "localhost:8000",
            "127.0.0.1:8000",
            "ftp://host",
            "http://",
            "http:///path",
            "http://:8000",
            "http://host:0",
            "http://host:65536",
            "http://host:80x",
            "http://host:",
            "http://ho st",
            "http://host?x=1",
            "http://host#top",
            "http://user:pw@host",
            "http://[::1",
            "http://[nope]:1",
            "http://[::1]x",
            "http://.host",
            "http://a..b",
            "http:/host",
        ] {
            let err = normalize_server_url(bad).unwrap_err();
            assert!(
                matches!(&err, ClientError::Invalid(m) if m.contains("server url")),
                "{bad:?}: {err}"
            );
        }
    }

    fn at(days: i64) -> Timestamp {
        Timestamp::from_unix_micros(1_800_000_000_000_000 + days * 86_400 * 1_000_000).unwrap()
    }

    #[test]
    fn gzip_refusals_expire_per_server() {
        let mut r = GzipRefusals::default();
        r.record("http://a:1", at(0));
        assert!(r.refused_recently("http://a:1", at(0)));
        assert!(r.refused_recently(
            "http://a:1",
            at(GZIP_RETRY_AFTER_DAYS).saturating_add_micros(-1)
        ));
        assert!(!r.refused_recently("http://a:1", at(GZIP_RETRY_AFTER_DAYS)));
        assert!(!r.refused_recently("http://b:1", at(0)));
        // A later record drops expired entries.
        r.record("http://b:1", at(GZIP_RETRY_AFTER_DAYS + 1));
        assert_eq!(r.0.len(), 1);
        // At most GZIP_REFUSALS_KEPT servers; the oldest go first.
        let mut r = GzipRefusals::default();
        for i in 0..(GZIP_REFUSALS_KEPT as i64 + 3) {
            r.record(&format!("http://s{i}:1"), at(0).saturating_add_micros(i));
        }
        assert_eq!(r.0.len(), GZIP_REFUSALS_KEPT);
        assert!(!r.0.contains_key("http://s0:1"));
        assert!(r
            .0
            .contains_key(&format!("http://s{}:1", GZIP_REFUSALS_KEPT + 2)));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<GzipRefusals>(&json).unwrap(), r);
    }
}

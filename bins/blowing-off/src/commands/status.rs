//! `status`: the connection with the token checked, pending, refused and conflicting
//! changes, the sync position, the last sync and digest check.

use goodies_client::{token_expires_at, BlowingOffClient, ClientError, Timestamp};
use serde::Serialize;

use crate::exit::Exit;
use crate::output::{opt, Out};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not ask the server (the token is then judged by its expiry alone).
    #[arg(long)]
    pub offline: bool,
}

/// How the stored token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// No token is stored.
    None,
    /// The server accepted it just now.
    Valid,
    /// It has expired (by its own expiry, or the server said so).
    Expired,
    /// The server refused it.
    Refused,
    /// Not checked (the server did not answer, or --offline), and not expired by its
    /// expiry.
    Unverified,
}

impl TokenState {
    fn text(self) -> &'static str {
        match self {
            TokenState::None => "no (no token; run connect)",
            TokenState::Valid => "yes (token accepted by the server)",
            TokenState::Expired => "no: the token has expired (run login)",
            TokenState::Refused => "no: the server refused the token (run connect or login)",
            TokenState::Unverified => "unverified (the server was not asked or did not answer)",
        }
    }
}

/// Runs `status`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    let mut s = client.status().await?;
    let settings = client.settings().await?;
    let expires_at = settings.auth_token.as_deref().and_then(token_expires_at);
    let expired_locally =
        expires_at.is_some_and(|exp| exp <= Timestamp::now().unix_micros() / 1_000_000);
    let (token, online) = match (&settings.server_url, &settings.auth_token) {
        (None, _) => (TokenState::None, None),
        (Some(_), None) => (TokenState::None, None),
        (Some(_), Some(_)) if a.offline => (
            if expired_locally {
                TokenState::Expired
            } else {
                TokenState::Unverified
            },
            None,
        ),
        (Some(_), Some(_)) => match client.verify_token().await {
            Ok(_) => (TokenState::Valid, Some(true)),
            Err(ClientError::AuthExpired) => (TokenState::Expired, Some(true)),
            Err(e) if e.is_unreachable() => (
                if expired_locally {
                    TokenState::Expired
                } else {
                    TokenState::Unverified
                },
                Some(false),
            ),
            Err(e) if e.needs_login() => (TokenState::Refused, Some(true)),
            Err(e) => return Err(e.into()),
        },
    };
    s.logged_in = token == TokenState::Valid || token == TokenState::Unverified;
    let conflicts = client.recent_conflicts().await?.len();
    // What the last sync measured of the server's clock (kept across processes).
    let link = client.link_state().await?;
    if out.json {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            status: &'a goodies_client::ClientStatus,
            token: TokenState,
            token_expires_at: Option<i64>,
            online: Option<bool>,
            recent_conflicts: usize,
            clock_skew_ms: Option<i64>,
        }
        out.json(&Json {
            status: &s,
            token,
            token_expires_at: expires_at,
            online,
            recent_conflicts: conflicts,
            clock_skew_ms: link.clock_skew_ms,
        })?;
        return Ok(Exit::Ok);
    }
    let last_sync = s.last_sync.as_ref().map(|l| {
        let how = if l.ok {
            "ok".to_owned()
        } else {
            format!("{} error(s)", l.errors.len())
        };
        format!(
            "{} ({how}, {} entities, {} conflicts, {} ms)",
            l.at, l.synced_entities, l.conflicts_resolved, l.duration_ms
        )
    });
    let digest = s.last_digest_check.as_ref().map(|d| {
        if d.matches() {
            format!("{} match ({})", d.at, short(&d.local))
        } else {
            format!(
                "{} MISMATCH (server {}, local {})",
                d.at,
                short(&d.server),
                short(&d.local)
            )
        }
    });
    out.pairs(vec![
        ("server url", opt(s.server_url.as_deref())),
        (
            "server",
            match online {
                Some(true) => "online".to_owned(),
                Some(false) => "offline (did not answer)".to_owned(),
                None => "not asked".to_owned(),
            },
        ),
        (
            "server clock",
            match link.clock_skew_ms {
                None => "not measured yet".to_owned(),
                Some(ms) if link.clock_skewed() => format!(
                    "{:.1} s {} ours (skewed)",
                    ms.unsigned_abs() as f64 / 1000.0,
                    if ms > 0 { "ahead of" } else { "behind" }
                ),
                Some(ms) => format!("within a second of ours ({ms} ms)"),
            },
        ),
        ("logged in", token.text().to_owned()),
        ("user", s.user_id.clone()),
        ("client id", s.client_id.clone()),
        ("database", s.db_path.clone()),
        ("pending changes", s.pending_changes.to_string()),
        (
            "refused changes",
            if s.quarantined_changes == 0 {
                "0".to_owned()
            } else {
                format!("{} (see `blowing-off outbox`)", s.quarantined_changes)
            },
        ),
        (
            "conflicts",
            if conflicts == 0 {
                "0".to_owned()
            } else {
                format!(
                    "{conflicts} recent{} (see `blowing-off conflicts`)",
                    match s.conflicts_from_other_devices {
                        0 => String::new(),
                        n => format!(", {n} where another device's edit replaced this device's"),
                    }
                )
            },
        ),
        ("watermark", opt(s.watermark)),
        ("pull in progress", opt(s.cursor.as_deref())),
        ("last sync", opt(last_sync)),
        ("last digest check", opt(digest)),
    ]);
    Ok(Exit::Ok)
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

//! `connect`: store the server URL and a token (given, or obtained with a password),
//! check it against the server when it answers, and write the configuration file;
//! `disconnect`: forget the token.

use std::io::IsTerminal;

use goodies_client::{token_expires_at, BlowingOffClient, TokenInfo};
use serde_json::json;

use crate::config::{self, FileConfig, Resolved};
use crate::exit::{usage, Exit};
use crate::output::Out;

/// Arguments of `connect` (the server URL is the global `--server-url`).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off connect --server-url http://127.0.0.1:8000 --password PASSWORD
  BLOWING_OFF_PASSWORD=PASSWORD blowing-off connect --server-url http://127.0.0.1:8000
  blowing-off connect --server-url http://127.0.0.1:8000 --auth-token TOKEN --client-id kitchen-tablet
  blowing-off connect --server-url http://127.0.0.1:8000   # asks for the password")]
pub struct Args {
    /// A bearer token to use as it is.
    #[arg(long, env = config::TOKEN_ENV, hide_env_values = true, conflicts_with = "password")]
    pub auth_token: Option<String>,
    /// The admin password to log in with (without it and a token, it is asked for on a
    /// terminal, without echo).
    #[arg(long, env = "BLOWING_OFF_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// This client's id (sent to the server as its device id).
    #[arg(long, env = config::CLIENT_ID_ENV)]
    pub client_id: Option<String>,
}

/// How the token stands after `connect`.
enum Verified {
    /// The server accepted it.
    Yes(TokenInfo),
    /// The server did not answer: stored unchecked.
    Offline,
}

pub fn prompt_password(url: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "no credentials: give --auth-token or --password (or set BLOWING_OFF_AUTH_TOKEN \
             or BLOWING_OFF_PASSWORD); the password is asked for only on a terminal",
        ));
    }
    let p = rpassword::prompt_password(format!("password for {url}: "))?;
    if p.is_empty() {
        return Err(usage("an empty password"));
    }
    Ok(p)
}

/// Runs `connect`.
pub async fn run(
    client: &BlowingOffClient,
    out: Out,
    r: &Resolved,
    a: Args,
) -> anyhow::Result<Exit> {
    let url = r.server_url.clone().ok_or_else(|| {
        usage("no server url: give --server-url URL (or set BLOWING_OFF_SERVER_URL)")
    })?;
    let url = goodies_client::normalize_server_url(&url)?;
    if let Some(id) = &a.client_id {
        config::set_client_id(client, id).await?;
    }
    let token = a.auth_token.clone().or_else(|| {
        r.from_file
            .auth_token
            .clone()
            .filter(|_| a.password.is_none())
    });
    let (verified, role) = match token {
        Some(token) => {
            let previous = client.settings().await?.auth_token;
            client.connect(&url, Some(&token)).await?;
            match client.verify_token().await {
                Ok(info) => {
                    let role = info.role.clone();
                    (Verified::Yes(info), role)
                }
                Err(e) if e.is_unreachable() => (Verified::Offline, None),
                Err(e) => {
                    // Refused or expired: keep whatever was stored before.
                    match previous {
                        Some(p) => client.connect(&url, Some(&p)).await?,
                        None => client.logout().await?,
                    }
                    return Err(anyhow::Error::new(e).context("the server refused the token"));
                }
            }
        }
        None => {
            let password = match a.password.clone() {
                Some(p) => p,
                None => prompt_password(&url)?,
            };
            let login = client.login(&url, &password).await?;
            let info = client.verify_token().await.ok();
            let role = login.role.clone();
            match info {
                Some(i) => (Verified::Yes(i), role),
                None => (Verified::Offline, role),
            }
        }
    };
    let s = client.settings().await?;
    let file = FileConfig {
        server_url: s.server_url.clone(),
        auth_token: s.auth_token.clone(),
        client_id: Some(s.client_id.clone()),
        db_path: Some(std::path::absolute(&r.db)?),
        ca_file: r.ca_file.clone(),
        pin_sha256: r.pin_sha256.clone(),
        signing_key_file: r.signing_key_file.clone(),
    };
    config::write(&r.file, &file)?;
    let expires_at = match &verified {
        Verified::Yes(i) => i.expires_at,
        Verified::Offline => None,
    }
    .or_else(|| s.auth_token.as_deref().and_then(token_expires_at));
    if out.json {
        out.json(&json!({
            "server_url": s.server_url,
            "user_id": s.user_id,
            "client_id": s.client_id,
            "role": role,
            "verified": matches!(verified, Verified::Yes(_)),
            "online": matches!(verified, Verified::Yes(_)),
            "expires_at": expires_at,
            "config_file": r.file,
            "db_path": s.db_path,
        }))?;
    } else {
        let how = match &verified {
            Verified::Yes(_) => "token verified by the server".to_owned(),
            Verified::Offline => {
                "the server did not answer: token stored unverified (it is checked at the next sync)"
                    .to_owned()
            }
        };
        outln!(
            "connected to {} as {} (client {}): {how}",
            s.server_url.as_deref().unwrap_or("-"),
            s.user_id,
            s.client_id
        );
        out.note(format_args!("settings written to {}", r.file.display()));
    }
    Ok(Exit::Ok)
}

/// Runs `disconnect`: forgets the token in the database and in the configuration file;
/// the server URL, the local data and every pending change stay.
pub async fn disconnect(client: &BlowingOffClient, out: Out, r: &Resolved) -> anyhow::Result<Exit> {
    if std::env::var_os(config::TOKEN_ENV).is_some() {
        return Err(usage(format!(
            "{} is set: unset it too, or the next command uses that token again",
            config::TOKEN_ENV
        )));
    }
    client.logout().await?;
    if r.file.is_file() && r.from_file.auth_token.is_some() {
        let mut f = r.from_file.clone();
        f.auth_token = None;
        config::write(&r.file, &f)?;
    }
    let pending = client.pending_changes().await?;
    if out.json {
        out.json(&json!({"disconnected": true, "pending_changes": pending}))?;
    } else {
        outln!(
            "disconnected: token forgotten; {pending} pending change(s) kept for the next connect"
        );
    }
    Ok(Exit::Ok)
}

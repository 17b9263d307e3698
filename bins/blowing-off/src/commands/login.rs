//! `login`: obtain a fresh token with the admin password.

use goodies_client::{BlowingOffClient, ClientError};

use crate::exit::Exit;
use crate::output::Out;

/// Arguments of `login`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off login            # asks for the password\n  BLOWING_OFF_PASSWORD=PASSWORD blowing-off login"
)]
pub struct Args {
    /// The admin password (without it, it is asked for on a terminal, without echo).
    #[arg(long, env = "BLOWING_OFF_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// Runs `login`.
pub async fn run(
    client: &BlowingOffClient,
    out: Out,
    r: &crate::config::Resolved,
    a: Args,
) -> anyhow::Result<Exit> {
    let url = client
        .settings()
        .await?
        .server_url
        .ok_or(ClientError::NotConnected)?;
    let password = match a.password {
        Some(p) => p,
        None => crate::commands::connect::prompt_password(&url)?,
    };
    let info = client.login(&url, &password).await?;
    crate::config::remember_token(client, r).await?;
    if out.json {
        out.json(&info)?;
    } else {
        outln!("logged in to {url} as {}", info.user_id);
    }
    Ok(Exit::Ok)
}

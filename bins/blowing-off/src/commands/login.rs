//! `login`: obtain a fresh token with the admin password.

use goodies_client::{BlowingOffClient, ClientError};

use crate::exit::Exit;
use crate::output::Out;

/// Arguments of `login`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The admin password.
    #[arg(long)]
    pub password: String,
    /// Log in to this server instead of the stored one.
    #[arg(long)]
    pub server_url: Option<String>,
}

/// Runs `login`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    let url = match a.server_url {
        Some(u) => u,
        None => client
            .settings()
            .await?
            .server_url
            .ok_or(ClientError::NotConnected)?,
    };
    let info = client.login(&url, &a.password).await?;
    if out.json {
        out.json(&info)?;
    } else {
        outln!("logged in to {url} as {}", info.user_id);
    }
    Ok(Exit::Ok)
}

//! `connect`: store the server URL and a token (given, or obtained with a password).

use goodies_client::BlowingOffClient;
use serde_json::json;

use crate::exit::Exit;
use crate::output::Out;

/// Arguments of `connect`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("credentials").required(true).args(["auth_token", "password"])))]
pub struct Args {
    /// The server's base URL, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub server_url: String,
    /// A bearer token to use as it is.
    #[arg(long)]
    pub auth_token: Option<String>,
    /// The admin password to log in with.
    #[arg(long)]
    pub password: Option<String>,
}

/// Runs `connect`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    let role = match (&a.auth_token, &a.password) {
        (Some(token), _) => {
            client.connect(&a.server_url, Some(token)).await?;
            None
        }
        (None, Some(password)) => client.login(&a.server_url, password).await?.role,
        (None, None) => {
            client.connect(&a.server_url, None).await?;
            None
        }
    };
    let s = client.settings().await?;
    if out.json {
        out.json(&json!({
            "server_url": s.server_url,
            "user_id": s.user_id,
            "client_id": s.client_id,
            "role": role,
        }))?;
    } else {
        outln!(
            "connected to {} as {} (client {})",
            s.server_url.as_deref().unwrap_or("-"),
            s.user_id,
            s.client_id
        );
    }
    Ok(Exit::Ok)
}

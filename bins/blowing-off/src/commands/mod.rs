//! One module per subcommand; `run` opens the client and dispatches.

pub mod conflicts;
pub mod connect;
pub mod device;
pub mod entity;
pub mod home;
pub mod login;
pub mod mcp;
pub mod outbox;
pub mod room;
pub mod status;
pub mod sync;

use anyhow::Context;
use std::time::Duration;

use goodies_client::{BlowingOffClient, ClientConfig, EntityId, RetryPolicy};

use crate::cli::{Cli, Command};
use crate::exit::Exit;
use crate::output::Out;

/// Opens the local database and runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let retry = RetryPolicy {
        max_retries: cli.retries,
        ..RetryPolicy::default()
    };
    let config = ClientConfig::default()
        .with_retry(retry)
        .with_request_timeout(Duration::from_secs(cli.timeout.max(1)));
    let client = BlowingOffClient::builder(&cli.db)
        .config(config)
        .open()
        .await
        .with_context(|| format!("cannot open the local database {}", cli.db.display()))?;
    let out = Out { json: cli.json };
    match cli.command {
        Command::Connect(a) => connect::run(&client, out, a).await,
        Command::Login(a) => login::run(&client, out, a).await,
        Command::Sync => sync::run_once(&client, out).await,
        Command::SyncDaemon(a) => sync::run_daemon(&client, out, a).await,
        Command::Status => status::run(&client, out).await,
        Command::Home(a) => home::run(&client, out, a).await,
        Command::Room(a) => room::run(&client, out, a).await,
        Command::Device(a) => device::run(&client, out, a).await,
        Command::Entity(a) => entity::run(&client, out, a).await,
        Command::Conflicts(a) => conflicts::run(&client, out, a).await,
        Command::Outbox(a) => outbox::run(&client, out, a).await,
        Command::Mcp(a) => mcp::run(&client, a).await,
    }
}

/// An entity id from the command line.
pub fn id(s: &str) -> EntityId {
    EntityId::new(s.trim())
}

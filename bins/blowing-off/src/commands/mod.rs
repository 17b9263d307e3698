//! One module per subcommand; `run` resolves the settings, opens the client and
//! dispatches.

pub mod blob;
pub mod completions;
pub mod conflicts;
pub mod connect;
pub mod device;
pub mod entity;
pub mod graph;
pub mod home;
pub mod login;
pub mod mcp;
pub mod outbox;
pub mod room;
pub mod status;
pub mod sync;
pub mod transfer;

use anyhow::Context;
use std::time::Duration;

use goodies_client::{BlowingOffClient, ClientConfig, EntityId, RetryPolicy};

use crate::cli::{Cli, Command};
use crate::config;
use crate::exit::Exit;
use crate::output::Out;

/// Resolves the settings (see `config.rs`), opens the local database and runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    if let Command::Completions(a) = cli.command {
        return completions::run(a);
    }
    let resolved = config::resolve(&cli)?;
    let retry = RetryPolicy {
        max_retries: cli.retries,
        ..RetryPolicy::default()
    };
    // One SQLite connection: a command is one task, and a second connection would be
    // opened (and its schema read) whenever the first is still on its way back to the
    // pool — about a millisecond of every command, and its own page cache.
    let client_config = ClientConfig::default()
        .with_max_connections(1)
        .with_retry(retry)
        .with_request_timeout(Duration::from_secs(cli.timeout.max(1)));
    let mut builder = BlowingOffClient::builder(&resolved.db)
        .config(client_config)
        .tls(resolved.tls.clone());
    if let Some(key) = resolved.signing_key.clone() {
        builder = builder.signing_key(key);
    }
    let client = builder
        .open()
        .await
        .with_context(|| format!("cannot open the local database {}", resolved.db.display()))?;
    tracing::debug!(
        config_file = %resolved.file.display(),
        config_file_exists = resolved.file.is_file(),
        db = %resolved.db.display(),
        server_url = resolved.server_url.as_deref().unwrap_or("-"),
        token_from_env_or_file = resolved.auth_token.is_some(),
        "settings resolved"
    );
    if !matches!(cli.command, Command::Connect(_)) {
        config::apply(&client, &resolved).await?;
    }
    let _log = client.on_change(log_event);
    let outcome = dispatch(&client, cli, out, &resolved).await;
    // Whatever the command did, its writes reach the disk before the process ends: the
    // mirror's last connection checkpoints the write-ahead log and syncs the file.
    client.close().await;
    outcome
}

async fn dispatch(
    client: &BlowingOffClient,
    cli: Cli,
    out: Out,
    resolved: &config::Resolved,
) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Connect(a) => connect::run(client, out, resolved, a).await,
        Command::Disconnect => connect::disconnect(client, out, resolved).await,
        Command::Login(a) => login::run(client, out, resolved, a).await,
        Command::Sync => sync::run_once(client, out).await,
        Command::SyncDaemon(a) => sync::run_daemon(client, out, resolved, a).await,
        Command::Status(a) => status::run(client, out, a).await,
        Command::Export(a) => transfer::export(client, out, a).await,
        Command::Import(a) => transfer::import(client, out, a).await,
        Command::Home(a) => home::run(client, out, a).await,
        Command::Room(a) => room::run(client, out, a).await,
        Command::Device(a) => device::run(client, out, a).await,
        Command::Entity(a) => entity::run(client, out, a).await,
        Command::Relate(a) => graph::relate(client, out, a).await,
        Command::Search(a) => graph::search(client, out, a).await,
        Command::Stats => graph::stats(client, out).await,
        Command::Conflicts(a) => conflicts::run(client, out, a).await,
        Command::Outbox(a) => outbox::run(client, out, a).await,
        Command::Blob(a) => blob::run(client, out, a).await,
        Command::Mcp(a) => mcp::run(client, a).await,
        Command::Completions(a) => completions::run(a),
    }
}

/// Names of the homes and rooms (and any other entity type asked for), by id, so
/// tables can show a name rather than an id.
pub async fn names(
    client: &BlowingOffClient,
    types: &[goodies_client::EntityType],
) -> anyhow::Result<std::collections::HashMap<EntityId, String>> {
    let list = client
        .entities(&goodies_client::EntityQuery {
            entity_types: Some(types.to_vec()),
            ..goodies_client::EntityQuery::default()
        })
        .await?;
    Ok(list.into_iter().map(|e| (e.id, e.name)).collect())
}

/// The name of `id` from `names`, or the id itself when it has none.
pub fn name_of(
    names: &std::collections::HashMap<EntityId, String>,
    id: Option<&EntityId>,
) -> String {
    match id {
        None => "-".to_owned(),
        Some(id) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
    }
}

/// Logs the client's events (`-v`): sync phases with their counts, conflicts decided,
/// refused changes and repairs, in this project's own words.
fn log_event(e: &goodies_client::ClientEvent) {
    use goodies_client::ClientEvent as E;
    match e {
        E::SyncStarted => tracing::debug!("sync started"),
        E::Progress { phase, done, total } => {
            tracing::debug!(?phase, done, total = ?total, "sync progress")
        }
        E::SyncFinished(s) => tracing::debug!(
            ok = s.ok,
            entities = s.synced_entities,
            conflicts = s.conflicts_resolved,
            pending = s.pending,
            ms = s.duration.as_millis() as u64,
            "sync finished"
        ),
        E::SyncFailed { message } => tracing::debug!(%message, "sync failed"),
        E::ConflictDecided(c) => tracing::debug!(
            entity = %c.entity_id,
            kept = %c.resolved_version,
            why = %c.resolution_strategy,
            "conflict decided by the server"
        ),
        E::RemoteChangeDeferred { id } => {
            tracing::trace!(entity = %id, "server version kept aside behind a pending edit")
        }
        E::EntityChangedBySync { id } => {
            tracing::trace!(entity = %id, "changed by sync")
        }
        E::EntityChangedLocally(en) => {
            tracing::trace!(entity = %en.id, version = %en.version, "local edit queued")
        }
        E::DigestMismatch { server, local } => {
            tracing::debug!(%server, %local, "state digest mismatch")
        }
        E::ChangeQuarantined(q) => {
            tracing::debug!(position = q.position, reason = %q.reason, "change refused by the server")
        }
        E::Repaired(r) => tracing::debug!(?r, "mirror repaired"),
        E::Lagged(n) => tracing::trace!(missed = n, "event log fell behind"),
        _ => {}
    }
}

/// An entity id from the command line.
pub fn id(s: &str) -> EntityId {
    EntityId::new(s.trim())
}

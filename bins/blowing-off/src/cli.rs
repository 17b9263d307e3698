//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{conflicts, connect, device, entity, home, login, mcp, outbox, room, sync};

/// Blowing-Off: an offline-first client of The Goodies smart-home knowledge graph.
#[derive(Debug, Parser)]
#[command(name = "blowing-off", version, about, propagate_version = true)]
pub struct Cli {
    /// The local database file.
    #[arg(
        long,
        global = true,
        env = "BLOWING_OFF_DB",
        default_value = "blowing-off.db"
    )]
    pub db: PathBuf,

    /// Print JSON instead of tables and sentences.
    #[arg(long, global = true)]
    pub json: bool,

    /// Retries of a failed request during a sync (backoff 1, 2, 4, 8, 16, 30 s).
    #[arg(long, global = true, env = "BLOWING_OFF_RETRIES", default_value_t = 5)]
    pub retries: u32,

    /// Timeout of one request, in seconds.
    #[arg(long, global = true, env = "BLOWING_OFF_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,

    /// More log output on stderr (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter the verbosity asks for.
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "warn",
            1 => "debug",
            _ => "trace",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store the server URL and credentials (a token, or a password to log in with).
    Connect(connect::Args),
    /// Log in again with the admin password and store the new token.
    Login(login::Args),
    /// Push local changes and pull the server's, once.
    Sync,
    /// Sync every --interval seconds until interrupted (or --count syncs).
    SyncDaemon(sync::DaemonArgs),
    /// Show the connection, pending changes, sync position and last digest check.
    Status,
    /// The home (the seeds' "house").
    #[command(alias = "house")]
    Home(home::Args),
    /// Rooms.
    Room(room::Args),
    /// Devices and their state.
    Device(device::Args),
    /// Entities of any type: list, show, history, search.
    Entity(entity::Args),
    /// Conflicts the server decided in recent syncs.
    Conflicts(conflicts::Args),
    /// Changes the server refused (kept aside, not lost), and sending them again.
    Outbox(outbox::Args),
    /// Serve the house-graph tools to an assistant over stdio (Model Context Protocol),
    /// answering from the local mirror; writes sync like any local edit.
    Mcp(mcp::Args),
}

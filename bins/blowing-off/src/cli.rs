//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::{
    blob, completions, conflicts, connect, device, entity, graph, home, login, mcp, outbox, room,
    sync,
};

/// Heading of the options every command takes (shown once, in `blowing-off --help`).
const GLOBAL: &str = "Global options";

const EXAMPLES: &str = "\
Examples:
  blowing-off connect --server-url http://127.0.0.1:8000 --password PASSWORD
  blowing-off house create --name Home
  blowing-off room create --house-id HOME_ID --name Kitchen --floor 0 --type kitchen
  blowing-off device create --room-id ROOM_ID --name Lamp --type light
  blowing-off device set-state DEVICE_ID '{\"power\": \"on\"}'
  blowing-off sync
  blowing-off status";

/// Blowing-Off: an offline-first client of The Goodies smart-home knowledge graph.
#[derive(Debug, Parser)]
#[command(
    name = "blowing-off",
    version,
    about,
    propagate_version = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The configuration file (default: ./.blowing-off.json, else
    /// <config dir>/blowing-off/config.json).
    #[arg(long, global = true, env = "BLOWING_OFF_CONFIG", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,

    /// The local database file (default: the config file's db_path, else
    /// <data dir>/blowing-off/blowing-off.db).
    #[arg(long, global = true, env = "BLOWING_OFF_DB", help_heading = GLOBAL)]
    pub db: Option<PathBuf>,

    /// The server's base URL, e.g. http://127.0.0.1:8000 (overrides the config file).
    #[arg(long, global = true, env = "BLOWING_OFF_SERVER_URL", help_heading = GLOBAL)]
    pub server_url: Option<String>,

    /// A PEM file of CA certificates to trust for https instead of the platform's roots
    /// (a self-hosted server's own CA; overrides the config file's ca_file).
    #[arg(long, global = true, env = "BLOWING_OFF_CA_FILE", help_heading = GLOBAL)]
    pub ca_file: Option<PathBuf>,

    /// Trust only the https server whose certificate's DER has this SHA-256 (64 hex
    /// digits, colons allowed; overrides the config file's pin_sha256).
    #[arg(long, global = true, env = "BLOWING_OFF_PIN_SHA256", help_heading = GLOBAL)]
    pub pin_sha256: Option<String>,

    /// A file holding the key shared with the server for signed messages (overrides
    /// the config file's signing_key_file; BLOWING_OFF_SIGNING_KEY gives the key itself).
    #[arg(long, global = true, env = "BLOWING_OFF_SIGNING_KEY_FILE", help_heading = GLOBAL)]
    pub signing_key_file: Option<PathBuf>,

    /// Print JSON instead of tables and sentences (errors too, on stderr).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Retries of a failed request (backoff 1, 2, 4, 8, 16, 30 s).
    #[arg(
        long,
        global = true,
        env = "BLOWING_OFF_RETRIES",
        default_value_t = 5,
        help_heading = GLOBAL
    )]
    pub retries: u32,

    /// Timeout of one request, in seconds.
    #[arg(
        long,
        global = true,
        env = "BLOWING_OFF_TIMEOUT",
        default_value_t = 30,
        help_heading = GLOBAL
    )]
    pub timeout: u64,

    /// More log output on stderr (-v: this client's own events, -vv: its details,
    /// -vvv: every library's too); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    /// No progress or notes on stderr (errors are still shown).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,

    /// Colour in log output: auto (only on a terminal, and not with NO_COLOR), always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = Color::Auto,
        help_heading = GLOBAL
    )]
    pub color: Color,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When log output is coloured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The command line. Options every command takes are declared once, `global`, under
/// their own heading ("Global options"), apart from each subcommand's own.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

impl Cli {
    /// The log filter the verbosity asks for: this project's crates first, every other
    /// library only at -vvv.
    pub fn log_filter(&self) -> String {
        const OURS: [&str; 5] = [
            "blowing_off",
            "goodies_client",
            "goodies_store",
            "inbetweenies_proto",
            "inbetweenies_conflict",
        ];
        let ours = |level: &str| {
            OURS.iter()
                .map(|c| format!("{c}={level}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.verbose {
            0 => "warn".to_owned(),
            1 => format!("warn,{}", ours("debug")),
            2 => format!("warn,{}", ours("trace")),
            _ => "trace".to_owned(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store the server URL and credentials (a token, or a password to log in with),
    /// checked against the server when it answers.
    Connect(connect::Args),
    /// Forget the stored token (local data and pending changes are kept).
    #[command(after_help = "Example:\n  blowing-off disconnect")]
    Disconnect,
    /// Log in again with the admin password and store the new token.
    Login(login::Args),
    /// Push local changes and pull the server's, once.
    #[command(after_help = "Example:\n  blowing-off sync")]
    Sync,
    /// Sync every --interval seconds until interrupted (Ctrl-C or SIGTERM) or --count syncs.
    SyncDaemon(sync::DaemonArgs),
    /// Show the connection (token checked), pending, refused and conflicting changes,
    /// and the last sync.
    #[command(
        after_help = "Examples:\n  blowing-off status\n  blowing-off status --offline --json"
    )]
    Status(crate::commands::status::Args),
    /// The home (the seeds' "house").
    #[command(alias = "house")]
    Home(home::Args),
    /// Rooms.
    Room(room::Args),
    /// Devices and their state.
    Device(device::Args),
    /// Entities of any type: list, show, history, search.
    Entity(entity::Args),
    /// Relate two entities: FROM TYPE TO (e.g. a device controlled_by an app).
    Relate(graph::RelateArgs),
    /// Entities whose name contains QUERY (case-insensitive).
    Search(graph::SearchArgs),
    /// Counts of entities and relationships in the local mirror.
    #[command(after_help = "Example:\n  blowing-off stats --json")]
    Stats,
    /// Write the whole local graph (latest entities and relationships) as JSON.
    Export(crate::commands::transfer::ExportArgs),
    /// Read a graph export and write it locally (queued for the next sync); importing
    /// the same file again changes nothing.
    Import(crate::commands::transfer::ImportArgs),
    /// Conflicts recent syncs recorded, and the server's review queue (list, show, queue,
    /// resolve).
    Conflicts(conflicts::Args),
    /// Changes the server refused (kept aside, not lost), and sending them again.
    Outbox(outbox::Args),
    /// Files attached to entities: put (attach and upload), get (download, verified),
    /// list.
    Blob(blob::Args),
    /// Serve the house-graph tools to an assistant over stdio (Model Context Protocol),
    /// answering from the local mirror; writes sync like any local edit.
    Mcp(mcp::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(completions::Args),
}

//! Where the settings of a run come from: the configuration file (`.blowing-off.json`),
//! environment variables and flags, in that order of precedence (lowest first), and the
//! default places of the file and the local database.
//!
//! - The file: `--config` (or `BLOWING_OFF_CONFIG`), else `./.blowing-off.json` when it
//!   exists, else `<config dir>/blowing-off/config.json` (on Linux
//!   `$XDG_CONFIG_HOME/blowing-off/config.json`, by default `~/.config/…`).
//! - The database: `--db` / `BLOWING_OFF_DB`, else the file's `db_path` (relative to the
//!   file), else `<data dir>/blowing-off/blowing-off.db`.
//! - The server: `--server-url` / `BLOWING_OFF_SERVER_URL`, else the file's, else the one
//!   the database remembers. The token: `BLOWING_OFF_AUTH_TOKEN`, else the file's, else
//!   the database's. The client id: `BLOWING_OFF_CLIENT_ID`, else the file's when the file
//!   names the database in use (a file describes one client), else the database's.
//! - TLS: `--ca-file` / `BLOWING_OFF_CA_FILE`, else the file's `ca_file`; `--pin-sha256` /
//!   `BLOWING_OFF_PIN_SHA256`, else the file's `pin_sha256`; neither: the platform's roots.
//! - The signing key: `BLOWING_OFF_SIGNING_KEY` (the key), else `--signing-key-file` /
//!   `BLOWING_OFF_SIGNING_KEY_FILE`, else the file's `signing_key_file`.
//!
//! The file holds the token: it is written readable by its owner only (mode 0600), and a
//! file found readable by others is made so when read. No `Debug` here shows the token.

use std::path::{Path, PathBuf};

use anyhow::Context;
use goodies_client::{keys, normalize_server_url, BlowingOffClient, SigningKey, TlsConfig};
use serde::{Deserialize, Serialize};

use crate::cli::Cli;
use crate::exit::usage;

/// The name of the configuration file looked for in the current directory.
pub const LOCAL_FILE: &str = ".blowing-off.json";

/// The environment variable holding a token.
pub const TOKEN_ENV: &str = "BLOWING_OFF_AUTH_TOKEN";

/// The environment variable holding the client id.
pub const CLIENT_ID_ENV: &str = "BLOWING_OFF_CLIENT_ID";

/// The environment variable holding the signing key itself.
pub const SIGNING_KEY_ENV: &str = "BLOWING_OFF_SIGNING_KEY";

/// The configuration file's contents (the seeds' `.blowing-off.json`). Its `Debug`
/// does not show the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileConfig {
    /// The server's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// The bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// The client's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The local database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_path: Option<PathBuf>,
    /// CA certificates (PEM) to trust for https instead of the platform's roots
    /// (relative to the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the one https certificate to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_sha256: Option<String>,
    /// A file holding the key shared with the server for signed messages (relative to
    /// the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("server_url", &self.server_url)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("client_id", &self.client_id)
            .field("db_path", &self.db_path)
            .field("ca_file", &self.ca_file)
            .field("pin_sha256", &self.pin_sha256)
            .field("signing_key_file", &self.signing_key_file)
            .finish()
    }
}

/// The settings of this run, each from the strongest source that has it. Its `Debug`
/// does not show the token or the signing key.
pub struct Resolved {
    /// The configuration file read (or to write, when it does not exist yet).
    pub file: PathBuf,
    /// What the file holds (empty when it does not exist).
    pub from_file: FileConfig,
    /// The local database.
    pub db: PathBuf,
    /// The server URL, when a flag, the environment or the file gives one.
    pub server_url: Option<String>,
    /// The token, when the environment or the file gives one.
    pub auth_token: Option<String>,
    /// The client id, when the environment or (for its database) the file gives one.
    pub client_id: Option<String>,
    /// Which https servers are trusted.
    pub tls: TlsConfig,
    /// The CA file in use (flag, environment or file), absolute; written back by
    /// `connect` with the pin and the signing key file.
    pub ca_file: Option<PathBuf>,
    /// The certificate pin in use.
    pub pin_sha256: Option<String>,
    /// The signing key file in use, absolute.
    pub signing_key_file: Option<PathBuf>,
    /// The key for signed messages, when one is given.
    pub signing_key: Option<SigningKey>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("file", &self.file)
            .field("from_file", &self.from_file)
            .field("db", &self.db)
            .field("server_url", &self.server_url)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("client_id", &self.client_id)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("pin_sha256", &self.pin_sha256)
            .field("signing_key_file", &self.signing_key_file)
            .field("signing_key", &self.signing_key)
            .finish()
    }
}

fn dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "blowing-off")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The configuration file this run uses.
pub fn locate(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    let local = Path::new(LOCAL_FILE);
    if local.is_file() {
        return Ok(std::env::current_dir()?.join(local));
    }
    match dirs() {
        Some(d) => Ok(d.config_dir().join("config.json")),
        None => Ok(std::env::current_dir()?.join(local)),
    }
}

/// Reads the file; a missing file is an empty configuration, an unreadable or malformed
/// one a usage error naming it.
pub fn read(path: &Path) -> anyhow::Result<FileConfig> {
    make_private(path);
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            usage(format!(
                "the configuration file {} is not valid: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(usage(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))),
    }
}

/// Makes an existing file readable and writable by its owner only (mode 0600) when it
/// is open to others: it holds the token.
fn make_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "made the configuration file private (mode 0600)")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot make the configuration file private")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// A path given by a flag (relative to the working directory) or by the file
/// (relative to the file), made absolute.
fn path_of(flag: Option<&PathBuf>, in_file: Option<&PathBuf>, base: &Path) -> Option<PathBuf> {
    let p = flag.cloned().or_else(|| in_file.map(|p| base.join(p)))?;
    Some(std::path::absolute(&p).unwrap_or(p))
}

/// The TLS settings from the CA file and the pin.
fn tls_of(ca_file: Option<&Path>, pin: Option<&str>) -> anyhow::Result<TlsConfig> {
    let mut tls = TlsConfig::platform();
    if let Some(ca) = ca_file {
        tls = tls.with_ca_file(ca)?;
    }
    if let Some(pin) = pin {
        tls = tls.with_pinned_sha256_hex(pin)?;
    }
    Ok(tls)
}

/// The signing key: the environment's key, else the key file's.
fn signing_key_of(file: Option<&Path>) -> anyhow::Result<Option<SigningKey>> {
    if let Some(key) = env(SIGNING_KEY_ENV) {
        return Ok(Some(SigningKey::new(key)?));
    }
    Ok(match file {
        Some(f) => Some(SigningKey::from_file(f)?),
        None => None,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Resolves this run's settings from the flags, the environment and the file.
pub fn resolve(cli: &Cli) -> anyhow::Result<Resolved> {
    let file = locate(cli.config.as_deref())?;
    let from_file = read(&file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let file_db = from_file.db_path.as_ref().map(|p| base.join(p));
    let db = match (&cli.db, &file_db) {
        (Some(db), _) => db.clone(),
        (None, Some(db)) => db.clone(),
        (None, None) => default_db()?,
    };
    let file_names_db = file_db.as_deref().is_some_and(|f| same_file(f, &db));
    let ca_file = path_of(cli.ca_file.as_ref(), from_file.ca_file.as_ref(), base);
    let pin_sha256 = cli
        .pin_sha256
        .clone()
        .or_else(|| from_file.pin_sha256.clone());
    let signing_key_file = path_of(
        cli.signing_key_file.as_ref(),
        from_file.signing_key_file.as_ref(),
        base,
    );
    let tls = tls_of(ca_file.as_deref(), pin_sha256.as_deref())?;
    let signing_key = signing_key_of(signing_key_file.as_deref())?;
    Ok(Resolved {
        tls,
        signing_key,
        ca_file,
        pin_sha256,
        signing_key_file,
        server_url: cli
            .server_url
            .clone()
            .or_else(|| from_file.server_url.clone()),
        auth_token: env(TOKEN_ENV).or_else(|| from_file.auth_token.clone()),
        client_id: env(CLIENT_ID_ENV).or_else(|| {
            if file_names_db {
                from_file.client_id.clone()
            } else {
                None
            }
        }),
        file,
        from_file,
        db,
    })
}

/// `<data dir>/blowing-off/blowing-off.db`, its directory created.
fn default_db() -> anyhow::Result<PathBuf> {
    let Some(d) = dirs() else {
        return Ok(PathBuf::from("blowing-off.db"));
    };
    let dir = d.data_dir();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(dir.join("blowing-off.db"))
}

/// Makes the client use the resolved server, token and client id (stored in its
/// database, which remembers the last connection used).
pub async fn apply(client: &BlowingOffClient, r: &Resolved) -> anyhow::Result<()> {
    let s = client.settings().await?;
    if let Some(url) = &r.server_url {
        let url = normalize_server_url(url)?;
        let token_changes = r.auth_token.is_some() && r.auth_token != s.auth_token;
        if s.server_url.as_deref() != Some(url.as_str()) || token_changes {
            client.connect(&url, r.auth_token.as_deref()).await?;
        }
    } else if let (Some(url), Some(token)) = (&s.server_url, &r.auth_token) {
        if s.auth_token.as_ref() != Some(token) {
            client.connect(url, Some(token)).await?;
        }
    }
    if let Some(id) = &r.client_id {
        set_client_id(client, id).await?;
    }
    Ok(())
}

/// Stores this client's id (sent to the server as `device_id`).
pub async fn set_client_id(client: &BlowingOffClient, id: &str) -> anyhow::Result<()> {
    let id = id.trim();
    if id.is_empty() {
        return Err(usage("the client id must not be empty"));
    }
    client.store().set_setting(keys::CLIENT_ID, id).await?;
    Ok(())
}

/// Writes the file (creating its directory), readable by its owner only: it holds the
/// token.
pub fn write(path: &Path, config: &FileConfig) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(config)? + "\n";
    let tmp = path.with_extension("json.tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// After the token changed (login, refresh): writes the client's server and token into
/// the configuration file when that file exists, so the next run does not bring back the
/// old token from it.
pub async fn remember_token(client: &BlowingOffClient, r: &Resolved) -> anyhow::Result<()> {
    if !r.file.is_file() {
        return Ok(());
    }
    let s = client.settings().await?;
    let mut f = read(&r.file)?;
    if f.auth_token == s.auth_token && f.server_url == s.server_url {
        return Ok(());
    }
    f.auth_token = s.auth_token;
    f.server_url = s.server_url;
    write(&r.file, &f)
}

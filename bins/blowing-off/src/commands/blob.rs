//! `blob put ENTITY FILE`, `blob get SHA256|ENTITY [-o FILE]` and `blob list ENTITY`:
//! files attached to entities, their bytes kept by the server (PROTOCOL §14).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use goodies_client::{
    is_sha256, BlobDirection, BlobRef, BlowingOffClient, ClientError, ClientEvent,
    SubscriptionHandle,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tabled::Tabled;

use crate::commands::id;
use crate::exit::{usage, Exit};
use crate::output::{opt, Out};

/// Arguments of `blob`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off blob put OVEN_ID oven-manual.pdf
  blowing-off blob list OVEN_ID
  blowing-off blob get OVEN_ID -o manual.pdf
  blowing-off blob get 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with blobs.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Attach FILE to ENTITY and upload it (resumable; queued until the next sync when
    /// the server cannot be reached).
    #[command(after_help = "Example:\n  blowing-off blob put OVEN_ID oven-manual.pdf")]
    Put {
        /// The entity the file belongs to (id).
        entity: String,
        /// The file.
        file: PathBuf,
    },
    /// Download a blob (by its SHA-256, or the one attached to an entity), verified
    /// before it is written.
    #[command(
        after_help = "Examples:\n  blowing-off blob get OVEN_ID -o manual.pdf\n  \
                            blowing-off blob get SHA256"
    )]
    Get {
        /// The blob's SHA-256 (64 hex digits), or an entity with one blob attached.
        target: String,
        /// Where to write it (default: the attached file's name, else the SHA-256).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The blobs attached to an entity.
    #[command(after_help = "Example:\n  blowing-off blob list OVEN_ID --json")]
    List {
        /// The entity (id).
        entity: String,
    },
}

#[derive(Tabled)]
struct Row {
    sha256: String,
    size: String,
    content_type: String,
    filename: String,
    blob_entity: String,
}

fn row(b: &BlobRef) -> Row {
    Row {
        sha256: b.sha256.clone(),
        size: opt(b.size),
        content_type: opt(b.content_type.as_deref()),
        filename: opt(b.filename.as_deref()),
        blob_entity: b.blob_entity_id.to_string(),
    }
}

/// A progress bar on stderr driven by the client's blob events (hidden off a terminal,
/// with `-q` or `--json`).
struct BlobProgress {
    bar: ProgressBar,
    _events: Option<SubscriptionHandle>,
}

impl BlobProgress {
    fn start(client: &BlowingOffClient, out: Out, what: &str) -> BlobProgress {
        if out.quiet || out.json || !std::io::stderr().is_terminal() {
            return BlobProgress {
                bar: ProgressBar::hidden(),
                _events: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        let b = bar.clone();
        let events = client.on_change(move |e| {
            if let ClientEvent::BlobProgress {
                done,
                total,
                direction,
                ..
            } = e
            {
                b.set_length(*total);
                b.set_position(*done);
                b.set_message(match direction {
                    BlobDirection::Upload => "uploading",
                    _ => "downloading",
                });
            }
        });
        BlobProgress {
            bar,
            _events: Some(events),
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `blob`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.action {
        Action::Put { entity, file } => put(client, out, &entity, &file).await,
        Action::Get { target, output } => get(client, out, &target, output).await,
        Action::List { entity } => {
            let blobs = client.blobs_of(&id(&entity)).await?;
            if out.json {
                out.json(&blobs)?;
            } else {
                out.table(blobs.iter().map(row).collect(), "no blobs attached");
            }
            Ok(Exit::Ok)
        }
    }
}

async fn put(
    client: &BlowingOffClient,
    out: Out,
    entity: &str,
    file: &Path,
) -> anyhow::Result<Exit> {
    if !file.is_file() {
        return Err(usage(format!("{} is not a readable file", file.display())));
    }
    let progress = BlobProgress::start(client, out, "uploading");
    let attached = client.attach_blob(&id(entity), file).await;
    progress.finish();
    let attached = attached?;
    let queued = !attached.uploaded;
    if out.json {
        out.json(&attached)?;
    } else {
        let b = &attached.blob;
        out.pairs(vec![
            ("sha256", b.sha256.clone()),
            ("size", opt(b.size)),
            ("content_type", opt(b.content_type.as_deref())),
            ("filename", opt(b.filename.as_deref())),
            ("entity", b.entity_id.to_string()),
            ("blob_entity", b.blob_entity_id.to_string()),
            (
                "uploaded",
                if queued { "no (queued)" } else { "yes" }.to_owned(),
            ),
        ]);
    }
    match &attached.upload_error {
        Some(e) => {
            out.note(format_args!(
                "upload not finished: {e}\nit stays queued; `blowing-off sync` resumes it"
            ));
            Ok(Exit::SyncErrors)
        }
        None => {
            if queued {
                out.note(format_args!(
                    "not connected: the upload is queued for the next `blowing-off sync`"
                ));
            }
            Ok(Exit::Ok)
        }
    }
}

async fn get(
    client: &BlowingOffClient,
    out: Out,
    target: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let target = target.trim();
    let (sha, filename) = if is_sha256(target) {
        let named = client
            .relationships(&goodies_client::RelationshipQuery {
                relationship_type: Some(goodies_client::RelationshipType::HasBlob),
                ..Default::default()
            })
            .await?
            .iter()
            .find(|r| r.properties.get("sha256").and_then(|v| v.as_str()) == Some(target))
            .and_then(|r| r.properties.get("filename").and_then(|v| v.as_str()))
            .map(str::to_owned);
        (target.to_owned(), named)
    } else {
        let blobs = client.blobs_of(&id(target)).await?;
        match blobs.as_slice() {
            [] => {
                if client.entity(&id(target)).await?.is_none() {
                    return Err(ClientError::NotFound(format!(
                        "{target:?} is neither a blob's SHA-256 nor a known entity"
                    ))
                    .into());
                }
                return Err(
                    ClientError::NotFound(format!("no blob is attached to {target}")).into(),
                );
            }
            [one] => (one.sha256.clone(), one.filename.clone()),
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|b| format!("{} {}", b.sha256, opt(b.filename.as_deref())))
                    .collect();
                return Err(usage(format!(
                    "{target} has {} blobs attached; name one by its SHA-256:\n  {}",
                    many.len(),
                    list.join("\n  ")
                )));
            }
        }
    };
    let dest = output.unwrap_or_else(|| {
        // Only a plain file name from the edge: never a path into another directory.
        let safe = filename
            .as_deref()
            .and_then(|f| Path::new(f).file_name())
            .map(PathBuf::from);
        safe.unwrap_or_else(|| PathBuf::from(&sha))
    });
    let progress = BlobProgress::start(client, out, "downloading");
    let fetched = client.fetch_blob(&sha, &dest).await;
    progress.finish();
    let size = fetched?;
    if out.json {
        out.json(&json!({"sha256": sha, "size": size, "path": dest}))?;
    } else {
        out.pairs(vec![
            ("sha256", sha),
            ("size", size.to_string()),
            ("path", dest.display().to_string()),
        ]);
    }
    Ok(Exit::Ok)
}

//! `export` and `import`: the whole graph as one JSON document (shape in docs/CLIENT.md).

use std::io::Read;
use std::path::PathBuf;

use goodies_client::BlowingOffClient;
use serde_json::{json, Value};

use crate::exit::{usage, Exit};
use crate::output::Out;

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off export > home.json\n  blowing-off export -o home.json"
)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off import home.json\n  blowing-off export | blowing-off --db other.db import -"
)]
pub struct ImportArgs {
    /// The export to read (`-`: stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Runs `export`.
pub async fn export(client: &BlowingOffClient, out: Out, a: ExportArgs) -> anyhow::Result<Exit> {
    let graph = client.export_graph().await?;
    let text = serde_json::to_string_pretty(&graph)?;
    match &a.output {
        None => outln!("{text}"),
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            if out.json {
                out.json(&json!({"file": path, "entities": graph.entities.len(),
                                 "relationships": graph.relationships.len()}))?;
            } else {
                outln!(
                    "exported {} entities and {} relationships to {}",
                    graph.entities.len(),
                    graph.relationships.len(),
                    path.display()
                );
            }
        }
    }
    Ok(Exit::Ok)
}

/// Runs `import`.
pub async fn import(client: &BlowingOffClient, out: Out, a: ImportArgs) -> anyhow::Result<Exit> {
    let name = a.file.display().to_string();
    let text = if name == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| usage(format!("cannot read stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| usage(format!("cannot read {name}: {e}")))?
    };
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("{name} is not JSON ({e}); nothing was imported")))?;
    let report = client.import_graph(&doc).await?;
    if out.json {
        out.json(&report)?;
    } else {
        outln!(
            "imported {name}: {} created, {} updated, {} unchanged; {} relationships created, {} already present (run `blowing-off sync` to send them)",
            report.created,
            report.updated,
            report.unchanged,
            report.relationships_created,
            report.relationships_unchanged
        );
    }
    Ok(Exit::Ok)
}

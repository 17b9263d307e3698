//! `home show|create` (alias `house`).

use clap::Subcommand;
use goodies_client::{BlowingOffClient, Home};
use tabled::Tabled;

use crate::exit::Exit;
use crate::output::{compact, Out};

/// Arguments of `home`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off house show\n  blowing-off house create --name Home"
)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: HomeCommand,
}

/// `home` subcommands.
#[derive(Debug, Subcommand)]
pub enum HomeCommand {
    /// Show the home(s).
    #[command(after_help = "Examples:\n  blowing-off house show\n  blowing-off home show --json")]
    Show,
    /// Create a home.
    #[command(after_help = "Example:\n  blowing-off house create --name Home")]
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Tabled)]
struct HomeRow {
    id: String,
    name: String,
    content: String,
    version: String,
}

fn row(h: &Home) -> HomeRow {
    HomeRow {
        id: h.id.to_string(),
        name: h.name.clone(),
        content: compact(&h.content, 60),
        version: h.version.to_string(),
    }
}

/// Runs `home`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.command {
        HomeCommand::Show => {
            let homes = client.get_homes().await?;
            if out.json {
                match homes.as_slice() {
                    [one] => out.json(one)?,
                    _ => out.json(&homes)?,
                }
            } else {
                out.table(
                    homes.iter().map(row).collect(),
                    "no home yet (create one with `home create --name NAME`, or sync)",
                );
            }
        }
        HomeCommand::Create { name } => {
            let h = client.create_home(&name).await?;
            if out.json {
                out.json(&h)?;
            } else {
                outln!("created home {} ({})", h.name, h.id);
            }
        }
    }
    Ok(Exit::Ok)
}

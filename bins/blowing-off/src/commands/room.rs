//! `room list|create`.

use clap::Subcommand;
use goodies_client::{BlowingOffClient, Room};
use tabled::Tabled;

use crate::commands::id;
use crate::exit::Exit;
use crate::output::{opt, Out};

/// Arguments of `room`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: RoomCommand,
}

/// `room` subcommands.
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// List rooms.
    List {
        /// Only the rooms of this home.
        #[arg(long, alias = "house-id")]
        home_id: Option<String>,
    },
    /// Create a room in a home.
    Create {
        /// The home (id).
        #[arg(long, alias = "house-id")]
        home_id: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its floor.
        #[arg(long, allow_negative_numbers = true)]
        floor: Option<i64>,
    },
}

#[derive(Tabled)]
struct RoomRow {
    id: String,
    name: String,
    floor: String,
    home: String,
}

fn row(r: &Room) -> RoomRow {
    RoomRow {
        id: r.id.to_string(),
        name: r.name.clone(),
        floor: opt(r.floor),
        home: opt(r.home_id.as_ref()),
    }
}

/// Runs `room`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.command {
        RoomCommand::List { home_id } => {
            let rooms = match home_id {
                Some(h) => client.get_rooms_in_home(&id(&h)).await?,
                None => client.get_rooms().await?,
            };
            if out.json {
                out.json(&rooms)?;
            } else {
                out.table(rooms.iter().map(row).collect(), "no rooms");
            }
        }
        RoomCommand::Create {
            home_id,
            name,
            floor,
        } => {
            let r = client.create_room(&id(&home_id), &name, floor).await?;
            if out.json {
                out.json(&r)?;
            } else {
                outln!("created room {} ({})", r.name, r.id);
            }
        }
    }
    Ok(Exit::Ok)
}

//! `room list|create`.

use clap::Subcommand;
use goodies_client::{BlowingOffClient, Room};
use tabled::Tabled;

use crate::commands::id;
use crate::exit::Exit;
use crate::output::{opt, Out};

/// Arguments of `room`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off room list\n  blowing-off room create --house-id HOME_ID --name Kitchen"
)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: RoomCommand,
}

/// `room` subcommands.
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// List rooms.
    #[command(
        after_help = "Examples:\n  blowing-off room list\n  blowing-off room list --house-id HOME_ID --json"
    )]
    List {
        /// Only the rooms of this home.
        #[arg(long, alias = "house-id")]
        home_id: Option<String>,
    },
    /// Create a room in a home.
    #[command(
        after_help = "Example:\n  blowing-off room create --house-id HOME_ID --name 'Living Room' --floor 0 --type living_room"
    )]
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
        /// Its type, e.g. living_room or kitchen.
        #[arg(long = "type")]
        room_type: Option<String>,
    },
}

#[derive(Tabled)]
struct RoomRow {
    id: String,
    name: String,
    #[tabled(rename = "type")]
    room_type: String,
    floor: String,
    home: String,
}

fn row(r: &Room, homes: &std::collections::HashMap<goodies_client::EntityId, String>) -> RoomRow {
    RoomRow {
        id: r.id.to_string(),
        name: r.name.clone(),
        room_type: opt(r
            .content
            .get(goodies_client::ROOM_TYPE_KEY)
            .and_then(|v| v.as_str())),
        floor: opt(r.floor),
        home: crate::commands::name_of(homes, r.home_id.as_ref()),
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
                let homes =
                    crate::commands::names(client, &[goodies_client::EntityType::Home]).await?;
                out.table(rooms.iter().map(|r| row(r, &homes)).collect(), "no rooms");
            }
        }
        RoomCommand::Create {
            home_id,
            name,
            floor,
            room_type,
        } => {
            let r = client
                .create_room_with_type(&id(&home_id), &name, floor, room_type.as_deref())
                .await?;
            if out.json {
                out.json(&r)?;
            } else {
                outln!("created room {} ({})", r.name, r.id);
            }
        }
    }
    Ok(Exit::Ok)
}

//! `device list|create|state|set-state|set|delete`.

use clap::Subcommand;
use goodies_client::{BlowingOffClient, Device};
use serde_json::Value;
use tabled::Tabled;

use crate::commands::id;
use crate::exit::{usage, Exit};
use crate::output::{compact, opt, Out};

/// Arguments of `device`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off device list\n  blowing-off device set-state DEVICE_ID '{\"power\": \"on\"}'"
)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: DeviceCommand,
}

/// `device` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices.
    #[command(
        after_help = "Examples:\n  blowing-off device list\n  blowing-off device list --room-id ROOM_ID --json"
    )]
    List {
        /// Only the devices of this room.
        #[arg(long)]
        room_id: Option<String>,
    },
    /// Create a device in a room.
    #[command(
        after_help = "Example:\n  blowing-off device create --room-id ROOM_ID --name 'Ceiling Light' --type light --manufacturer Philips"
    )]
    Create {
        /// The room (id).
        #[arg(long)]
        room_id: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// Its type, e.g. light.
        #[arg(long = "type")]
        device_type: String,
        /// Its manufacturer.
        #[arg(long)]
        manufacturer: Option<String>,
    },
    /// Show a device's state.
    #[command(after_help = "Example:\n  blowing-off device state DEVICE_ID")]
    State {
        /// The device (id).
        id: String,
    },
    /// Merge keys into a device's state, e.g. '{"power": "on"}' (null removes a key).
    #[command(
        after_help = "Example:\n  blowing-off device set-state DEVICE_ID '{\"power\": \"on\", \"brightness\": 80}'"
    )]
    SetState {
        /// The device (id).
        id: String,
        /// A JSON object.
        #[arg(value_name = "JSON")]
        state: String,
    },
    /// Set one characteristic of a device (VALUE is JSON, or else taken as a string).
    #[command(
        after_help = "Examples:\n  blowing-off device set DEVICE_ID brightness 80\n  blowing-off device set DEVICE_ID mode eco"
    )]
    Set {
        /// The device (id).
        id: String,
        /// The characteristic.
        name: String,
        /// Its value.
        value: String,
    },
    /// Delete a device.
    #[command(after_help = "Example:\n  blowing-off device delete DEVICE_ID")]
    Delete {
        /// The device (id).
        id: String,
    },
}

#[derive(Tabled)]
struct DeviceRow {
    id: String,
    name: String,
    #[tabled(rename = "type")]
    device_type: String,
    room: String,
    state: String,
}

fn row(
    d: &Device,
    rooms: &std::collections::HashMap<goodies_client::EntityId, String>,
) -> DeviceRow {
    DeviceRow {
        id: d.id.to_string(),
        name: d.name.clone(),
        device_type: opt(d.device_type.as_deref()),
        room: crate::commands::name_of(rooms, d.room_id.as_ref()),
        state: compact(&d.state, 60),
    }
}

fn print_device(out: Out, verb: &str, d: &Device) -> anyhow::Result<()> {
    if out.json {
        out.json(d)
    } else {
        outln!(
            "{verb} device {} ({}): {}",
            d.name,
            d.id,
            compact(&d.state, 200)
        );
        Ok(())
    }
}

/// Runs `device`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.command {
        DeviceCommand::List { room_id } => {
            let devices = match room_id {
                Some(r) => client.get_devices_in_room(&id(&r)).await?,
                None => client.get_devices().await?,
            };
            if out.json {
                out.json(&devices)?;
            } else {
                let rooms =
                    crate::commands::names(client, &[goodies_client::EntityType::Room]).await?;
                out.table(
                    devices.iter().map(|d| row(d, &rooms)).collect(),
                    "no devices",
                );
            }
        }
        DeviceCommand::Create {
            room_id,
            name,
            device_type,
            manufacturer,
        } => {
            let d = client
                .create_device(&id(&room_id), &name, &device_type, manufacturer.as_deref())
                .await?;
            print_device(out, "created", &d)?;
        }
        DeviceCommand::State { id: device } => {
            let state = client.get_device_state(&id(&device)).await?;
            if out.json {
                out.json(&state)?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&state)?);
            }
        }
        DeviceCommand::SetState { id: device, state } => {
            let patch = match serde_json::from_str::<Value>(&state) {
                Ok(Value::Object(o)) => o,
                Ok(_) => {
                    return Err(usage(
                        "the state must be a JSON object, e.g. '{\"power\": \"on\"}'",
                    ))
                }
                Err(e) => return Err(usage(format!("the state is not valid JSON: {e}"))),
            };
            let d = client.update_device_state(&id(&device), patch).await?;
            print_device(out, "updated", &d)?;
        }
        DeviceCommand::Set {
            id: device,
            name,
            value,
        } => {
            let v = serde_json::from_str::<Value>(&value).unwrap_or(Value::String(value));
            let d = client.update_characteristic(&id(&device), &name, v).await?;
            print_device(out, "updated", &d)?;
        }
        DeviceCommand::Delete { id: device } => {
            client.delete_device(&id(&device)).await?;
            if out.json {
                out.json(&serde_json::json!({"deleted": device}))?;
            } else {
                outln!("deleted device {device}");
            }
        }
    }
    Ok(Exit::Ok)
}

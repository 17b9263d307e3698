//! The server's vector clock (PROTOCOL §5.6), bounded whatever callers send.
//!
//! The server answers every sync with its clock: per device, the highest counter that
//! device has reported for itself. What a request may change:
//!
//! - A read-only (guest) token changes nothing; it still gets the clock.
//! - A device enters the clock only through its own entry (the request's `device_id`),
//!   so a key is a device that has synced here with a write token; entries a request
//!   carries for devices the clock does not hold are ignored.
//! - Entries of devices already held advance (pointwise maximum), at most
//!   [`MAX_MERGED`] of them per request (the sender's own first).
//! - At most [`MAX_DEVICES`] devices are held; past that, new devices are not added.
//! - An entry whose counter is not a decimal integer is ignored.
//!
//! The clock lives in memory and starts empty when the server starts.

use std::sync::Mutex;

use inbetweenies_conflict::VectorClock;
use inbetweenies_proto::VectorClockWire;

/// At most this many devices in the server's clock.
pub(crate) const MAX_DEVICES: usize = 1_000;

/// At most this many entries of one request's clock are merged.
pub(crate) const MAX_MERGED: usize = 64;

/// The server's clock.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    clock: Mutex<VectorClock>,
}

impl ServerClock {
    /// Merges what a request may change (see the module doc) and returns the server's clock.
    pub(crate) fn merge(
        &self,
        sender: &str,
        may_write: bool,
        client: &VectorClockWire,
    ) -> VectorClockWire {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if may_write {
            let counter = |device: &str| {
                client
                    .clocks
                    .get(device)
                    .and_then(|c| c.parse::<u64>().ok())
            };
            let mut merged = 0;
            if let Some(c) = counter(sender) {
                if clock.len() < MAX_DEVICES || clock.iter().any(|(d, _)| d == sender) {
                    let now = clock.get(sender);
                    clock.set(sender, c.max(now));
                    merged += 1;
                }
            }
            // Walk the smaller side: the request may carry any number of entries.
            let known: Vec<(String, u64)> = if client.clocks.len() < clock.len() {
                client
                    .clocks
                    .keys()
                    .filter(|d| d.as_str() != sender && clock.get(d) > 0)
                    .filter_map(|d| Some((d.clone(), counter(d)?)))
                    .collect()
            } else {
                clock
                    .iter()
                    .filter(|(d, _)| *d != sender)
                    .filter_map(|(d, _)| Some((d.to_owned(), counter(d)?)))
                    .collect()
            };
            for (device, c) in known.into_iter().take(MAX_MERGED.saturating_sub(merged)) {
                let now = clock.get(&device);
                if c > now {
                    clock.set(device, c);
                }
            }
        }
        clock.to_wire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(entries: &[(&str, &str)]) -> VectorClockWire {
        VectorClockWire {
            clocks: entries
                .iter()
                .map(|(d, c)| ((*d).to_owned(), (*c).to_owned()))
                .collect(),
        }
    }

    /// Only the sender's own entry adds a device; known devices advance; guests change
    /// nothing; counters that do not read are ignored; the totals are capped.
    #[test]
    fn only_known_devices_and_the_sender_enter_the_clock() {
        let clock = ServerClock::default();
        let out = clock.merge("a", true, &wire(&[("a", "3"), ("stranger", "9")]));
        assert_eq!(out, wire(&[("a", "3")]));
        let out = clock.merge("b", true, &wire(&[("b", "1"), ("a", "5")]));
        assert_eq!(
            out,
            wire(&[("a", "5"), ("b", "1")]),
            "a is known: it advances"
        );
        let out = clock.merge("a", true, &wire(&[("a", "2"), ("b", "x")]));
        assert_eq!(
            out,
            wire(&[("a", "5"), ("b", "1")]),
            "no going back, bad counters ignored"
        );
        let out = clock.merge("guest", false, &wire(&[("guest", "7"), ("a", "50")]));
        assert_eq!(
            out,
            wire(&[("a", "5"), ("b", "1")]),
            "a guest changes nothing"
        );

        for i in 0..MAX_DEVICES + 10 {
            let d = format!("d{i:05}");
            clock.merge(&d, true, &wire(&[(&d, "1")]));
        }
        assert_eq!(
            clock.merge("x", false, &wire(&[])).clocks.len(),
            MAX_DEVICES
        );
        // A request naming every known device advances at most MAX_MERGED of them.
        let all: Vec<(String, String)> = (0..MAX_DEVICES)
            .map(|i| (format!("d{i:05}"), "2".to_owned()))
            .collect();
        let big = VectorClockWire {
            clocks: all.into_iter().collect(),
        };
        let out = clock.merge("d00000", true, &big);
        let advanced = out.clocks.values().filter(|c| c.as_str() == "2").count();
        assert_eq!(advanced, MAX_MERGED);
    }
}

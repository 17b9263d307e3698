//! Sync records written behind: the device bookkeeping of every sync (`last_seen`,
//! `sync_count`, `ServerStore::record_sync`), held in memory for at most
//! [`StoreOptions::sync_record_delay`](crate::StoreOptions::sync_record_delay) and
//! written for every device at once.
//!
//! Each sync wrote one row in a transaction of its own (on SQLite, in the next group
//! commit); for a caught-up client that write was most of the work of its delta. What
//! it records is bookkeeping only (shown by the sync status, kept in backups), not
//! protocol state: no answer, watermark, cursor, digest, acknowledgement or history
//! horizon depends on it (`last_ack` is written at once by `record_ack`, never here).
//! What stays true:
//!
//! - **Every sync counts.** Records of one device add up (`sync_count` grows by the
//!   number of syncs held) and `last_seen` is the time of the latest of them, as the
//!   store's clock read it when the sync was recorded (a flush never moves it back).
//! - **Read through the same store, nothing is missing.** `client_status` and a
//!   backup's export write what is held first; a restore writes it first too (into the
//!   state it then replaces, as a write just before the restore would have been).
//! - **Bounded.** At most [`MAX_HELD`] devices are held; the record that would pass it
//!   is written at once with everything held. The holder writes them at least every
//!   delay ([`ServerStore::flush_sync_records`](crate::ServerStore::flush_sync_records):
//!   the server runs it on a timer and at shutdown); a failed write keeps them for the
//!   next one. A reader through another store or process sees them within that delay.
//! - A process killed before the write loses at most that delay's bookkeeping, never
//!   a change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use inbetweenies_proto::Timestamp;

/// At most this many devices' records are held before they are written.
pub const MAX_HELD: usize = 10_000;

/// The syncs of one device held for the next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSyncs {
    /// The device.
    pub device_id: String,
    /// How many syncs.
    pub syncs: u64,
    /// The store's clock at the latest of them.
    pub last_seen: Timestamp,
    /// When the latest was recorded (for a backend that reads its database's clock:
    /// `last_seen` there is that clock minus the record's age).
    pub at: Instant,
}

/// One sync of `device_id` at `now`, as a record.
fn one_sync(device_id: &str, now: Timestamp) -> HeldSyncs {
    HeldSyncs {
        device_id: device_id.to_owned(),
        syncs: 1,
        last_seen: now,
        at: Instant::now(),
    }
}

/// Merges `r` into what is held for its device: counts add up, the latest times stay.
fn hold(held: &mut HashMap<String, HeldSyncs>, r: HeldSyncs) {
    match held.get_mut(&r.device_id) {
        Some(h) => {
            h.syncs += r.syncs;
            h.last_seen = h.last_seen.max(r.last_seen);
            h.at = h.at.max(r.at);
        }
        None => {
            held.insert(r.device_id.clone(), r);
        }
    }
}

/// The records held (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct SeenBuffer {
    held: Mutex<HashMap<String, HeldSyncs>>,
}

impl SeenBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldSyncs>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds one sync of `device_id` at `now`; true when the buffer is full and the
    /// caller must write what is held now.
    pub(crate) fn add(&self, device_id: &str, now: Timestamp) -> bool {
        let mut held = self.lock();
        hold(&mut held, one_sync(device_id, now));
        held.len() >= MAX_HELD
    }

    /// Holds one sync of `device_id` at `now` if that leaves the buffer short of full
    /// (so no write is due); false, holding nothing, otherwise.
    pub(crate) fn add_if_room(&self, device_id: &str, now: Timestamp) -> bool {
        let mut held = self.lock();
        if !held.contains_key(device_id) && held.len() + 1 >= MAX_HELD {
            return false;
        }
        hold(&mut held, one_sync(device_id, now));
        true
    }

    /// Everything held, taken out for a write.
    pub(crate) fn take(&self) -> Vec<HeldSyncs> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }

    /// Puts back records whose write failed (merged with any held since).
    pub(crate) fn put_back(&self, records: Vec<HeldSyncs>) {
        let mut held = self.lock();
        for r in records {
            hold(&mut held, r);
        }
    }

    /// How many devices' records are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_one_device_add_up_and_keep_the_latest_time() {
        let b = SeenBuffer::default();
        let t = Timestamp::from_unix_micros(1_000).unwrap();
        let later = Timestamp::from_unix_micros(2_000).unwrap();
        assert!(!b.add("a", later));
        assert!(!b.add("a", t));
        assert!(!b.add("b", t));
        assert_eq!(b.len(), 2);
        let mut taken = b.take();
        taken.sort_by(|x, y| x.device_id.cmp(&y.device_id));
        assert_eq!((taken[0].syncs, taken[0].last_seen), (2, later));
        assert_eq!(b.len(), 0);
        b.add("a", t);
        b.put_back(taken);
        let mut again = b.take();
        again.sort_by(|x, y| x.device_id.cmp(&y.device_id));
        assert_eq!((again[0].syncs, again[0].last_seen), (3, later));
        assert_eq!(again[1].syncs, 1);
    }

    #[test]
    fn the_buffer_asks_for_a_write_when_full() {
        let b = SeenBuffer::default();
        let t = Timestamp::from_unix_micros(1).unwrap();
        for i in 0..MAX_HELD - 1 {
            assert!(!b.add(&format!("d{i}"), t));
        }
        assert!(
            b.add("last", t),
            "the record that fills it asks for a write"
        );
    }

    /// `add_if_room` never fills the buffer: the record that would is not held (the
    /// caller then writes), while a device already held is always counted.
    #[test]
    fn holding_at_once_stops_short_of_full() {
        let b = SeenBuffer::default();
        let t = Timestamp::from_unix_micros(1).unwrap();
        for i in 0..MAX_HELD - 1 {
            assert!(b.add_if_room(&format!("d{i}"), t));
        }
        assert!(!b.add_if_room("one more", t), "it would fill the buffer");
        assert_eq!(b.len(), MAX_HELD - 1, "and nothing was held");
        assert!(b.add_if_room("d0", t), "a device held is counted");
        let d0 = b.take().into_iter().find(|h| h.device_id == "d0").unwrap();
        assert_eq!(d0.syncs, 2);
    }
}

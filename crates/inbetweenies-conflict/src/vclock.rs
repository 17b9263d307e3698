//! Vector clocks: a counter per device, to tell concurrent edits from stale ones.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use inbetweenies_proto::VectorClockWire;

use crate::error::VectorClockError;

/// How two vector clocks relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockOrdering {
    /// Every counter of the left clock is ≤ the right's, one strictly: the left happened before.
    Before,
    /// The right clock happened before the left.
    After,
    /// Same counters (a missing device counts as 0).
    Equal,
    /// Each clock has a counter greater than the other's: concurrent edits.
    Concurrent,
}

/// A vector clock: device id → the number of events seen from that device.
///
/// A device missing from the map has counter 0, so `{a: 0}` equals `{}`.
/// On the wire it is `{"clocks": {"device": "3"}}`: the counters are
/// decimal strings ([`VectorClock::to_wire`], [`VectorClock::from_wire`]).
/// Equality follows [`VectorClock::compare`]: zero entries do not count.
#[derive(Clone, Debug, Default)]
pub struct VectorClock {
    clocks: BTreeMap<String, u64>,
}

impl VectorClock {
    /// An empty clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of a device (0 when absent).
    pub fn get(&self, device: &str) -> u64 {
        self.clocks.get(device).copied().unwrap_or(0)
    }

    /// Sets a device's counter.
    pub fn set(&mut self, device: impl Into<String>, counter: u64) {
        self.clocks.insert(device.into(), counter);
    }

    /// Counts one event on `device` and returns its new counter (saturating at `u64::MAX`).
    pub fn increment(&mut self, device: &str) -> u64 {
        let c = match self.clocks.get_mut(device) {
            Some(c) => c,
            None => self.clocks.entry(device.to_owned()).or_insert(0),
        };
        *c = c.saturating_add(1);
        *c
    }

    /// Takes the per-device maximum of both clocks into `self`.
    pub fn merge(&mut self, other: &VectorClock) {
        for (device, &counter) in &other.clocks {
            match self.clocks.get_mut(device) {
                Some(c) => *c = (*c).max(counter),
                None => {
                    self.clocks.insert(device.clone(), counter);
                }
            }
        }
    }

    /// The per-device maximum of both clocks.
    pub fn merged(&self, other: &VectorClock) -> VectorClock {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VectorClock) -> ClockOrdering {
        let mut less = false;
        let mut greater = false;
        for device in self.clocks.keys().chain(other.clocks.keys()) {
            match self.get(device).cmp(&other.get(device)) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
            if less && greater {
                return ClockOrdering::Concurrent;
            }
        }
        match (less, greater) {
            (false, false) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::Before,
            (false, true) => ClockOrdering::After,
            (true, true) => ClockOrdering::Concurrent,
        }
    }

    /// Whether `self` happened strictly before `other`.
    pub fn happened_before(&self, other: &VectorClock) -> bool {
        self.compare(other) == ClockOrdering::Before
    }

    /// Whether neither clock happened before the other and they differ.
    pub fn is_concurrent_with(&self, other: &VectorClock) -> bool {
        self.compare(other) == ClockOrdering::Concurrent
    }

    /// The entries, in device order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.clocks.iter().map(|(d, &c)| (d.as_str(), c))
    }

    /// How many devices have an entry.
    pub fn len(&self) -> usize {
        self.clocks.len()
    }

    /// Whether no device has an entry.
    pub fn is_empty(&self) -> bool {
        self.clocks.is_empty()
    }

    /// The wire form: counters as decimal strings.
    pub fn to_wire(&self) -> VectorClockWire {
        VectorClockWire {
            clocks: self
                .clocks
                .iter()
                .map(|(d, c)| (d.clone(), c.to_string()))
                .collect(),
        }
    }

    /// Reads the wire form. Each counter must be a string of ASCII digits
    /// that fits in 64 bits; anything else is an error naming the device.
    pub fn from_wire(wire: &VectorClockWire) -> Result<VectorClock, VectorClockError> {
        let mut clocks = BTreeMap::new();
        for (device, value) in &wire.clocks {
            let bad = || VectorClockError::NotACounter {
                device: device.clone(),
                value: value.clone(),
            };
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let counter = value.parse::<u64>().map_err(|_| bad())?;
            clocks.insert(device.clone(), counter);
        }
        Ok(VectorClock { clocks })
    }
}

impl PartialEq for VectorClock {
    fn eq(&self, other: &Self) -> bool {
        self.compare(other) == ClockOrdering::Equal
    }
}

impl Eq for VectorClock {}

impl Hash for VectorClock {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (d, c) in self.clocks.iter().filter(|(_, &c)| c != 0) {
            d.hash(state);
            c.hash(state);
        }
    }
}

impl PartialOrd for VectorClock {
    /// The happened-before partial order; `None` for concurrent clocks.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            ClockOrdering::Before => Some(Ordering::Less),
            ClockOrdering::After => Some(Ordering::Greater),
            ClockOrdering::Equal => Some(Ordering::Equal),
            ClockOrdering::Concurrent => None,
        }
    }
}

impl TryFrom<&VectorClockWire> for VectorClock {
    type Error = VectorClockError;
    fn try_from(wire: &VectorClockWire) -> Result<Self, Self::Error> {
        VectorClock::from_wire(wire)
    }
}

impl From<&VectorClock> for VectorClockWire {
    fn from(clock: &VectorClock) -> Self {
        clock.to_wire()
    }
}

impl FromIterator<(String, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        VectorClock {
            clocks: iter.into_iter().collect(),
        }
    }
}

impl fmt::Display for VectorClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (d, c)) in self.clocks.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}: {c}")?;
        }
        f.write_str("}")
    }
}

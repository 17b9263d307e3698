//! Error types of the crate: vector clocks, digests and Merkle trees.

use std::error::Error as StdError;

/// A vector clock read from the wire was not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VectorClockError {
    /// A counter was not a non-negative decimal integer that fits in 64 bits.
    #[error("vector clock entry for device {device:?} is not a counter: {value:?}")]
    NotACounter {
        /// The device whose entry was bad.
        device: String,
        /// The value as sent.
        value: String,
    },
}

/// Rows fed to a [`crate::DigestBuilder`] were not in strictly increasing id order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// An id arrived after an id that sorts after it (or equal to it).
    #[error("digest rows out of order: {id:?} after {previous:?}")]
    OutOfOrder {
        /// The previous id.
        previous: String,
        /// The offending id.
        id: String,
    },
}

/// A Merkle tree was asked for something it does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The requested depth is outside the supported range.
    #[error("merkle depth {depth} is outside 1..={max}")]
    BadDepth {
        /// The requested depth.
        depth: u8,
        /// The largest supported depth.
        max: u8,
    },
    /// A node prefix was not a string of lowercase hex digits within the tree's depth.
    #[error("bad merkle node prefix {0:?}")]
    BadPrefix(String),
    /// A node hash was not 64 lowercase hex digits.
    #[error("bad merkle node hash {0:?}")]
    BadHash(String),
    /// Two trees of different depths cannot be compared.
    #[error("merkle trees of different depths: {local} and {remote}")]
    DepthMismatch {
        /// This tree's depth.
        local: u8,
        /// The other tree's depth.
        remote: u8,
    },
}

/// A Merkle comparison with another party failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError<E>
where
    E: StdError + 'static,
{
    /// Asking the other party for child hashes failed.
    #[error("asking the other party for node hashes failed")]
    Remote(#[source] E),
    /// The other party answered for a different number of nodes than asked.
    #[error("the other party answered for {got} nodes, {asked} were asked about")]
    WrongCount {
        /// How many nodes were asked about.
        asked: usize,
        /// How many child hash sets came back.
        got: usize,
    },
    /// The other party sent a child hash set that does not have 16 hashes.
    #[error("the other party sent {got} child hashes for node {node:?}, expected 16")]
    WrongFanout {
        /// The node's prefix.
        node: String,
        /// How many child hashes came back.
        got: usize,
    },
}

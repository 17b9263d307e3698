//! The convergence digest `state_digest`: SHA-256 over every id's latest version, in id order.

use sha2::{Digest as _, Sha256};

use crate::error::DigestError;

/// The SHA-256 of nothing: the digest of an empty store.
pub const EMPTY_DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const UNIT_SEPARATOR: u8 = 0x1f;
const RECORD_SEPARATOR: u8 = 0x1e;

/// Feeds one row into a hasher as `{id}\x1f{version}\x1e`.
pub(crate) fn feed_row(h: &mut Sha256, id: &str, version: &str) {
    h.update(id.as_bytes());
    h.update([UNIT_SEPARATOR]);
    h.update(version.as_bytes());
    h.update([RECORD_SEPARATOR]);
}

/// The convergence digest over the latest version of every entity id.
///
/// Rows are `(id, version)` pairs in any order: they are sorted by id (byte
/// order) and each is fed to SHA-256 as the bytes of `{id}\x1f{version}\x1e`;
/// tombstones count like any version. The result is lowercase hex; no rows
/// give [`EMPTY_DIGEST`]. This is byte-identical to the Python reference's
/// `state_digest`, so mixed clients can compare digests.
///
/// Each id should appear once (it is the latest state); if one appears
/// twice, both rows are hashed, ordered by version.
pub fn state_digest<'a, I>(rows: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut rows: Vec<(&str, &str)> = rows.into_iter().collect();
    rows.sort_unstable();
    let mut h = Sha256::new();
    for (id, version) in rows {
        feed_row(&mut h, id, version);
    }
    hex::encode(h.finalize())
}

/// Computes [`state_digest`] from rows that already arrive in strictly
/// increasing id order (as a store streams them from its latest-row index),
/// without holding them in memory.
///
/// ```
/// use inbetweenies_conflict::{state_digest, DigestBuilder};
///
/// let rows = [("a", "v1"), ("b", "v2")];
/// let mut builder = DigestBuilder::new();
/// for (id, version) in rows {
///     builder.push(id, version)?;
/// }
/// assert_eq!(builder.finish(), state_digest(rows));
/// # Ok::<(), inbetweenies_conflict::DigestError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct DigestBuilder {
    hasher: Sha256,
    last_id: Option<String>,
    rows: u64,
}

impl DigestBuilder {
    /// A builder with no rows yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next row. Its id must sort strictly after the previous row's
    /// id (byte order); otherwise nothing is added and an error is returned.
    pub fn push(&mut self, id: &str, version: &str) -> Result<(), DigestError> {
        match &mut self.last_id {
            Some(last) => {
                if id.as_bytes() <= last.as_bytes() {
                    return Err(DigestError::OutOfOrder {
                        previous: last.clone(),
                        id: id.to_owned(),
                    });
                }
                last.clear();
                last.push_str(id);
            }
            None => self.last_id = Some(id.to_owned()),
        }
        feed_row(&mut self.hasher, id, version);
        self.rows += 1;
        Ok(())
    }

    /// How many rows have been added.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The digest, lowercase hex.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

//! The record of the last sync (its outcome and the last digest check), kept beside the
//! mirror rather than in it.
//!
//! Every sync leaves a record with its time, so an idle sync that kept it in the mirror
//! would write the mirror (a transaction, WAL frames, a checkpoint when the process
//! ends) for nothing else. A mirror that is a file keeps the record in a small file next
//! to it (`<mirror>.last-sync`, readable by its owner only), rewritten by every sync
//! without an `fsync`: losing it to a crash loses only what `status` shows about the
//! last sync. A mirror that is not a file (`:memory:`, a store handed to
//! [`crate::BlowingOffClient::from_parts`]) keeps it in its settings as before. Readers
//! take the newer of the two, so a mirror written before this file existed still shows
//! its last sync.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::Inner;
use crate::error::ClientError;
use crate::settings::{keys, DigestCheck, LastSync};

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    last_sync: Option<LastSync>,
    #[serde(default)]
    last_digest_check: Option<DigestCheck>,
}

/// The record file of the mirror at `db` (`None` for a mirror that is not a file).
pub(crate) fn record_path(db: &Path) -> Option<PathBuf> {
    let text = db.display().to_string();
    if text.is_empty() || text == ":memory:" || text.starts_with("sqlite:") {
        return None;
    }
    Some(PathBuf::from(format!("{text}.last-sync")))
}

fn read(path: &Path) -> Record {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the record whole: to a file of this process's own, renamed over the record,
/// so another process reading it at the same time sees the old record or the new one.
fn write(path: &Path, record: &Record) -> std::io::Result<()> {
    use std::io::Write as _;
    let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(&json))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The newer of two records (by their `at`).
fn newer<T>(
    a: Option<T>,
    b: Option<T>,
    at: impl Fn(&T) -> inbetweenies_proto::Timestamp,
) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if at(&b) > at(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl Inner {
    /// Records a finished (or failed) sync, and the digest check it made, if any.
    pub(crate) async fn save_sync_record(
        &self,
        last: &LastSync,
        check: Option<&DigestCheck>,
    ) -> Result<(), ClientError> {
        let Some(path) = &self.record_file else {
            self.set_json(keys::LAST_SYNC, last).await?;
            if let Some(d) = check {
                self.set_json(keys::LAST_DIGEST_CHECK, d).await?;
            }
            return Ok(());
        };
        let mut record = read(path);
        record.last_sync = Some(last.clone());
        if let Some(d) = check {
            record.last_digest_check = Some(d.clone());
        }
        if let Err(e) = write(path, &record) {
            tracing::warn!(file = %path.display(), error = %e, "cannot record the last sync");
        }
        Ok(())
    }

    /// The last sync and the last digest check, as recorded.
    pub(crate) async fn sync_record(
        &self,
    ) -> Result<(Option<LastSync>, Option<DigestCheck>), ClientError> {
        let stored_sync = self.get_json::<LastSync>(keys::LAST_SYNC).await?;
        let stored_check = self
            .get_json::<DigestCheck>(keys::LAST_DIGEST_CHECK)
            .await?;
        let file = match &self.record_file {
            Some(path) => read(path),
            None => Record::default(),
        };
        Ok((
            newer(stored_sync, file.last_sync, |l| l.at),
            newer(stored_check, file.last_digest_check, |d| d.at),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_have_a_record_file() {
        assert_eq!(record_path(Path::new(":memory:")), None);
        assert_eq!(record_path(Path::new("sqlite::memory:")), None);
        assert_eq!(
            record_path(Path::new("dir/m.db")),
            Some(PathBuf::from("dir/m.db.last-sync"))
        );
    }
}

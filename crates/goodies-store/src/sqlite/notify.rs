//! Commit notices on SQLite: an in-process broadcast shared by every store opened on
//! one database file, sent right after a write that numbered rows commits.

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::SqliteStore;
use crate::error::Result;
use crate::notify::{CommitFeed, CommitNotice, CommitSubscription, COMMIT_BUFFER};

/// The sending side kept with the file's shared state.
pub(super) fn channel() -> broadcast::Sender<CommitNotice> {
    broadcast::channel(COMMIT_BUFFER).0
}

/// Announces a commit; nobody listening is fine.
pub(super) fn publish(tx: &broadcast::Sender<CommitNotice>, notice: CommitNotice) {
    let _ = tx.send(notice);
}

#[async_trait]
impl CommitFeed for SqliteStore {
    async fn subscribe_commits(&self) -> Result<CommitSubscription> {
        Ok(CommitSubscription::new(self.shared.commits.subscribe()))
    }
}

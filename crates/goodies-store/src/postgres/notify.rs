//! Commit notices on PostgreSQL: `pg_notify` inside each write transaction that numbered
//! rows (delivered by the database on COMMIT, in commit order, to every process), and one
//! LISTEN task per store that forwards them into an in-process broadcast.
//!
//! When the LISTEN connection is lost, notices sent meanwhile are gone: once it is back
//! the task announces the current end of the feed with unknown types, so listeners look
//! for themselves.

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{db, rows, PgStore};
use crate::error::Result;
use crate::notify::{CommitFeed, CommitNotice, CommitSubscription, COMMIT_BUFFER};

/// The notification channel.
const CHANNEL: &str = "goodies_commits";

/// Largest payload sent; PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7_000;

/// The running LISTEN task of one store.
#[derive(Debug)]
pub(super) struct Listening {
    tx: broadcast::WeakSender<CommitNotice>,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Queues the notice of a write transaction ending at `notice.seq`; the database sends
/// it when the transaction commits.
pub(super) async fn notify_in(
    tx: &mut Transaction<'static, Postgres>,
    mut notice: CommitNotice,
) -> Result<()> {
    let mut payload = serde_json::to_string(&notice).unwrap_or_default();
    if payload.len() > MAX_PAYLOAD {
        notice.entity_types = None;
        payload = serde_json::to_string(&notice).unwrap_or_default();
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn forward(mut listener: PgListener, pool: PgPool, tx: broadcast::Sender<CommitNotice>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match serde_json::from_str::<CommitNotice>(n.payload()) {
                Ok(notice) => {
                    let _ = tx.send(notice);
                }
                Err(e) => tracing::warn!(
                    target: "goodies_store::postgres",
                    error = %e,
                    "ignoring a commit notice that does not parse"
                ),
            },
            Ok(None) => {
                // Reconnected: whatever was committed meanwhile is announced as one notice.
                let seq = sqlx::query_scalar::<_, i64>("SELECT last_seq FROM goodies_meta")
                    .fetch_one(&pool)
                    .await;
                if let Ok(seq) = seq.map_err(db).and_then(rows::seq) {
                    let _ = tx.send(CommitNotice {
                        seq,
                        entity_types: None,
                        relationships: true,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(
                    target: "goodies_store::postgres",
                    error = %e,
                    "commit notices stopped"
                );
                return;
            }
        }
    }
}

#[async_trait]
impl CommitFeed for PgStore {
    async fn subscribe_commits(&self) -> Result<CommitSubscription> {
        let mut slot = self.listening.lock().await;
        if let Some(sender) = slot
            .as_ref()
            .filter(|l| !l.task.is_finished())
            .and_then(|l| l.tx.upgrade())
        {
            return Ok(CommitSubscription::new(sender.subscribe()));
        }
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db)?;
        listener.listen(CHANNEL).await.map_err(db)?;
        let (tx, rx) = broadcast::channel(COMMIT_BUFFER);
        let weak = tx.downgrade();
        let task = tokio::spawn(forward(listener, self.pool.clone(), tx));
        *slot = Some(Listening { tx: weak, task });
        Ok(CommitSubscription::new(rx))
    }
}

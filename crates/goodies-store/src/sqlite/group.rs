//! Group commit: pushes and sync records that wait for the write lock together are
//! written in one transaction.
//!
//! Every write of a SQLite file is serialised (one write guard, `BEGIN IMMEDIATE`), and
//! a transaction costs the same few statements and a commit whether it holds one small
//! push or many. Under many devices pushing at once, one transaction each made the queue
//! for the write lock grow faster than it drained. Now a caller queues its work, then
//! waits either for its result or for the write guard; whoever takes the guard (the
//! leader) writes what is queued, up to [`MAX_JOBS`] jobs and about [`MAX_CHANGES`]
//! changes, in one transaction, and hands each caller its own result.
//!
//! What each push keeps, as if it had had a transaction of its own:
//!
//! - **Order.** Jobs are written in the order they were queued; each is planned against
//!   what the transaction holds so far, so it sees every earlier job of its group as it
//!   would have seen them committed, and takes the next sequence numbers.
//! - **Atomicity.** Each job runs inside its own `SAVEPOINT`: a job that fails is rolled
//!   back to it alone (its sequence numbers and commit-notice entries too) and gets its
//!   error; the others of the group go on.
//! - **Nothing acknowledged before it is durable.** A job's result is handed out only
//!   after the group's `COMMIT` succeeded; a failed commit fails every job of the group
//!   (nothing of it is stored). A leader that goes away before handing out results (its
//!   future dropped) drops the group's transaction, so nothing of it was stored, and
//!   each caller of the group queues its work again.
//! - **Its own receipt time.** Each job reads the clock when it starts, as a
//!   transaction of its own would have.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{oneshot, RwLockWriteGuard};

use super::{SqliteStore, Writer};
use crate::error::{Result, StoreError};
use crate::types::{PushBatch, PushOutcome};

/// At most this many jobs are written in one transaction…
pub(super) const MAX_JOBS: usize = 256;

/// …and, past the first job, at most about this many pushed changes.
pub(super) const MAX_CHANGES: usize = 5_000;

/// A caller whose group's leader went away queues its work again at most this often.
const REQUEUES: usize = 8;

/// What one caller asked to be written.
#[derive(Debug, Clone)]
pub(super) enum Work {
    /// A pushed batch (`ServerStore::apply_push`).
    Push(PushBatch),
    /// One sync of a device (`ServerStore::record_sync`).
    Seen(String),
}

impl Work {
    fn size(&self) -> usize {
        match self {
            Work::Push(b) => b.changes.len().max(1),
            Work::Seen(_) => 1,
        }
    }
}

/// What one job wrote.
#[derive(Debug)]
pub(super) enum Done {
    Push(PushOutcome),
    Seen,
}

struct Job {
    /// Which caller queued it.
    id: u64,
    work: Work,
    done: oneshot::Sender<Result<Done>>,
}

/// The jobs waiting for the next group commit of one store.
#[derive(Default)]
pub(super) struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("waiting", &self.lock().len())
            .finish()
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next group: the oldest job, then as many after it as fit the limits.
    fn take_group(&self) -> Vec<Job> {
        let mut q = self.lock();
        let mut group = Vec::new();
        let mut changes = 0;
        while let Some(job) = q.front() {
            let size = job.work.size();
            if !group.is_empty() && (group.len() >= MAX_JOBS || changes + size > MAX_CHANGES) {
                break;
            }
            changes += size;
            group.extend(q.pop_front());
        }
        group
    }
}

/// The writer's state a job may change, to put back when the job is rolled back.
struct Mark {
    last_seq: i64,
    last_received: i64,
    graph_changed: bool,
    summary: crate::notify::ChangeSummary,
}

impl Writer<'_> {
    fn mark(&self) -> Mark {
        Mark {
            last_seq: self.last_seq,
            last_received: self.last_received,
            graph_changed: self.graph_changed,
            summary: self.summary.clone(),
        }
    }

    fn reset(&mut self, m: Mark) {
        self.last_seq = m.last_seq;
        self.last_received = m.last_received;
        self.graph_changed = m.graph_changed;
        self.summary = m.summary;
    }
}

async fn exec(w: &mut Writer<'_>, sql: &str) -> Result<()> {
    sqlx::query(sql)
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
    Ok(())
}

impl SqliteStore {
    /// Writes `work` in the next group commit and returns what it did.
    pub(super) async fn group_write(&self, work: Work) -> Result<Done> {
        for _ in 0..REQUEUES {
            let (done, mut result) = oneshot::channel();
            let id = self.queue.next_id.fetch_add(1, Ordering::Relaxed);
            self.queue.lock().push_back(Job {
                id,
                work: work.clone(),
                done,
            });
            loop {
                tokio::select! {
                    biased;
                    r = &mut result => match r {
                        Ok(r) => return r,
                        // The leader of this job's group went away: queue it again.
                        Err(_) => break,
                    },
                    guard = self.shared.lock.write() => {
                        if let Err(e) = self.lead(guard).await {
                            // The transaction did not start: nothing was taken from the
                            // queue. This caller's own job fails; the others wait on.
                            if self.withdraw(id) {
                                return Err(e);
                            }
                        }
                    }
                }
            }
        }
        Err(StoreError::Invalid(
            "a write was abandoned by every group it was queued in".into(),
        ))
    }

    /// Takes this caller's job back out of the queue; false when a leader has it already.
    fn withdraw(&self, id: u64) -> bool {
        let mut q = self.queue.lock();
        let before = q.len();
        q.retain(|j| j.id != id);
        q.len() != before
    }

    /// Under the write guard: writes the next group, if any, in one transaction. An error
    /// is returned only when the transaction could not start (nothing taken).
    async fn lead<'a>(&'a self, guard: RwLockWriteGuard<'a, ()>) -> Result<()> {
        if self.queue.lock().is_empty() {
            return Ok(());
        }
        let mut w = self.begin_write(guard).await?;
        let group = self.queue.take_group();
        let mut results: Vec<Result<Done>> = Vec::with_capacity(group.len());
        let mut broken: Option<StoreError> = None;
        for job in &group {
            if broken.is_some() {
                break;
            }
            w.now = self.clock();
            let mark = w.mark();
            if let Err(e) = exec(&mut w, "SAVEPOINT group_job").await {
                broken = Some(e);
                break;
            }
            let r = match &job.work {
                Work::Push(batch) => self.write_push(&mut w, batch).await.map(Done::Push),
                Work::Seen(device) => self.write_seen(&mut w, device).await.map(|()| Done::Seen),
            };
            let end = match &r {
                Ok(_) => exec(&mut w, "RELEASE group_job").await,
                Err(_) => {
                    w.reset(mark);
                    match exec(&mut w, "ROLLBACK TO group_job").await {
                        Ok(()) => exec(&mut w, "RELEASE group_job").await,
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = end {
                broken = Some(e);
                break;
            }
            results.push(r);
        }
        let committed = match broken {
            Some(e) => Err(e),
            None => w.commit().await,
        };
        match committed {
            Ok(()) => {
                for (job, r) in group.into_iter().zip(results) {
                    let _ = job.done.send(r);
                }
            }
            Err(e) => {
                // Nothing of the group is stored: every job of it fails.
                let why = chain(&e);
                for job in group {
                    let _ = job.done.send(Err(StoreError::Database(
                        format!("the group commit failed: {why}").into(),
                    )));
                }
            }
        }
        Ok(())
    }
}

/// An error and its sources, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
    };
    use tokio::sync::Notify;

    use super::*;
    use crate::api::ServerStore;
    use crate::notify::CommitFeed;
    use crate::types::{BeforeCommitHook, StoreOptions};

    /// Holds the next commit until released.
    #[derive(Default)]
    struct Gate {
        hold: AtomicBool,
        entered: Notify,
        release: Notify,
    }

    fn hook(gate: &Arc<Gate>) -> BeforeCommitHook {
        let gate = gate.clone();
        BeforeCommitHook(Arc::new(move || {
            let gate = gate.clone();
            Box::pin(async move {
                if gate.hold.swap(false, Ordering::SeqCst) {
                    gate.entered.notify_one();
                    gate.release.notified().await;
                }
                Ok(())
            })
        }))
    }

    /// A one-note create (also used by other tests of the backend).
    pub(in crate::sqlite) fn create(id: &str, name: &str) -> SyncChange {
        SyncChange {
            change_type: ChangeType::Create,
            entity: Some(EntityChange {
                id: EntityId::new(id),
                version: Version::now("tester"),
                entity_type: EntityType::Note,
                name: name.into(),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "tester".into(),
                parent_versions: vec![],
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    pub(in crate::sqlite) fn batch(device: &str, changes: Vec<SyncChange>) -> PushBatch {
        PushBatch {
            device_id: device.into(),
            user_id: "tester".into(),
            changes,
        }
    }

    /// Pushes and sync records that queue while a write holds the lock are written in
    /// one transaction after it (one commit notice, at the group's last sequence number);
    /// a push of the group that fails in the database is rolled back alone, its
    /// sequence numbers given back, and every other one is acknowledged and stored.
    #[tokio::test]
    async fn writes_waiting_together_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let gate = Arc::new(Gate::default());
        let store = Arc::new(
            SqliteStore::connect(
                &url,
                StoreOptions {
                    before_commit: Some(hook(&gate)),
                    ..StoreOptions::default()
                },
            )
            .await
            .expect("store"),
        );
        // A row named "poison" fails its insert inside the database.
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON entities WHEN NEW.name = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'a poisoned row'); END",
        )
        .execute(&store.pool)
        .await
        .expect("trigger");
        let mut notices = store.subscribe_commits().await.expect("subscribe");

        gate.hold.store(true, Ordering::SeqCst);
        let first = {
            let s = store.clone();
            tokio::spawn(async move {
                s.apply_push(batch("d-first", vec![create("first", "ok")]))
                    .await
            })
        };
        gate.entered.notified().await;

        const N: usize = 40;
        let mut pushes = Vec::new();
        for i in 0..N {
            let s = store.clone();
            pushes.push(tokio::spawn(async move {
                s.apply_push(batch(
                    &format!("d-{i}"),
                    vec![create(&format!("e-{i}"), "ok")],
                ))
                .await
            }));
        }
        let poisoned = {
            let s = store.clone();
            tokio::spawn(async move {
                s.apply_push(batch(
                    "d-poison",
                    vec![create("good-beside-poison", "ok"), create("bad", "poison")],
                ))
                .await
            })
        };
        let mut seen = Vec::new();
        for _ in 0..3 {
            let s = store.clone();
            seen.push(tokio::spawn(async move { s.record_sync("d-0").await }));
        }
        // Every spawned write queues before it waits (this runtime has one thread).
        for _ in 0..1_000 {
            if store.queue.lock().len() == N + 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(store.queue.lock().len(), N + 4, "every write is queued");

        gate.release.notify_one();
        first.await.expect("task").expect("the held push");
        for p in pushes {
            let out = p.await.expect("task").expect("a push of the group");
            assert_eq!(out.applied.len(), 1);
        }
        let err = poisoned.await.expect("task");
        assert!(err.is_err(), "the poisoned push fails: {err:?}");
        for s in seen {
            s.await.expect("task").expect("a sync record");
        }

        let one = notices.recv().await.expect("notice");
        assert_eq!(one.seq, 1, "the held push commits alone");
        let group = notices.recv().await.expect("notice");
        assert_eq!(
            group.seq,
            1 + N as u64,
            "the queued pushes commit in one transaction, numbered without a gap"
        );
        assert_eq!(store.max_seq().await.expect("max"), 1 + N as u64);
        let ids: Vec<EntityId> = (0..N)
            .map(|i| EntityId::new(format!("e-{i}")))
            .chain([EntityId::new("good-beside-poison"), EntityId::new("bad")])
            .collect();
        let stored = store.latest_entities(&ids).await.expect("rows");
        assert_eq!(
            stored.len(),
            N,
            "every push of the group but the poisoned one"
        );
        assert!(stored.iter().all(|e| e.id.as_str().starts_with("e-")));
        let d0 = store
            .client_status("d-0")
            .await
            .expect("status")
            .expect("d-0");
        assert_eq!(d0.sync_count, 3, "each sync record counts");
    }
}

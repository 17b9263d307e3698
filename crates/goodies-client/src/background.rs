//! Background sync: a task that syncs now, then on each change-feed event and every
//! poll interval (adaptive: see [`crate::PollSchedule`]), owned by a handle.

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::BlowingOffClient;

/// What a background sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackgroundStats {
    /// Syncs run.
    pub runs: u64,
    /// Syncs that failed or finished with errors.
    pub failures: u64,
    /// Syncs the change feed started (a write on the server announced at once).
    pub feed_syncs: u64,
}

/// The handle of a background sync started with
/// [`BlowingOffClient::start_background_sync`]. Stop it with [`BackgroundSync::stop`];
/// dropping it aborts the task.
pub struct BackgroundSync {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<BackgroundStats>>,
}

impl fmt::Debug for BackgroundSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundSync")
            .field("running", &self.is_running())
            .finish()
    }
}

impl BackgroundSync {
    pub(crate) fn start(client: BlowingOffClient, interval: Duration, runs: Option<u64>) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let schedule = crate::live::PollSchedule::for_interval(interval);
        let task = tokio::spawn(crate::live::run(client, schedule, runs, rx));
        BackgroundSync {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops after the sync in progress (if any) and returns what was done.
    pub async fn stop(mut self) -> BackgroundStats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join().await
    }

    /// Runs until the task ends by itself (a limited background sync) or `signal`
    /// completes, then stops after the sync in progress (if any). Returns what was done
    /// and whether `signal` ended it.
    pub async fn stop_when(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> (BackgroundStats, bool) {
        let Some(mut task) = self.task.take() else {
            return (BackgroundStats::default(), false);
        };
        tokio::select! {
            r = &mut task => (r.unwrap_or_default(), false),
            () = signal => {
                if let Some(tx) = self.stop.take() {
                    let _ = tx.send(());
                }
                (task.await.unwrap_or_default(), true)
            }
        }
    }

    /// Waits until the task ends by itself (a limited background sync), without stopping it.
    pub async fn wait(mut self) -> BackgroundStats {
        self.join().await
    }

    async fn join(&mut self) -> BackgroundStats {
        match self.task.take() {
            Some(t) => t.await.unwrap_or_default(),
            None => BackgroundStats::default(),
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

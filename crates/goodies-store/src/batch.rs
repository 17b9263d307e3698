//! One read for every caller that asked before it started.
//!
//! A read of the store's head must reflect every commit made before it was asked for: a
//! read that *starts* after a caller asked does, whoever asked for it. So callers that
//! ask while a read is already under way wait for it to end and are all answered by the
//! next read, which starts after every one of them asked; a caller that asks while no
//! read is under way reads, after letting the tasks ready to run go first (requests
//! that arrived with it), so those that ask meanwhile share its read. Under many
//! concurrent callers one statement answers many of them, and none is answered from a
//! read that started before it asked.
//!
//! A caller whose future is dropped while it reads for others hands the turn to the next
//! caller waiting; the callers it was reading for ask again.

use std::collections::VecDeque;
use std::future::Future;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::error::{Result, StoreError};

/// Reads of one value shared by the callers that asked before each read started.
#[derive(Debug)]
pub(crate) struct Batched<T> {
    state: Mutex<State<T>>,
    /// Reads made (read by tests only).
    #[cfg(test)]
    reads: AtomicU64,
}

#[derive(Debug)]
struct State<T> {
    /// A read is under way (or its turn was handed to a waiting caller).
    reading: bool,
    /// Callers that asked since it started: the next read answers them.
    waiting: VecDeque<oneshot::Sender<Turn<T>>>,
}

/// What a waiting caller is told.
#[derive(Debug)]
enum Turn<T> {
    /// The value read after it asked.
    Done(std::result::Result<T, Arc<StoreError>>),
    /// It reads next, for itself and every caller waiting when it starts.
    Lead,
}

impl<T> Default for Batched<T> {
    fn default() -> Self {
        Batched {
            state: Mutex::new(State {
                reading: false,
                waiting: VecDeque::new(),
            }),
            #[cfg(test)]
            reads: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> Batched<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many reads were made.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The value from a read that started after this call: `read` runs here, or in
    /// another caller that answers this one too.
    pub(crate) async fn read<F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        loop {
            let waiting = {
                let mut state = self.lock();
                if state.reading {
                    let (tx, rx) = oneshot::channel();
                    state.waiting.push_back(tx);
                    Some(rx)
                } else {
                    state.reading = true;
                    None
                }
            };
            if let Some(rx) = waiting {
                match rx.await {
                    Ok(Turn::Done(r)) => return r.map_err(shared),
                    Ok(Turn::Lead) => {}
                    // The caller reading for it went away: ask again.
                    Err(_) => continue,
                }
            }
            return self.lead(&read).await;
        }
    }

    /// Reads for this caller and every caller waiting now; then hands the turn on.
    async fn lead<F, Fut>(&self, read: &F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // The turn is handed on however this caller ends, from here on.
        let mut lead = Lead {
            batch: self,
            served: Vec::new(),
        };
        // Other tasks ready to run first, and requests that arrived meanwhile: those
        // that ask now wait for this read rather than the next one.
        tokio::task::yield_now().await;
        lead.served = self.lock().waiting.drain(..).collect();
        #[cfg(test)]
        self.reads.fetch_add(1, Ordering::Relaxed);
        let read = read().await.map_err(Arc::new);
        for tx in lead.served.drain(..) {
            let _ = tx.send(Turn::Done(read.clone()));
        }
        drop(lead);
        read.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(shared))
    }
}

/// The caller reading: hands the turn to the next caller waiting when it ends, however
/// it ends (callers it had not answered yet ask again).
struct Lead<'a, T: Clone> {
    batch: &'a Batched<T>,
    served: Vec<oneshot::Sender<Turn<T>>>,
}

impl<T: Clone> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        self.served.clear();
        let mut state = self.batch.lock();
        while let Some(next) = state.waiting.pop_front() {
            if next.send(Turn::Lead).is_ok() {
                return;
            }
        }
        state.reading = false;
    }
}

/// One read's error, handed to every caller it answered.
#[derive(Debug)]
struct Shared(Arc<StoreError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.0.as_ref())
    }
}

fn shared(e: Arc<StoreError>) -> StoreError {
    StoreError::Database(Box::new(Shared(e)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use tokio::task::JoinHandle;

    use super::*;

    /// A read that counts its starts and waits at a gate while it is closed.
    #[derive(Default)]
    struct Source {
        started: AtomicU64,
        closed: AtomicBool,
        gate: tokio::sync::Notify,
        fail: AtomicBool,
    }

    impl Source {
        async fn read(&self) -> Result<u64> {
            let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            while self.closed.load(Ordering::SeqCst) {
                let wait = self.gate.notified();
                if !self.closed.load(Ordering::SeqCst) {
                    break;
                }
                wait.await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Invalid(format!("read {n} failed")));
            }
            Ok(n)
        }

        fn open(&self) {
            self.closed.store(false, Ordering::SeqCst);
            self.gate.notify_waiters();
        }
    }

    /// A caller on its own task.
    fn spawn_read(batch: &Arc<Batched<u64>>, source: &Arc<Source>) -> JoinHandle<Result<u64>> {
        let (batch, source) = (batch.clone(), source.clone());
        tokio::spawn(async move { batch.read(|| source.read()).await })
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Callers that ask while a read is under way are all answered by one later read,
    /// and every caller's value comes from a read that started after it asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_waiting_share_the_next_read_never_an_earlier_one() {
        let batch = Arc::new(Batched::<u64>::default());
        let source = Arc::new(Source::default());
        source.closed.store(true, Ordering::SeqCst);
        let call = |batch: Arc<Batched<u64>>, source: Arc<Source>| {
            tokio::spawn(async move {
                let started_before = source.started.load(Ordering::SeqCst);
                let v = batch.read(|| source.read()).await.expect("read");
                (started_before, v)
            })
        };
        let first = call(batch.clone(), source.clone());
        settle().await;
        assert_eq!(source.started.load(Ordering::SeqCst), 1, "the first reads");
        let waiting: Vec<_> = (0..10)
            .map(|_| call(batch.clone(), source.clone()))
            .collect();
        settle().await;
        assert_eq!(source.started.load(Ordering::SeqCst), 1, "the others wait");
        source.open();
        let (_, v) = first.await.expect("first");
        assert_eq!(v, 1);
        for w in waiting {
            let (started_before, v) = w.await.expect("waiting");
            assert!(
                v > started_before,
                "read {v} started before the caller asked"
            );
            assert_eq!(v, 2, "all ten answered by the one next read");
        }
        assert_eq!(batch.reads(), 2);

        // Many callers at once, nothing gated: each from a read started after it asked.
        let many: Vec<_> = (0..200)
            .map(|_| call(batch.clone(), source.clone()))
            .collect();
        for m in many {
            let (started_before, v) = m.await.expect("caller");
            assert!(
                v > started_before,
                "read {v} started before the caller asked"
            );
        }
    }

    /// Callers ready to run together (requests that arrived together) share one read:
    /// the first lets the others ask before its read starts.
    #[tokio::test(flavor = "current_thread")]
    async fn callers_ready_together_share_one_read() {
        let batch = Arc::new(Batched::<u64>::default());
        let source = Arc::new(Source::default());
        let callers: Vec<_> = (0..5).map(|_| spawn_read(&batch, &source)).collect();
        for c in callers {
            assert_eq!(c.await.expect("task").expect("read"), 1);
        }
        assert_eq!(batch.reads(), 1, "five callers ready together, one read");
        // Alone, a caller still reads (and from a read started after it asked).
        assert_eq!(batch.read(|| source.read()).await.expect("read"), 2);
    }

    /// A caller dropped while it lets the others ask (before its read starts) hands the
    /// turn on as one dropped mid-read does: the caller waiting reads, nobody is left
    /// waiting for a read that never comes.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_dropped_before_its_read_starts_hands_the_turn_on() {
        let batch = Arc::new(Batched::<u64>::default());
        let source = Arc::new(Source::default());
        let leader = spawn_read(&batch, &source);
        let waiting = spawn_read(&batch, &source);
        // The leader runs to its yield, the other caller starts waiting for it; this
        // task is resumed before the leader is polled again.
        tokio::task::yield_now().await;
        leader.abort();
        assert_eq!(
            source.started.load(Ordering::SeqCst),
            0,
            "the leader was dropped before its read started"
        );
        assert!(leader.await.expect_err("aborted").is_cancelled());
        let v = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting caller was answered")
            .expect("task")
            .expect("read");
        assert_eq!(v, 1);
        assert_eq!(batch.read(|| source.read()).await.expect("read"), 2);
    }

    /// A caller dropped while it reads for others hands the turn on: the others are
    /// answered by a read that started after they asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_dropped_mid_read_hands_the_turn_on() {
        let batch = Arc::new(Batched::<u64>::default());
        let source = Arc::new(Source::default());
        source.closed.store(true, Ordering::SeqCst);
        let leader = spawn_read(&batch, &source);
        settle().await;
        let waiting: Vec<_> = (0..5).map(|_| spawn_read(&batch, &source)).collect();
        settle().await;
        leader.abort();
        let _ = leader.await;
        settle().await;
        assert_eq!(
            source.started.load(Ordering::SeqCst),
            2,
            "a waiting caller took the turn"
        );
        source.open();
        for w in waiting {
            let v = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("answered")
                .expect("task")
                .expect("read");
            assert_eq!(v, 2);
        }
        // Nothing under way any more: the next caller reads at once.
        assert_eq!(batch.read(|| source.read()).await.expect("read"), 3);
    }

    /// A read's error reaches every caller it answered, with its message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_reaches_every_caller_of_that_read() {
        let batch = Arc::new(Batched::<u64>::default());
        let source = Arc::new(Source::default());
        source.closed.store(true, Ordering::SeqCst);
        source.fail.store(true, Ordering::SeqCst);
        let callers: Vec<_> = (0..4).map(|_| spawn_read(&batch, &source)).collect();
        settle().await;
        source.open();
        for c in callers {
            let e = c.await.expect("task").expect_err("the read failed");
            let mut chain = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                chain.push_str(&format!(": {c}"));
                cause = c.source();
            }
            assert!(
                chain.contains("invalid operation: read ") && chain.ends_with(" failed"),
                "{chain}"
            );
        }
    }
}

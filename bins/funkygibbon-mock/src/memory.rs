//! Memory given back after a load: the allocator's settings and a trim once the server
//! is idle.
//!
//! Under load the server's heap grows with the requests being handled (pages being
//! answered, bodies being read, connection buffers). When they are freed, glibc's
//! allocator keeps most of that memory: only free space at the very top of a heap is
//! returned, by default only above a threshold that grows with the largest block freed
//! (up to 32 MiB), and every thread that allocated may have its own arena (up to eight
//! per core). So the resident size stayed at the load's peak after the load ended.
//!
//! The binary's own allocations go to [`Allocator`] (mimalloc, set as the global
//! allocator by the binary): per-thread free lists without locks, which on a caught-up
//! client's sync cost a fraction of glibc's `malloc`/`free`, and free pages given back
//! to the system shortly after they are freed. What C libraries allocate (SQLite's page
//! cache, the TLS library) still goes to glibc's allocator.
//!
//! Two things give memory back (for glibc's allocator, Linux with glibc only; elsewhere
//! both do nothing for it):
//!
//! - [`tune_allocator`] (the binary calls it first thing): blocks of
//!   [`MMAP_THRESHOLD`] or more get their own mapping, returned to the system when
//!   freed; free space at the top of a heap is returned above [`TRIM_THRESHOLD`]
//!   (setting both turns off glibc's growing thresholds); at most [`ARENA_MAX`] arenas.
//! - [`IdleTrim`] (every served listener runs one): once no request has been in flight
//!   and no connection has closed for `--idle-trim-ms` ([`IDLE_TRIM_DELAY`] by default),
//!   `malloc_trim(0)` returns the free pages inside every arena, not just at their top,
//!   and mimalloc is asked to give back what it still holds (`mi_collect`).
//!   It runs once per quiet spell, on a blocking thread, and never while requests are
//!   being handled.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The server binary's global allocator (see the module documentation). Binaries that
/// serve, the server's and the load generator's, declare it:
/// `#[global_allocator] static GLOBAL: funkygibbon_mock::memory::Allocator = funkygibbon_mock::memory::Allocator;`
pub use mimalloc::MiMalloc as Allocator;

/// Quiet time (no request in flight, no connection closed) after which free memory is
/// given back, unless configured otherwise (`ServerConfig::idle_trim`).
pub const IDLE_TRIM_DELAY: Duration = Duration::from_secs(1);

/// Allocations of this many bytes or more get a mapping of their own (glibc
/// `M_MMAP_THRESHOLD`), given back as soon as they are freed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// Free memory at the top of a heap beyond this is given back at once (glibc
/// `M_TRIM_THRESHOLD`).
pub const TRIM_THRESHOLD: usize = 1024 * 1024;
/// Arenas at most (glibc `M_ARENA_MAX`): threads share them instead of each keeping its
/// own partly free heap.
pub const ARENA_MAX: usize = 2;

/// mimalloc's options, as environment variables, for a process that cannot run
/// [`tune_early`] before its first allocation (the load generator's server child).
pub const MIMALLOC_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "0"),
];

/// Sets mimalloc's options: memory committed as it is used, freed pages given back at
/// once. To take full effect it must run before the process's first allocation (Rust's
/// runtime allocates before `main`, and mimalloc reserves its first arena then), so the
/// binary runs it from its `.init_array`; [`tune_allocator`] runs it again.
pub extern "C" fn tune_early() {
    mi::tune();
}

/// Sets the allocator up to give memory back (see the module documentation). Call it
/// first thing, before threads start: it applies to the whole process. Returns whether
/// every setting was taken (always `false` where the allocator is not glibc's).
pub fn tune_allocator() -> bool {
    mi::tune();
    glibc::mallopt(Setting::ArenaMax, ARENA_MAX)
        & glibc::mallopt(Setting::MmapThreshold, MMAP_THRESHOLD)
        & glibc::mallopt(Setting::TrimThreshold, TRIM_THRESHOLD)
}

/// Gives the free pages of every arena back to the system now; `true` when some memory
/// was released. Walks the whole heap: call it when idle, off the async threads.
pub fn trim() -> bool {
    mi::collect();
    glibc::malloc_trim()
}

#[allow(unsafe_code)]
mod mi {
    use libmimalloc_sys::{mi_option_set, mi_option_t};

    /// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc's
    /// `mi_option_e` (mimalloc.h), which the bindings do not name; the test below pins
    /// them between the neighbours the bindings do name.
    pub(super) const ARENA_EAGER_COMMIT: mi_option_t = 4;
    pub(super) const PURGE_DELAY: mi_option_t = 15;

    /// Commits memory only as it is used, and gives freed pages back at once instead of
    /// after mimalloc's default delay (with the defaults the load generator's server
    /// kept 41 MiB resident before its load instead of 14 MiB).
    pub(super) fn tune() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option table; both
        // options are read when memory is committed or purged, at any time.
        unsafe {
            mi_option_set(ARENA_EAGER_COMMIT, 0);
            mi_option_set(PURGE_DELAY, 0);
        }
    }

    /// Asks mimalloc to give back the free memory it holds (a no-op for memory of a
    /// process whose global allocator is not mimalloc).
    pub(super) fn collect() {
        // SAFETY: mi_collect takes a flag and only frees memory mimalloc holds unused;
        // it may be called from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

/// Counts the requests in flight and trims once they have all been done for the delay.
#[derive(Debug)]
pub(crate) struct IdleTrim {
    busy: AtomicUsize,
    /// Bumped by every request done and every connection closed.
    events: AtomicU64,
    /// Trims done.
    trims: AtomicU64,
    wake: Notify,
}

/// Holds one request as in flight while alive.
#[derive(Debug)]
pub(crate) struct Busy(Arc<IdleTrim>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.done();
    }
}

/// Notes, when dropped, that a connection ended.
#[derive(Debug)]
pub(crate) struct Connection(Arc<IdleTrim>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.done();
    }
}

impl IdleTrim {
    /// A trimmer whose task runs on the current runtime until `stop` completes; `None`
    /// when `delay` is zero (trimming off).
    pub(crate) fn spawn(
        delay: Duration,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<Arc<IdleTrim>> {
        if delay.is_zero() {
            return None;
        }
        let trim = Arc::new(IdleTrim {
            busy: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            trims: AtomicU64::new(0),
            wake: Notify::new(),
        });
        let t = trim.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = t.run(delay) => {},
                () = stop => {},
            }
        });
        Some(trim)
    }

    /// A request starts; it is in flight until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// A connection starts; its end is noted when the guard is dropped.
    pub(crate) fn connection(self: &Arc<Self>) -> Connection {
        Connection(self.clone())
    }

    /// Something that held memory ended (a request, a connection).
    pub(crate) fn done(&self) {
        self.events.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    async fn run(&self, delay: Duration) {
        let mut trimmed_at = self.events.load(Ordering::Acquire);
        loop {
            self.wake.notified().await;
            // Quiet for the whole delay: nothing in flight and nothing ended since.
            loop {
                let seen = self.events.load(Ordering::Acquire);
                tokio::time::sleep(delay).await;
                if self.busy.load(Ordering::Acquire) == 0
                    && self.events.load(Ordering::Acquire) == seen
                {
                    break;
                }
            }
            let now = self.events.load(Ordering::Acquire);
            if now == trimmed_at {
                continue;
            }
            trimmed_at = now;
            let started = std::time::Instant::now();
            let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            self.trims.fetch_add(1, Ordering::AcqRel);
            tracing::debug!(
                released,
                took_us = started.elapsed().as_micros() as u64,
                "idle: free memory given back"
            );
        }
    }
}

/// The `mallopt` settings used.
#[derive(Clone, Copy, Debug)]
enum Setting {
    ArenaMax,
    MmapThreshold,
    TrimThreshold,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use super::Setting;

    pub(super) fn mallopt(setting: Setting, value: usize) -> bool {
        let param = match setting {
            Setting::ArenaMax => libc::M_ARENA_MAX,
            Setting::MmapThreshold => libc::M_MMAP_THRESHOLD,
            Setting::TrimThreshold => libc::M_TRIM_THRESHOLD,
        };
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two integers and only changes the allocator's parameters
        // (under its own lock); an unknown or out-of-range value is refused with 0.
        unsafe { libc::mallopt(param, value) == 1 }
    }

    pub(super) fn malloc_trim() -> bool {
        // SAFETY: malloc_trim takes an integer (the padding to keep at the top of the
        // heap) and locks each arena while it gives its free pages back; it touches no
        // memory that is in use.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    use super::Setting;

    pub(super) fn mallopt(_setting: Setting, _value: usize) -> bool {
        false
    }

    pub(super) fn malloc_trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two option numbers are those of mimalloc.h: each sits between neighbours the
    /// bindings name (`verbose` = 2 … `large_os_pages` = 6; `reserve_os_memory` = 9 …
    /// `use_numa_nodes` = 16, `purge_delay` just before it), and read back as set.
    #[test]
    #[allow(unsafe_code)]
    fn the_mimalloc_options_are_the_ones_meant() {
        use libmimalloc_sys as sys;
        assert_eq!(
            (sys::mi_option_verbose, sys::mi_option_large_os_pages),
            (2, 6)
        );
        assert_eq!(
            (
                sys::mi_option_reserve_os_memory,
                sys::mi_option_use_numa_nodes
            ),
            (9, 16)
        );
        assert_eq!((mi::ARENA_EAGER_COMMIT, mi::PURGE_DELAY), (4, 15));
        mi::tune();
        // SAFETY: mi_option_get reads an integer from mimalloc's option table.
        let (eager, delay) = unsafe {
            (
                sys::mi_option_get(mi::ARENA_EAGER_COMMIT),
                sys::mi_option_get(mi::PURGE_DELAY),
            )
        };
        assert_eq!((eager, delay), (0, 0));
    }

    async fn trims_reach(t: &IdleTrim, n: u64) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while t.trims.load(Ordering::Acquire) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the trim happens");
    }

    /// No trim while a request is in flight or before the delay has passed quietly;
    /// then one trim per quiet spell; none at all with a zero delay.
    #[tokio::test]
    async fn trims_once_per_quiet_spell_never_while_busy() {
        assert!(IdleTrim::spawn(Duration::ZERO, async {}).is_none());
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let delay = Duration::from_millis(100);
        let t = IdleTrim::spawn(delay, async move {
            let _ = stopped.await;
        })
        .expect("on");
        let a = t.busy();
        let b = t.busy();
        drop(a);
        tokio::time::sleep(delay * 4).await;
        assert_eq!(t.trims.load(Ordering::Acquire), 0, "a request is in flight");
        drop(b);
        trims_reach(&t, 1).await;
        tokio::time::sleep(delay * 4).await;
        assert_eq!(t.trims.load(Ordering::Acquire), 1, "once per quiet spell");
        // A connection closing is a new spell.
        t.done();
        trims_reach(&t, 2).await;
        assert_eq!(t.busy.load(Ordering::Acquire), 0);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_takes_the_settings() {
        assert!(tune_allocator());
    }
}

//! Client tuning: batch size, retry policy, timeouts, compression.

use std::time::Duration;

/// How failed requests are retried: exponential backoff, at most `max_retries` times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` requests at most).
    pub max_retries: u32,
    /// Wait before retry `n` (0-based); the last entry repeats.
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    /// 5 retries after 1, 2, 4, 8 and 16 s (then 30 s, were there more).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            delays: [1, 2, 4, 8, 16, 30]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

impl RetryPolicy {
    /// No retries: a failed request fails the sync at once.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            delays: vec![],
        }
    }

    /// `max_retries` retries without waiting (for tests and local tools).
    pub fn immediate(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            delays: vec![Duration::ZERO],
        }
    }

    /// The wait before retry `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        let i = (n as usize).min(self.delays.len().saturating_sub(1));
        self.delays.get(i).copied().unwrap_or(Duration::ZERO)
    }
}

/// How a client behaves. Start from [`ClientConfig::default`] and adjust with the `with_*`
/// methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// At most this many outbox entries per request (default 1000).
    pub batch_size: usize,
    /// Retry policy for transport failures, 5xx, 408 and 429 answers.
    pub retry: RetryPolicy,
    /// Timeout of one request with the default transport (default 30 s).
    pub request_timeout: Duration,
    /// Gzip request bodies over 1 KB (default true). When a server refuses a gzipped body,
    /// the client resends it uncompressed and stops compressing.
    pub compress_requests: bool,
    /// Events buffered per subscriber before it lags (default 4096).
    pub event_capacity: usize,
    /// Largest (decompressed) response body accepted (default 512 MiB).
    pub max_response_bytes: usize,
    /// The user id edits are made by before a login names one (default `blowing-off`).
    pub default_user_id: String,
    /// SQLite connections of the local mirror (default 2: one app reader beside the sync;
    /// each connection keeps its own page cache, so fewer means a smaller footprint).
    pub max_connections: u32,
    /// How far this device's clock is off (default zero). Local versions are stamped with
    /// the system clock plus this offset, as a device with a skewed clock would stamp them.
    pub clock_offset: time::Duration,
    /// Bytes per request when uploading or downloading a blob (default 1 MiB, the
    /// server's piece size): the most of a blob held in memory at once.
    pub blob_chunk_size: usize,
    /// Whether a sync that could not reach the server with changes pending arms the
    /// retry timer, which syncs again by itself after 1, 2, 4, 8, 16, then every 30 s
    /// until the changes land (default true). Off for a caller that schedules every
    /// sync itself: then no sync runs unless it is asked for.
    pub retry_timer: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            batch_size: 1000,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            compress_requests: true,
            event_capacity: 4096,
            max_response_bytes: 512 * 1024 * 1024,
            default_user_id: "blowing-off".to_owned(),
            max_connections: 2,
            clock_offset: time::Duration::ZERO,
            blob_chunk_size: 1024 * 1024,
            retry_timer: true,
        }
    }
}

impl ClientConfig {
    /// Sets the batch size (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the request timeout of the default transport.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Turns request compression on or off.
    pub fn with_compression(mut self, on: bool) -> Self {
        self.compress_requests = on;
        self
    }

    /// Sets the per-subscriber event buffer.
    pub fn with_event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Sets the number of SQLite connections of the local mirror (at least 1).
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets how far this device's clock is off (negative: behind).
    pub fn with_clock_offset(mut self, offset: time::Duration) -> Self {
        self.clock_offset = offset;
        self
    }

    /// Sets the bytes per blob request (at least 1).
    pub fn with_blob_chunk_size(mut self, n: usize) -> Self {
        self.blob_chunk_size = n.max(1);
        self
    }

    /// Turns the retry timer on or off (see [`ClientConfig::retry_timer`]).
    pub fn with_retry_timer(mut self, on: bool) -> Self {
        self.retry_timer = on;
        self
    }

    /// Sets the default user id.
    pub fn with_default_user_id(mut self, user: impl Into<String>) -> Self {
        self.default_user_id = user.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (0..8).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(RetryPolicy::immediate(3).delay(2), Duration::ZERO);
        assert_eq!(RetryPolicy::none().delay(0), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_skewed_clock_stamps_local_versions() {
        use inbetweenies_proto::{EntityType, JsonObject, Timestamp};
        for minutes in [-60_i64, 10] {
            let offset = time::Duration::minutes(minutes);
            let client = crate::BlowingOffClient::builder(":memory:")
                .config(ClientConfig::default().with_clock_offset(offset))
                .open()
                .await
                .expect("open");
            let before = Timestamp::now().unix_micros();
            let e = client
                .create_entity(EntityType::Note, "n", JsonObject::new())
                .await
                .expect("create");
            let after = Timestamp::now().unix_micros();
            let stamped = e.version.timestamp().expect("version time").unix_micros();
            let skew = minutes * 60_000_000;
            assert!(
                (before + skew..=after + skew).contains(&stamped),
                "{minutes} min: stamped {stamped}, wall clock {before}..={after}"
            );
            assert_eq!(e.updated_at.unix_micros(), stamped);
        }
    }
}

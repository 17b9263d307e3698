//! A spinner on stderr while a sync runs, driven by the client's events: what is being
//! pushed (done of total) and how many entities the pull has brought, page by page. It is
//! drawn only when stderr is a terminal and `-q` is not given, and cleared before the
//! command prints its result. Retries ("retrying in 4 s (attempt 3 of 5): …"), going
//! offline or online, a skewed server clock and a refreshed token are told on stderr
//! either way (one line each off a terminal), unless `-q` is given.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use goodies_client::{BlowingOffClient, ClientEvent, SubscriptionHandle, SyncPhase};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Out;

/// The spinner of one command, with its event subscription.
#[derive(Debug)]
pub struct SyncProgress {
    bar: ProgressBar,
    _events: Option<SubscriptionHandle>,
}

impl SyncProgress {
    /// Starts following the client's sync events (a hidden spinner off a terminal or
    /// with `-q`).
    pub fn start(client: &BlowingOffClient, out: Out) -> SyncProgress {
        if out.quiet {
            return SyncProgress {
                bar: ProgressBar::hidden(),
                _events: None,
            };
        }
        if !std::io::stderr().is_terminal() {
            // Off a terminal: no spinner, but waits and link changes are still told,
            // one line each, so a retry is never a silent pause.
            let events = client.on_change(|e| {
                if let Some(line) = signal_line(e) {
                    eprintln!("{line}");
                }
            });
            return SyncProgress {
                bar: ProgressBar::hidden(),
                _events: Some(events),
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("syncing");
        let pages = Arc::new(AtomicU64::new(0));
        let b = bar.clone();
        let events = client.on_change(move |e| match e {
            ClientEvent::SyncStarted => b.set_message("syncing"),
            ClientEvent::Progress {
                phase: SyncPhase::Push,
                done,
                total,
            } => b.set_message(match total {
                Some(t) => format!("pushing changes: {done}/{t}"),
                None => format!("pushing changes: {done}"),
            }),
            ClientEvent::Progress {
                phase: SyncPhase::Pull,
                done,
                total,
            } => {
                let n = pages.fetch_add(1, Ordering::Relaxed) + 1;
                b.set_message(format!(
                    "pulled {done} entities ({n} page(s)){}",
                    if total.is_some() { ", done" } else { "" }
                ));
            }
            other => {
                if let Some(line) = signal_line(other) {
                    b.println(&line);
                    b.set_message(line);
                }
            }
        });
        SyncProgress {
            bar,
            _events: Some(events),
        }
    }

    /// Clears the spinner (before the result is printed).
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// The line that tells a retry, a connectivity change, a skewed server clock, a
/// refreshed token or the change feed coming and going; `None` for other events.
pub fn signal_line(e: &ClientEvent) -> Option<String> {
    Some(match e {
        ClientEvent::Retrying {
            attempt,
            max_attempts,
            delay,
            reason,
        } => format!(
            "retrying in {} (attempt {attempt} of {max_attempts}): {reason}",
            human_delay(*delay)
        ),
        ClientEvent::Connectivity { online: false } => {
            "offline: the server cannot be reached; working locally, will retry".to_owned()
        }
        ClientEvent::Connectivity { online: true } => "online: the server answers".to_owned(),
        ClientEvent::ClockSkew { offset_ms: 0 } => {
            "note: the server's clock is within a second of ours again".to_owned()
        }
        ClientEvent::ClockSkew { offset_ms } => format!(
            "warning: the server's clock is {:.1} s {} ours",
            offset_ms.unsigned_abs() as f64 / 1000.0,
            if *offset_ms > 0 { "ahead of" } else { "behind" }
        ),
        ClientEvent::AuthRefreshed => "note: the token had expired; refreshed it".to_owned(),
        ClientEvent::ChangeFeed { connected: true } => {
            "live: following the server's change feed".to_owned()
        }
        ClientEvent::ChangeFeed { connected: false } => {
            "live: the change feed was lost; reconnecting".to_owned()
        }
        _ => return None,
    })
}

/// `4 s`, `1.5 s`, `250 ms`.
fn human_delay(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        if d.subsec_millis() == 0 {
            format!("{} s", d.as_secs())
        } else {
            format!("{:.1} s", d.as_secs_f64())
        }
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_read_as_a_countdown_line() {
        let e = ClientEvent::Retrying {
            attempt: 3,
            max_attempts: 5,
            delay: Duration::from_secs(4),
            reason: "connection refused".into(),
        };
        assert_eq!(
            signal_line(&e).as_deref(),
            Some("retrying in 4 s (attempt 3 of 5): connection refused")
        );
        assert_eq!(human_delay(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_delay(Duration::from_millis(10)), "10 ms");
        assert!(signal_line(&ClientEvent::ClockSkew { offset_ms: -2500 })
            .is_some_and(|l| l.contains("2.5 s behind")));
        assert_eq!(signal_line(&ClientEvent::SyncStarted), None);
    }
}

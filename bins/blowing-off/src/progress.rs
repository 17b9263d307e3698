//! A spinner on stderr while a sync runs, driven by the client's events: what is being
//! pushed (done of total) and how many entities the pull has brought, page by page. It is
//! drawn only when stderr is a terminal and `-q` is not given, and cleared before the
//! command prints its result.

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
        if out.quiet || !std::io::stderr().is_terminal() {
            return SyncProgress {
                bar: ProgressBar::hidden(),
                _events: None,
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
            _ => {}
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

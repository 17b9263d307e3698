//! Commit notices: every committed write that numbered rows announces the new highest
//! sequence number (and what kinds of rows it wrote) to whoever listens.
//!
//! - SQLite (`sqlite::notify`): an in-process broadcast shared by every store opened on
//!   the same file; the notice is sent right after COMMIT returns.
//! - PostgreSQL (`postgres::notify`): `pg_notify` inside the write transaction, so the
//!   notice is delivered by the database on COMMIT (never for a rollback), in commit
//!   order, to every process that LISTENs; each store runs one LISTEN task that forwards
//!   notices into an in-process broadcast.
//!
//! A notice is a hint that the change feed moved, never the data: a listener that misses
//! notices (it lagged, or the database connection of the LISTEN task was lost) is told so
//! and catches up by paging the change feed from its own position.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::Result;
use crate::types::Seq;

/// Notices a subscription holds before the oldest unread ones are overwritten.
pub const COMMIT_BUFFER: usize = 1024;

/// At most this many entity types are named in one notice; a write that changed more
/// names none ([`CommitNotice::entity_types`] is `None`).
pub const MAX_NOTICE_TYPES: usize = 32;

/// What one committed write transaction changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitNotice {
    /// The highest sequence number after the commit (the change feed's new end).
    pub seq: Seq,
    /// The entity types with new rows, sorted; `None` when not known (more than
    /// [`MAX_NOTICE_TYPES`], or a write that does not describe its rows): any type may
    /// have changed. An empty list: no entity rows.
    pub entity_types: Option<Vec<String>>,
    /// Whether relationship rows were written (true when not known).
    pub relationships: bool,
}

/// Why [`CommitSubscription::recv`] returned no notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitGap {
    /// The subscriber read too slowly and this many notices were dropped; later ones follow.
    #[error("{0} commit notices were missed")]
    Lagged(u64),
    /// The source stopped (the store was dropped, or its LISTEN task ended).
    #[error("the commit notices stopped")]
    Closed,
}

/// One subscriber's stream of [`CommitNotice`]s.
#[derive(Debug)]
pub struct CommitSubscription {
    rx: broadcast::Receiver<CommitNotice>,
}

impl CommitSubscription {
    pub(crate) fn new(rx: broadcast::Receiver<CommitNotice>) -> Self {
        CommitSubscription { rx }
    }

    /// The next notice, in commit order.
    pub async fn recv(&mut self) -> std::result::Result<CommitNotice, CommitGap> {
        match self.rx.recv().await {
            Ok(n) => Ok(n),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(CommitGap::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(CommitGap::Closed),
        }
    }
}

/// A source of commit notices: every [`crate::ServerStore`] is one.
#[async_trait]
pub trait CommitFeed: Send + Sync + std::fmt::Debug {
    /// Subscribes to the notices of writes that commit from now on (on PostgreSQL, by
    /// any process on the database). The subscription is in place when this returns.
    async fn subscribe_commits(&self) -> Result<CommitSubscription>;
}

/// What a write transaction wrote, collected while it writes (backends only).
#[derive(Clone, Debug, Default)]
pub(crate) struct ChangeSummary {
    described: bool,
    types: BTreeSet<String>,
    relationships: bool,
}

impl ChangeSummary {
    /// Records an entity row of this type.
    pub(crate) fn entity_type(&mut self, t: &str) {
        self.described = true;
        if self.types.len() <= MAX_NOTICE_TYPES && !self.types.contains(t) {
            self.types.insert(t.to_owned());
        }
    }

    /// Records relationship rows.
    pub(crate) fn relationships(&mut self) {
        self.described = true;
        self.relationships = true;
    }

    /// Marks the summary as complete even when it recorded nothing.
    pub(crate) fn described(&mut self) {
        self.described = true;
    }

    /// Records every row of a planned push.
    pub(crate) fn plan(&mut self, plan: &crate::logic::PushPlan<'_>) {
        self.described();
        for p in &plan.entities {
            self.entity_type(p.row().entity_type.as_str());
        }
        if !plan.relationships.is_empty() {
            self.relationships();
        }
    }

    /// The notice for a commit that ended at `seq`.
    pub(crate) fn notice(&self, seq: Seq) -> CommitNotice {
        let entity_types = (self.described && self.types.len() <= MAX_NOTICE_TYPES)
            .then(|| self.types.iter().cloned().collect());
        CommitNotice {
            seq,
            entity_types,
            relationships: self.relationships || !self.described,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_types_until_there_are_too_many() {
        let mut s = ChangeSummary::default();
        assert_eq!(
            s.notice(3),
            CommitNotice {
                seq: 3,
                entity_types: None,
                relationships: true
            },
            "a write that says nothing may have changed anything"
        );
        s.entity_type("room");
        s.entity_type("device");
        s.entity_type("room");
        let n = s.notice(5);
        assert_eq!(
            n.entity_types,
            Some(vec!["device".to_owned(), "room".to_owned()])
        );
        assert!(!n.relationships);
        s.relationships();
        assert!(s.notice(6).relationships);
        for i in 0..MAX_NOTICE_TYPES {
            s.entity_type(&format!("t{i:02}"));
        }
        assert_eq!(s.notice(7).entity_types, None);
        let mut empty = ChangeSummary::default();
        empty.described();
        assert_eq!(empty.notice(1).entity_types, Some(vec![]));
    }
}

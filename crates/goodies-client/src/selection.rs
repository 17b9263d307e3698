//! Selective sync: pulling only some entity types, or only rows written by some users
//! (the pull's `filters.entity_types` and `filters.modified_by`, PROTOCOL §5.5).
//!
//! The selection is a persisted setting of the mirror ([`SELECTION_KEY`]), read by
//! every sync. What it changes, and what it does not:
//!
//! - **Pull.** Every sync request carries the selection as filters next to `since`, so
//!   pages hold only the selected entity versions. Relationships are not filtered by
//!   type (§5.5): every relationship row the server sends is stored whole, in the same
//!   transaction as the rest of its page, endpoints as sent. An edge whose other end is
//!   outside the selection is kept with that end unresolved: it is listed by
//!   `relationships`, while `neighbours` (which joins the other end's latest version)
//!   leaves it out until that end is in the mirror. `modified_by` applies to
//!   relationship rows too: an edge written by another user is not pulled.
//! - **Push.** Unchanged: every local edit is pushed, whatever its type or writer, and
//!   stays in the mirror.
//! - **Changing the selection** forgets the sync position, so the next sync pulls the
//!   whole state again under the new selection; pending edits are kept (and pushed
//!   first). What the mirror already holds outside a narrowed selection stays, no
//!   longer updated.
//! - **Digest.** The server's `state_digest` covers every entity, so a selective mirror
//!   cannot be compared with it: while a selection is set, the check after a quiet sync
//!   is skipped (`SyncResult::digest` stays empty), no digest repair is made, and a
//!   repair after `INVALID_SYNC_STATE` pulls the selection again without giving back
//!   what the pages did not carry (an unselected id is not a lost one).

use inbetweenies_proto::{EntityType, SyncFilters, Timestamp};
use serde::{Deserialize, Serialize};

use crate::client::{BlowingOffClient, Inner};
use crate::error::ClientError;

/// The mirror setting holding the selection (JSON; absent or empty: everything).
pub const SELECTION_KEY: &str = "selection";

/// What a sync pulls. The default selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Selection {
    /// Only entities of these types (`None`: every type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_types: Option<Vec<EntityType>>,
    /// Only rows whose `user_id` is one of these (`None`: every writer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<Vec<String>>,
}

impl Selection {
    /// Everything (no filter).
    pub fn all() -> Self {
        Selection::default()
    }

    /// Only entities of these types.
    pub fn with_entity_types(mut self, types: impl IntoIterator<Item = EntityType>) -> Self {
        self.entity_types = Some(types.into_iter().collect());
        self
    }

    /// Only rows written by these users.
    pub fn with_modified_by<S: Into<String>>(mut self, users: impl IntoIterator<Item = S>) -> Self {
        self.modified_by = Some(users.into_iter().map(Into::into).collect());
        self
    }

    /// Whether it selects everything.
    pub fn is_all(&self) -> bool {
        self.entity_types.is_none() && self.modified_by.is_none()
    }

    /// The same selection in one spelling: lists sorted, duplicates dropped.
    fn normalized(mut self) -> Self {
        if let Some(t) = &mut self.entity_types {
            t.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            t.dedup();
        }
        if let Some(u) = &mut self.modified_by {
            u.sort();
            u.dedup();
        }
        self
    }

    fn check(&self) -> Result<(), ClientError> {
        if self.entity_types.as_ref().is_some_and(Vec::is_empty) {
            return Err(ClientError::Invalid(
                "a selection with no entity type pulls nothing; leave entity_types unset to pull every type".into(),
            ));
        }
        match &self.modified_by {
            Some(u) if u.is_empty() => Err(ClientError::Invalid(
                "a selection with no writer pulls nothing; leave modified_by unset to pull every writer's rows".into(),
            )),
            Some(u) if u.iter().any(|w| w.trim().is_empty()) => Err(ClientError::Invalid(
                "a blank user id in modified_by".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The filters of a pull request: the selection's, and `since`.
pub(crate) fn filters(
    selection: Option<&Selection>,
    since: Option<Timestamp>,
) -> Option<SyncFilters> {
    let selection = selection.filter(|s| !s.is_all());
    if since.is_none() && selection.is_none() {
        return None;
    }
    Some(SyncFilters {
        since,
        entity_types: selection.and_then(|s| s.entity_types.clone()),
        modified_by: selection.and_then(|s| s.modified_by.clone()),
    })
}

impl Inner {
    /// The stored selection; `None` when everything is selected.
    pub(crate) async fn stored_selection(&self) -> Result<Option<Selection>, ClientError> {
        Ok(self
            .get_json::<Selection>(SELECTION_KEY)
            .await?
            .filter(|s| !s.is_all()))
    }
}

impl BlowingOffClient {
    /// What syncs pull (everything unless [`BlowingOffClient::set_selection`] narrowed it).
    pub async fn selection(&self) -> Result<Selection, ClientError> {
        Ok(self.inner.stored_selection().await?.unwrap_or_default())
    }

    /// Sets what syncs pull (see "Selective sync" in docs/CLIENT.md). A different
    /// selection forgets the sync position, so the next sync pulls the whole state again
    /// under it, keeping pending edits; returns whether it changed. Waits for a running
    /// sync to finish. An empty list is refused (it would pull nothing): leave the field
    /// unset to select everything.
    pub async fn set_selection(&self, selection: Selection) -> Result<bool, ClientError> {
        selection.check()?;
        let selection = selection.normalized();
        let inner = &self.inner;
        let _no_sync = inner.sync_lock.lock().await;
        let current = inner.stored_selection().await?.unwrap_or_default();
        if current == selection {
            return Ok(false);
        }
        // Forgotten first: stopped between the two writes, the next sync pulls in full
        // under the old selection, which is harmless.
        inner.store.reset_sync_state().await?;
        if selection.is_all() {
            inner.store.set_setting(SELECTION_KEY, "").await?;
        } else {
            inner.set_json(SELECTION_KEY, &selection).await?;
        }
        tracing::info!(?selection, "selection changed; the next sync pulls in full");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_carry_the_selection_and_since() {
        assert_eq!(filters(None, None), None);
        assert_eq!(filters(Some(&Selection::all()), None), None);
        let now = Timestamp::now();
        let f = filters(None, Some(now)).expect("since");
        assert_eq!(
            (f.since, f.entity_types, f.modified_by),
            (Some(now), None, None)
        );
        let s = Selection::all()
            .with_entity_types([EntityType::Device])
            .with_modified_by(["alice"]);
        let f = filters(Some(&s), None).expect("selection");
        assert_eq!(f.since, None);
        assert_eq!(f.entity_types, Some(vec![EntityType::Device]));
        assert_eq!(f.modified_by, Some(vec!["alice".to_owned()]));
    }

    #[test]
    fn empty_lists_are_refused_and_spellings_are_one() {
        assert!(Selection::all()
            .with_entity_types(Vec::<EntityType>::new())
            .check()
            .is_err());
        assert!(Selection::all()
            .with_modified_by(Vec::<String>::new())
            .check()
            .is_err());
        assert!(Selection::all().with_modified_by([" "]).check().is_err());
        let a = Selection::all()
            .with_entity_types([EntityType::Room, EntityType::Device, EntityType::Room])
            .normalized();
        let b = Selection::all()
            .with_entity_types([EntityType::Device, EntityType::Room])
            .normalized();
        assert_eq!(a, b);
    }
}

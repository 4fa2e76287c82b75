//! Committing: at once ([`Consumer::commit`]) or in the background
//! ([`Consumer::commit_in_background`]). Both check the same things first and write the same
//! way: a compare-and-swap on the group record as the owner of the generation the messages
//! were delivered in (guarantees 6 and 7).

use std::sync::Arc;

use super::Consumer;
use super::membership::{Membership, Role};
use crate::driver::DriverError;
use crate::error::Error;

impl Consumer {
    /// Commits `offset`: the group has processed every message up to and including it.
    ///
    /// - Committing at or below the committed offset does nothing (commits are monotonic).
    /// - [`Error::CommitBeyondDelivered`] if `next()` has not returned that offset.
    /// - [`Error::Fenced`] if another consumer took the group over since these messages were
    ///   delivered: nothing is committed, and this consumer is standby.
    /// - [`Error::Standby`] if this consumer has not been active.
    ///
    /// A retryable storage error means the commit may or may not have been stored; committing
    /// again is safe.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the commit may or may not have been stored, as with a lost
    /// reply; committing the same offset again is safe. Nothing else is lost.
    pub async fn commit(&mut self, offset: u64) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let generation = self.check_commit(offset)?;
        write_commit(&self.membership, generation, offset).await
    }

    /// Starts committing `offset` and returns without waiting for storage, so the next
    /// messages can be handled while the commit is written (Kafka's `commitAsync`).
    ///
    /// The checks of [`commit`](Consumer::commit) (standby, beyond delivered) happen here, at
    /// once. The write itself runs in the background, one at a time: if the previous one is
    /// still running, this waits for it first. Its result, [`Error::Fenced`] for example, is
    /// returned by the next call to `commit`, `commit_in_background` or
    /// [`shutdown`](Consumer::shutdown); a fenced consumer also turns standby as with `commit`.
    /// Until then the offset may not be stored: after a crash, messages up to it may be
    /// delivered again (which at-least-once delivery allows). Dropping the consumer leaves a
    /// running write to finish or not.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped while it waits for the previous background commit, that
    /// commit keeps running and its result is kept for the next call; the new commit was not
    /// started. Once it returns, the write runs whatever the caller does.
    pub async fn commit_in_background(&mut self, offset: u64) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let generation = self.check_commit(offset)?;
        let membership = Arc::clone(&self.membership);
        self.background_commit = Some(tokio::spawn(async move {
            write_commit(&membership, generation, offset).await
        }));
        Ok(())
    }

    /// Waits for the background commit, if one was started, and returns its result.
    pub(super) async fn collect_background_commit(&mut self) -> Result<(), Error> {
        let Some(task) = &mut self.background_commit else {
            return Ok(());
        };
        // Awaiting through `&mut` keeps the task if this future is dropped.
        let result = task.await;
        self.background_commit = None;
        result.map_err(|e| {
            Error::Storage(DriverError::failed(format!(
                "the background commit failed: {e}"
            )))
        })?
    }

    /// The checks every commit makes before writing; returns the generation to write under.
    fn check_commit(&self, offset: u64) -> Result<u64, Error> {
        let Some(generation) = self.cursor.generation else {
            return Err(Error::Standby {
                group: self.membership.settings.group.clone(),
            });
        };
        if !matches!(self.membership.role(), Role::Active { generation: g, .. } if g == generation)
        {
            return Err(self.membership.fenced(generation));
        }
        if offset > self.cursor.delivered {
            return Err(Error::CommitBeyondDelivered {
                offset,
                delivered: self.cursor.delivered,
            });
        }
        Ok(generation)
    }
}

/// Writes `offset` as the group's committed offset, as the owner of `generation`. Commits
/// are monotonic: an offset at or below the stored one changes nothing.
async fn write_commit(membership: &Membership, generation: u64, offset: u64) -> Result<(), Error> {
    membership
        .write_as_owner(generation, false, |state| {
            if offset <= state.committed {
                return false;
            }
            state.committed = offset;
            true
        })
        .await?;
    tracing::debug!(
        group = %membership.settings.group,
        consumer = %membership.id,
        offset,
        "committed"
    );
    Ok(())
}

//! Committing a lane: at once ([`crate::Consumer::commit`]) or in the background
//! ([`crate::Consumer::commit_in_background`]). Both check the same things first and write the same
//! way: a compare-and-swap on the group record as the owner of the generation the messages
//! were delivered in (guarantees 6 and 7).

use std::sync::Arc;

use tracing::Instrument;

use super::lane::Lane;
use super::membership::{Membership, Role};
use crate::driver::DriverError;
use crate::error::Error;

impl Lane {
    /// Commits `offset` in this lane; see [`crate::Consumer::commit`].
    pub(super) async fn commit(&mut self, offset: u64) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let generation = self.check_commit(offset)?;
        let started = std::time::Instant::now();
        write_commit(&self.membership, generation, offset).await?;
        self.metrics.committed(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Starts committing `offset` in this lane; see [`crate::Consumer::commit_in_background`].
    pub(super) async fn commit_in_background(&mut self, offset: u64) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let generation = self.check_commit(offset)?;
        let membership = Arc::clone(&self.membership);
        let metrics = self.metrics.clone();
        self.background_commit = Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            write_commit(&membership, generation, offset).await?;
            metrics.committed(started.elapsed().as_secs_f64());
            Ok(())
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
    pub(super) fn check_commit(&self, offset: u64) -> Result<u64, Error> {
        self.membership.check_deleted()?;
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
    let span = tracing::debug_span!(
        "flowstream.commit",
        stream = %membership.settings.stream,
        group = %membership.settings.group,
        consumer = %membership.id,
        generation,
        offset,
    );
    membership
        .write_as_owner(generation, false, |state| {
            if offset <= state.committed {
                return false;
            }
            // A nacked message, a probe or a suspect the commit passes was handled in the end.
            state.advance_to(offset);
            true
        })
        .instrument(span)
        .await?;
    tracing::debug!(
        group = %membership.settings.group,
        consumer = %membership.id,
        offset,
        "committed"
    );
    Ok(())
}

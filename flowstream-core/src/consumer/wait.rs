//! Waiting for something to do in one lane: [`crate::Consumer::wait`] returns at the head,
//! [`crate::Consumer::recv`] waits for the next message. Both are woken by the driver's notifications, never by polling
//! (guarantee 8).

use std::time::Duration;

use tokio::time::Instant;

use super::lane::Lane;
use crate::driver::Topic;
use crate::error::Error;

/// Why [`crate::Consumer::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// Messages are ready for `next()`.
    Messages,
    /// This consumer has just become the active one (in a group over partitions: has just
    /// claimed a partition); `next()` resumes after the committed offset.
    Activated,
    /// The timeout passed with nothing to do.
    TimedOut,
    /// The partitions the group gives this member changed (a member joined or left, or was
    /// evicted): [`crate::Consumer::assignment`] tells which it owns now. Partitions it lost were
    /// handed over; it receives messages of those it gained once their old owners have
    /// handed them over ([`Wake::Activated`]). Only in groups over partitions.
    Assignment,
}

/// How long `recv` and the stream view wait in one go; they loop, so this only bounds how
/// long a wait's bookkeeping lives.
pub(super) const IDLE_WAIT: Duration = Duration::from_secs(3600);

impl Lane {
    /// Waits until this lane has something to do; see [`crate::Consumer::wait`].
    pub(super) async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        let deadline = deadline_after(timeout);
        let mut stream_changes = self
            .membership
            .driver
            .changes()
            .subscribe(Topic::Stream(self.membership.settings.stream.clone()));
        let mut role_changes = self.membership.watch_role();
        loop {
            self.membership.check_deleted()?;
            let role = *role_changes.borrow_and_update();
            let generation = self.sync_with_role(role);
            let active = generation.is_some();
            if let Some(generation) = generation {
                if self.seen_generation != Some(generation) {
                    // Became active since the caller last looked (built active doesn't count).
                    self.seen_generation = Some(generation);
                    return Ok(Wake::Activated);
                }
                if self.look_for_messages(generation).await? {
                    return Ok(Wake::Messages);
                }
            }
            let pause = self.cursor.paused_until.filter(|_| active);
            tokio::select! {
                // Subscribed before the head was read, so no append is missed; look at the
                // head again rather than trusting the wake-up, which may be a driver's
                // catch-all after a reconnection.
                () = stream_changes.changed(), if active => {}
                // A nacked message's delay is over: it is delivered again.
                () = sleep_until_some(pause) => {}
                changed = role_changes.changed() => {
                    if changed.is_err() {
                        // The background task is gone with the role sender: nothing can wake us.
                        tokio::time::sleep_until(deadline).await;
                        return Ok(Wake::TimedOut);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(Wake::TimedOut),
            }
        }
    }

    /// Whether messages past the cursor can be delivered now, as the active owner of
    /// `generation`. Skips a range that was trimmed before it was read.
    pub(super) async fn look_for_messages(&mut self, generation: u64) -> Result<bool, Error> {
        // While a nacked message's delay runs, nothing is delivered, and what lies past the
        // cursor is not a trimmed range to skip.
        if self.cursor.paused() {
            return Ok(false);
        }
        // Read rather than look at the head first: when there is something new (the usual
        // reason to be woken), that is one storage call instead of two.
        if self.fill().await? {
            return Ok(true);
        }
        // A parked copy not due yet holds the lane: what lies past it is not trimmed either.
        if self.cursor.generation != Some(generation) || self.cursor.paused() {
            return Ok(false);
        }
        let head = self
            .membership
            .driver
            .head(&self.membership.settings.stream)
            .await?;
        if head <= self.cursor.fetched {
            return Ok(false);
        }
        // Messages past our position may have been appended since that read: read again,
        // now that everything up to `head` is known to be committed.
        if self.fill().await? {
            return Ok(true);
        }
        if self.cursor.generation == Some(generation) {
            // Nothing readable up to the head, read after the head was: those messages were
            // trimmed. Skip past them instead of reporting them forever (or say so).
            self.check_trimmed(None)?;
            self.cursor.skip_to(head);
        }
        Ok(false)
    }
}

/// Sleeps until `until`, or forever when it is `None`.
pub(super) async fn sleep_until_some(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(FAR))
        .unwrap_or_else(|| now + Duration::from_secs(24 * 3600))
}

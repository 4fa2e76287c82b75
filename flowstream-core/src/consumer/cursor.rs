//! The read-ahead cursor: where the active consumer is in the stream, the batch it is handing
//! out, and the next batch being read meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lane::Lane;
use super::membership::Role;
use super::retry::{MAX_RETRY_DELAY, micros_since_epoch};
use super::state::{StoredRetry, Suspect};
use crate::driver::DriverError;
use crate::error::Error;
use crate::message::Message;

/// Reading position within one claim (generation) of the group.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// The generation these positions belong to; `None` before this consumer was ever active.
    pub(super) generation: Option<u64>,
    /// Highest offset fetched from storage (including a finished prefetch still in flight).
    pub(super) fetched: u64,
    /// Highest offset returned by `next()`.
    pub(super) delivered: u64,
    buffer: VecDeque<Message>,
    /// The read of the batch after `fetched`, started while the application works through
    /// `buffer`. At most one batch ahead, so memory stays bounded by two batches.
    prefetch: Option<Prefetch>,
    /// The nacked message to deliver next and how many of its deliveries failed.
    pub(super) retry: Option<StoredRetry>,
    /// Until when delivery waits for a nacked message's delay.
    pub(super) paused_until: Option<Instant>,
    /// Deliveries up to this offset are probed (see `poison`).
    pub(super) probe_through: Option<u64>,
    /// The message suspected of crashing earlier owners.
    pub(super) suspect: Option<Suspect>,
    /// The highest offset cleared for delivery by `prepare` (probed, or checked).
    pub(super) prepared: u64,
    /// Messages handed out and then sent back by a nack (first and last offset): read again,
    /// ahead of the buffer, before anything else is delivered.
    refetch: Option<(u64, u64)>,
}

impl Cursor {
    /// Forgets everything read past `fetched`: the range after it was trimmed.
    /// Whether a read of the next batch is running (or done, not yet taken).
    pub(super) fn reading_ahead(&self) -> bool {
        self.prefetch.is_some()
    }

    /// Drops what was read and not handed out (the partition is being handed over); should
    /// the claim come back, reading resumes right after what was delivered.
    pub(super) fn drop_buffered(&mut self) {
        self.buffer.clear();
        self.prefetch = None;
        self.refetch = None;
        self.fetched = self.delivered;
    }

    /// Goes back to deliver the nacked message at `retry.offset` again, after `delay`. What
    /// was read ahead stays; the messages from it to the last one handed out are read again
    /// when the delay is over (usually just the nacked one), or, if they are more than a
    /// batch, everything from it.
    pub(super) fn rewind_for_retry(
        &mut self,
        retry: StoredRetry,
        delay: Duration,
        batch_size: usize,
    ) {
        let through = self.delivered;
        let span = usize::try_from(through - retry.offset + 1).unwrap_or(usize::MAX);
        if span <= batch_size {
            self.refetch = Some((retry.offset, through));
        } else {
            // More than a batch to read again: start over from it, memory stays bounded.
            self.buffer.clear();
            self.prefetch = None;
            self.fetched = retry.offset - 1;
        }
        self.delivered = retry.offset - 1;
        self.retry = Some(retry);
        self.paused_until = Some(Instant::now() + delay);
    }

    /// Whether a nack holds delivery back: its delay runs (or is over and `fill` has not
    /// noticed yet), or what it sent back is not read again yet.
    pub(super) fn held_back(&self) -> bool {
        self.paused_until.is_some() || self.refetch.is_some()
    }

    /// Whether delivery waits for a nacked message's delay; forgets a delay that is over.
    pub(super) fn paused(&mut self) -> bool {
        match self.paused_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.paused_until = None;
                false
            }
            None => false,
        }
    }

    pub(super) fn skip_to(&mut self, head: u64) {
        self.prefetch = None;
        self.fetched = head;
        self.delivered = self.delivered.max(head);
    }
}

/// A read running in the background. Dropping it cancels the read.
#[derive(Debug)]
struct Prefetch {
    task: JoinHandle<Result<Vec<Message>, DriverError>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lane {
    /// Brings the cursor in line with `role`; returns the generation while active. A new claim
    /// starts right after the committed offset it began with (guarantee 3); losing the claim
    /// drops what was buffered, which the new owner delivers again.
    pub(super) fn sync_with_role(&mut self, role: Role) -> Option<u64> {
        let Role::Active {
            generation,
            resume_after,
        } = role
        else {
            self.cursor.buffer.clear();
            self.cursor.prefetch = None;
            self.seen_generation = None;
            return None;
        };
        if self.cursor.generation != Some(generation) {
            // A message nacked under an earlier claim keeps its count and what is left of its
            // delay (on this consumer's clock; a skewed clock can only shorten or lengthen the
            // wait, never skip the message).
            let retry = self
                .membership
                .pending_retry()
                .filter(|retry| retry.offset == resume_after.saturating_add(1));
            let paused_until = retry.and_then(|retry| {
                let left = Duration::from_micros(
                    retry
                        .due_micros
                        .saturating_sub(micros_since_epoch(SystemTime::now())),
                );
                (!left.is_zero()).then(|| Instant::now() + left.min(MAX_RETRY_DELAY))
            });
            // Crash counting is on where a limit is set: then deliveries in the window of an
            // owner that crashed are probed, and a suspect past the limit is dead-lettered.
            let seen = self.membership.seen();
            let counting = self.membership.settings.max_deliveries.is_some();
            let probe_through = seen
                .as_ref()
                .and_then(|s| s.probe_through)
                .filter(|_| counting);
            let suspect = seen.as_ref().and_then(|s| s.suspect);
            self.cursor = Cursor {
                generation: Some(generation),
                fetched: resume_after,
                delivered: resume_after,
                buffer: VecDeque::new(),
                prefetch: None,
                retry,
                paused_until,
                probe_through,
                suspect,
                prepared: resume_after,
                refetch: None,
            };
        }
        Some(generation)
    }

    /// Makes sure a message is buffered if one is available to this consumer. `Ok(false)`:
    /// standby, or at the head.
    pub(super) async fn fill(&mut self) -> Result<bool, Error> {
        self.membership.check_deleted()?;
        let Some(generation) = self.sync_with_role(self.membership.role()) else {
            return Ok(false);
        };
        self.seen_generation = Some(generation);
        if self.cursor.paused() {
            return Ok(false);
        }
        // A suspect dead-lettered by `prepare` may empty the buffer: read on, once per
        // message it removed at most, which is bounded by the batch.
        loop {
            let read_more = self.read_if_empty().await?;
            if !self.prepare().await? {
                return Ok(false);
            }
            if !self.cursor.buffer.is_empty() || !read_more {
                break;
            }
        }
        if self.hold_until_due() {
            return Ok(false);
        }
        Ok(!self.cursor.buffer.is_empty())
    }

    /// Reads again what a nack sent back, if anything, ahead of the buffer; else the next
    /// batch if nothing is buffered. Returns whether it read anything.
    async fn read_if_empty(&mut self) -> Result<bool, Error> {
        if let Some((first, last)) = self.cursor.refetch {
            let limit = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
            let again = self
                .membership
                .driver
                .read(&self.membership.settings.stream, first - 1, limit)
                .await?;
            self.cursor.refetch = None;
            let read = !again.is_empty();
            // Past `last` is buffered already (a range trimmed meanwhile makes the read
            // reach further).
            for message in again.into_iter().rev().filter(|m| m.offset() <= last) {
                self.cursor.buffer.push_front(message);
            }
            return Ok(read);
        }
        let mut read = false;
        if self.cursor.buffer.is_empty() {
            let batch = match &mut self.cursor.prefetch {
                // Awaiting through `&mut` keeps the read if this future is dropped.
                Some(prefetch) => {
                    let done = (&mut prefetch.task).await;
                    self.cursor.prefetch = None;
                    done.map_err(|e| {
                        DriverError::failed(format!("the background read failed: {e}"))
                    })??
                }
                None => {
                    let settings = &self.membership.settings;
                    self.membership
                        .driver
                        .read(&settings.stream, self.cursor.fetched, settings.batch_size)
                        .await?
                }
            };
            if let Some(first) = batch.first() {
                self.check_trimmed(Some(first.offset()))?;
            }
            let full = batch.len() >= self.membership.settings.batch_size;
            if let Some(last) = batch.last() {
                self.cursor.fetched = last.offset();
                read = true;
            }
            // The buffer is empty here: take the read's vector as it is rather than move each
            // message into the old buffer's allocation.
            self.cursor.buffer = VecDeque::from(batch);
            if full {
                // More is likely stored: fetch it while the application handles this batch.
                // A short batch means the head was reached, and `wait` takes over from there.
                self.prefetch();
            }
        }
        Ok(read)
    }

    /// With `fail_if_trimmed`, [`Error::Trimmed`] when the next message stored after the
    /// position is not the next offset: `first` (`None`: nothing is left up to the head).
    /// The position stays, so the error repeats until the group is moved.
    pub(super) fn check_trimmed(&mut self, first: Option<u64>) -> Result<(), Error> {
        let position = self.cursor.fetched;
        if !self.membership.settings.fail_if_trimmed
            || first.is_some_and(|first| first <= position.saturating_add(1))
        {
            return Ok(());
        }
        // What was read is dropped: reading it again after the error must not skip the gap.
        self.cursor.prefetch = None;
        let (stream, partition) = crate::names::split_log_name(&self.membership.settings.stream);
        Err(Error::Trimmed {
            stream: stream.to_owned(),
            partition,
            position,
            resumes_at: first,
        })
    }

    fn prefetch(&mut self) {
        let driver = Arc::clone(&self.membership.driver);
        let stream = self.membership.settings.stream.clone();
        let (after, limit) = (self.cursor.fetched, self.membership.settings.batch_size);
        self.cursor.prefetch = Some(Prefetch {
            task: tokio::spawn(async move { driver.read(&stream, after, limit).await }),
        });
    }

    /// Whether a message is buffered and may be handed out (not while a nacked message's
    /// delay runs, nor before what the nack sent back is read again).
    pub(super) fn has_buffered(&self) -> bool {
        !self.cursor.buffer.is_empty() && !self.cursor.held_back()
    }

    /// Whether this lane holds a claim it has not read under yet.
    pub(super) fn claim_is_new(&self) -> bool {
        matches!(self.membership.role(), Role::Active { generation, .. } if self.cursor.generation != Some(generation))
    }

    /// The next buffered message, marked as delivered.
    pub(super) fn pop(&mut self) -> Option<Message> {
        // Callers that pop without filling first (the stream view) must not hand out what was
        // read under a claim that has ended (a takeover, a reset).
        self.sync_with_role(self.membership.role())?;
        if self.cursor.held_back() {
            return None;
        }
        let front = self.cursor.buffer.front()?.offset();
        if self.needs_preparing(front) {
            // `fill` probes it first (or dead-letters it); a caller that pops without filling
            // gets nothing until it does.
            return None;
        }
        let mut message = self.cursor.buffer.pop_front()?;
        self.cursor.delivered = message.offset();
        self.metrics.delivered(message.body().len());
        message.set_delivered_in(
            self.cursor
                .generation
                .map(|generation| (Arc::clone(&self.consumer), generation)),
        );
        if let Some(attempt) = self.parked_attempt(&message) {
            message.set_attempt(attempt);
        }
        if let Some(retry) = self.cursor.retry
            && retry.offset == message.offset()
        {
            message.set_attempt(retry.attempts.saturating_add(1));
        }
        if let Some(suspect) = self.cursor.suspect
            && suspect.offset == message.offset()
        {
            let attempt = suspect.crashes.saturating_add(1).max(message.attempt());
            message.set_attempt(attempt);
        }
        Some(message)
    }

    /// Pops the next buffered message whatever it needs (for `prepare`, which dead-letters it).
    pub(super) fn take_front(&mut self) -> Option<Message> {
        let message = self.cursor.buffer.pop_front()?;
        self.cursor.delivered = message.offset();
        Some(message)
    }

    /// The next buffered message, if any.
    pub(super) fn front(&self) -> Option<&Message> {
        self.cursor.buffer.front()
    }
}

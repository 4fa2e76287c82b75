//! Handling a message that failed: [`crate::Consumer::nack`] redelivers it after a delay, in
//! order (its partition waits behind it), and [`crate::Consumer::dead_letter`] moves it to the
//! group's dead-letter stream, which `nack` also does once `max_deliveries` is reached.
//!
//! Nothing here writes on the happy path. A nack is one write of the group record: the commit
//! of what came before the message and the message's delivery count, so a new owner keeps
//! counting. A dead letter is one transaction ([`Driver::apply`](crate::Driver::apply)): the
//! copy appended to the dead-letter stream and the commit past the message, as the owner of
//! the claim the message was delivered in. So a message is never passed without its copy, and
//! a retry of a dead letter whose reply was lost finds the commit done and appends nothing.

use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lane::Lane;
use super::membership::Role;
use super::state::StoredRetry;
use crate::error::Error;
use crate::message::{Message, NewMessage};
use crate::metrics::{self, DeadLetterCause as Cause};
use crate::names::{PARK_DELAYS, dead_letter_stream, park_tier_of};

/// Longest delay a nack may ask for, and the most a new owner waits for a message nacked under
/// another claim (whatever the clocks say).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Longest error text kept in a dead-lettered copy's header, in bytes.
const MAX_ERROR_TEXT: usize = 4096;

/// Headers flowstream puts on a dead-lettered copy, beside the original's own. Names starting
/// with `flowstream.` are flowstream's: a header of the original with one of these names is
/// replaced.
pub mod dead_letter_headers {
    /// The stream the message was consumed from.
    pub const STREAM: &str = "flowstream.original-stream";
    /// Its partition there (0 on an unpartitioned stream).
    pub const PARTITION: &str = "flowstream.original-partition";
    /// Its offset there.
    pub const OFFSET: &str = "flowstream.original-offset";
    /// When it was produced there, in milliseconds since the Unix epoch.
    pub const PRODUCED_AT_MS: &str = "flowstream.original-produced-at-ms";
    /// The group that gave up on it.
    pub const GROUP: &str = "flowstream.group";
    /// How many deliveries of it failed.
    pub const ATTEMPTS: &str = "flowstream.attempts";
    /// The last error, as the application gave it (at most 4 KiB).
    pub const ERROR: &str = "flowstream.error";
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub const DEAD_LETTERED_AT_MS: &str = "flowstream.dead-lettered-at-ms";
    /// On a copy replayed to its stream
    /// ([`Admin::replay_dead_letters`](crate::Admin::replay_dead_letters)): when, in
    /// milliseconds since the Unix epoch. The other headers say where it was before.
    pub const REPLAYED_AT_MS: &str = "flowstream.replayed-at-ms";
}

/// How long a nacked message waits before it is delivered again: exponential from `first`,
/// times `factor` per failed delivery, capped at `max`, each delay shortened by a random part
/// of up to a fifth (jitter) so that members failing together do not retry in step.
///
/// ```
/// use std::time::Duration;
/// use flowstream_core::RetryBackoff;
/// let backoff = RetryBackoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
///     .without_jitter();
/// assert_eq!(backoff.delay_for(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay_for(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay_for(30), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    first: Duration,
    max: Duration,
    factor: u32,
    jitter: bool,
}

impl Default for RetryBackoff {
    /// 1 s, doubling to at most 5 min, with jitter.
    fn default() -> Self {
        RetryBackoff::exponential(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl RetryBackoff {
    /// Doubling from `first` up to `max` (both capped at [`MAX_RETRY_DELAY`]), with jitter.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        let max = max.min(MAX_RETRY_DELAY);
        RetryBackoff {
            first: first.min(max),
            max,
            factor: 2,
            jitter: true,
        }
    }

    /// The same delay every time, with jitter.
    pub fn fixed(delay: Duration) -> Self {
        RetryBackoff {
            factor: 1,
            ..RetryBackoff::exponential(delay, delay)
        }
    }

    /// Multiplies the delay by `factor` (at least 1) per failed delivery instead of 2.
    #[must_use]
    pub fn factor(mut self, factor: u32) -> Self {
        self.factor = factor.max(1);
        self
    }

    /// Exact delays, no random part.
    #[must_use]
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay after the `failed`-th failed delivery of a message (1 for the first).
    pub fn delay_for(&self, failed: u32) -> Duration {
        let mut delay = self.first;
        for _ in 1..failed {
            if delay >= self.max {
                break;
            }
            delay = delay.saturating_mul(self.factor);
        }
        let delay = delay.min(self.max);
        if self.jitter {
            delay.saturating_sub(delay.mul_f64(random_fraction() / 5.0))
        } else {
            delay
        }
    }
}

/// A number in `[0, 1)`, different each call; jitter needs no better randomness.
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What [`nack`](crate::Consumer::nack) did with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nacked {
    /// It is delivered again after `after`, as delivery number `attempt`; its partition
    /// delivers nothing else meanwhile.
    Retry {
        /// The delay.
        after: Duration,
        /// Which delivery the next one will be ([`Message::attempt`]).
        attempt: u32,
    },
    /// It reached `max_deliveries` and was moved to the group's dead-letter stream; the group
    /// goes on with the next message.
    DeadLettered,
    /// It was parked ([`ConsumerBuilder::park_retries`](crate::ConsumerBuilder::park_retries)):
    /// copied to the retry stream of delay `after`, from which it is delivered again once it
    /// has waited that long, as delivery number `attempt`; its partition went on.
    Parked {
        /// The delay of the retry stream it went to.
        after: Duration,
        /// Which delivery the next one will be ([`Message::attempt`]).
        attempt: u32,
    },
}

pub(crate) fn micros_since_epoch(time: SystemTime) -> u64 {
    let micros = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    u64::try_from(micros).unwrap_or(u64::MAX)
}

pub(crate) fn millis_since_epoch(time: SystemTime) -> u64 {
    micros_since_epoch(time) / 1000
}

impl Lane {
    /// Checks that `message` can be nacked or dead-lettered by this lane now; returns the
    /// generation to write under and how many of its deliveries have failed, this one
    /// included.
    fn check_failed(&self, message: &Message) -> Result<(u64, u32), Error> {
        let settings = &self.membership.settings;
        let group = &settings.group;
        if message.log() != settings.stream {
            return Err(Error::WrongStream {
                stream: crate::names::split_log_name(&settings.stream).0.to_owned(),
                message_stream: message.stream().to_owned(),
            });
        }
        let Some(generation) = self.cursor.generation else {
            return Err(Error::Standby {
                group: group.clone(),
            });
        };
        if !matches!(self.membership.role(), Role::Active { generation: g, .. } if g == generation)
        {
            return Err(self.membership.fenced(generation));
        }
        // Delivered under a claim that has ended (before a takeover or a reset): fenced, even
        // though this consumer holds a newer one.
        if let Some((_, delivered_in)) = message.delivered_in()
            && delivered_in != generation
        {
            return Err(self.membership.fenced(delivered_in));
        }
        let offset = message.offset();
        if offset > self.cursor.delivered {
            return Err(Error::CommitBeyondDelivered {
                offset,
                delivered: self.cursor.delivered,
            });
        }
        let committed = self.membership.committed().unwrap_or(0);
        if offset <= committed {
            return Err(Error::AlreadyCommitted { offset, committed });
        }
        // A parked copy, or a crash suspect, says how many deliveries failed before.
        let failed = match self.cursor.retry {
            Some(retry) if retry.offset == offset => retry.attempts.saturating_add(1),
            _ => 1,
        }
        .max(message.attempt());
        Ok((generation, failed))
    }

    /// Nacks `message`; see [`crate::Consumer::nack`]. `delay: None` takes it from the
    /// backoff.
    pub(super) async fn nack(
        &mut self,
        message: &Message,
        delay: Option<Duration>,
        error: &str,
    ) -> Result<Nacked, Error> {
        let max = if self.membership.settings.park {
            PARK_DELAYS[PARK_DELAYS.len() - 1]
        } else {
            MAX_RETRY_DELAY
        };
        if let Some(delay) = delay
            && delay > max
        {
            return Err(Error::DelayTooLong { delay, max });
        }
        self.collect_background_commit().await?;
        let (generation, failed) = self.check_failed(message)?;
        let settings = &self.membership.settings;
        if settings.max_deliveries.is_some_and(|max| failed >= max) {
            self.write_dead_letter(message, generation, failed, error, Cause::MaxDeliveries)
                .await?;
            return Ok(Nacked::DeadLettered);
        }
        let delay = delay.unwrap_or_else(|| settings.retry_backoff.delay_for(failed));
        if settings.park {
            return self.park(message, generation, failed, delay, error).await;
        }
        let offset = message.offset();
        let retry = StoredRetry {
            offset,
            attempts: failed,
            due_micros: micros_since_epoch(SystemTime::now() + delay),
        };
        self.membership
            .write_as_owner(generation, false, |state| {
                // What came before the message was handled: the partition waits on it alone.
                state.advance_to(offset - 1);
                state.retry = Some(retry);
                // It is not being handled any more: a crash during its delay is not its doing.
                state.probe = None;
                true
            })
            .await?;
        metrics::retried(message.stream(), &settings.group, false);
        tracing::debug!(
            group = %settings.group,
            stream = %settings.stream,
            consumer = %self.membership.id,
            offset,
            attempt = failed,
            retry_in = ?delay,
            error = %error,
            "nacked; redelivered after the delay"
        );
        self.cursor
            .rewind_for_retry(retry, delay, settings.batch_size);
        Ok(Nacked::Retry {
            after: delay,
            attempt: failed.saturating_add(1),
        })
    }

    /// Dead-letters `message`; see [`crate::Consumer::dead_letter`].
    pub(super) async fn dead_letter(
        &mut self,
        message: &Message,
        reason: &str,
    ) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let (generation, failed) = self.check_failed(message)?;
        self.write_dead_letter(message, generation, failed, reason, Cause::OnDemand)
            .await
    }

    /// Appends `copy` (of the message at `offset`) and commits past the message, in one
    /// transaction, as the owner of `generation`. Returns whether it wrote: `false` when the
    /// commit was there already (an earlier attempt was applied and its reply lost), so the
    /// copy is never appended twice.
    pub(super) async fn write_moved(
        &self,
        generation: u64,
        offset: u64,
        copy: NewMessage,
    ) -> Result<bool, Error> {
        self.membership
            .write_as_owner_with(generation, false, &[copy], |state| {
                if state.committed >= offset {
                    return false;
                }
                state.advance_to(offset);
                true
            })
            .await
    }

    /// Appends the dead-letter copy and commits past the message, in one transaction, as the
    /// owner of `generation`.
    pub(super) async fn write_dead_letter(
        &mut self,
        message: &Message,
        generation: u64,
        failed: u32,
        error: &str,
        cause: Cause,
    ) -> Result<(), Error> {
        let settings = &self.membership.settings;
        let offset = message.offset();
        let origin = Origin::of(message);
        let copy = dead_letter_copy(message, &origin, &settings.group, failed, error);
        let written = self.write_moved(generation, offset, copy).await?;
        // Counted when it returns, so once: a write that found the work done is the earlier
        // attempt whose reply was lost (only this owner writes under its generation).
        metrics::dead_lettered(&origin.stream, &settings.group, cause);
        tracing::warn!(
            group = %settings.group,
            stream = %settings.stream,
            consumer = %self.membership.id,
            offset,
            attempts = failed,
            error = %error,
            already_done = !written,
            "dead-lettered a message"
        );
        if self
            .cursor
            .retry
            .is_some_and(|retry| retry.offset == offset)
        {
            self.cursor.retry = None;
            self.cursor.paused_until = None;
        }
        Ok(())
    }
}

/// Where a message was first produced: itself, or, for a copy in a retry stream, what its
/// headers say.
pub(super) struct Origin {
    pub(super) stream: String,
    partition: u32,
    offset: u64,
    produced_at_ms: u64,
}

impl Origin {
    pub(super) fn of(message: &Message) -> Origin {
        use dead_letter_headers as h;
        let parked = park_tier_of(message.log()).and_then(|_| {
            let headers = message.headers();
            Some(Origin {
                stream: headers.get(h::STREAM)?.clone(),
                partition: headers.get(h::PARTITION)?.parse().ok()?,
                offset: headers.get(h::OFFSET)?.parse().ok()?,
                produced_at_ms: headers.get(h::PRODUCED_AT_MS)?.parse().ok()?,
            })
        });
        parked.unwrap_or_else(|| Origin {
            stream: message.stream().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            produced_at_ms: millis_since_epoch(message.produced_at()),
        })
    }
}

/// A copy of `message` for `to` (a retry or dead-letter stream of `group`): body, key and
/// headers as they were, plus where it came from and why it failed.
pub(super) fn failed_copy(
    message: &Message,
    origin: &Origin,
    to: String,
    group: &str,
    failed: u32,
    error: &str,
) -> NewMessage {
    use dead_letter_headers as h;
    let mut copy = NewMessage::new(to, message.body().to_vec());
    for (name, value) in message.headers() {
        copy = copy.with_header(name.as_str(), value.as_str());
    }
    if let Some(key) = message.key() {
        copy = copy.with_key(key.to_vec());
    }
    copy.with_header(h::STREAM, origin.stream.as_str())
        .with_header(h::PARTITION, origin.partition.to_string())
        .with_header(h::OFFSET, origin.offset.to_string())
        .with_header(h::PRODUCED_AT_MS, origin.produced_at_ms.to_string())
        .with_header(h::GROUP, group)
        .with_header(h::ATTEMPTS, failed.to_string())
        .with_header(h::ERROR, error_text(error))
}

/// The copy of `message` appended to its group's dead-letter stream (the dead-letter stream
/// of the stream it was first produced to).
fn dead_letter_copy(
    message: &Message,
    origin: &Origin,
    group: &str,
    failed: u32,
    error: &str,
) -> NewMessage {
    let to = dead_letter_stream(&origin.stream, group);
    failed_copy(message, origin, to, group, failed, error).with_header(
        dead_letter_headers::DEAD_LETTERED_AT_MS,
        millis_since_epoch(SystemTime::now()).to_string(),
    )
}

/// The error as header text: no NUL (no store keeps one), at most [`MAX_ERROR_TEXT`] bytes.
fn error_text(error: &str) -> String {
    let mut text = error.replace('\0', "\u{fffd}");
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_downwards() {
        let exact = RetryBackoff::exponential(Duration::from_secs(1), Duration::from_secs(60))
            .without_jitter();
        let delays: Vec<u64> = (1..=8).map(|n| exact.delay_for(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(exact.delay_for(u32::MAX), Duration::from_secs(60));
        assert_eq!(exact.delay_for(0), Duration::from_secs(1));
        let jittered = RetryBackoff::fixed(Duration::from_secs(10));
        for _ in 0..100 {
            let delay = jittered.delay_for(5);
            assert!(delay <= Duration::from_secs(10) && delay >= Duration::from_secs(8));
        }
        let tripled = RetryBackoff::exponential(Duration::from_millis(10), Duration::from_secs(1))
            .factor(3)
            .without_jitter();
        assert_eq!(tripled.delay_for(3), Duration::from_millis(90));
        let huge = RetryBackoff::fixed(Duration::from_secs(1 << 40)).without_jitter();
        assert_eq!(huge.delay_for(1), MAX_RETRY_DELAY);
    }

    #[test]
    fn error_text_is_storable_and_bounded() {
        assert_eq!(error_text("bad\0input"), "bad\u{fffd}input");
        let long = "é".repeat(MAX_ERROR_TEXT);
        let text = error_text(&long);
        assert!(text.len() <= MAX_ERROR_TEXT && text.is_char_boundary(text.len()));
    }
}

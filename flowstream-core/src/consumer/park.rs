//! Parked retries ([`crate::ConsumerBuilder::park_retries`]): a nack copies the message to one
//! of the group's retry streams, one per delay, and commits past it in the same transaction;
//! the consumer reads the retry streams beside its stream, one lane each, and delivers a copy
//! once it has waited its stream's delay.
//!
//! A retry stream's copies arrive in the order they were parked, all with the same delay, so
//! they come due in that order too: its lane holds back until its next copy is due, and no
//! copy ever waits behind one that is due later. The copies' records are the group's records
//! on those streams, so claims, fencing, takeovers and crash counting work as on any stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::builder::{Settings, StartFrom, start_lane};
use super::lane::Lane;
use super::lanes::{LaneSet, first_of};
use super::retry::{Nacked, Origin, dead_letter_headers, failed_copy};
use super::wait::{Wake, deadline_after};
use crate::driver::Driver;
use crate::error::{Chain, Error};
use crate::message::Message;
use crate::names::{PARK_DELAYS, park_tier_for, retry_stream};

/// A consumer's lanes on its group's retry streams, in [`PARK_DELAYS`] order.
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) set: LaneSet,
}

impl Parked {
    /// Joins the group on each retry stream of `settings`' stream.
    pub(super) async fn start(
        runtime: &tokio::runtime::Handle,
        driver: &Arc<dyn Driver>,
        settings: &Settings,
        instance: &str,
    ) -> Result<Parked, Error> {
        let mut lanes = Vec::with_capacity(PARK_DELAYS.len());
        for delay in PARK_DELAYS {
            let mut tier = settings.clone();
            tier.stream = retry_stream(&settings.stream, &settings.group, delay);
            tier.tier = Some(delay);
            tier.member_id = None;
            // Every copy in a retry stream is this group's to deliver, whatever the group's
            // own start.
            tier.start_from = StartFrom::Earliest;
            match start_lane(runtime, Arc::clone(driver), tier, instance.to_owned(), None).await {
                Ok(lane) => lanes.push(lane),
                Err(error) => {
                    if let Err(cleanup) = LaneSet::new(lanes).close().await {
                        tracing::warn!(
                            error = %Chain(&cleanup),
                            "could not leave the retry streams after a failed start"
                        );
                    }
                    return Err(error);
                }
            }
        }
        Ok(Parked {
            set: LaneSet::new(lanes),
        })
    }

    /// Waits until a parked copy is due, or `timeout`. Claims of retry streams are not
    /// reported: the caller learns of them by the messages they deliver.
    pub(super) async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        let deadline = deadline_after(timeout);
        loop {
            while self.set.take_new_claim() {}
            if self.set.look().await? {
                return Ok(Wake::Messages);
            }
            let mut roles = self.set.roles();
            let events = self.set.events(&mut roles);
            let woken = tokio::select! {
                woken = first_of(events) => woken,
                () = tokio::time::sleep_until(deadline) => return Ok(Wake::TimedOut),
            };
            if let Some(lane) = woken {
                self.set.mark_dirty(lane);
            }
        }
    }
}

impl Lane {
    /// In a retry stream's lane, holds delivery back until the next copy has waited the
    /// stream's delay since it was parked; returns whether it does. The wait is measured on
    /// this consumer's clock against the storage's, and never longer than the delay itself,
    /// so a skewed clock can delay a copy by at most the delay, never skip it.
    pub(super) fn hold_until_due(&mut self) -> bool {
        let (Some(delay), Some(front)) = (self.membership.settings.tier, self.front()) else {
            return false;
        };
        let due = front.produced_at() + delay;
        match due.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => {
                self.cursor.paused_until = Some(Instant::now() + left.min(delay));
                true
            }
            _ => false,
        }
    }

    /// The delivery number of a parked copy: one more than the failures its headers count.
    pub(super) fn parked_attempt(&self, message: &Message) -> Option<u32> {
        self.membership.settings.tier?;
        let failed: u32 = message
            .headers()
            .get(dead_letter_headers::ATTEMPTS)?
            .parse()
            .ok()?;
        Some(failed.saturating_add(1))
    }

    /// Parks `message` after its `failed`-th failed delivery: copies it to the retry stream
    /// of `delay` (rounded up to a tier) and commits past it, in one transaction.
    pub(super) async fn park(
        &mut self,
        message: &Message,
        generation: u64,
        failed: u32,
        delay: Duration,
        error: &str,
    ) -> Result<Nacked, Error> {
        let settings = &self.membership.settings;
        let after = PARK_DELAYS[park_tier_for(delay)];
        let origin = Origin::of(message);
        let to = retry_stream(&origin.stream, &settings.group, after);
        let copy = failed_copy(message, &origin, to, &settings.group, failed, error);
        let offset = message.offset();
        let written = self.write_moved(generation, offset, copy).await?;
        crate::metrics::retried(&origin.stream, &settings.group, true);
        tracing::debug!(
            group = %settings.group,
            stream = %settings.stream,
            consumer = %self.membership.id,
            offset,
            attempt = failed,
            retry_in = ?after,
            error = %error,
            already_done = !written,
            "parked for a retry"
        );
        Ok(Nacked::Parked {
            after,
            attempt: failed.saturating_add(1),
        })
    }
}

//! A set of lanes one consumer reads in turn: the partitions of a group over partitions, or
//! the delay tiers of a group that parks its retries.
//!
//! Messages come from the active lanes in turn (a lane with messages buffered first, then
//! lanes whose log was notified since it was last found empty, so a consumer at the head of
//! every lane makes no storage reads). A lane the roster gave to another member is handed
//! over when the application next asks for messages (`next`, `wait`): by then it has
//! committed what it finished; what it received and did not commit is delivered again to the
//! new owner, as after any takeover.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::watch;

use super::lane::Lane;
use super::membership::Role;
use super::wait::sleep_until_some;
use crate::driver::{Subscription, Topic};
use crate::error::{Chain, Error};
use crate::message::Message;

#[derive(Debug)]
pub(super) struct LaneSet {
    pub(super) lanes: Vec<Lane>,
    /// Per lane: notifications of its log.
    appends: Vec<Subscription>,
    /// Per lane: it may have messages past its cursor (notified, or not read since claimed).
    dirty: Vec<bool>,
    /// Per lane: the generation whose revocation was already handed over.
    handed_over: Vec<Option<u64>>,
    /// The lane to look at first next time, so busy lanes cannot starve the others.
    turn: usize,
    /// The lane the last message came from.
    pub(super) last: Option<usize>,
}

impl LaneSet {
    pub(super) fn new(lanes: Vec<Lane>) -> Self {
        let appends = lanes
            .iter()
            .map(|lane| {
                let log = lane.membership.settings.stream.clone();
                lane.membership
                    .driver
                    .changes()
                    .subscribe(Topic::Stream(log))
            })
            .collect();
        let count = lanes.len();
        LaneSet {
            lanes,
            appends,
            dirty: vec![true; count],
            handed_over: vec![None; count],
            turn: 0,
            last: None,
        }
    }

    /// Hands over the lanes the roster gave to other members: their buffered messages are
    /// dropped (the new owner delivers them), and the release runs in the background.
    pub(super) fn hand_over_revoked(&mut self) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let Role::Active { generation, .. } = lane.membership.role() else {
                continue;
            };
            if !lane.membership.revoked() || self.handed_over[i] == Some(generation) {
                continue;
            }
            self.handed_over[i] = Some(generation);
            lane.cursor.drop_buffered();
            // Should the partition come back in this claim (the release failed and the
            // roster gave it back), it is read again from where delivery stopped.
            self.dirty[i] = true;
            let membership = Arc::clone(&lane.membership);
            tokio::spawn(async move {
                if let Err(error) = membership.release().await {
                    tracing::warn!(
                        stream = %membership.settings.stream,
                        group = %membership.settings.group,
                        error = %Chain(&error),
                        "could not hand over a revoked partition; its lane retries"
                    );
                }
            });
        }
    }

    /// Marks lane `i` to be read at the next look (its cursor went back).
    pub(super) fn mark_dirty(&mut self, i: usize) {
        if let Some(dirty) = self.dirty.get_mut(i) {
            *dirty = true;
        }
    }

    /// [`Error::GroupDeleted`] once any lane's group record was deleted under it.
    fn check_deleted(&self) -> Result<(), Error> {
        self.lanes
            .iter()
            .try_for_each(|lane| lane.membership.check_deleted())
    }

    /// Whether lane `i` may deliver now: active, and not revoked.
    fn deliverable(&self, i: usize) -> bool {
        self.lanes[i].is_active() && !self.lanes[i].membership.revoked()
    }

    /// Makes sure a message is buffered in some lane if one is available; remembers which.
    pub(super) async fn fill(&mut self) -> Result<bool, Error> {
        self.check_deleted()?;
        self.hand_over_revoked();
        let count = self.lanes.len();
        for k in 0..count {
            let i = (self.turn + k) % count;
            if !self.deliverable(i) {
                continue;
            }
            // A buffered message may still need clearing (a probe, a crash suspect): the
            // lane's `fill` does that without reading.
            if self.lanes[i].has_buffered() && self.lanes[i].fill().await? {
                self.turn = i;
                return Ok(true);
            }
            if self.appends[i].has_changed() || self.lanes[i].claim_is_new() {
                self.dirty[i] = true;
            }
            if self.lanes[i].cursor.held_back() {
                // A nack holds the lane: its delay runs (`wait` wakes when it is over) or
                // what it sent back is to be read again. The lane stays marked either way.
                self.dirty[i] = true;
                if self.lanes[i].cursor.paused() {
                    continue;
                }
            }
            if !self.dirty[i] {
                continue;
            }
            // Seen before the read: an append during it marks the lane again. A read-ahead
            // started before this point may predate appends whose notifications are now
            // marked seen: if it comes back empty, read once more, afresh.
            self.appends[i].mark_seen();
            let read_ahead = self.lanes[i].cursor.reading_ahead();
            if self.lanes[i].fill().await? || (read_ahead && self.lanes[i].fill().await?) {
                self.turn = i;
                return Ok(true);
            }
            // A claim that begins with a nacked message's delay stays marked for after it.
            if !self.lanes[i].cursor.held_back() {
                self.dirty[i] = false;
            }
        }
        Ok(false)
    }

    /// The next buffered message, from the lane `fill` found; the turn moves on.
    pub(super) fn pop(&mut self) -> Option<Message> {
        let count = self.lanes.len();
        for k in 0..count {
            let i = (self.turn + k) % count;
            if !self.deliverable(i) {
                continue;
            }
            if let Some(message) = self.lanes[i].pop() {
                self.last = Some(i);
                self.turn = (i + 1) % count;
                return Some(message);
            }
        }
        None
    }

    /// Takes note of a lane claimed since the caller last looked; returns whether there was
    /// one. Its claim is read from where it resumes, appends or not.
    pub(super) fn take_new_claim(&mut self) -> bool {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if let Role::Active { generation, .. } = lane.membership.role()
                && lane.seen_generation != Some(generation)
                && !lane.membership.revoked()
            {
                lane.sync_with_role(lane.membership.role());
                lane.seen_generation = Some(generation);
                self.dirty[i] = true;
                return true;
            }
        }
        false
    }

    /// Looks for messages in the lanes that may have some (marked, notified, or a nack's
    /// delay over); returns whether one is ready.
    pub(super) async fn look(&mut self) -> Result<bool, Error> {
        self.check_deleted()?;
        for i in 0..self.lanes.len() {
            if !self.deliverable(i) {
                continue;
            }
            if self.lanes[i].has_buffered() {
                return Ok(true);
            }
            if self.lanes[i].cursor.held_back() {
                // A nack's delay runs (its timer wakes the caller), or what it sent back
                // waits to be read: the lane stays marked either way.
                self.dirty[i] = true;
                if self.lanes[i].cursor.paused() {
                    continue;
                }
            }
            if !(self.dirty[i] || self.appends[i].has_changed()) {
                continue;
            }
            self.appends[i].mark_seen();
            let Role::Active { generation, .. } = self.lanes[i].membership.role() else {
                continue;
            };
            if self.lanes[i].look_for_messages(generation).await? {
                self.turn = i;
                return Ok(true);
            }
            if !self.lanes[i].cursor.held_back() {
                self.dirty[i] = false;
            }
        }
        Ok(false)
    }

    /// A watch of each lane's role, for [`events`](LaneSet::events).
    pub(super) fn roles(&self) -> Vec<watch::Receiver<Role>> {
        self.lanes
            .iter()
            .map(|lane| lane.membership.watch_role())
            .collect()
    }

    /// What a waiting caller waits for in these lanes: appends to an active lane, the end of
    /// a nack's delay in a lane that may deliver, and any change of role (from `roles`).
    pub(super) fn events<'a>(
        &'a mut self,
        roles: &'a mut [watch::Receiver<Role>],
    ) -> Vec<Event<'a>> {
        // Events are numbered: an append wakes its lane (its notification is consumed by the
        // wait, so the lane is marked to be read); the others only make the caller look again.
        let mut events: Vec<Event<'a>> = Vec::new();
        for (i, appends) in self.appends.iter_mut().enumerate() {
            let lane = &self.lanes[i];
            if lane.is_active() {
                events.push((Some(i), Box::pin(appends.changed())));
                // Only a lane that may deliver: a revoked one is never read again, and its
                // timer, once over, would wake the caller at once, over and over.
                if !lane.membership.revoked()
                    && let Some(until) = lane.cursor.paused_until
                {
                    events.push((Some(i), Box::pin(sleep_until_some(Some(until)))));
                }
            }
        }
        for role in roles {
            events.push((
                None,
                Box::pin(async move {
                    if role.changed().await.is_err() {
                        // The lane's task is gone: nothing more will come from it.
                        std::future::pending::<()>().await;
                    }
                }),
            ));
        }
        events
    }

    /// Finishes the lanes' background commits and stops their tasks, then releases what they
    /// hold. The first error is returned, after everything was attempted.
    pub(super) async fn close(mut self) -> Result<(), Error> {
        let mut result = self.quiesce().await;
        let released = self.release().await;
        if result.is_ok() {
            result = released;
        }
        result
    }

    /// Finishes the background commits and stops the lanes' tasks (a commit must not race
    /// the next owners); returns the first error.
    pub(super) async fn quiesce(&mut self) -> Result<(), Error> {
        let mut result = Ok(());
        for lane in &mut self.lanes {
            let finished = lane.quiesce().await;
            if result.is_ok() {
                result = finished;
            }
        }
        result
    }

    /// Releases every record a lane holds; returns the first error.
    pub(super) async fn release(&self) -> Result<(), Error> {
        let mut result = Ok(());
        for lane in &self.lanes {
            let released = lane.membership.release().await;
            if result.is_ok() {
                result = released;
            }
        }
        result
    }
}

/// Something a waiting caller waits for, and the lane it marks to be read when it happens.
pub(super) type Event<'a> = (Option<usize>, Pin<Box<dyn Future<Output = ()> + Send + 'a>>);

/// Returns when the first of `events` does (never, if there is none), with its lane.
pub(super) async fn first_of(mut events: Vec<Event<'_>>) -> Option<usize> {
    std::future::poll_fn(|cx| {
        for (lane, event) in &mut events {
            if event.as_mut().poll(cx).is_ready() {
                return Poll::Ready(*lane);
            }
        }
        Poll::Pending
    })
    .await
}

//! A member of a group over partitions: one [`Lane`] per partition of the stream, active in
//! those it owns, and the group's [`Roster`].
//!
//! Messages come from the owned lanes in turn (a lane with messages buffered first, then
//! lanes whose partition was notified since it was last found empty, so a member at the head
//! of every partition makes no storage reads). A partition the roster gives to another member
//! is handed over when the application next asks for messages (`next`, `wait`): by then it has
//! committed what it finished; what it received and did not commit is delivered again to the
//! new owner, as after any takeover. The lane's background task hands it over anyway
//! `heartbeat_every` after the revocation, for an application that stops asking.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::builder::Settings;
use super::lane::Lane;
use super::membership::Role;
use super::roster::Roster;
use super::wait::{Wake, deadline_after, sleep_until_some};
use crate::driver::{Backoff, Subscription, Topic};
use crate::error::{Chain, Error};
use crate::message::Message;

#[derive(Debug)]
pub(super) struct Partitioned {
    pub(super) roster: Arc<Roster>,
    pub(super) lanes: Vec<Lane>,
    pub(super) settings: Settings,
    /// Per lane: notifications of its partition's log.
    appends: Vec<Subscription>,
    /// Per lane: it may have messages past its cursor (notified, or not read since claimed).
    dirty: Vec<bool>,
    /// Per lane: the generation whose revocation was already handed over.
    handed_over: Vec<Option<u64>>,
    /// The lane to look at first next time, so busy partitions cannot starve the others.
    turn: usize,
    /// The lane the last message came from.
    pub(super) last: Option<usize>,
    /// The partitions the caller has been told it is assigned (by `build` or `wait`).
    seen_assignment: Vec<u32>,
    /// The admission of this member after its `join_delay`, while it waits among the joining.
    admitting: Option<AbortOnDrop>,
}

/// A task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Partitioned {
    pub(super) fn new(roster: Arc<Roster>, lanes: Vec<Lane>, settings: Settings) -> Self {
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
        let seen_assignment = roster.my_partitions();
        Partitioned {
            roster,
            lanes,
            settings,
            appends,
            dirty: vec![true; count],
            handed_over: vec![None; count],
            turn: 0,
            last: None,
            seen_assignment,
            admitting: None,
        }
    }

    /// Admits this member (and whoever else waits to join) once its `join_delay` has passed,
    /// retrying after storage errors for as long as the consumer lives.
    pub(super) fn admit_after_delay(&mut self) {
        let roster = Arc::clone(&self.roster);
        let delay = self.settings.join_delay;
        self.admitting = Some(AbortOnDrop(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            while let Err(error) = roster.admit().await {
                let pause = backoff.failed();
                tracing::warn!(
                    member = %roster.member,
                    error = %Chain(&error),
                    retry_in = ?pause,
                    "could not admit the joining members"
                );
                tokio::time::sleep(pause).await;
            }
        })));
    }

    /// The partitions this member owns now.
    pub(super) fn owned(&self) -> Vec<u32> {
        (0..self.lanes.len())
            .filter(|&i| self.lanes[i].is_active())
            .map(partition_of)
            .collect()
    }

    /// Hands over the partitions the roster gave to other members: their buffered messages
    /// are dropped (the new owner delivers them), and the release runs in the background.
    fn hand_over_revoked(&mut self) {
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

    /// Marks `partition`'s lane to be read at the next look (its cursor went back).
    pub(super) fn mark_dirty(&mut self, partition: u32) {
        if let Some(dirty) = self.dirty.get_mut(partition as usize) {
            *dirty = true;
        }
    }

    /// Whether this lane may deliver now: active, and not revoked.
    fn deliverable(&self, i: usize) -> bool {
        self.lanes[i].is_active() && !self.lanes[i].membership.revoked()
    }

    /// Makes sure a message is buffered in some lane if one is available; remembers which.
    pub(super) async fn fill(&mut self) -> Result<bool, Error> {
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

    /// Waits until there is something to do; see [`Consumer::wait`](super::Consumer::wait).
    pub(super) async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        let deadline = deadline_after(timeout);
        let mut assignment = self.roster.watch();
        loop {
            self.hand_over_revoked();
            assignment.borrow_and_update();
            let mine = self.roster.my_partitions();
            if mine != self.seen_assignment {
                self.seen_assignment = mine;
                return Ok(Wake::Assignment);
            }
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                if let Role::Active { generation, .. } = lane.membership.role()
                    && lane.seen_generation != Some(generation)
                    && !lane.membership.revoked()
                {
                    lane.sync_with_role(lane.membership.role());
                    lane.seen_generation = Some(generation);
                    // A new claim is read from where it resumes, appends or not.
                    self.dirty[i] = true;
                    return Ok(Wake::Activated);
                }
            }
            for i in 0..self.lanes.len() {
                if !self.deliverable(i) {
                    continue;
                }
                if self.lanes[i].has_buffered() {
                    return Ok(Wake::Messages);
                }
                if self.lanes[i].cursor.held_back() {
                    // A nack's delay runs (its timer below wakes us), or what it sent back
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
                    return Ok(Wake::Messages);
                }
                if !self.lanes[i].cursor.held_back() {
                    self.dirty[i] = false;
                }
            }
            let mut roles: Vec<_> = self
                .lanes
                .iter()
                .map(|lane| lane.membership.watch_role())
                .collect();
            // Events are numbered: an append wakes its lane (its notification is consumed by
            // the wait, so the lane is marked to be read); the others only make us look again.
            let mut events: Vec<Event<'_>> = Vec::new();
            for (i, appends) in self.appends.iter_mut().enumerate() {
                let lane = &self.lanes[i];
                if lane.is_active() {
                    events.push((Some(i), Box::pin(appends.changed())));
                    // Only a lane that may deliver: a revoked one is never read again, and its
                    // timer, once over, would wake us at once, over and over.
                    if !lane.membership.revoked()
                        && let Some(until) = lane.cursor.paused_until
                    {
                        events.push((Some(i), Box::pin(sleep_until_some(Some(until)))));
                    }
                }
            }
            for role in &mut roles {
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
            events.push((
                None,
                Box::pin(async {
                    if assignment.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }),
            ));
            let woken = tokio::select! {
                woken = first_of(events) => woken,
                () = tokio::time::sleep_until(deadline) => return Ok(Wake::TimedOut),
            };
            if let Some(lane) = woken {
                self.dirty[lane] = true;
            }
        }
    }

    /// Leaves the group gracefully. Background commits are finished and the lanes' tasks
    /// stopped first (a commit must not race the new owners), then the member releases what
    /// it owns and leaves the roster (the others get its partitions at once; not a member
    /// with a stable id, see below). The first error is returned, after everything was
    /// attempted.
    pub(super) async fn close(self) -> Result<(), Error> {
        let mut result = Ok(());
        let mut lanes = self.lanes;
        for lane in &mut lanes {
            let finished = lane.quiesce().await;
            if result.is_ok() {
                result = finished;
            }
        }
        // Released before the member leaves: the roster keeps the partitions with this member
        // until it leaves, so nobody claims them in between, and whoever does afterwards finds
        // them released, which is not a crash (see `poison`).
        for lane in &lanes {
            let released = lane.membership.release().await;
            if result.is_ok() {
                result = released;
            }
        }
        // A member with a stable id stays in the roster, so that its restart moves nothing
        // (Kafka's static membership): its partitions wait for it, released, and go to the
        // others only if messages wait for `takeover_after` without it coming back.
        if self.settings.member_id.is_none() {
            let left = self.roster.leave().await;
            if result.is_ok() {
                result = left;
            }
        }
        result
    }
}

/// Lanes are in partition order.
fn partition_of(lane: usize) -> u32 {
    u32::try_from(lane).unwrap_or(u32::MAX)
}

/// Something `wait` waits for, and the lane it marks to be read when it happens.
type Event<'a> = (Option<usize>, Pin<Box<dyn Future<Output = ()> + Send + 'a>>);

/// Returns when the first of `events` does (never, if there is none), with its lane.
async fn first_of(mut events: Vec<Event<'_>>) -> Option<usize> {
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

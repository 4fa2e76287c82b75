//! A member of a group over partitions: one [`Lane`] per partition of the stream, active in
//! those it owns (see [`LaneSet`] for how they are read in turn), and the group's [`Roster`].
//!
//! A partition the roster gives to another member is handed over when the application next
//! asks for messages (`next`, `wait`). The lane's background task hands it over anyway
//! `heartbeat_every` after the revocation, for an application that stops asking.

use std::sync::Arc;
use std::time::Duration;

use super::builder::Settings;
use super::lane::Lane;
use super::lanes::{Event, LaneSet, first_of};
use super::roster::Roster;
use super::wait::{Wake, deadline_after};
use crate::driver::Backoff;
use crate::error::{Chain, Error};
use crate::message::Message;

#[derive(Debug)]
pub(super) struct Partitioned {
    pub(super) roster: Arc<Roster>,
    /// One lane per partition, in partition order.
    pub(super) set: LaneSet,
    pub(super) settings: Settings,
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
        let seen_assignment = roster.my_partitions();
        Partitioned {
            roster,
            set: LaneSet::new(lanes),
            settings,
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
        (0..self.set.lanes.len())
            .filter(|&i| self.set.lanes[i].is_active())
            .map(partition_of)
            .collect()
    }

    /// Marks `partition`'s lane to be read at the next look (its cursor went back).
    pub(super) fn mark_dirty(&mut self, partition: u32) {
        self.set.mark_dirty(partition as usize);
    }

    /// Makes sure a message is buffered in some lane if one is available.
    pub(super) async fn fill(&mut self) -> Result<bool, Error> {
        self.set.fill().await
    }

    /// The next buffered message, from the lane `fill` found.
    pub(super) fn pop(&mut self) -> Option<Message> {
        self.set.pop()
    }

    /// Waits until there is something to do; see [`Consumer::wait`](super::Consumer::wait).
    pub(super) async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        let deadline = deadline_after(timeout);
        let mut assignment = self.roster.watch();
        loop {
            self.set.hand_over_revoked();
            assignment.borrow_and_update();
            let mine = self.roster.my_partitions();
            if mine != self.seen_assignment {
                self.seen_assignment = mine;
                return Ok(Wake::Assignment);
            }
            if self.set.take_new_claim() {
                return Ok(Wake::Activated);
            }
            if self.set.look().await? {
                return Ok(Wake::Messages);
            }
            let mut roles = self.set.roles();
            let mut events: Vec<Event<'_>> = self.set.events(&mut roles);
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
                self.set.mark_dirty(lane);
            }
        }
    }

    /// Leaves the group gracefully. Background commits are finished and the lanes' tasks
    /// stopped first (a commit must not race the new owners), then the member releases what
    /// it owns and leaves the roster (the others get its partitions at once; not a member
    /// with a stable id, see below). The first error is returned, after everything was
    /// attempted.
    pub(super) async fn close(mut self) -> Result<(), Error> {
        let mut result = self.set.quiesce().await;
        // Released before the member leaves: the roster keeps the partitions with this member
        // until it leaves, so nobody claims them in between, and whoever does afterwards finds
        // them released, which is not a crash (see `poison`).
        let released = self.set.release().await;
        if result.is_ok() {
            result = released;
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

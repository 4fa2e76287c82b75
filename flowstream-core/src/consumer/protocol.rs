//! The background task of a consumer: joining the group, heartbeat and takeover.
//!
//! Each consumer runs one [`Watcher`]. It reacts to notifications (the group record changed,
//! the stream grew) and to its own deadlines, measured on this process's monotonic clock only:
//!
//! - **Standby** (guarantee 4): takes over at once when the group is marked inactive (graceful
//!   shutdown); otherwise when messages past the committed offset have been pending, and the
//!   group state has not changed, for `takeover_after`. The clock starts at the *later* of the
//!   last change of the group state it saw and the moment it first saw messages pending, so an
//!   idle group that gets busy is not mistaken for a dead owner, and a group whose owner died
//!   while idle is still taken over once messages arrive (its timer is armed by stream
//!   notifications, not only by group-state changes). While messages are pending it re-reads
//!   the group state every `takeover_after / 4`, because routine commits and heartbeats do not
//!   notify.
//! - **Active** (guarantee 5): writes a heartbeat only when messages are pending and
//!   `heartbeat_every` has passed since the later of its own last write and the moment it first
//!   saw them pending. An idle group is never written to.
//!
//! Nothing here polls while the group is idle: with no messages pending there is no deadline,
//! and the task sleeps until a notification arrives (guarantee 8).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};

use super::builder::StartFrom;
use super::membership::Membership;
use super::state::StoredGroup;
use crate::driver::{Backoff, Revision, Subscription, Topic};
use crate::error::{Chain, Error};

/// When to look at the group again: `None` means only when notified.
pub(crate) type NextCheck = Option<Instant>;

/// The background task's state.
#[derive(Debug)]
pub(crate) struct Watcher {
    membership: Arc<Membership>,
    group_changes: Subscription,
    stream_changes: Subscription,
    /// The roster's notifications, in a group over partitions.
    roster_changes: Option<Subscription>,
    last_revision: Option<Revision>,
    /// In a group over partitions: the instance last seen responsible for the partition.
    responsible: Option<String>,
    /// When this consumer first saw that it owns a partition the roster gave to another.
    revoked_since: Option<Instant>,
    last_change: Instant,
    pending_since: Option<Instant>,
    /// After a storage error: 20 ms, doubling up to 2 s.
    backoff: Backoff,
}

impl Watcher {
    /// Subscribes before the first read, so no change after it can be missed.
    pub(crate) fn new(membership: Arc<Membership>) -> Self {
        let hub = membership.driver.changes();
        let group_changes = hub.subscribe(Topic::Record(membership.key.clone()));
        let stream_changes = hub.subscribe(Topic::Stream(membership.settings.stream.clone()));
        let roster_changes = membership
            .lane
            .as_ref()
            .map(|(roster, _)| hub.subscribe(Topic::Record(roster.key.clone())));
        Watcher {
            membership,
            group_changes,
            stream_changes,
            roster_changes,
            last_revision: None,
            responsible: None,
            revoked_since: None,
            last_change: Instant::now(),
            pending_since: None,
            backoff: Backoff::new(Duration::from_millis(20), Duration::from_secs(2)),
        }
    }

    /// Runs until `stop` fires or its sender is dropped. `next` is the result of the first
    /// step, which the builder ran before spawning.
    pub(crate) async fn run(mut self, mut next: NextCheck, mut stop: oneshot::Receiver<()>) {
        loop {
            let deadline = async {
                match next {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stop => return,
                () = self.group_changes.changed() => {}
                () = roster_changed(self.roster_changes.as_mut()) => {}
                // New messages only matter while none were known to be pending: once they
                // are, a deadline is armed and the next look happens then (this also keeps
                // an error back-off from being cut short by every append).
                () = self.stream_changes.changed(), if next.is_none() => {}
                () = deadline => {}
            }
            // The step reads everything afresh, so it answers every notification that came
            // before it: one that fired alongside the one selected (a wake-all fires both)
            // must not run it a second time.
            self.group_changes.mark_seen();
            self.stream_changes.mark_seen();
            if let Some(roster) = self.roster_changes.as_mut() {
                roster.mark_seen();
            }
            // Not raced with `stop`: a shutdown lets a write in flight (a takeover, say)
            // finish, so that it can release what that write claimed.
            let result = self.step().await;
            next = self.schedule(result);
        }
    }

    /// Turns a step's outcome into the next deadline, backing off after errors.
    pub(crate) fn schedule(&mut self, result: Result<NextCheck, Error>) -> NextCheck {
        match result {
            Ok(next) => {
                self.backoff.succeeded();
                next
            }
            Err(error) => {
                let delay = self.backoff.failed();
                tracing::warn!(
                    group = %self.membership.settings.group,
                    consumer = %self.membership.id,
                    error = %Chain(&error),
                    retry_in = ?delay,
                    "group check failed"
                );
                Some(Instant::now() + delay)
            }
        }
    }

    /// Reads the group state and does what the protocol asks of this consumer now.
    pub(crate) async fn step(&mut self) -> Result<NextCheck, Error> {
        let shared = Arc::clone(&self.membership);
        let now = Instant::now();
        let stored = shared.read_state().await?;
        if stored.is_none() && shared.deleted() {
            // Deleted under us: claim nothing (the consumer reports it to the application).
            return Ok(None);
        }
        if let Some((roster, _)) = &shared.lane {
            // Read after the record (see `Membership::may_claim`).
            roster.refresh().await?;
            roster.rejoin_if_evicted().await?;
        }
        let Some((state, revision)) = stored else {
            if shared.may_claim(None) {
                let committed = match shared.settings.start_from {
                    // Reading after 0 starts at the first message still stored anyway; only
                    // a consumer that reports trimmed gaps needs its exact place (a group
                    // created at 0 on a trimmed stream would look like one with a gap).
                    StartFrom::Earliest if !shared.settings.fail_if_trimmed => 0,
                    start => {
                        crate::seek::committed_for(
                            shared.driver.as_ref(),
                            &shared.settings.stream,
                            start.place(),
                        )
                        .await?
                    }
                };
                shared.create_group(committed).await?;
                // Look again at once: we either own the group now or someone else created it.
                return Ok(Some(Instant::now()));
            }
            // A partition nobody has claimed yet: its assignee must, once messages wait.
            return self.watch_silence(None, 0, now).await;
        };
        if self.last_revision != Some(revision) {
            self.last_revision = Some(revision);
            self.last_change = now;
        }
        shared.observe(&state, revision, false);
        if shared.deleted() {
            // The record was made again after a delete this consumer missed (see
            // `Membership::observe`): it is not this consumer's group any more.
            return Ok(None);
        }

        if state.owner == shared.id && state.active {
            if shared.revoked() {
                return self.release_when_due(now).await;
            }
            self.revoked_since = None;
            return self.heartbeat_if_due(&state).await;
        }
        if shared.may_claim(Some(&state)) {
            let reason = if state.active {
                "the owner is no longer a member of the group"
            } else {
                "previous owner shut down"
            };
            shared.take_over(&state, revision, reason).await?;
            return Ok(Some(Instant::now()));
        }
        self.watch_silence(Some(&state), state.committed, now).await
    }

    /// Someone else owns the record, or should claim it: if messages stay pending past
    /// `committed` with no change for `takeover_after`, take over (alone) or evict the silent
    /// member from the roster (in a group over partitions), whose partitions then move.
    async fn watch_silence(
        &mut self,
        state: Option<&StoredGroup>,
        committed: u64,
        now: Instant,
    ) -> Result<NextCheck, Error> {
        let shared = Arc::clone(&self.membership);
        // In a group over partitions, who must show life for this partition: its owner while
        // it holds it and is a member, else the member the roster gives it to. A new one gets
        // `takeover_after` from when we first see it, as after a change of the record; other
        // partitions' changes of the roster restart nothing here.
        let responsible = shared
            .lane
            .as_ref()
            .and_then(|(roster, partition)| match state {
                Some(s)
                    if s.active && roster.current().is_some_and(|r| r.has_instance(&s.owner)) =>
                {
                    Some(s.owner.clone())
                }
                _ => roster.assignee_instance(*partition),
            });
        if responsible != self.responsible {
            self.responsible.clone_from(&responsible);
            self.last_change = now;
        }
        if !self.pending(committed, now).await? {
            return Ok(None);
        }
        let since = self.pending_since.unwrap_or(now);
        let takeover_at = self.last_change.max(since) + shared.settings.takeover_after;
        let look_again = now + shared.settings.takeover_after / 4;
        if now < takeover_at {
            return Ok(Some(takeover_at.min(look_again)));
        }
        const SILENT: &str = "messages pending and the group state unchanged for takeover_after";
        let Some((roster, _)) = &shared.lane else {
            if let Some(state) = state {
                // Read at the start of this step; a change since makes the write conflict.
                let revision = self.last_revision.unwrap_or(Revision(0));
                shared.take_over(state, revision, SILENT).await?;
                return Ok(Some(Instant::now()));
            }
            return Ok(Some(look_again));
        };
        let Some(silent) = responsible.filter(|i| *i != shared.id) else {
            // Nobody to evict (nobody responsible, or it is this consumer, which the step
            // handles): look again later, never in a tight loop.
            return Ok(Some(look_again));
        };
        // The eviction is a write on the roster, not on this record: make sure the record
        // has not moved since we judged it (a heartbeat that just landed), as a takeover's
        // compare-and-swap would.
        let fresh = shared.read_state().await?.map(|(_, revision)| revision);
        if fresh != state.and(self.last_revision) {
            return Ok(Some(Instant::now()));
        }
        if roster.evict(&silent, SILENT).await? {
            Ok(Some(Instant::now()))
        } else {
            // Not evicted (this member is not listed itself, say, while it waits to be
            // admitted): look again later, never in a tight loop.
            Ok(Some(look_again))
        }
    }

    /// This consumer owns a partition the roster now gives to another member. The consumer's
    /// own calls hand it over as soon as the application asks for more; this is the bound for
    /// an application that does not: `heartbeat_every` after the revocation was seen (below
    /// `takeover_after`, so the new owner never mistakes the draining owner for a dead one).
    async fn release_when_due(&mut self, now: Instant) -> Result<NextCheck, Error> {
        let shared = Arc::clone(&self.membership);
        let since = *self.revoked_since.get_or_insert(now);
        let due = since + shared.settings.heartbeat_every;
        if now < due {
            return Ok(Some(due));
        }
        shared.release().await?;
        self.revoked_since = None;
        Ok(None)
    }

    async fn heartbeat_if_due(&mut self, state: &StoredGroup) -> Result<NextCheck, Error> {
        let shared = Arc::clone(&self.membership);
        let now = Instant::now();
        if !self.pending(state.committed, now).await? {
            return Ok(None);
        }
        let since = self.pending_since.unwrap_or(now);
        let due = shared.last_write().max(since) + shared.settings.heartbeat_every;
        if now < due {
            return Ok(Some(due));
        }
        match shared
            .write_as_owner(state.generation, false, |_| true)
            .await
        {
            Ok(()) => {
                tracing::debug!(
                    group = %shared.settings.group,
                    consumer = %shared.id,
                    generation = state.generation,
                    "heartbeat"
                );
                Ok(Some(Instant::now() + shared.settings.heartbeat_every))
            }
            // We are standby now; look at the group again as one.
            Err(Error::Fenced { .. }) => Ok(Some(Instant::now())),
            Err(e) => Err(e),
        }
    }

    /// Whether messages exist past the committed offset; tracks when we first saw them.
    async fn pending(&mut self, committed: u64, now: Instant) -> Result<bool, Error> {
        let head = self
            .membership
            .driver
            .head(&self.membership.settings.stream)
            .await?;
        if head > committed {
            self.pending_since.get_or_insert(now);
            Ok(true)
        } else {
            self.pending_since = None;
            Ok(false)
        }
    }
}

/// Waits for the roster's next notification; never, for a consumer without a roster.
async fn roster_changed(subscription: Option<&mut Subscription>) {
    match subscription {
        Some(subscription) => subscription.changed().await,
        None => std::future::pending().await,
    }
}

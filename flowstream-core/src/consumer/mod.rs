//! Reading a stream as a member of a consumer group.
//!
//! On an unpartitioned stream one consumer of a group is *active*: it receives the messages
//! and commits. The others are *standby* and take over when the active one shuts down or
//! stops making progress. On a partitioned stream each partition works that way, and the
//! group's roster spreads the partitions over its members. Where each part lives:
//!
//! - [`builder`]: settings and joining the group;
//! - [`lane`]: one consumer's place in one group record (the stream's, or a partition's);
//! - [`membership`]: the role a lane holds and every write to its group record (claims,
//!   commits, heartbeats, release, fencing);
//! - [`protocol`]: a lane's background task that heartbeats, takes over, hands over;
//! - [`roster`]: the members of a group over partitions and who should own which partition;
//! - [`lanes`]: a set of lanes read in turn;
//! - [`partitioned`]: a member of a group over partitions, one lane per partition;
//! - [`cursor`]: the read-ahead position in a lane;
//! - [`commit`]: the two commit paths;
//! - [`in_tx`]: commits written inside the application's own transaction;
//! - [`retry`]: nacks, their delays, and dead letters;
//! - [`park`]: retries parked in the group's retry streams, read as lanes of their own;
//! - [`poison`]: counting the crashes a message causes, and dead-lettering it at the limit;
//! - [`wait`]: waiting on notifications;
//! - [`state`]: the group record's stored shape and its typed view;
//! - [`stream`]: the `futures::Stream` view.

mod builder;
mod commit;
mod cursor;
mod in_tx;
mod lane;
mod lanes;
mod membership;
mod park;
mod partitioned;
mod poison;
mod protocol;
mod retry;
mod roster;
mod state;
mod stream;
mod wait;

use std::fmt::Display;
use std::time::Duration;

pub use builder::{
    ConsumerBuilder, DEFAULT_BATCH_SIZE, DEFAULT_HEARTBEAT_EVERY, DEFAULT_JOIN_DELAY,
    DEFAULT_TAKEOVER_AFTER, MAX_BATCH_SIZE, MAX_TAKEOVER_AFTER, StartFrom,
};
pub use in_tx::TxCommit;
use lane::Lane;
use park::Parked;
use partitioned::Partitioned;
pub use retry::{MAX_RETRY_DELAY, Nacked, RetryBackoff, dead_letter_headers};
pub(crate) use retry::{micros_since_epoch, millis_since_epoch};
pub(crate) use roster::{StoredRoster, roster_key};
pub use state::GroupState;
pub(crate) use state::{StoredGroup, decode as decode_group, group_key};
pub use stream::ConsumerStream;
pub use wait::Wake;

use crate::driver::{Driver, DriverError};
use crate::error::Error;
use crate::message::Message;
use std::sync::Arc;

/// A member of a consumer group on one stream.
///
/// ```no_run
/// # async fn demo(driver: std::sync::Arc<dyn flowstream_core::Driver>) -> Result<(), flowstream_core::Error> {
/// use std::time::Duration;
/// use flowstream_core::Consumer;
///
/// let mut consumer = Consumer::builder(driver, "orders", "billing").build().await?;
/// loop {
///     while let Some(msg) = consumer.next().await? {      // None: at the head, or standby
///         println!("{}: {:?}", msg.offset(), msg.body_str());  // must be idempotent
///         consumer.commit(&msg).await?;                    // or commit every N messages
///     }
///     consumer.wait(Duration::from_secs(5)).await?;       // new data, activation or timeout
/// }
/// # }
/// ```
///
/// Delivery is at least once: after a crash or a takeover, the group resumes right after its
/// committed offset, so messages received but not yet committed are delivered again.
///
/// On a [partitioned](crate::Admin::create_stream) stream the group spreads the partitions
/// over its members (each partition has one owner), and a member receives the messages of the
/// partitions it owns, in order within each partition; [`assignment`](Consumer::assignment)
/// says which. The loop is the same; commit the message (or a [`Position`]), since an offset
/// alone does not say which partition.
///
/// Drop it to stop like a crash (a standby takes over after `takeover_after` once messages are
/// pending); call [`shutdown`](Consumer::shutdown) to hand the group over at once.
#[derive(Debug)]
pub struct Consumer {
    inner: Inner,
    /// Its lanes on the group's retry streams, when it parks retries.
    parked: Option<Parked>,
    /// Whether the message `fill` found (and `pop` returns) is a parked copy.
    from_parked: bool,
    /// Whether `fill` looks at the retry streams first: it alternates, so that neither the
    /// stream nor the retries can starve the other.
    parked_first: bool,
}

#[derive(Debug)]
enum Inner {
    /// An unpartitioned stream: one group record.
    Single(Lane),
    /// A partitioned stream: a lane per partition and the roster.
    Partitioned(Partitioned),
}

/// What a commit covers: a partition (`None`: the stream's only one) and the offset up to which
/// the group has processed it. Made from a [`Message`] (its partition and offset), from an
/// offset alone (unpartitioned streams), or with [`Position::new`].
#[derive(Debug, Clone, Copy)]
pub struct Position {
    partition: Option<u32>,
    offset: u64,
    /// For a parked copy: the delay tier of its retry stream.
    tier: Option<usize>,
    /// For a message: the generation of the claim it was delivered under, so that a commit
    /// (nack, dead letter) of it after that claim ended (a takeover, a reset) is fenced even
    /// when the consumer holds a newer claim. Not part of what the position names.
    generation: Option<u64>,
}

impl PartialEq for Position {
    fn eq(&self, other: &Self) -> bool {
        (self.partition, self.offset, self.tier) == (other.partition, other.offset, other.tier)
    }
}

impl Eq for Position {}

impl Position {
    /// `offset` of `partition`.
    pub fn new(partition: u32, offset: u64) -> Self {
        Position {
            partition: Some(partition),
            offset,
            tier: None,
            generation: None,
        }
    }

    /// The partition, if one was given.
    pub fn partition(&self) -> Option<u32> {
        self.partition
    }

    /// The offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl From<u64> for Position {
    /// An offset of an unpartitioned stream.
    fn from(offset: u64) -> Self {
        Position {
            partition: None,
            offset,
            tier: None,
            generation: None,
        }
    }
}

impl From<&Message> for Position {
    /// The message's partition, up to and including the message (for a parked copy: its
    /// retry stream).
    fn from(message: &Message) -> Self {
        Position {
            tier: crate::names::park_tier_of(message.log()),
            generation: message.delivered_in().map(|(_, generation)| generation),
            ..Position::new(message.partition(), message.offset())
        }
    }
}

impl Consumer {
    /// Starts configuring a consumer of `stream` in `group`.
    pub fn builder(
        driver: Arc<dyn Driver>,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> ConsumerBuilder {
        ConsumerBuilder::new(driver, stream.into(), group.into())
    }

    fn single(lane: Lane) -> Self {
        Consumer::of(Inner::Single(lane))
    }

    fn partitioned(partitioned: Partitioned) -> Self {
        Consumer::of(Inner::Partitioned(partitioned))
    }

    fn of(inner: Inner) -> Self {
        Consumer {
            inner,
            parked: None,
            from_parked: false,
            parked_first: false,
        }
    }

    fn with_parked(mut self, parked: Parked) -> Self {
        self.parked = Some(parked);
        self
    }

    /// The next message, or `None` when this consumer is standby (owns no partition) or has
    /// reached the head of what it owns (then [`wait`](Consumer::wait) for more, or use
    /// [`recv`](Consumer::recv), which waits).
    ///
    /// Returns from a buffer of up to `batch_size` messages, read in one storage call. While
    /// the application works through a full batch, the next one is read in the background, so
    /// a busy consumer rarely waits on storage. A member of a group over partitions takes
    /// messages from the partitions it owns in turn, and hands over a partition the group gave
    /// to another member when this is called (what it delivered and was not committed is
    /// delivered again, to the new owner).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped, no message is lost; the next call returns it.
    pub async fn next(&mut self) -> Result<Option<Message>, Error> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(self.pop())
    }

    /// Makes sure a message is buffered if one is available; `Ok(false)`: none is.
    pub(super) async fn fill(&mut self) -> Result<bool, Error> {
        let Some(parked) = &mut self.parked else {
            return self.inner.fill().await;
        };
        for from_parked in [self.parked_first, !self.parked_first] {
            let found = if from_parked {
                parked.set.fill().await?
            } else {
                self.inner.fill().await?
            };
            if found {
                self.from_parked = from_parked;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The next buffered message, marked as delivered.
    pub(super) fn pop(&mut self) -> Option<Message> {
        let message = match &mut self.parked {
            Some(parked) if self.from_parked => parked.set.pop(),
            _ => self.inner.pop(),
        };
        if message.is_some() && self.parked.is_some() {
            self.parked_first = !self.from_parked;
        }
        message
    }

    /// Whether this consumer is active right now: the active one of its group, or, in a group
    /// over partitions, the owner of at least one partition.
    pub fn is_active(&self) -> bool {
        match &self.inner {
            Inner::Single(lane) => lane.is_active(),
            Inner::Partitioned(parts) => !parts.owned().is_empty(),
        }
    }

    /// The partitions this consumer owns now, ascending: `[0]` for the active consumer of an
    /// unpartitioned stream, empty for a standby.
    pub fn assignment(&self) -> Vec<u32> {
        match &self.inner {
            Inner::Single(lane) if lane.is_active() => vec![0],
            Inner::Single(_) => Vec::new(),
            Inner::Partitioned(parts) => parts.owned(),
        }
    }

    /// This consumer's id, as written in the group state (unique per consumer instance).
    pub fn id(&self) -> &str {
        match &self.inner {
            Inner::Single(lane) => &lane.membership.id,
            Inner::Partitioned(parts) => &parts.roster.instance,
        }
    }

    /// Its member id in a group over partitions: the one set with
    /// [`ConsumerBuilder::member_id`], else its [`id`](Consumer::id). `None` on an
    /// unpartitioned stream.
    pub fn member_id(&self) -> Option<&str> {
        match &self.inner {
            Inner::Single(_) => None,
            Inner::Partitioned(parts) => Some(&parts.roster.member),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        match &self.inner {
            Inner::Single(lane) => &lane.membership.settings.stream,
            Inner::Partitioned(parts) => &parts.settings.stream,
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        match &self.inner {
            Inner::Single(lane) => &lane.membership.settings.group,
            Inner::Partitioned(parts) => &parts.settings.group,
        }
    }

    /// The generation of the claim under which the last message returned by `next()` was
    /// delivered (Kafka's generation id; in a group over partitions, the claim of that
    /// message's partition); `None` if this consumer has never been active. A commit of those
    /// messages succeeds only while this claim holds.
    pub fn generation(&self) -> Option<u64> {
        if let Some(parked) = self.parked.as_ref().filter(|_| self.from_parked) {
            return parked
                .set
                .last
                .and_then(|i| parked.set.lanes.get(i))
                .and_then(|lane| lane.cursor.generation);
        }
        match &self.inner {
            Inner::Single(lane) => lane.cursor.generation,
            Inner::Partitioned(parts) => parts
                .set
                .last
                .and_then(|i| parts.set.lanes.get(i))
                .and_then(|lane| lane.cursor.generation),
        }
    }

    /// The generation of the claim under which this consumer last delivered a message of
    /// `partition`; `None` if it never has (or the stream has no such partition). A commit of
    /// that partition's messages succeeds only while this claim holds.
    pub fn generation_in(&self, partition: u32) -> Option<u64> {
        self.lane(partition)?.cursor.generation
    }

    /// The group's committed offset as this consumer last saw it (of partition 0 on a
    /// partitioned stream; see [`committed_in`](Consumer::committed_in)).
    pub fn committed(&self) -> Option<u64> {
        self.committed_in(0)
    }

    /// The committed offset of `partition` as this consumer last saw it; `None` if it has not
    /// seen one, or the stream has no such partition.
    pub fn committed_in(&self, partition: u32) -> Option<u64> {
        self.lane(partition)?.membership.committed()
    }

    fn lane(&self, partition: u32) -> Option<&Lane> {
        match &self.inner {
            Inner::Single(lane) => (partition == 0).then_some(lane),
            Inner::Partitioned(parts) => parts.set.lanes.get(partition as usize),
        }
    }

    /// The lane a commit at `position` goes to.
    /// The lane `position` is in, for a commit: [`Error::Fenced`] for a message delivered
    /// under a claim of that lane that has ended, whatever claim the lane holds now.
    fn lane_to_commit(&mut self, position: Position) -> Result<&mut Lane, Error> {
        let lane = self.lane_for(position)?;
        if let Some(generation) = position.generation
            && lane.cursor.generation != Some(generation)
        {
            return Err(lane.membership.fenced(generation));
        }
        Ok(lane)
    }

    fn lane_for(&mut self, position: Position) -> Result<&mut Lane, Error> {
        let stream = self.stream().to_owned();
        if let Some(tier) = position.tier {
            return self
                .parked
                .as_mut()
                .and_then(|parked| parked.set.lanes.get_mut(tier))
                .ok_or_else(|| Error::WrongStream {
                    stream,
                    message_stream: "a retry stream (this consumer does not park retries)".into(),
                });
        }
        match (&mut self.inner, position.partition) {
            (Inner::Single(lane), None | Some(0)) => Ok(lane),
            (Inner::Single(_), Some(partition)) => Err(Error::NoSuchPartition {
                stream,
                partition,
                partitions: 1,
            }),
            (Inner::Partitioned(_), None) => Err(Error::PartitionRequired { stream }),
            (Inner::Partitioned(parts), Some(partition)) => {
                let partitions = u32::try_from(parts.set.lanes.len()).unwrap_or(u32::MAX);
                parts
                    .set
                    .lanes
                    .get_mut(partition as usize)
                    .ok_or(Error::NoSuchPartition {
                        stream,
                        partition,
                        partitions,
                    })
            }
        }
    }

    /// Commits `position` (a message, or an offset of an unpartitioned stream): the group has
    /// processed every message of its partition up to and including it.
    ///
    /// - Committing at or below the committed offset does nothing (commits are monotonic).
    /// - [`Error::CommitBeyondDelivered`] if `next()` has not returned that offset.
    /// - [`Error::Fenced`] if another consumer took the group (the partition) over since
    ///   these messages were delivered: nothing is committed, and this consumer is standby
    ///   (no longer owns the partition).
    /// - [`Error::Standby`] if this consumer has not been active (owned the partition).
    /// - [`Error::PartitionRequired`] for a bare offset on a partitioned stream;
    ///   [`Error::NoSuchPartition`] for a partition the stream lacks.
    ///
    /// A retryable storage error means the commit may or may not have been stored; committing
    /// again is safe.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the commit may or may not have been stored, as with a lost
    /// reply; committing the same offset again is safe. Nothing else is lost.
    pub async fn commit(&mut self, position: impl Into<Position>) -> Result<(), Error> {
        let position = position.into();
        self.lane_to_commit(position)?.commit(position.offset).await
    }

    /// Starts committing `position` and returns without waiting for storage, so the next
    /// messages can be handled while the commit is written (Kafka's `commitAsync`).
    ///
    /// The checks of [`commit`](Consumer::commit) (standby, beyond delivered) happen here, at
    /// once. The write itself runs in the background, one at a time per partition: if the
    /// previous one is still running, this waits for it first. Its result, [`Error::Fenced`]
    /// for example, is returned by the next call to `commit`, `commit_in_background` (of the
    /// same partition) or [`shutdown`](Consumer::shutdown); a fenced consumer also turns
    /// standby as with `commit`. Until then the offset may not be stored: after a crash,
    /// messages up to it may be delivered again (which at-least-once delivery allows).
    /// Dropping the consumer leaves a running write to finish or not.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped while it waits for the previous background commit, that
    /// commit keeps running and its result is kept for the next call; the new commit was not
    /// started. Once it returns, the write runs whatever the caller does.
    pub async fn commit_in_background(
        &mut self,
        position: impl Into<Position>,
    ) -> Result<(), Error> {
        let position = position.into();
        self.lane_to_commit(position)?
            .commit_in_background(position.offset)
            .await
    }

    /// Prepares a commit of `position` to be written inside the application's own
    /// transaction, next to the effects of handling the messages: stored with them or not at
    /// all, and fenced, so that a consumer that lost its group (partition) cannot store its
    /// effects either. The driver writes it: `PgDriver::commit_in` in a sqlx transaction on
    /// PostgreSQL, `AppTx::commit` in a `RedbDriver::write` transaction on redb (their docs
    /// show the whole loop).
    ///
    /// The checks of [`commit`](Consumer::commit) happen here ([`Error::Standby`],
    /// [`Error::CommitBeyondDelivered`], [`Error::Fenced`] if this consumer knows it lost the
    /// claim); the write checks ownership again, under a lock held until the transaction ends
    /// (see [`TxCommit::apply`]). Once the transaction commits, this consumer goes on as the
    /// owner; it learns of the new committed offset at its next write.
    ///
    /// [`Error::WrongStream`] for a message this consumer did not read (another stream, or
    /// another group's retry stream); [`Error::NotDeliveredHere`] for one another consumer
    /// delivered (of another group, say); [`Error::Fenced`] for one it delivered under a claim
    /// that has ended since (even if it holds a new claim now: another owner may have handled
    /// the message meanwhile). [`prepare_commit_at`](Consumer::prepare_commit_at) takes a
    /// [`Position`] instead, fenced by the current claim.
    pub fn prepare_commit(&mut self, message: &Message) -> Result<TxCommit, Error> {
        let stream = self.stream().to_owned();
        let position = Position::from(message);
        let lane = self.lane_for(position)?;
        if message.log() != lane.membership.settings.stream {
            return Err(Error::WrongStream {
                stream,
                message_stream: message.stream().to_owned(),
            });
        }
        // A message delivered under an earlier claim of this consumer: that claim ended, and
        // what it delivered may have been handled and committed by another owner since.
        if let Some((consumer, delivered_in)) = message.delivered_in() {
            if consumer != lane.membership.id {
                return Err(Error::NotDeliveredHere {
                    consumer: lane.membership.id.clone(),
                    group: lane.membership.settings.group.clone(),
                });
            }
            if lane
                .cursor
                .generation
                .is_some_and(|current| current != delivered_in)
            {
                return Err(lane.membership.fenced(delivered_in));
            }
        }
        self.prepare_commit_at(position)
    }

    /// As [`prepare_commit`](Consumer::prepare_commit), for a position (an offset of an
    /// unpartitioned stream, or a partition and offset).
    pub fn prepare_commit_at(&mut self, position: impl Into<Position>) -> Result<TxCommit, Error> {
        let position = position.into();
        let lane = self.lane_for(position)?;
        let generation = lane.check_commit(position.offset)?;
        let membership = &lane.membership;
        Ok(TxCommit::new(
            membership.key.clone(),
            membership.settings.group.clone(),
            membership.id.clone(),
            (generation, position.offset),
            membership.settings.takeover_after,
        ))
    }

    /// Reports that handling `message` failed: it is delivered again after a delay (from
    /// [`ConsumerBuilder::retry_backoff`], by how many of its deliveries failed), and its
    /// partition (the stream, when unpartitioned) delivers nothing else until then: later
    /// messages wait behind it, so order is kept. [`Message::attempt`] counts its deliveries.
    ///
    /// A nack also commits what came before the message in its partition (handled in order,
    /// it was handled), in the same single write that records the failure; with
    /// [`max_deliveries`](ConsumerBuilder::max_deliveries) reached, the message is
    /// [dead-lettered](Consumer::dead_letter) instead. A consumer that never nacks writes
    /// nothing more than it would without retries. The count and the delay live in the group
    /// record, so a consumer that takes the group (partition) over continues them; what is left
    /// of the delay is measured on its own clock then.
    ///
    /// Messages this consumer received after `message` are delivered again after it. Errors
    /// are those of [`commit`](Consumer::commit), [`Error::AlreadyCommitted`] for a message
    /// the group committed already and [`Error::WrongStream`] for one this consumer did not
    /// read; nothing is written then. `error` is logged, and kept with a dead letter (its
    /// first 4 KiB).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the nack may or may not have been stored; nacking again is
    /// safe (it may count one failure twice; a park or dead letter is never copied twice, and
    /// if this consumer has learnt of its commit meanwhile the call returns
    /// [`Error::AlreadyCommitted`]). Until a nack returns, this consumer goes on delivering as
    /// if it had not been called.
    pub async fn nack(
        &mut self,
        message: &Message,
        error: impl Display + Send,
    ) -> Result<Nacked, Error> {
        self.nack_with(message, None, error.to_string()).await
    }

    async fn nack_with(
        &mut self,
        message: &Message,
        delay: Option<Duration>,
        error: String,
    ) -> Result<Nacked, Error> {
        let position = Position::from(message);
        let nacked = self
            .lane_for(position)?
            .nack(message, delay, &error)
            .await?;
        if let Inner::Partitioned(parts) = &mut self.inner
            && position.tier.is_none()
        {
            // Its lane reads again once the delay is over.
            parts.mark_dirty(message.partition());
        }
        Ok(nacked)
    }

    /// As [`nack`](Consumer::nack), with `delay` instead of the backoff's: zero redelivers at
    /// once; over [`MAX_RETRY_DELAY`] is [`Error::DelayTooLong`], with nothing written.
    ///
    /// # Cancel safety
    ///
    /// As [`nack`](Consumer::nack).
    pub async fn nack_after(
        &mut self,
        message: &Message,
        delay: Duration,
        error: impl Display + Send,
    ) -> Result<Nacked, Error> {
        self.nack_with(message, Some(delay), error.to_string())
            .await
    }

    /// Moves `message` to the group's dead-letter stream
    /// ([`dead_letter_stream`](crate::dead_letter_stream)`(stream, group)`) and commits its
    /// partition up to it, in one transaction: it is never passed without its copy, and never
    /// copied twice (retrying after a lost reply finds the commit done and copies nothing).
    /// The copy keeps the body, key and headers, and says where it came from and why in the
    /// [`dead_letter_headers`]. The group goes on with the next message.
    ///
    /// Errors are those of [`nack`](Consumer::nack); [`Error::Fenced`] means nothing was
    /// copied nor committed.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the dead letter and its commit may or may not have been
    /// stored, together; calling it again is safe: it copies nothing twice, and returns
    /// `Ok` or, if this consumer has learnt of the earlier commit meanwhile,
    /// [`Error::AlreadyCommitted`].
    pub async fn dead_letter(
        &mut self,
        message: &Message,
        reason: impl Display + Send,
    ) -> Result<(), Error> {
        self.lane_for(Position::from(message))?
            .dead_letter(message, &reason.to_string())
            .await
    }

    /// Waits until there is something to do: messages past this consumer's position, this
    /// consumer becoming active (claiming a partition), its partitions changing
    /// ([`Wake::Assignment`]), or `timeout`. Woken by the driver's notifications, never by
    /// polling: while active it reads a stream (partition) once when called and once per
    /// notification of it (plus its head when that read finds nothing), and nothing in
    /// between.
    ///
    /// If messages were trimmed before this consumer read them, `wait` moves past them (they
    /// cannot be delivered any more) instead of reporting them forever.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future loses no message and no activation; a message read
    /// while waiting stays buffered for the next [`next`](Consumer::next).
    pub async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        let Some(parked) = &mut self.parked else {
            return self.inner.wait(timeout).await;
        };
        // Both waits are cancel-safe: the one that loses the race loses nothing.
        tokio::select! {
            woke = self.inner.wait(timeout) => woke,
            woke = parked.wait(timeout) => woke,
        }
    }

    /// The next message, waiting as long as it takes: while at the head, and while standby
    /// until this consumer becomes active. The waiting counterpart of
    /// [`next`](Consumer::next), as tokio's `recv` is of `try_recv`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped, no message is lost; the next call returns it.
    /// It can be used as a branch of `tokio::select!`.
    pub async fn recv(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(message) = self.next().await? {
                return Ok(message);
            }
            self.wait(wait::IDLE_WAIT).await?;
        }
    }

    /// Fills the buffer, waiting as long as needed; returns early (with `false`) when
    /// `recall` is notified.
    pub(super) async fn fill_or_wait(
        &mut self,
        recall: &tokio::sync::Notify,
    ) -> Result<bool, Error> {
        loop {
            if self.fill().await? {
                return Ok(true);
            }
            tokio::select! {
                woke = self.wait(wait::IDLE_WAIT) => { woke?; }
                () = recall.notified() => return Ok(false),
            }
        }
    }

    /// Leaves the group gracefully: stops the background work and, if active, marks the group
    /// (each partition it owns) inactive so a standby (another member) takes over at once. In
    /// a group over partitions the member also leaves the roster, so its partitions go to the
    /// others at once. Uncommitted messages are redelivered to the next owner.
    ///
    /// A background commit still running is finished first; its error, if any, is returned
    /// after the group has been released (before an error of the release itself, which is
    /// then logged).
    ///
    /// # Cancel safety
    ///
    /// The handover runs in a task of its own: dropping this future does not stop it, so the
    /// group is still released (a standby takes over at once, as after a completed shutdown),
    /// only its result is lost.
    pub async fn shutdown(self) -> Result<(), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let handover = runtime.spawn(async move {
            let closed = match self.inner {
                Inner::Single(lane) => lane.close().await,
                Inner::Partitioned(parts) => parts.close().await,
            };
            let parked = match self.parked {
                Some(parked) => parked.set.close().await,
                None => Ok(()),
            };
            closed.and(parked)
        });
        handover.await.map_err(|e| {
            Error::Storage(DriverError::failed(format!(
                "the shutdown task failed: {e}"
            )))
        })?
    }

    /// An owned [`futures_core::Stream`] of messages: it yields messages while active and
    /// waits (on notifications, not polling) at the head or while standby. Commit through
    /// [`ConsumerStream::commit`].
    pub fn into_stream(self) -> ConsumerStream {
        ConsumerStream::new(self)
    }
}

impl Inner {
    async fn fill(&mut self) -> Result<bool, Error> {
        match self {
            Inner::Single(lane) => lane.fill().await,
            Inner::Partitioned(parts) => parts.fill().await,
        }
    }

    fn pop(&mut self) -> Option<Message> {
        match self {
            Inner::Single(lane) => lane.pop(),
            Inner::Partitioned(parts) => parts.pop(),
        }
    }

    async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        match self {
            Inner::Single(lane) => lane.wait(timeout).await,
            Inner::Partitioned(parts) => parts.wait(timeout).await,
        }
    }
}

//! Configuring a consumer and joining its group.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Consumer;
use super::lane::Lane;
use super::membership::{Membership, Role};
use super::park::Parked;
use super::partitioned::Partitioned;
use super::protocol::{NextCheck, Watcher};
use super::retry::RetryBackoff;
use super::roster::Roster;
use crate::driver::Driver;
use crate::error::{Chain, Error, NameKind};
use crate::names::{log_name, validate_name, validate_stream_to_read};
use crate::partition::load_partitions;

/// Default for [`ConsumerBuilder::takeover_after`]: 60 s.
pub const DEFAULT_TAKEOVER_AFTER: Duration = Duration::from_secs(60);
/// Default for [`ConsumerBuilder::heartbeat_every`]: 28 s.
pub const DEFAULT_HEARTBEAT_EVERY: Duration = Duration::from_secs(28);
/// Default for [`ConsumerBuilder::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Largest accepted [`ConsumerBuilder::batch_size`].
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Default for [`ConsumerBuilder::join_delay`]: 1 s.
pub const DEFAULT_JOIN_DELAY: Duration = Duration::from_secs(1);
/// Largest accepted [`ConsumerBuilder::takeover_after`]: one week.
pub const MAX_TAKEOVER_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a *new* group starts reading (Kafka's `auto.offset.reset` for a group with no
/// committed offset). An existing group always resumes after its committed offset.
///
/// On a partitioned stream it applies to each partition when the group first claims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// From the first message of the stream still stored.
    #[default]
    Earliest,
    /// After the last message that exists when the group is created.
    Latest,
    /// From this offset: it is the first message delivered (or the first one still stored
    /// after it, if it was trimmed). An offset past the head starts at the head, as
    /// [`Latest`](StartFrom::Latest) does; 0 and 1 are the start of the stream.
    Offset(u64),
    /// From the first message produced at or after this time (Kafka's `offsetsForTimes`), or
    /// at the head if there is none. Times are the storage's `produced_at`
    /// ([`Message::produced_at`](crate::Message::produced_at)): exact for messages from one
    /// producer sending one call after another; with concurrent producers on PostgreSQL,
    /// `produced_at` can step back along the stream by as much as their appends overlap, and
    /// messages within that overlap of the time may fall on either side. Found by a binary
    /// search: about `log2(messages)` reads of one message each.
    Time(std::time::SystemTime),
}

impl StartFrom {
    pub(crate) fn place(self) -> crate::seek::Place {
        use crate::seek::Place;
        match self {
            StartFrom::Earliest => Place::Earliest,
            StartFrom::Latest => Place::Latest,
            StartFrom::Offset(offset) => Place::Offset(offset),
            StartFrom::Time(time) => Place::Time(time),
        }
    }
}

/// Consumer settings, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) takeover_after: Duration,
    pub(crate) heartbeat_every: Duration,
    pub(crate) batch_size: usize,
    pub(crate) start_from: StartFrom,
    /// A stable member id for a group over partitions (Kafka's `group.instance.id`).
    pub(crate) member_id: Option<String>,
    /// How long a newcomer to a group over partitions waits to be admitted.
    pub(crate) join_delay: Duration,
    /// The delays of nacked messages.
    pub(crate) retry_backoff: RetryBackoff,
    /// Failed deliveries after which a nacked message is dead-lettered; `None`: never.
    pub(crate) max_deliveries: Option<u32>,
    /// Whether nacks park messages in retry streams instead of pausing the partition.
    pub(crate) park: bool,
    /// Report messages trimmed past the group's position instead of skipping them.
    pub(crate) fail_if_trimmed: bool,
    /// In a lane of a retry stream: that stream's delay.
    pub(crate) tier: Option<Duration>,
}

impl Settings {
    fn validate(&self) -> Result<(), Error> {
        validate_stream_to_read(&self.stream)?;
        validate_name(NameKind::Group, &self.group)?;
        if let Some(member) = &self.member_id {
            validate_name(NameKind::Member, member)?;
        }
        if self.takeover_after.is_zero() || self.takeover_after > MAX_TAKEOVER_AFTER {
            return Err(Error::InvalidConfig(format!(
                "takeover_after must be above zero and at most {MAX_TAKEOVER_AFTER:?}"
            )));
        }
        if self.heartbeat_every.is_zero() || self.heartbeat_every >= self.takeover_after {
            return Err(Error::InvalidConfig(format!(
                "heartbeat_every ({:?}) must be above zero and below takeover_after ({:?})",
                self.heartbeat_every, self.takeover_after
            )));
        }
        if self.join_delay > MAX_TAKEOVER_AFTER {
            return Err(Error::InvalidConfig(format!(
                "join_delay must be at most {MAX_TAKEOVER_AFTER:?}"
            )));
        }
        if self.max_deliveries == Some(0) {
            return Err(Error::InvalidConfig(
                "max_deliveries must be at least 1 (1: dead-letter at the first nack)".into(),
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(Error::InvalidConfig(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}",
                self.batch_size
            )));
        }
        Ok(())
    }
}

/// Configures and starts a [`Consumer`]; see [`Consumer::builder`].
#[derive(Debug)]
#[must_use = "call .build().await to start the consumer"]
pub struct ConsumerBuilder {
    driver: Arc<dyn Driver>,
    settings: Settings,
}

impl ConsumerBuilder {
    pub(super) fn new(driver: Arc<dyn Driver>, stream: String, group: String) -> Self {
        ConsumerBuilder {
            driver,
            settings: Settings {
                stream,
                group,
                takeover_after: DEFAULT_TAKEOVER_AFTER,
                heartbeat_every: DEFAULT_HEARTBEAT_EVERY,
                batch_size: DEFAULT_BATCH_SIZE,
                start_from: StartFrom::Earliest,
                member_id: None,
                join_delay: DEFAULT_JOIN_DELAY,
                retry_backoff: RetryBackoff::default(),
                max_deliveries: None,
                park: false,
                fail_if_trimmed: false,
                tier: None,
            },
        }
    }

    /// How long messages may stay pending, with no sign of life from the active consumer,
    /// before a standby takes over. Default 60 s. Measured on each consumer's own clock.
    ///
    /// A standby learns of the owner's commits and heartbeats by reading the group record
    /// every `takeover_after / 4` while messages are pending, so it takes over between
    /// `takeover_after` and `1.25 × takeover_after` after the owner's last sign of life.
    pub fn takeover_after(mut self, after: Duration) -> Self {
        self.settings.takeover_after = after;
        self
    }

    /// How often the active consumer proves it is alive while messages are pending and it has
    /// not committed. Default 28 s; must be below `takeover_after`, and the gap between the two
    /// absorbs notification delay between consumers.
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.settings.heartbeat_every = every;
        self
    }

    /// How many messages one storage read fetches (1 to [`MAX_BATCH_SIZE`]). Memory use is
    /// bounded by two batches: the one being handled and the one read ahead.
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.settings.batch_size = messages;
        self
    }

    /// A stable id for this member of a group over partitions (Kafka's static membership,
    /// `group.instance.id`): a consumer that restarts with the id it had keeps its partitions,
    /// and the other members' assignments do not change. Its `shutdown` releases its
    /// partitions but keeps its place: they wait for it, and move to the others only once
    /// messages have waited `takeover_after` without it (it is then evicted, as a crashed
    /// member is). Without an id, every consumer joins as a new member and leaves the roster
    /// when it shuts down, handing its partitions to the others at once.
    ///
    /// Same alphabet as stream names; only for partitioned streams. Give each running consumer
    /// its own: a second consumer started with an id in use takes the member over, and the
    /// first is given nothing and fenced.
    pub fn member_id(mut self, id: impl Into<String>) -> Self {
        self.settings.member_id = Some(id.into());
        self
    }

    /// How long a new member of a group over partitions waits before it takes its share
    /// (default [`DEFAULT_JOIN_DELAY`]), so that members starting together (a deployment
    /// scaling out, say) are admitted in one rebalance rather than one each (Kafka's
    /// `group.initial.rebalance.delay.ms`, applied to every join). The group's first member,
    /// and a member restarting with its [`member_id`](ConsumerBuilder::member_id), are admitted
    /// at once. Zero admits every member at once.
    pub fn join_delay(mut self, delay: Duration) -> Self {
        self.settings.join_delay = delay;
        self
    }

    /// How long a [nacked](Consumer::nack) message waits before it is delivered again, by how
    /// many of its deliveries failed. Default [`RetryBackoff::default`]: 1 s doubling to 5 min,
    /// with jitter. [`Consumer::nack_after`] names the delay of one nack instead.
    pub fn retry_backoff(mut self, backoff: RetryBackoff) -> Self {
        self.settings.retry_backoff = backoff;
        self
    }

    /// After how many failed deliveries a message goes to the group's
    /// [dead-letter stream](crate::dead_letter_stream) instead of being retried: the nack
    /// that reaches the limit moves it there and commits past it, in one transaction. At
    /// least 1. Default: no limit (a message is retried until it is handled, committed past or
    /// dead-lettered by [`Consumer::dead_letter`]).
    ///
    /// With a limit, consumers also count *crash poison*: a message whose consumer stops
    /// without releasing the group while handling it (a crash, a kill, a hang past
    /// `takeover_after`) is counted by the consumer that takes over, and once the count
    /// reaches the limit that consumer dead-letters it without handing it out (a `tracing`
    /// warning says so). The first such crash of a group that was running normally names no
    /// message, so a poison message is handed out at most `deliveries + 1` times. A slow
    /// handler is never counted (its consumer heartbeats), nor a `shutdown` or a rebalance.
    /// Set the same limit on every member of a group; it assumes the usual loop (handle a
    /// message, then ask for the next), since a dead letter commits what came before it.
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.settings.max_deliveries = Some(deliveries);
        self
    }

    /// Parks retries instead of keeping order (Kafka's retry topics): a
    /// [nack](Consumer::nack) copies the message to one of the group's retry streams and
    /// commits past it, in one transaction, and the group goes on with the next message at
    /// once. The copy is delivered again once it has waited its delay, rounded up to one of
    /// [`PARK_DELAYS`](crate::PARK_DELAYS) (1 s, 10 s, 1 min, 10 min, 1 h; a backoff's longer
    /// delays wait an hour, and [`Consumer::nack_after`] refuses them), counts toward
    /// [`max_deliveries`](ConsumerBuilder::max_deliveries) as an ordered retry does, and goes
    /// to the same dead-letter stream at the limit.
    ///
    /// What it gives up: a parked message is delivered after messages that came after it,
    /// so another message with its key may be handled before it. It comes from the retry
    /// stream [`retry_stream`](crate::retry_stream)`(stream, group, delay)` (its
    /// [`Message::stream`](crate::Message::stream); the
    /// [`dead_letter_headers`](crate::dead_letter_headers) say where it came from). A happy
    /// path writes nothing more. Each consumer also joins the group on each retry stream,
    /// whose records are claimed, fenced and taken over like a stream's (one active consumer
    /// per retry stream, whichever members hold the partitions). Set it on every member of a
    /// group.
    pub fn park_retries(mut self) -> Self {
        self.settings.park = true;
        self
    }

    /// Where the group starts if it does not exist yet. Default [`StartFrom::Earliest`].
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.settings.start_from = start;
        self
    }

    /// What to do when messages after the group's position were trimmed (by
    /// [`Admin::trim`](crate::Admin::trim) or retention) before it read them. By default
    /// (`false`) the consumer resumes at the earliest message still stored, as Kafka's
    /// `auto.offset.reset=earliest` does: the trimmed messages are never delivered to the
    /// group. With `true`, [`next`](crate::Consumer::next) and [`wait`](crate::Consumer::wait)
    /// return [`Error::Trimmed`] instead, naming the gap, and deliver nothing past it until
    /// the group is moved on ([`Admin::reset_group`](crate::Admin::reset_group)).
    pub fn fail_if_trimmed(mut self, fail: bool) -> Self {
        self.settings.fail_if_trimmed = fail;
        self
    }

    /// Validates the settings, joins the group (creating it if needed) and starts the
    /// background task. When this returns, [`Consumer::is_active`] tells which role it got.
    ///
    /// Errors: [`Error::InvalidName`] or [`Error::InvalidConfig`] for bad settings (nothing is
    /// written), [`Error::NoRuntime`] outside a tokio runtime, [`Error::Storage`] if the group
    /// record cannot be read or written.
    ///
    /// # Cancel safety
    ///
    /// Safe to drop. The join runs in a task of its own: if this future is dropped after the
    /// join claimed the group (or while that write is in flight), the task finishes the write
    /// and then hands the group back, so a standby takes over at once rather than after
    /// `takeover_after`. On a partitioned stream the member's whole start (roster and
    /// partitions) runs that way, and an abandoned one leaves the group again.
    pub async fn build(self) -> Result<Consumer, Error> {
        self.settings.validate()?;
        crate::admin::check_place(self.settings.start_from)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let partitions = load_partitions(self.driver.as_ref(), &self.settings.stream).await?;
        let instance = new_consumer_id();
        let park = self.settings.park.then(|| self.settings.clone());
        let consumer = if partitions == 1 {
            if self.settings.member_id.is_some() {
                return Err(Error::InvalidConfig(format!(
                    "member_id is for groups over partitions, and stream {:?} has none: its \
                     group has one active consumer, whatever the ids",
                    self.settings.stream
                )));
            }
            let driver = Arc::clone(&self.driver);
            let lane = start_lane(&runtime, driver, self.settings, instance.clone(), None).await?;
            Consumer::single(lane)
        } else {
            let starting = Starting {
                task: Some(runtime.spawn(start_member(
                    runtime.clone(),
                    Arc::clone(&self.driver),
                    self.settings,
                    partitions,
                    instance.clone(),
                ))),
            };
            Consumer::partitioned(starting.finish().await?)
        };
        let Some(settings) = park else {
            return Ok(consumer);
        };
        match Parked::start(&runtime, &self.driver, &settings, &instance).await {
            Ok(parked) => Ok(consumer.with_parked(parked)),
            Err(error) => {
                if let Err(cleanup) = consumer.shutdown().await {
                    tracing::warn!(error = %Chain(&cleanup), "could not leave the group after a failed start");
                }
                Err(error)
            }
        }
    }
}

/// Starts a member of a group over partitions: joins the roster, then starts a lane per
/// partition. On failure it leaves again and hands back what it claimed, so nobody waits for
/// a member that never started.
async fn start_member(
    runtime: tokio::runtime::Handle,
    driver: Arc<dyn Driver>,
    settings: Settings,
    partitions: u32,
    instance: String,
) -> Result<Partitioned, Error> {
    let member = settings
        .member_id
        .clone()
        .unwrap_or_else(|| instance.clone());
    let roster = Arc::new(Roster::new(
        Arc::clone(&driver),
        &settings.stream,
        &settings.group,
        partitions,
        member,
        instance.clone(),
    ));
    // A group made for another partition count (its stream deleted and created again with
    // another count, say) would send commits to the wrong partitions: refuse to join it.
    if let Some(existing) = roster.refresh().await?
        && existing.assignment.len() != partitions as usize
    {
        return Err(Error::InvalidConfig(format!(
            "group {:?} of stream {:?} was formed over {} partitions, and the stream has {partitions}",
            settings.group,
            settings.stream,
            existing.assignment.len()
        )));
    }
    let mut lanes = Vec::with_capacity(partitions as usize);
    let joined = roster.join(!settings.join_delay.is_zero()).await;
    let admitted = joined.as_ref().is_ok_and(|admitted| *admitted);
    let mut started = joined.map(|_| ());
    for partition in 0..partitions {
        if started.is_err() {
            break;
        }
        let mut lane_settings = settings.clone();
        lane_settings.stream = log_name(&settings.stream, partition);
        match start_lane(
            &runtime,
            Arc::clone(&driver),
            lane_settings,
            instance.clone(),
            Some((Arc::clone(&roster), partition)),
        )
        .await
        {
            Ok(lane) => lanes.push(lane),
            Err(error) => started = Err(error),
        }
    }
    let mut member = Partitioned::new(roster, lanes, settings);
    if started.is_ok() && !admitted {
        member.admit_after_delay();
    }
    if let Err(error) = started {
        // The join may have been stored with its reply lost: leaving is safe either way.
        if let Err(cleanup) = member.close().await {
            tracing::warn!(error = %Chain(&cleanup), "could not leave the group after a failed start");
        }
        return Err(error);
    }
    Ok(member)
}

/// The start of a member of a group over partitions, run in a task of its own: if `build` is
/// dropped before it is collected, the start still completes and the member then leaves, as
/// [`Joining`] does for one group record.
struct Starting {
    task: Option<JoinHandle<Result<Partitioned, Error>>>,
}

impl Starting {
    async fn finish(mut self) -> Result<Partitioned, Error> {
        let started = match self.task.as_mut() {
            Some(task) => task.await,
            None => return Err(join_failed("it was collected twice")),
        };
        self.task = None;
        started.map_err(|e| join_failed(&e.to_string()))?
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Ok(Ok(member)) = task.await
                && let Err(error) = member.close().await
            {
                tracing::warn!(error = %Chain(&error), "could not leave the group after an abandoned start");
            }
        });
    }
}

/// Starts one lane: joins its group record (creating or claiming it if the protocol says so)
/// and spawns its background task.
pub(super) async fn start_lane(
    runtime: &tokio::runtime::Handle,
    driver: Arc<dyn Driver>,
    settings: Settings,
    id: String,
    lane: Option<(Arc<Roster>, u32)>,
) -> Result<Lane, Error> {
    let membership = Arc::new(Membership::new(driver, settings, id, lane));
    let joining = Joining {
        membership: Arc::clone(&membership),
        task: Some(runtime.spawn(join(
            Watcher::new(Arc::clone(&membership)),
            Arc::clone(&membership),
        ))),
    };
    let (watcher, joined) = joining.finish().await?;
    let next = joined?;
    let (stop, stopped) = oneshot::channel();
    let task = runtime.spawn(watcher.run(next, stopped));
    tracing::debug!(
        group = %membership.settings.group,
        stream = %membership.settings.stream,
        consumer = %membership.id,
        active = matches!(membership.role(), Role::Active { .. }),
        "consumer started"
    );
    Ok(Lane::start(membership, stop, task))
}

/// Joins the group: reads it, then creates it or takes it over if the protocol says so, until
/// this consumer holds a definite role. Returns the watcher (to run in the background) and
/// when it should look next.
async fn join(
    mut watcher: Watcher,
    membership: Arc<Membership>,
) -> (Watcher, Result<NextCheck, Error>) {
    let mut next = watcher.step().await;
    // A lost creation race or the takeover of an inactive group settle in the same call.
    while matches!(next, Ok(Some(at)) if at <= Instant::now()) {
        next = watcher.step().await;
    }
    if next.is_err() {
        // A creation or takeover may have been applied with its reply lost: do not leave the
        // group to an owner that never started. Released here, in the join's own task, so
        // that it happens even if the caller of `build` has gone.
        release_quietly(&membership, "a failed start").await;
    }
    (watcher, next)
}

/// Releases the group, logging (not returning) a failure: for claims nobody will use.
async fn release_quietly(membership: &Membership, after: &str) {
    if let Err(error) = membership.release().await {
        tracing::warn!(
            group = %membership.settings.group,
            consumer = %membership.id,
            error = %Chain(&error),
            "could not release the group after {after}"
        );
    }
}

/// The join task of a `build` in progress. If `build` is dropped before the join is
/// collected, the join still runs to its end (a write in flight is never cut off halfway) and
/// the group is then released: nobody will ever use the claim.
struct Joining {
    membership: Arc<Membership>,
    task: Option<JoinHandle<(Watcher, Result<NextCheck, Error>)>>,
}

impl Joining {
    /// The join's outcome. Dropping this future leaves the task to `Drop`.
    async fn finish(mut self) -> Result<(Watcher, Result<NextCheck, Error>), Error> {
        // Always `Some` here: only `finish` and `drop` take the task, and each runs once.
        let joined = match self.task.as_mut() {
            Some(task) => task.await,
            None => return Err(join_failed("it was collected twice")),
        };
        self.task = None;
        joined.map_err(|e| {
            // The join panicked, perhaps after its claim was stored: hand the group back.
            let membership = Arc::clone(&self.membership);
            tokio::spawn(async move { release_quietly(&membership, "a failed start").await });
            join_failed(&e.to_string())
        })
    }
}

fn join_failed(why: &str) -> Error {
    Error::Storage(crate::driver::DriverError::failed(format!(
        "the consumer's join task failed: {why}"
    )))
}

impl Drop for Joining {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let membership = Arc::clone(&self.membership);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // The runtime is going away with the task; there is nobody left to hand over to
            // in this process, and the claim ends like a crash.
            return;
        };
        runtime.spawn(async move {
            drop(task.await);
            release_quietly(&membership, "an abandoned start").await;
        });
    }
}

/// A process-unique, practically globally unique consumer id: pid, start time and a counter.
fn new_consumer_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}-{n}", std::process::id(), nanos)
}

//! Reading a stream as a member of a consumer group.
//!
//! One consumer of a group is *active*: it receives the messages and commits. The others are
//! *standby* and take over when the active one shuts down or stops making progress. The group
//! protocol itself (join, heartbeat, takeover) lives in [`protocol`]; the writes to the group
//! record and fencing in [`group`]; the `Stream` view in [`stream`].

mod group;
mod protocol;
mod stream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::driver::Driver;
use crate::error::{Error, NameKind};
use crate::message::Message;
use crate::names::validate_name;
use crate::notify::Topic;
pub(crate) use group::group_key;
use group::{Role, Shared};
use protocol::Watcher;
pub use stream::ConsumerStream;

/// Default for [`ConsumerBuilder::takeover_after`]: 60 s.
pub const DEFAULT_TAKEOVER_AFTER: Duration = Duration::from_secs(60);
/// Default for [`ConsumerBuilder::heartbeat_every`]: 28 s.
pub const DEFAULT_HEARTBEAT_EVERY: Duration = Duration::from_secs(28);
/// Default for [`ConsumerBuilder::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Largest accepted [`ConsumerBuilder::batch_size`].
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Largest accepted [`ConsumerBuilder::takeover_after`]: one week.
pub const MAX_TAKEOVER_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a *new* group starts reading. An existing group always resumes after its committed
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From the first message of the stream.
    #[default]
    Earliest,
    /// After the last message that exists when the group is created.
    Latest,
}

/// Why [`Consumer::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Messages are ready for `next()`.
    Messages,
    /// This consumer has just become the active one; `next()` resumes after the committed
    /// offset.
    Activated,
    /// The timeout passed with nothing to do.
    TimedOut,
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
}

/// Configures and starts a [`Consumer`]; see [`Consumer::builder`].
#[derive(Debug)]
#[must_use = "call .build().await to start the consumer"]
pub struct ConsumerBuilder {
    driver: Arc<dyn Driver>,
    settings: Settings,
}

impl ConsumerBuilder {
    /// How long messages may stay pending, with no sign of life from the active consumer,
    /// before a standby takes over. Default 60 s. Measured on each consumer's own clock.
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

    /// Where the group starts if it does not exist yet. Default [`StartFrom::Earliest`].
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.settings.start_from = start;
        self
    }

    /// Validates the settings, joins the group (creating it if needed) and starts the
    /// background task. When this returns, [`Consumer::is_active`] tells which role it got.
    pub async fn build(self) -> Result<Consumer, Error> {
        let s = &self.settings;
        validate_name(NameKind::Stream, &s.stream)?;
        validate_name(NameKind::Group, &s.group)?;
        if s.takeover_after.is_zero() || s.takeover_after > MAX_TAKEOVER_AFTER {
            return Err(Error::InvalidConfig(format!(
                "takeover_after must be above zero and at most {MAX_TAKEOVER_AFTER:?}"
            )));
        }
        if s.heartbeat_every.is_zero() || s.heartbeat_every >= s.takeover_after {
            return Err(Error::InvalidConfig(format!(
                "heartbeat_every ({:?}) must be above zero and below takeover_after ({:?})",
                s.heartbeat_every, s.takeover_after
            )));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&s.batch_size) {
            return Err(Error::InvalidConfig(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}",
                s.batch_size
            )));
        }

        let shared = Arc::new(Shared::new(self.driver, self.settings, new_consumer_id()));
        let mut watcher = Watcher::new(Arc::clone(&shared));
        // Join before returning, so the caller sees a definite role; settle a lost creation
        // race or a takeover of an inactive group in the same call.
        let mut next = watcher.step().await;
        while matches!(next, Ok(Some(at)) if at <= Instant::now()) {
            next = watcher.step().await;
        }
        let next = match next {
            Ok(next) => next,
            Err(error) => {
                // A creation or takeover may have been applied with its reply lost: do not
                // leave the group to an owner that never started.
                if let Err(release) = shared.release().await {
                    tracing::warn!(%release, "could not release the group after a failed start");
                }
                return Err(error);
            }
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(watcher.run(next, stopped));
        tracing::debug!(
            group = %shared.settings.group,
            stream = %shared.settings.stream,
            consumer = %shared.id,
            active = matches!(shared.role(), Role::Active { .. }),
            "consumer started"
        );
        let seen_generation = match shared.role() {
            Role::Active { generation, .. } => Some(generation),
            Role::Standby => None,
        };
        let mut consumer = Consumer {
            shared,
            background: Some(Background { stop, task }),
            cursor: Cursor::default(),
            seen_generation,
            background_commit: None,
        };
        consumer.claim(consumer.shared.role());
        Ok(consumer)
    }
}

#[derive(Debug)]
struct Background {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Reading position within one claim (generation) of the group.
#[derive(Debug, Default)]
struct Cursor {
    /// The generation these positions belong to; `None` before this consumer was ever active.
    generation: Option<u64>,
    /// Highest offset fetched from storage (including a finished prefetch still in flight).
    fetched: u64,
    /// Highest offset returned by `next()`.
    delivered: u64,
    buffer: VecDeque<Message>,
    /// The read of the batch after `fetched`, started while the application works through
    /// `buffer`. At most one batch ahead, so memory stays bounded by two batches.
    prefetch: Option<Prefetch>,
}

/// A read running in the background. Dropping it cancels the read.
#[derive(Debug)]
struct Prefetch {
    task: JoinHandle<Result<Vec<Message>, crate::DriverError>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
///         consumer.commit(msg.offset()).await?;            // or commit every N messages
///     }
///     consumer.wait(Duration::from_secs(5)).await?;       // new data, activation or timeout
/// }
/// # }
/// ```
///
/// Delivery is at least once: after a crash or a takeover, the group resumes right after its
/// committed offset, so messages received but not yet committed are delivered again.
///
/// Drop it to stop like a crash (a standby takes over after `takeover_after` once messages are
/// pending); call [`shutdown`](Consumer::shutdown) to hand the group over at once.
#[derive(Debug)]
pub struct Consumer {
    shared: Arc<Shared>,
    background: Option<Background>,
    cursor: Cursor,
    /// The generation the caller has been told about (by `build`, `next` or `wait`), so
    /// `wait` reports [`Wake::Activated`] only for a claim the caller has not seen.
    seen_generation: Option<u64>,
    /// The commit started by [`Consumer::commit_in_background`], if its result has not been
    /// collected yet. At most one runs at a time.
    background_commit: Option<JoinHandle<Result<(), Error>>>,
}

impl Consumer {
    /// Starts configuring a consumer of `stream` in `group`.
    pub fn builder(
        driver: Arc<dyn Driver>,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> ConsumerBuilder {
        ConsumerBuilder {
            driver,
            settings: Settings {
                stream: stream.into(),
                group: group.into(),
                takeover_after: DEFAULT_TAKEOVER_AFTER,
                heartbeat_every: DEFAULT_HEARTBEAT_EVERY,
                batch_size: DEFAULT_BATCH_SIZE,
                start_from: StartFrom::Earliest,
            },
        }
    }

    /// The next message, or `None` when this consumer is standby or has reached the head of
    /// the stream (then [`wait`](Consumer::wait) for more).
    ///
    /// Returns from a buffer of up to `batch_size` messages, read in one storage call. While
    /// the application works through a full batch, the next one is read in the background, so
    /// a busy consumer rarely waits on storage.
    ///
    /// Cancel-safe: if the future is dropped, no message is lost; the next call returns it.
    pub async fn next(&mut self) -> Result<Option<Message>, Error> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(self.pop())
    }

    /// Makes sure a message is buffered if one is available to this consumer. `Ok(false)`:
    /// standby, or at the head.
    async fn fill(&mut self) -> Result<bool, Error> {
        let Some(generation) = self.claim(self.shared.role()) else {
            return Ok(false);
        };
        self.seen_generation = Some(generation);
        if self.cursor.buffer.is_empty() {
            let batch = match &mut self.cursor.prefetch {
                // Awaiting through `&mut` keeps the read if this future is dropped.
                Some(prefetch) => {
                    let done = (&mut prefetch.task).await;
                    self.cursor.prefetch = None;
                    done.map_err(|e| {
                        crate::DriverError::failed(format!("background read failed: {e}"))
                    })??
                }
                None => {
                    let settings = &self.shared.settings;
                    self.shared
                        .driver
                        .read(&settings.stream, self.cursor.fetched, settings.batch_size)
                        .await?
                }
            };
            let full = batch.len() >= self.shared.settings.batch_size;
            if let Some(last) = batch.last() {
                self.cursor.fetched = last.offset();
            }
            self.cursor.buffer.extend(batch);
            if full {
                // More is likely stored: fetch it while the application handles this batch.
                // A short batch means the head was reached, and `wait` takes over from there.
                self.prefetch();
            }
        }
        Ok(!self.cursor.buffer.is_empty())
    }

    fn prefetch(&mut self) {
        let driver = Arc::clone(&self.shared.driver);
        let stream = self.shared.settings.stream.clone();
        let (after, limit) = (self.cursor.fetched, self.shared.settings.batch_size);
        self.cursor.prefetch = Some(Prefetch {
            task: tokio::spawn(async move { driver.read(&stream, after, limit).await }),
        });
    }

    /// Brings the cursor in line with `role`; returns the generation while active. A new claim
    /// starts right after the committed offset it began with (guarantee 3).
    fn claim(&mut self, role: Role) -> Option<u64> {
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
            self.cursor = Cursor {
                generation: Some(generation),
                fetched: resume_after,
                delivered: resume_after,
                buffer: VecDeque::new(),
                prefetch: None,
            };
        }
        Some(generation)
    }

    fn pop(&mut self) -> Option<Message> {
        let message = self.cursor.buffer.pop_front()?;
        self.cursor.delivered = message.offset();
        Some(message)
    }

    /// Commits `offset`: the group has processed every message up to and including it.
    ///
    /// - Committing at or below the committed offset does nothing (commits are monotonic).
    /// - [`Error::CommitBeyondDelivered`] if `next()` has not returned that offset.
    /// - [`Error::Fenced`] if another consumer took the group over since these messages were
    ///   delivered: nothing is committed, and this consumer is standby.
    /// - [`Error::Standby`] if this consumer has not been active.
    ///
    /// A retryable storage error means the commit may or may not have been stored; committing
    /// again is safe.
    ///
    /// Cancel-safe in the same sense: a dropped commit may or may not have been stored.
    pub async fn commit(&mut self, offset: u64) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let generation = self.check_commit(offset)?;
        write_commit(&self.shared, generation, offset).await
    }

    /// Starts committing `offset` and returns without waiting for storage, so the next
    /// messages can be handled while the commit is written (Kafka's `commitAsync`).
    ///
    /// The checks of [`commit`](Consumer::commit) (standby, beyond delivered) happen here, at
    /// once. The write itself runs in the background, one at a time: if the previous one is
    /// still running, this waits for it first. Its result, [`Error::Fenced`] for example, is
    /// returned by the next call to `commit`, `commit_in_background` or
    /// [`shutdown`](Consumer::shutdown); a fenced consumer also turns standby as with `commit`.
    /// Until then the offset may not be stored: after a crash, messages up to it may be
    /// delivered again (which at-least-once delivery allows). Dropping the consumer leaves a
    /// running write to finish or not.
    pub async fn commit_in_background(&mut self, offset: u64) -> Result<(), Error> {
        self.collect_background_commit().await?;
        let generation = self.check_commit(offset)?;
        let shared = Arc::clone(&self.shared);
        self.background_commit = Some(tokio::spawn(async move {
            write_commit(&shared, generation, offset).await
        }));
        Ok(())
    }

    /// Waits for the background commit, if one was started, and returns its result.
    async fn collect_background_commit(&mut self) -> Result<(), Error> {
        let Some(task) = &mut self.background_commit else {
            return Ok(());
        };
        // Awaiting through `&mut` keeps the task if this future is dropped.
        let result = task.await;
        self.background_commit = None;
        result.map_err(|e| {
            Error::Storage(crate::DriverError::failed(format!(
                "background commit failed: {e}"
            )))
        })?
    }

    /// The checks every commit makes before writing; returns the generation to write under.
    fn check_commit(&self, offset: u64) -> Result<u64, Error> {
        let Some(generation) = self.cursor.generation else {
            return Err(Error::Standby {
                group: self.shared.settings.group.clone(),
            });
        };
        if !matches!(self.shared.role(), Role::Active { generation: g, .. } if g == generation) {
            return Err(self.shared.fenced(generation));
        }
        if offset > self.cursor.delivered {
            return Err(Error::CommitBeyondDelivered {
                offset,
                delivered: self.cursor.delivered,
            });
        }
        Ok(generation)
    }

    /// Waits until there is something to do: messages past this consumer's position, this
    /// consumer becoming active, or `timeout`. Woken by the driver's notifications, never by
    /// polling: while active it reads the stream once when called and once per notification
    /// of its stream (plus its head when that read finds nothing), and nothing in between.
    ///
    /// Cancel-safe.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Wake, Error> {
        let deadline = deadline_after(timeout);
        let mut stream_changes = self
            .shared
            .driver
            .changes()
            .subscribe(Topic::Stream(self.shared.settings.stream.clone()));
        let mut role_changes = self.shared.watch_role();
        loop {
            let role = *role_changes.borrow_and_update();
            let active = matches!(role, Role::Active { .. });
            if let Some(generation) = self.claim(role) {
                if self.seen_generation != Some(generation) {
                    // Became active since the caller last looked (built active doesn't count).
                    self.seen_generation = Some(generation);
                    return Ok(Wake::Activated);
                }
                // Read rather than look at the head first: when there is something new (the
                // usual reason to be woken), that is one storage call instead of two.
                if self.fill().await? {
                    return Ok(Wake::Messages);
                }
                if self.cursor.generation == Some(generation) {
                    let head = self
                        .shared
                        .driver
                        .head(&self.shared.settings.stream)
                        .await?;
                    // Messages past our position may have been appended since that read:
                    // read again, now that everything up to `head` is known to be committed.
                    if head > self.cursor.fetched && self.fill().await? {
                        return Ok(Wake::Messages);
                    }
                    if head > self.cursor.fetched && self.cursor.generation == Some(generation) {
                        // Nothing readable up to the head, read after the head was: those
                        // messages were trimmed. Skip past them instead of reporting them
                        // forever.
                        self.cursor.prefetch = None;
                        self.cursor.fetched = head;
                        self.cursor.delivered = self.cursor.delivered.max(head);
                    }
                }
            }
            tokio::select! {
                // Subscribed before the head was read, so no append is missed; look at the
                // head again rather than trusting the wake-up, which may be a driver's
                // catch-all after a reconnection.
                () = stream_changes.changed(), if active => {}
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

    /// Whether this consumer is the active one of its group right now.
    pub fn is_active(&self) -> bool {
        matches!(self.shared.role(), Role::Active { .. })
    }

    /// This consumer's id, as written in the group state (unique per consumer instance).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.shared.settings.stream
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.shared.settings.group
    }

    /// The generation of the claim under which the last message returned by `next()` was
    /// delivered (Kafka's generation id); `None` if this consumer has never been active. A
    /// commit of those messages succeeds only while this claim holds.
    pub fn generation(&self) -> Option<u64> {
        self.cursor.generation
    }

    /// The group's committed offset as this consumer last saw it.
    pub fn committed(&self) -> Option<u64> {
        self.shared.committed()
    }

    /// Leaves the group gracefully: stops the background task and, if active, marks the group
    /// inactive so a standby takes over at once. Uncommitted messages are redelivered to the
    /// next owner.
    ///
    /// A background commit still running is finished first; its error, if any, is returned
    /// after the group has been released.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let pending = self.collect_background_commit().await;
        self.stop_background().await;
        self.shared.release().await?;
        pending
    }

    async fn stop_background(&mut self) {
        if let Some(Background { stop, task }) = self.background.take() {
            drop(stop);
            // The task only ends by our signal, or by panicking; neither needs reporting here.
            let _ = task.await;
        }
    }

    /// An owned [`futures_core::Stream`] of messages: it yields messages while active and
    /// waits (on notifications, not polling) at the head or while standby. Commit through
    /// [`ConsumerStream::commit`].
    pub fn into_stream(self) -> ConsumerStream {
        ConsumerStream::new(self)
    }

    /// Fills the buffer, waiting as long as needed; returns early (with `false`) when
    /// `recall` is notified.
    async fn fill_or_wait(&mut self, recall: &tokio::sync::Notify) -> Result<bool, Error> {
        const IDLE_WAIT: Duration = Duration::from_secs(3600);
        loop {
            if self.fill().await? {
                return Ok(true);
            }
            tokio::select! {
                woke = self.wait(IDLE_WAIT) => { woke?; }
                () = recall.notified() => return Ok(false),
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(background) = self.background.take() {
            // Like a crash: no handover; the task stops at its next await point.
            drop(background.stop);
            background.task.abort();
        }
    }
}

/// Writes `offset` as the group's committed offset, as the owner of `generation`. Commits
/// are monotonic: an offset at or below the stored one changes nothing.
async fn write_commit(shared: &Shared, generation: u64, offset: u64) -> Result<(), Error> {
    shared
        .write_as_owner(generation, false, |state| {
            if offset <= state.committed {
                return false;
            }
            state.committed = offset;
            true
        })
        .await?;
    tracing::debug!(
        group = %shared.settings.group,
        consumer = %shared.id,
        offset,
        "committed"
    );
    Ok(())
}

/// `now + timeout`, saturating far in the future instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(FAR))
        .unwrap_or_else(|| now + Duration::from_secs(24 * 3600))
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

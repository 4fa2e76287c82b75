//! Reading a stream as a member of a consumer group.
//!
//! One consumer of a group is *active*: it receives the messages and commits. The others are
//! *standby* and take over when the active one shuts down or stops making progress. Where
//! each part lives:
//!
//! - [`builder`]: settings and joining the group;
//! - [`membership`]: the role this consumer holds and every write to the group record
//!   (claims, commits, heartbeats, release, fencing);
//! - [`protocol`]: the background task that heartbeats and takes over;
//! - [`cursor`]: the read-ahead position in the stream;
//! - [`commit`]: the two commit paths;
//! - [`wait`]: waiting on notifications;
//! - [`state`]: the group record's stored shape and its typed view;
//! - [`stream`]: the `futures::Stream` view.

mod builder;
mod commit;
mod cursor;
mod membership;
mod protocol;
mod state;
mod stream;
mod wait;

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::driver::{Driver, DriverError};
use crate::error::{Chain, Error};
use crate::message::Message;
pub use builder::{
    ConsumerBuilder, DEFAULT_BATCH_SIZE, DEFAULT_HEARTBEAT_EVERY, DEFAULT_TAKEOVER_AFTER,
    MAX_BATCH_SIZE, MAX_TAKEOVER_AFTER, StartFrom,
};
use cursor::Cursor;
use membership::{Membership, Role};
pub use state::GroupState;
pub use stream::ConsumerStream;
pub use wait::Wake;

/// The background task of a consumer, stopped by dropping or firing `stop`.
#[derive(Debug)]
struct Background {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
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
    membership: Arc<Membership>,
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
        ConsumerBuilder::new(driver, stream.into(), group.into())
    }

    /// A consumer that has joined its group, with its background task running.
    fn start(membership: Arc<Membership>, stop: oneshot::Sender<()>, task: JoinHandle<()>) -> Self {
        let seen_generation = match membership.role() {
            Role::Active { generation, .. } => Some(generation),
            Role::Standby => None,
        };
        let mut consumer = Consumer {
            membership,
            background: Some(Background { stop, task }),
            cursor: Cursor::default(),
            seen_generation,
            background_commit: None,
        };
        consumer.sync_with_role(consumer.membership.role());
        consumer
    }

    /// The next message, or `None` when this consumer is standby or has reached the head of
    /// the stream (then [`wait`](Consumer::wait) for more, or use [`recv`](Consumer::recv),
    /// which waits).
    ///
    /// Returns from a buffer of up to `batch_size` messages, read in one storage call. While
    /// the application works through a full batch, the next one is read in the background, so
    /// a busy consumer rarely waits on storage.
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

    /// Whether this consumer is the active one of its group right now.
    pub fn is_active(&self) -> bool {
        matches!(self.membership.role(), Role::Active { .. })
    }

    /// This consumer's id, as written in the group state (unique per consumer instance).
    pub fn id(&self) -> &str {
        &self.membership.id
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.membership.settings.stream
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.membership.settings.group
    }

    /// The generation of the claim under which the last message returned by `next()` was
    /// delivered (Kafka's generation id); `None` if this consumer has never been active. A
    /// commit of those messages succeeds only while this claim holds.
    pub fn generation(&self) -> Option<u64> {
        self.cursor.generation
    }

    /// The group's committed offset as this consumer last saw it.
    pub fn committed(&self) -> Option<u64> {
        self.membership.committed()
    }

    /// Leaves the group gracefully: stops the background task and, if active, marks the group
    /// inactive so a standby takes over at once. Uncommitted messages are redelivered to the
    /// next owner.
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
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let handover = runtime.spawn(async move {
            let pending = self.collect_background_commit().await;
            self.stop_background().await;
            let released = self.membership.release().await;
            if let (Err(_), Err(release)) = (&pending, &released) {
                tracing::warn!(
                    group = %self.membership.settings.group,
                    consumer = %self.membership.id,
                    error = %Chain(release),
                    "could not release the group on shutdown"
                );
            }
            // The background commit's error first: it is the one the caller has not seen.
            pending.and(released)
        });
        handover.await.map_err(|e| {
            Error::Storage(DriverError::failed(format!(
                "the shutdown task failed: {e}"
            )))
        })?
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

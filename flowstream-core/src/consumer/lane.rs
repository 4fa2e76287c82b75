//! A lane: one consumer's membership in the group record of one partition (the whole stream,
//! when it is unpartitioned), with its background task, read cursor and background commit.
//! An unpartitioned consumer is one lane; a member of a group over partitions has one lane per
//! partition of the stream and is active in those it owns.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::cursor::Cursor;
use super::membership::{Membership, Role};
use crate::error::{Chain, Error};

/// The background task of a lane, stopped by dropping or firing `stop`.
#[derive(Debug)]
struct Background {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
pub(super) struct Lane {
    pub(super) membership: Arc<Membership>,
    /// The consumer's id, shared by the messages this lane delivers.
    pub(super) consumer: Arc<str>,
    background: Option<Background>,
    pub(super) cursor: Cursor,
    /// The generation the caller has been told about (by `build`, `next` or `wait`), so
    /// `wait` reports [`Wake::Activated`](super::Wake::Activated) only for a claim the caller
    /// has not seen.
    pub(super) seen_generation: Option<u64>,
    /// The commit started by `commit_in_background`, if its result has not been collected
    /// yet. At most one runs at a time.
    pub(super) background_commit: Option<JoinHandle<Result<(), Error>>>,
    /// Its consumed-message counters and commit histogram.
    pub(super) metrics: crate::metrics::Consumed,
}

impl Lane {
    /// A lane that has joined its group record, with its background task running.
    pub(super) fn start(
        membership: Arc<Membership>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    ) -> Self {
        let seen_generation = match membership.role() {
            Role::Active { generation, .. } => Some(generation),
            Role::Standby => None,
        };
        let consumer = Arc::from(membership.id.as_str());
        let metrics = crate::metrics::Consumed::new(
            crate::names::split_log_name(&membership.settings.stream).0,
            &membership.settings.group,
        );
        let mut lane = Lane {
            metrics,
            consumer,
            membership,
            background: Some(Background { stop, task }),
            cursor: Cursor::default(),
            seen_generation,
            background_commit: None,
        };
        lane.sync_with_role(lane.membership.role());
        lane
    }

    pub(super) fn is_active(&self) -> bool {
        matches!(self.membership.role(), Role::Active { .. })
    }

    /// Finishes a background commit, stops the background task and releases the group record
    /// if this lane holds it. The background commit's error comes first: it is the one the
    /// caller has not seen.
    pub(super) async fn close(mut self) -> Result<(), Error> {
        let pending = self.quiesce().await;
        let released = self.membership.release().await;
        if let (Err(_), Err(release)) = (&pending, &released) {
            tracing::warn!(
                group = %self.membership.settings.group,
                stream = %self.membership.settings.stream,
                consumer = %self.membership.id,
                error = %Chain(release),
                "could not release the group on shutdown"
            );
        }
        pending.and(released)
    }

    /// Finishes a background commit and stops the background task; returns the commit's
    /// result.
    pub(super) async fn quiesce(&mut self) -> Result<(), Error> {
        let pending = self.collect_background_commit().await;
        self.stop_background().await;
        pending
    }

    async fn stop_background(&mut self) {
        if let Some(Background { stop, task }) = self.background.take() {
            drop(stop);
            // The task only ends by our signal, or by panicking; neither needs reporting here.
            let _ = task.await;
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(background) = self.background.take() {
            // Like a crash: no handover; the task stops at its next await point.
            drop(background.stop);
            background.task.abort();
        }
    }
}

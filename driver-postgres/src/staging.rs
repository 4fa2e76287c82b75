//! Staged sends gathered: concurrent [`PgDriver::send_staged`] calls of one driver share one
//! outbox row, as concurrent `Producer::send` calls share one append.
//!
//! Each call joins a queue. If no insert is in flight, it starts a flusher task; the flusher
//! takes everything queued (up to a cap), stages it as one row, answers every caller with
//! the insert's result, wakes the relay, and repeats until the queue is empty. Nothing waits
//! on a timer: a lone call is staged at once, and a busy driver stages what arrived while
//! the previous insert was in flight.
//!
//! A row is one call as far as the relay is concerned: its messages are appended in order,
//! in one append. The calls in it are ones that were in flight together, which no order
//! binds, so putting them one after the other keeps every promise a row per call made: a
//! call's messages to one log stay consecutive, and a task's next call, made after this one
//! returned, lands in a later row. Each call is checked before it joins the queue, so one
//! bad call cannot fail the calls it would have shared a row with.

use std::sync::{Arc, Weak};

use flowstream_core::driver::{DriverError, GatherQueue, NewMessage};

use crate::offsets::{PreparedAppend, refuse_what_postgres_cannot_store};
use crate::{Inner, PgDriver};

/// At most this many messages go into one gathered row (a single larger call is never
/// split).
const MAX_MESSAGES: usize = 4096;
/// At most this many bytes of bodies, keys and headers go into one gathered row (same
/// caveat).
const MAX_BYTES: usize = 4 * 1024 * 1024;

type Reply = Result<(), DriverError>;

/// The queue of a driver's staged sends.
pub(crate) type Gather = GatherQueue<Reply>;

/// An empty queue for a driver's staged sends.
pub(crate) fn gather() -> Gather {
    GatherQueue::new(MAX_MESSAGES, MAX_BYTES)
}

impl PgDriver {
    /// Stages `messages` (one call), possibly in one row with other calls in flight; a
    /// flusher, if one must start, runs on `runtime`.
    pub(crate) async fn stage_gathered(
        &self,
        runtime: &tokio::runtime::Handle,
        messages: Vec<NewMessage>,
    ) -> Result<(), DriverError> {
        refuse_what_postgres_cannot_store(&messages)?;
        let (replied, start_flusher) = self.inner.relay.gather.join(messages);
        if start_flusher {
            // A task of its own: the insert must go on, and its other callers be answered,
            // even if this caller's future is dropped. The guard is made first, so that a
            // task dropped before it ever runs (the runtime shutting down) still lets go.
            let running = Running(Arc::downgrade(&self.inner));
            runtime.spawn(flush(Arc::downgrade(&self.inner), running));
        }
        // One insert ahead of this call's, then its own, each bounded by the call timeout.
        let limit = self.inner.operation_timeout * 2;
        match tokio::time::timeout(limit, replied).await {
            Ok(Ok(result)) => result,
            // Only a flusher cancelled mid-insert (the runtime shutting down) drops a call.
            Ok(Err(_)) => Err(DriverError::unavailable(
                "the staged send was interrupted; it may or may not have been stored",
            )),
            Err(_) => Err(DriverError::unavailable(format!(
                "staging did not finish within {limit:?}; the messages may or may not have \
                 been stored"
            ))),
        }
    }
}

/// Stages groups until the queue is empty. A caller waiting on the queue holds its driver, so
/// the driver outlives every call the task has to answer.
async fn flush(inner: Weak<Inner>, mut running: Running) {
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let driver = PgDriver { inner };
        let group = driver.inner.relay.gather.next_group();
        if group.is_empty() {
            // `next_group` cleared `flushing`: a later call starts a new flusher.
            running.0 = Weak::new();
            return;
        }
        let (replies, messages): (Vec<_>, Vec<_>) =
            group.into_iter().map(|r| (r.reply, r.messages)).unzip();
        let messages: Vec<NewMessage> = messages.into_iter().flatten().collect();
        let result = driver.stage_row(messages).await;
        // Whatever the result: after a timeout the insert may still commit.
        driver.inner.relay.staged.committed();
        drop(driver);
        for reply in replies {
            // A caller that stopped waiting needs no answer.
            let _ = reply.send(result.clone());
        }
        // The callers just answered are about to call again: let them queue first, or rows
        // would alternate between one call and all the others.
        tokio::task::yield_now().await;
    }
}

impl PgDriver {
    /// One insert of one outbox row, in a transaction of its own.
    async fn stage_row(&self, messages: Vec<NewMessage>) -> Result<(), DriverError> {
        let staged = PreparedAppend::new(messages)?;
        let insert = async {
            let mut connection = self.inner.appends.connection(&self.inner.pool).await?;
            staged
                .stage(&self.inner.sql.stage)
                .execute(&mut *connection)
                .await?;
            connection.keep();
            Ok(())
        };
        self.run(
            || format!("staging messages to {}", staged.names.join(", ")),
            insert,
        )
        .await
    }
}

/// Set while a flusher runs. If its task ends abnormally (the runtime shutting down),
/// dropping it lets later calls start a new flusher and answers the queued ones with an
/// error rather than leaving them waiting forever.
struct Running(Weak<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.relay.gather.abandon();
        }
    }
}

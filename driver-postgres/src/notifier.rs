//! Wake-ups for other processes, sent after an append commits and outside its transaction.
//!
//! `NOTIFY` takes a database-wide lock when its transaction commits and holds it through the
//! commit's WAL flush, so every notifying transaction in the database waits for every other,
//! flush included: a fleet of producer processes, each appending in a transaction of its own,
//! was capped by that lock, not by the disk. Wake-ups are hints (a woken reader re-reads; one
//! that is never woken catches up at its next read or the safety net), so they need not be
//! durable and need not be atomic with the append. The append commits without notifying;
//! then this task sends one `NOTIFY` naming the streams, on a connection of its own with
//! `synchronous_commit = off` (for its own transaction), so that the lock is held for the commit record's insert only,
//! never for a flush.
//!
//! Appends that complete while a `NOTIFY` is in flight are gathered and named in the next
//! one: at most one notifying transaction per driver at a time, however busy the producers.
//! Waiters in this process are woken at once through the hub, and the listener skips this
//! connection's own notifications (they would wake them a second time).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowstream_core::driver::{Backoff, ChangeHub, Topic};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::listener::{self, Change};

/// Streams appended to and not yet named in a sent `NOTIFY`.
#[derive(Debug, Default)]
struct Pending {
    streams: Mutex<BTreeSet<String>>,
    ready: Notify,
}

/// The notifying task of one driver; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Notifier {
    pending: Arc<Pending>,
    hub: ChangeHub,
    /// The server process of the notifying connection (0 before it connects), for the
    /// listener to recognise this driver's own notifications.
    own_pid: Arc<AtomicI32>,
    task: JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notifier {
    /// Starts the task. It connects on its first wake-up, and again after any failure.
    pub(crate) fn start(
        options: PgConnectOptions,
        channel: String,
        hub: ChangeHub,
        operation_timeout: Duration,
    ) -> Self {
        let pending = Arc::new(Pending::default());
        let own_pid = Arc::new(AtomicI32::new(0));
        let task = tokio::spawn(run(
            options,
            channel,
            Arc::clone(&pending),
            Arc::clone(&own_pid),
            operation_timeout,
        ));
        Notifier {
            pending,
            hub,
            own_pid,
            task,
        }
    }

    /// Wakes the waiters of `streams`: in this process at once, in the others by the next
    /// `NOTIFY`. Never waits.
    pub(crate) fn appended(&self, streams: &[String]) {
        for stream in streams {
            self.hub.notify(&Topic::Stream(stream.clone()));
        }
        self.pending
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(streams.iter().cloned());
        // A stored permit if the task is busy: it looks again before it waits.
        self.pending.ready.notify_one();
    }

    /// The pid of the notifying connection, shared with the listener.
    pub(crate) fn own_pid(&self) -> Arc<AtomicI32> {
        Arc::clone(&self.own_pid)
    }
}

async fn run(
    options: PgConnectOptions,
    channel: String,
    pending: Arc<Pending>,
    own_pid: Arc<AtomicI32>,
    operation_timeout: Duration,
) {
    let mut connection: Option<PgConnection> = None;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        pending.ready.notified().await;
        let streams = std::mem::take(
            &mut *pending
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if streams.is_empty() {
            continue;
        }
        let payload = listener::payload(streams.iter().map(|s| Change::Stream(s)));
        // A server that stopped answering (a frozen host, a half-open connection) must not
        // hold the wake-ups back for good: give up on the connection and start again.
        let sent = tokio::time::timeout(
            operation_timeout,
            send(&mut connection, &options, &own_pid, &channel, &payload),
        )
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {operation_timeout:?}"),
            )))
        });
        match sent {
            Ok(()) => backoff.succeeded(),
            Err(error) => {
                // Put the names back, so the next attempt still carries them.
                pending
                    .streams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(streams);
                connection = None;
                own_pid.store(0, Ordering::Relaxed);
                let delay = backoff.failed();
                tracing::warn!(%channel, %error, retry_in = ?delay, "NOTIFY failed");
                tokio::time::sleep(delay).await;
                pending.ready.notify_one();
            }
        }
    }
}

/// Sends one `NOTIFY`, connecting first if needed.
async fn send(
    connection: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    own_pid: &AtomicI32,
    channel: &str,
    payload: &str,
) -> Result<(), sqlx::Error> {
    if connection.is_none() {
        let mut fresh = PgConnection::connect_with(options).await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut fresh)
            .await?;
        own_pid.store(pid, Ordering::Relaxed);
        *connection = Some(fresh);
    }
    let Some(active) = connection.as_mut() else {
        return Ok(());
    };
    // A lost wake-up costs a late read, never data: no need to wait for the flush. Set for
    // this statement's transaction only, so that nothing lingers on a server connection a
    // pooler may hand to another client next.
    sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(active)
        .await?;
    Ok(())
}

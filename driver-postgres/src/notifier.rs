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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flowstream_core::driver::{Backoff, ChangeHub, DriverError, Topic};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::listener::{self, Change};

/// Streams appended to and not yet named in a sent `NOTIFY`.
#[derive(Debug)]
struct Pending {
    queue: Mutex<Queue>,
    ready: Notify,
    /// How many hand-offs ([`Queue::handed`]) have been sent: a `NOTIFY` that committed sets it
    /// to the count its streams were taken at.
    sent: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Queue {
    streams: BTreeSet<String>,
    /// Hand-offs so far (calls of [`Notifier::appended`]), to say which ones a flush waits for.
    handed: u64,
}

impl Pending {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    operation_timeout: Duration,
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
        let pending = Arc::new(Pending {
            queue: Mutex::default(),
            ready: Notify::new(),
            sent: watch::Sender::new(0),
        });
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
            operation_timeout,
        }
    }

    /// Wakes the waiters of `streams`: in this process at once, in the others by the next
    /// `NOTIFY`. Never waits.
    pub(crate) fn appended(&self, streams: &[String]) {
        for stream in streams {
            self.hub.notify(&Topic::Stream(stream.clone()));
        }
        if streams.is_empty() {
            return;
        }
        {
            let mut queue = self.pending.queue();
            queue.streams.extend(streams.iter().cloned());
            queue.handed += 1;
        }
        // A stored permit if the task is busy: it looks again before it waits.
        self.pending.ready.notify_one();
    }

    /// Waits until every hand-off made so far has been sent in a `NOTIFY` that committed, or
    /// fails after the operation timeout (the server does not answer, or keeps refusing).
    pub(crate) async fn flush(&self) -> Result<(), DriverError> {
        let target = self.pending.queue().handed;
        let mut sent = self.pending.sent.subscribe();
        match tokio::time::timeout(self.operation_timeout, sent.wait_for(|&s| s >= target)).await {
            Ok(Ok(_)) => Ok(()),
            // The task only ends when this notifier is dropped, which `&self` rules out.
            Ok(Err(_)) => Err(DriverError::failed("the notifying task has stopped")),
            Err(_) => Err(DriverError::unavailable(format!(
                "wake-ups for appends not sent within {:?}: consumers in other processes find \
                 those messages at their next poll",
                self.operation_timeout
            ))),
        }
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
        let (streams, upto) = {
            let mut queue = pending.queue();
            (std::mem::take(&mut queue.streams), queue.handed)
        };
        if streams.is_empty() {
            // Every hand-off up to `upto` was taken by an earlier round, which sent it or
            // put its names back (then they would be here).
            pending.sent.send_if_modified(|s| raise(s, upto));
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
            Ok(()) => {
                backoff.succeeded();
                pending.sent.send_if_modified(|s| raise(s, upto));
            }
            Err(error) => {
                // Put the names back, so the next attempt still carries them.
                pending.queue().streams.extend(streams);
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

/// Raises `sent` to `upto` if that is higher; whether it did.
fn raise(sent: &mut u64, upto: u64) -> bool {
    let higher = upto > *sent;
    if higher {
        *sent = upto;
    }
    higher
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

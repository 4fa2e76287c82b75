//! One LISTEN connection per driver instance, fanned out to every waiter in the process.
//!
//! Writers send one `NOTIFY` per transaction on the schema's channel, naming what changed (for
//! appends, after they commit: see `notifier.rs`);
//! this task turns each notification into [`ChangeHub::notify`] calls. Notifications sent while
//! the connection is down are lost, so after every reconnection every waiter is woken to
//! re-read. A slow periodic wake-up of everyone is the safety net for anything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use flowstream_core::driver::{Backoff, ChangeHub, Topic};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::task::JoinHandle;

/// PostgreSQL rejects payloads of 8000 bytes or more; past this we send [`WAKE_ALL`].
const MAX_PAYLOAD: usize = 7_900;
/// Payload meaning "anything may have changed".
const WAKE_ALL: &str = "*";

/// What a notification names.
pub(crate) enum Change<'a> {
    Stream(&'a str),
    Record(&'a str),
}

/// Encodes changes as one line each: `s <stream>` or `r <record key>`. Names never contain
/// newlines (they are validated), so the format needs no escaping.
pub(crate) fn payload<'a>(changes: impl Iterator<Item = Change<'a>>) -> String {
    let mut out = String::new();
    for change in changes {
        let (kind, name) = match change {
            Change::Stream(name) => ('s', name),
            Change::Record(key) => ('r', key),
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push(kind);
        out.push(' ');
        out.push_str(name);
        if out.len() > MAX_PAYLOAD {
            return WAKE_ALL.to_owned();
        }
    }
    out
}

fn dispatch(hub: &ChangeHub, payload: &str) {
    if payload == WAKE_ALL {
        hub.notify_all();
        return;
    }
    for line in payload.lines() {
        match line.split_once(' ') {
            Some(("s", stream)) => hub.notify(&Topic::Stream(stream.to_owned())),
            Some(("r", key)) => hub.notify(&Topic::Record(key.to_owned())),
            // Some listener's check that notifications reach it: nothing changed.
            Some(("p", _)) => {}
            // Unknown kinds come from a newer writer; waking everyone is always correct.
            _ => hub.notify_all(),
        }
    }
}

/// The running listener and its safety net; dropping it stops both tasks.
#[derive(Debug)]
pub(crate) struct ListenerTask {
    listen: JoinHandle<()>,
    safety_net: JoinHandle<()>,
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.listen.abort();
        self.safety_net.abort();
    }
}

/// Starts the listener. It connects and LISTENs once the hub has its first subscriber (a
/// process that only produces never holds a LISTEN connection, nor receives every other
/// process's notifications), and then wakes every waiter: those that subscribed before the
/// LISTEN began re-read, so none misses a change.
///
/// The LISTEN connection is taken from `pool` (and kept out of it), or made on `direct` (the
/// driver's `listen_url`) when given; the check notification is sent through `pool`, the path
/// the driver's own writes take.
pub(crate) fn start(
    direct: Option<PgConnectOptions>,
    pool: &PgPool,
    channel: String,
    hub: ChangeHub,
    fallback_poll: Duration,
    own_pid: Arc<AtomicI32>,
    health: Arc<Health>,
) -> ListenerTask {
    let safety_net = tokio::spawn(wake_everyone_every(
        fallback_poll,
        hub.clone(),
        Arc::clone(&health),
        pool.clone(),
        channel.clone(),
    ));
    let direct = direct.map_or_else(
        || pool.clone(),
        |options| {
            PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options)
        },
    );
    let listen = tokio::spawn(run(direct, pool.clone(), channel, hub, own_pid, health));
    ListenerTask { listen, safety_net }
}

/// Whether notifications reach the LISTEN connection, as its last check found.
#[derive(Debug, Default)]
pub(crate) struct Health(AtomicU8);

// 0 (the default): not checked yet.
const ARRIVE: u8 = 1;
const LOST: u8 = 2;

impl Health {
    /// `None` until the listener has checked (it does once it starts, and after each
    /// reconnection).
    pub(crate) fn arrive(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            ARRIVE => Some(true),
            LOST => Some(false),
            _ => None,
        }
    }

    fn set(&self, arrive: bool) {
        self.0
            .store(if arrive { ARRIVE } else { LOST }, Ordering::Relaxed);
    }
}

/// How often everyone is woken while notifications are known not to arrive: waiters then
/// find new messages within this, instead of within `fallback_poll`.
const POLL_WHILE_LOST: Duration = Duration::from_secs(1);

/// How often a check notification is sent again while notifications are known not to
/// arrive: a check that only came late (a server busy for more than [`CHECK_WITHIN`]) must
/// not leave the driver polling for good.
const RECHECK_WHILE_LOST: Duration = Duration::from_secs(30);

/// The safety net, in a task of its own so that it never interrupts a receive (and with it
/// the listener's own reconnection). While notifications are known not to arrive it also
/// sends a check now and then; the listener marks them arriving when one reaches it.
async fn wake_everyone_every(
    period: Duration,
    hub: ChangeHub,
    health: Arc<Health>,
    pool: PgPool,
    channel: String,
) {
    let mut lost_for = Duration::ZERO;
    loop {
        let lost = health.arrive() == Some(false);
        let wait = if lost {
            period.min(POLL_WHILE_LOST)
        } else {
            period
        };
        tokio::time::sleep(wait).await;
        hub.notify_all();
        lost_for = if lost {
            lost_for + wait
        } else {
            Duration::ZERO
        };
        if lost_for >= RECHECK_WHILE_LOST {
            lost_for = Duration::ZERO;
            if let Err(error) = send_check(&pool, &channel).await {
                tracing::debug!(%channel, %error, "sending a check notification failed");
            }
        }
    }
}

/// The payload prefix of this process's check notifications.
fn check_prefix() -> String {
    format!("p {}-", std::process::id())
}

/// Sends a check notification with a fresh payload through `pool`, the path the driver's
/// writes take, and returns the payload.
async fn send_check(pool: &PgPool, channel: &str) -> Result<String, sqlx::Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = format!(
        "{}{}",
        check_prefix(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(&nonce)
        .execute(pool)
        .await?;
    Ok(nonce)
}

async fn listen(direct: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(direct).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// How long a check notification may take to arrive.
const CHECK_WITHIN: Duration = Duration::from_secs(3);

/// Sends a notification the way the driver's writes do (through `pool`) and waits for it on
/// `listener`; other notifications arriving meanwhile are dispatched. `Ok(Some(false))`: it
/// did not arrive; `Ok(None)`: the connection was re-established meanwhile, so the check says
/// nothing. A pooler in transaction mode (PgBouncer) hands a LISTEN to whichever server
/// connection is free and then gives that connection to other clients, so notifications
/// sent to the channel never reach this session; this is how that is found out.
async fn check(
    listener: &mut PgListener,
    pool: &PgPool,
    channel: &str,
    hub: &ChangeHub,
) -> Result<Option<bool>, sqlx::Error> {
    let nonce = send_check(pool, channel).await?;
    let own_checks = check_prefix();
    let deadline = tokio::time::Instant::now() + CHECK_WITHIN;
    loop {
        let received = tokio::time::timeout_at(deadline, listener.try_recv()).await;
        match received {
            Err(_) => return Ok(Some(false)),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(notification))) => {
                // An earlier check of this process that came late proves the path as well.
                if notification.payload() == nonce
                    || notification.payload().starts_with(&own_checks)
                {
                    return Ok(Some(true));
                }
                dispatch(hub, notification.payload());
            }
        }
    }
}

async fn run(
    direct: PgPool,
    pool: PgPool,
    channel: String,
    hub: ChangeHub,
    own_pid: Arc<AtomicI32>,
    health: Arc<Health>,
) {
    hub.wanted().await;
    let mut listener: Option<PgListener> = None;
    // Connection failures in a row (a connect that fails, or a connection that drops as soon
    // as it is made) back off from 50 ms to 5 s: a server that keeps refusing must not turn
    // into a storm of attempts, nor of wake-ups (each one costs every waiter a read).
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let own_checks = check_prefix();
    loop {
        let Some(active) = listener.as_mut() else {
            match listen(&direct, &channel).await {
                Ok(mut reconnected) => {
                    tracing::info!(%channel, "LISTEN connection established; waking all waiters");
                    hub.notify_all();
                    match check(&mut reconnected, &pool, &channel, &hub).await {
                        Ok(Some(true)) => {
                            health.set(true);
                            listener = Some(reconnected);
                            backoff.succeeded();
                        }
                        Ok(Some(false)) => {
                            health.set(false);
                            tracing::error!(
                                %channel,
                                "notifications sent through the driver's connections do not \
                                 reach its LISTEN connection: the URL most likely goes through \
                                 a connection pooler in transaction or statement mode (as \
                                 PgBouncer's is), which does not keep a LISTEN. Give the driver \
                                 a direct URL for listening (PgDriverBuilder::listen_url). \
                                 Until then waiting consumers look for new messages every \
                                 second instead of being woken"
                            );
                            listener = Some(reconnected);
                            backoff.succeeded();
                        }
                        // Reconnected while checking: check the new connection.
                        Ok(None) => {}
                        Err(error) => {
                            let delay = backoff.failed();
                            tracing::warn!(%channel, %error, retry_in = ?delay, "checking the LISTEN connection failed");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
                Err(error) => {
                    let delay = backoff.failed();
                    tracing::warn!(%channel, %error, retry_in = ?delay, "LISTEN connection failed");
                    tokio::time::sleep(delay).await;
                }
            }
            continue;
        };
        match active.try_recv().await {
            Ok(Some(notification)) => {
                backoff.succeeded();
                if notification.payload().starts_with(&own_checks) {
                    // A check sent through the pool reached this connection: notifications
                    // arrive (again, if an earlier check waited in vain).
                    if health.arrive() == Some(false) {
                        tracing::info!(%channel, "notifications reach the LISTEN connection again");
                    }
                    health.set(true);
                    continue;
                }
                // This driver's own appends woke this process's waiters when they committed.
                let own = own_pid.load(Ordering::Relaxed);
                if own == 0 || notification.process_id() != own.cast_unsigned() {
                    dispatch(&hub, notification.payload());
                }
            }
            Ok(None) => {
                // The connection dropped and the listener re-established it (eagerly, before
                // returning): everything sent in between is lost.
                tracing::info!(%channel, "LISTEN connection lost and re-established; waking all waiters");
                hub.notify_all();
                tokio::time::sleep(backoff.failed()).await;
            }
            Err(error) => {
                tracing::warn!(%channel, %error, "LISTEN connection lost");
                listener = None;
                hub.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_falls_back_to_wake_all() {
        let p = payload([Change::Stream("a"), Change::Record("group/a/g")].into_iter());
        assert_eq!(p, "s a\nr group/a/g");
        let long = "x".repeat(200);
        let names: Vec<String> = (0..100).map(|i| format!("{long}{i}")).collect();
        assert_eq!(payload(names.iter().map(|n| Change::Stream(n))), WAKE_ALL);
    }

    #[tokio::test]
    async fn dispatch_wakes_the_named_topics() {
        let hub = ChangeHub::new();
        let mut stream = hub.subscribe(Topic::Stream("a".into()));
        let mut record = hub.subscribe(Topic::Record("group/a/g".into()));
        dispatch(&hub, "s a\nr group/a/g");
        tokio::time::timeout(Duration::from_secs(5), stream.changed())
            .await
            .expect("stream");
        tokio::time::timeout(Duration::from_secs(5), record.changed())
            .await
            .expect("record");
    }
}

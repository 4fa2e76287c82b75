//! The connection a driver keeps for its appends (and staged inserts), outside the pool.
//!
//! sqlx pings every pooled connection as it goes back to the pool (a `Sync` and its answer,
//! in a task of its own), so each statement run through the pool costs the server and the
//! client a second round trip, and the next statement often gets another connection while the
//! first is still being pinged. For a producer sending one message at a time that is a fifth
//! of the client's CPU per send. Appends, the hot path of every producer, take this
//! connection when no other append holds it and put it back themselves, with no ping; an
//! append that finds it taken uses the pool as before.
//!
//! A connection left idle for [`PING_IF_IDLE_FOR`] is pinged before it is used again, as the
//! pool does with its own (the server may have restarted or dropped it meanwhile). One whose
//! statement failed, or whose caller was dropped mid-statement, is closed: the next append
//! opens a new one. Unlike the pool's, it has no idle timeout or maximum lifetime: it stays
//! open while the driver lives.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, Postgres};
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

/// A connection idle at least this long is pinged before use (the pool's rule too).
pub(crate) const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The held connection's place.
#[derive(Debug)]
enum Slot {
    /// None is open: the next taker opens one.
    Closed,
    /// Open and free since the instant given.
    Idle(PgConnection, Instant),
    /// An append is using it.
    Taken,
}

/// One connection for appends, taken by one append at a time.
#[derive(Debug)]
pub(crate) struct Held {
    options: PgConnectOptions,
    slot: Mutex<Slot>,
}

impl Held {
    /// Opens its connection at the first append: a driver that never appends holds none.
    pub(crate) fn new(options: PgConnectOptions) -> Self {
        Held {
            options,
            slot: Mutex::new(Slot::Closed),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The held connection if it is free, else one from `pool`. Call
    /// [`Conn::keep`] once the statement succeeded; dropping it otherwise closes the
    /// held connection (a pooled one goes back to the pool, pinged, as sqlx does).
    pub(crate) async fn connection<'a>(&'a self, pool: &PgPool) -> Result<Conn<'a>, sqlx::Error> {
        let taken = {
            let mut slot = self.slot();
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Taken => None,
                Slot::Idle(connection, since) => Some(Some((connection, since))),
                Slot::Closed => Some(None),
            }
        };
        let Some(taken) = taken else {
            return Ok(Conn::Pooled(pool.acquire().await?));
        };
        // From here on, an error or a drop leaves the slot closed.
        let closer = Closer { held: self };
        let connection = match taken {
            Some((mut connection, since)) if since.elapsed() >= PING_IF_IDLE_FOR => {
                match connection.ping().await {
                    Ok(()) => connection,
                    // Gone while idle (a restart, a pooler or firewall closing it): a new one.
                    Err(_) => PgConnection::connect_with(&self.options).await?,
                }
            }
            Some((connection, _)) => connection,
            None => PgConnection::connect_with(&self.options).await?,
        };
        Ok(Conn::Held { connection, closer })
    }
}

/// Closes the held connection's slot when dropped: the connection's state is unknown (its
/// statement failed, or its caller was dropped mid-statement). The connection itself closes
/// as it is dropped; the next append opens another.
#[derive(Debug)]
pub(crate) struct Closer<'a> {
    held: &'a Held,
}

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        *self.held.slot() = Slot::Closed;
    }
}

/// A connection for one append: the held one or a pooled one.
#[derive(Debug)]
pub(crate) enum Conn<'a> {
    Held {
        connection: PgConnection,
        closer: Closer<'a>,
    },
    Pooled(PoolConnection<Postgres>),
}

impl Conn<'_> {
    /// The statement succeeded: the held connection is free for the next append.
    pub(crate) fn keep(self) {
        if let Conn::Held { connection, closer } = self {
            let held = closer.held;
            // Forgotten, not dropped: its drop would close the slot.
            std::mem::forget(closer);
            *held.slot() = Slot::Idle(connection, Instant::now());
        }
    }
}

impl Deref for Conn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Held { connection, .. } => connection,
            Conn::Pooled(pooled) => pooled,
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Held { connection, .. } => connection,
            Conn::Pooled(pooled) => pooled,
        }
    }
}

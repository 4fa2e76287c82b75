//! Appends inside the application's own transaction ([`PgDriver::send_in`]): the transactional
//! outbox, with the relay built in.
//!
//! `send_in` stages the messages in the `outbox` table in the caller's transaction (one row
//! per call), so they exist if and only if it commits, and it holds no lock any other
//! producer or reader waits for. A relay appends staged rows to their logs in short
//! transactions of its own, oldest first: take the relay lock (one relay at a time per
//! schema), delete the oldest committed rows, append their messages with the ordinary append
//! statement, commit, notify. Rows of transactions still running are invisible to it, so it
//! never waits on them nor skips them: they are moved by a later round.
//!
//! [`PgDriver::send_staged`] stages in a transaction of its own (concurrent calls of one
//! driver share a row, see `staging`): its rows commit in parallel with everyone else's (no
//! lock shared), where plain appends to one stream commit one after another, and the relay
//! appends what they staged in batches.
//!
//! Every driver runs a relay. It knows which transactions called `send_in` through it, asks
//! the server how each ended (`pg_xact_status`), 1 ms after a call or a round and then every
//! 2, 4, … up to 50 ms while they run on, and runs rounds as soon as one committed; a staged
//! row's insert wakes it when it ends, and it runs a round at once. It also runs a round when
//! it starts and once every `fallback_poll`, for rows left by a process that died between its
//! caller's commit and its relay's round (or by a staged insert that timed out and committed
//! after the round its end started).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use flowstream_core::driver::{DriverError, NewMessage};
use flowstream_core::{Error, PreparedSend};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tokio::sync::Notify;

use crate::errors::storage_error;
use crate::offsets::{PreparedAppend, WakeWhenDone};
use crate::staging::Gather;
use crate::{Inner, PgDriver};

/// Staged calls a relay round moves at most.
const ROUND: i64 = 500;

/// Bytes of staged calls a relay round takes at most (it always takes the oldest call, whatever
/// its size): a round's append stays far below PostgreSQL's limits on one statement.
const ROUND_BYTES: i64 = 64 * 1024 * 1024;

/// Messages a relay round takes at most (it always takes the oldest call, whatever its
/// size): a call gathered from many `send_staged` calls holds thousands.
const ROUND_MESSAGES: i64 = 20_000;

/// Longest pause between two looks at a staging transaction that is still running.
const MAX_POLL: Duration = Duration::from_millis(50);

/// SQLSTATE of a lock not taken within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Longest pause between two attempts after the server failed the relay.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// The transactions that staged messages through this driver and have not ended yet, and the
/// relay's wake-up.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    xids: Mutex<Vec<String>>,
    /// Set once this driver has staged anything: only then does a flush run a relay round.
    used: AtomicBool,
    /// Set when a staged row's insert ends (committed, or given up on after the call's
    /// timeout): a round may have work now.
    committed: AtomicBool,
    wake: Notify,
}

impl Staged {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.xids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, xid: String) {
        let mut xids = self.lock();
        if !xids.contains(&xid) {
            xids.push(xid);
        }
        drop(xids);
        self.used.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Tells the relay that rows committed (or may have: a spurious round finds nothing).
    pub(crate) fn committed(&self) {
        self.used.store(true, Ordering::Release);
        self.committed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether rows committed since the last call.
    fn take_committed(&self) -> bool {
        self.committed.swap(false, Ordering::AcqRel)
    }
}

/// The relay task of a driver; it ends with the driver.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) staged: Arc<Staged>,
    /// Staged sends waiting to share a row.
    pub(crate) gather: Gather,
    /// Held shared by each relay round of this driver from before it takes the lock until it
    /// has handed its streams to the notifier; a flush takes it exclusively to wait for
    /// rounds that committed before its own found nothing left.
    rounds: tokio::sync::RwLock<()>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    pub(crate) fn new() -> Self {
        Relay {
            staged: Arc::default(),
            gather: crate::staging::gather(),
            rounds: tokio::sync::RwLock::new(()),
            task: Mutex::default(),
        }
    }

    /// Starts the task, which holds the driver only while it works.
    pub(crate) fn start(&self, inner: Weak<Inner>, fallback: Duration) {
        let staged = Arc::clone(&self.staged);
        let task = tokio::spawn(run(inner, staged, fallback));
        *self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let task = self
            .task
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

fn driver(inner: &Weak<Inner>) -> Option<PgDriver> {
    inner.upgrade().map(|inner| PgDriver { inner })
}

/// Failed status queries in a row after which the relay forgets the transactions it watches
/// (an id the server cannot place, after a failover say, fails the query every time) and
/// leaves their rows to its sweeps.
const MAX_STATUS_FAILURES: u32 = 3;

async fn run(inner: Weak<Inner>, staged: Arc<Staged>, fallback: Duration) {
    // At start: rows a process left behind.
    let mut sweep = true;
    let mut last_sweep = tokio::time::Instant::now();
    let mut pause = Duration::ZERO;
    let mut failures = 0u32;
    // Another relay was in a round when this one came: try again, backing off from 1 ms,
    // until one is not.
    let mut busy = false;
    let mut busy_pause = Duration::ZERO;
    loop {
        // A staged insert's flusher sets the flag before it wakes the task, so once the flag
        // is taken here, later inserts leave a wake-up behind: none is missed.
        let mut pending = staged.take_committed() || std::mem::take(&mut busy);
        let idle = !pending && staged.lock().is_empty() && !sweep;
        if idle {
            let next_sweep = last_sweep + fallback;
            tokio::select! {
                () = staged.wake.notified() => pause = Duration::ZERO,
                () = tokio::time::sleep_until(next_sweep) => sweep = true,
            }
            pending = staged.take_committed();
        }
        // Sweeps happen every `fallback` even while some transaction stays open for hours.
        if last_sweep.elapsed() >= fallback {
            sweep = true;
        }
        let Some(driver) = driver(&inner) else {
            return;
        };
        let xids = staged.lock().clone();
        let swept = std::mem::take(&mut sweep);
        if swept {
            last_sweep = tokio::time::Instant::now();
        }
        let mut committed = swept || pending;
        let mut failed = false;
        if !xids.is_empty() {
            match driver.ended(&xids).await {
                Ok(ended) => {
                    staged.lock().retain(|x| !ended.contains_key(x));
                    committed |= ended.values().any(|&c| c);
                    failures = 0;
                }
                Err(error) => {
                    failed = true;
                    failures += 1;
                    // Some may have committed: a round moves whatever did.
                    committed = true;
                    tracing::warn!(
                        schema = %driver.schema(),
                        error = %error,
                        "could not look at the transactions that staged messages"
                    );
                    if failures >= MAX_STATUS_FAILURES {
                        staged.lock().clear();
                        tracing::warn!(
                            schema = %driver.schema(),
                            "no longer watching the staging transactions; their messages \
                             move with the next sweeps"
                        );
                    }
                }
            }
        }
        if committed {
            match driver.relay(None).await {
                Ok(round) => busy = round == Round::Busy,
                Err(error) => {
                    failed = true;
                    sweep = true;
                    tracing::warn!(
                        schema = %driver.schema(),
                        error = %error,
                        "could not relay staged messages"
                    );
                }
            }
        }
        drop(driver);
        if failed {
            // The server may be down for a while: back off, whatever new calls come in.
            pause = (pause * 2).clamp(MAX_POLL, MAX_RETRY_PAUSE);
            tokio::time::sleep(pause).await;
            continue;
        }
        if busy {
            // New sends must not cut this short: each would bring a try that fails again.
            busy_pause = (busy_pause * 2).clamp(Duration::from_millis(1), MAX_POLL);
            tokio::time::sleep(busy_pause).await;
            continue;
        }
        busy_pause = Duration::ZERO;
        if staged.lock().is_empty() && !sweep {
            continue;
        }
        // Back off while the callers' transactions run on; look again soon after progress,
        // and 1 ms after a new call (its caller is about to commit).
        pause = if committed {
            Duration::from_millis(1)
        } else {
            (pause * 2).clamp(Duration::from_millis(1), MAX_POLL)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = staged.wake.notified() => pause = Duration::ZERO,
        }
    }
}

impl PgDriver {
    /// Appends messages ([`Producer::prepare`](flowstream_core::Producer::prepare)) as part of
    /// the application's transaction `tx`: they are delivered if and only if `tx` commits,
    /// in the order of the calls (and, within a call, of the messages), a call's messages to
    /// one log with consecutive offsets. The transaction must be on this driver's database.
    ///
    /// ```no_run
    /// # async fn demo(pg: flowstream_postgres::PgDriver, producer: flowstream_core::Producer)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use flowstream_core::NewMessage;
    /// use flowstream_postgres::sqlx;
    ///
    /// let mut tx = pg.pool().begin().await?;
    /// sqlx::query("UPDATE accounts SET balance = balance - 10 WHERE id = 42")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let event = producer
    ///     .prepare([NewMessage::new("ledger", "debited 10").with_key("42")])
    ///     .await?;
    /// pg.send_in(&mut tx, event).await?;
    /// tx.commit().await?; // the update and the message, or neither
    /// # Ok(()) }
    /// ```
    ///
    /// It stages the messages in flowstream's outbox table inside `tx` (one insert, no lock
    /// anyone else waits for, so a long or idle `tx` holds back no other producer or reader);
    /// once `tx` commits, a relay appends them to their streams in a short transaction of its
    /// own: this driver's relay, which watches `tx` end (within 50 ms, usually 1–2 ms), or any
    /// other driver's on the same schema. Offsets are given then, so this returns none. After
    /// a crash between the commit and the relay, the next driver to start, or any driver
    /// within its `fallback_poll`, moves them.
    ///
    /// Errors: those of the checks [`Producer::prepare`](flowstream_core::Producer::prepare)
    /// does not make ([`Error::Refused`] for a header PostgreSQL cannot store), and storage
    /// errors (`tx` is then in an unknown state: roll it back). No timeout is applied: `tx`
    /// is the application's.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, `tx` may or may not hold the messages; rolling it back is
    /// always safe.
    pub async fn send_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: PreparedSend,
    ) -> Result<(), Error> {
        let staged = PreparedAppend::new(messages.into_messages())?;
        let row = staged
            .stage(&self.inner.sql.stage)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| {
                storage_error(
                    &format!(
                        "staging messages to {} in the application's transaction",
                        staged.names.join(", ")
                    ),
                    e,
                )
            })?;
        let xid: String = row
            .try_get(0)
            .map_err(|e| storage_error("reading the staging transaction's id", e))?;
        self.inner.relay.staged.add(xid);
        Ok(())
    }

    /// Sends messages ([`Producer::prepare`](flowstream_core::Producer::prepare)) through the
    /// outbox, in a transaction of its own: returns once they are durably staged, before they
    /// have offsets; the relay then appends them to their streams as it does for
    /// [`send_in`](Self::send_in) (this driver's relay at once, in batches under load).
    ///
    /// ```no_run
    /// # async fn demo(pg: flowstream_postgres::PgDriver, producer: flowstream_core::Producer)
    /// # -> Result<(), flowstream_core::Error> {
    /// use flowstream_core::NewMessage;
    ///
    /// let order = producer.prepare([NewMessage::new("orders", "created 42")]).await?;
    /// pg.send_staged(order).await?; // durable now; delivered once the relay has moved it
    /// # Ok(()) }
    /// ```
    ///
    /// Meant for a fleet: many processes each sending a message or two at a time to the same
    /// stream. Plain sends to one stream commit one after another (each holds the stream's
    /// head until its commit is flushed: that is what keeps offsets dense and in commit
    /// order), so however many processes send, one stream takes about one send per WAL
    /// flush. Staged sends share no lock, so the server flushes many commits at once, and
    /// the relay appends them with one flush per batch; concurrent calls through one driver
    /// share one staging insert, as concurrent `Producer::send`s share one append. The
    /// price: a message reaches its stream one relay round later (a few milliseconds, see the
    /// protocol notes), is written twice, and its offset is not returned. Sends from one task,
    /// each awaited before the next, keep their order; a call's messages to one log get
    /// consecutive offsets. Delivery is exactly once: a staged row is deleted in the
    /// transaction that appends it.
    ///
    /// Errors: as [`Producer::send`](flowstream_core::Producer::send); after a timeout or a
    /// lost connection the messages may or may not have been staged (sending again may
    /// deliver them twice). A call that shares an insert shares its result. The insert has
    /// the driver's call timeout, and a call waits at most twice that (an insert ahead of
    /// its own included); [`Error::NoRuntime`] outside a Tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the insert goes on (it may carry other calls) as long as
    /// the driver, or a clone of it, lives: the messages are staged and delivered unless it
    /// fails.
    pub async fn send_staged(&self, messages: PreparedSend) -> Result<(), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        self.stage_gathered(&runtime, messages.into_messages())
            .await?;
        Ok(())
    }

    /// Which of `xids` have ended: `true` if committed (or too old for the server to say,
    /// which only a long-committed transaction is), `false` if aborted.
    async fn ended(&self, xids: &[String]) -> Result<BTreeMap<String, bool>, DriverError> {
        let query = Self::query(&self.inner.sql.xact_status).bind(xids);
        let rows = self
            .run(
                || "looking at the transactions that staged messages".to_owned(),
                query.fetch_all(&self.inner.pool),
            )
            .await?;
        let mut ended = BTreeMap::new();
        for row in rows {
            let xid: String = row
                .try_get(0)
                .map_err(|e| storage_error("decoding a transaction id", e))?;
            let status: Option<String> = row
                .try_get(1)
                .map_err(|e| storage_error("decoding a transaction status", e))?;
            match status.as_deref() {
                Some("in progress") => {}
                Some("aborted") => {
                    ended.insert(xid, false);
                }
                _ => {
                    ended.insert(xid, true);
                }
            }
        }
        Ok(ended)
    }

    /// Moves every committed staged call to its logs, in rounds, unless another relay is in a
    /// round: then it returns [`Round::Busy`] at once, and the caller tries again shortly
    /// (the other round may have started before the rows it came for committed). With a
    /// deadline it waits in line for the other round instead, until then (a flush: relays
    /// that only try would keep taking the lock before it).
    pub(crate) async fn relay(
        &self,
        wait_until: Option<tokio::time::Instant>,
    ) -> Result<Round, DriverError> {
        let mut moved = 0;
        loop {
            match self.relay_round(wait_until).await? {
                Round::Moved { calls, full } => {
                    moved += calls;
                    if !full {
                        return Ok(Round::Moved {
                            calls: moved,
                            full: false,
                        });
                    }
                }
                Round::Busy => return Ok(Round::Busy),
            }
        }
    }

    /// Sees every staged call that was committed when it was called appended to its logs, and
    /// the wake-ups of this driver's rounds handed to the notifier, so that a flush of the
    /// notifier after it covers them; a driver that never staged anything has nothing to
    /// wait for. It waits in line for the relay lock, at most until `deadline`, and runs
    /// rounds until one stops short of its limits: then no committed row is left, and rows
    /// a round of another relay took before are appended.
    pub(crate) async fn settle_staged(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), DriverError> {
        if self.inner.relay.staged.used.load(Ordering::Acquire)
            && self.relay(Some(deadline)).await? == Round::Busy
        {
            return Err(DriverError::unavailable(format!(
                "another relay held the outbox for {:?}: staged messages may reach consumers \
                 in other processes only at their next poll",
                self.inner.operation_timeout
            )));
        }
        // A round of this driver's relay task may have committed before ours took the lock
        // and not yet handed over its streams: it does before it lets go of this.
        drop(self.inner.relay.rounds.write().await);
        Ok(())
    }

    /// One relay round: the oldest committed staged calls, appended in one transaction. With
    /// `wait_until`, it waits for the relay lock until then (`Busy` if it is still held).
    async fn relay_round(
        &self,
        wait_until: Option<tokio::time::Instant>,
    ) -> Result<Round, DriverError> {
        // Declared first, so dropped last: after the wake-up below is handed over.
        let _round = self.inner.relay.rounds.read().await;
        let mut streams: Vec<String> = Vec::new();
        let work = async {
            // Whatever the server's default: each statement must see what committed before
            // it, the take after the lock above all.
            let mut tx = self
                .pool()
                .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                .await?;
            // Relays waiting in line for the lock would each hold a connection and run a
            // round of their own for the few rows that committed meanwhile; instead they
            // leave, and try again a moment later unless the holder has moved their rows.
            let locked = match wait_until {
                None => {
                    sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.inner.sql.relay_lock)))
                        .fetch_one(&mut *tx)
                        .await?
                }
                Some(until) => {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    // `lock_timeout` 0 would wait for ever. It holds for the rest of the
                    // round too (the append waits on head rows), which ends by the deadline
                    // anyway.
                    let millis = left.as_millis().clamp(1, u128::from(u32::MAX));
                    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                        .bind(format!("{millis}ms"))
                        .execute(&mut *tx)
                        .await?;
                    match sqlx::query(AssertSqlSafe(Arc::clone(&self.inner.sql.relay_lock_wait)))
                        .execute(&mut *tx)
                        .await
                    {
                        Ok(_) => true,
                        Err(sqlx::Error::Database(e))
                            if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                        {
                            false
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            if !locked {
                tx.rollback().await?;
                return Ok(Ok(Round::Busy));
            }
            let mut rows = Self::query(&self.inner.sql.take_staged)
                .bind(ROUND)
                .bind(ROUND_BYTES)
                .bind(ROUND_MESSAGES)
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(Ok(Round::Moved {
                    calls: 0,
                    full: false,
                }));
            }
            rows.sort_by_key(|row| row.try_get::<i64, _>("id").unwrap_or(i64::MAX));
            let calls = rows.len();
            // The rows taken are the oldest ones up to the limits; the round stopped at one if
            // the bytes or messages through its last row reached it (the next row's start).
            let through = |column: &str| {
                rows.iter()
                    .filter_map(|row| row.try_get::<i64, _>(column).ok())
                    .max()
                    .unwrap_or(i64::MAX)
            };
            let full = i64::try_from(calls).unwrap_or(i64::MAX) >= ROUND
                || through("through") >= ROUND_BYTES
                || through("counted_through") >= ROUND_MESSAGES;
            let messages = match staged_messages(&rows) {
                Ok(messages) => messages,
                Err(error) => return Ok(Err(error)),
            };
            let append = match PreparedAppend::new(messages) {
                Ok(append) => append,
                Err(error) => return Ok(Err(error)),
            };
            append
                .query(&self.inner.sql.append)
                .fetch_all(&mut *tx)
                .await?;
            // Named before the commit: a commit whose reply is lost (a timeout) may still
            // have moved them, and a spurious wake-up costs a read where a missing one costs
            // a consumer its promptness (and a flush its promise).
            streams.clone_from(&append.names);
            tx.commit().await?;
            Ok(Ok(Round::Moved { calls, full }))
        };
        let moved = self
            .run(|| "relaying staged messages".to_owned(), work)
            .await;
        // Wakes the streams' waiters here and in other processes, as a plain append does.
        let _wake = WakeWhenDone {
            driver: self,
            streams: &streams,
        };
        moved?
    }
}

/// What a relay round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// Moved `calls` staged calls; `full` if it stopped at a limit (more may wait).
    Moved { calls: usize, full: bool },
    /// Another relay holds the lock: nothing done.
    Busy,
}

/// The messages of staged calls, in order.
fn staged_messages(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<NewMessage>, DriverError> {
    let column = |e: sqlx::Error| storage_error("decoding a staged call", e);
    let mut messages = Vec::new();
    for row in rows {
        let streams: Vec<String> = row.try_get("streams").map_err(column)?;
        let bodies: Vec<Vec<u8>> = row.try_get("bodies").map_err(column)?;
        let headers: Vec<Option<serde_json::Value>> = row.try_get("headers").map_err(column)?;
        let keys: Vec<Option<Vec<u8>>> = row.try_get("keys").map_err(column)?;
        if bodies.len() != streams.len()
            || headers.len() != streams.len()
            || keys.len() != streams.len()
        {
            return Err(DriverError::failed(
                "a staged call's arrays differ in length",
            ));
        }
        for (((stream, body), headers), key) in
            streams.into_iter().zip(bodies).zip(headers).zip(keys)
        {
            let mut message = NewMessage::new(stream, body);
            if let Some(serde_json::Value::Object(map)) = headers {
                for (name, value) in map {
                    let value = match value {
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    message = message.with_header(name, value);
                }
            }
            if let Some(key) = key {
                message = message.with_key(key);
            }
            messages.push(message);
        }
    }
    Ok(messages)
}

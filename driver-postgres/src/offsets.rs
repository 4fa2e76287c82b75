//! Appending: how offsets are assigned so that no reader ever skips a message (guarantee 2).
//!
//! # The scheme
//!
//! Each stream has one row in `streams` holding its head (highest offset). An append is one
//! statement (one round trip, its own transaction; the text is `Queries::append`, or
//! `Queries::append_one` for a single message, the same steps without arrays) that:
//!
//! 1. advances the head of every stream it touches by the number of its messages for that
//!    stream (`INSERT … ON CONFLICT DO UPDATE SET head = head + n RETURNING head`), in stream
//!    name order;
//! 2. inserts its messages at offsets `head - n + 1 ..= head`, in input order (each message
//!    carries its distance from the stream's last one, so the server only subtracts);
//! 3. once it has committed, the driver's notifier sends a `NOTIFY` naming the streams, outside
//!    the append's transaction (see `notifier`).
//!
//! # Why it is safe
//!
//! Step 1 takes the head row's lock and keeps it until the transaction ends. A concurrent
//! append to the same stream blocks on that lock, and only proceeds once the first one has
//! committed (or rolled back); under READ COMMITTED it then re-reads the row and builds on the
//! committed head. So for one stream, offsets are taken in commit order, and a transaction
//! holding offsets `a..=b` is visible before any transaction holding offsets above `b` can
//! even take them. A reader's snapshot therefore contains offset `n` only if it contains every
//! offset below `n`: reading "after my position" never skips a message that commits later.
//! Rolled-back appends release the lock without moving the head, so offsets stay dense.
//!
//! A sequence (or `bigserial`) does not give this: numbers are taken before commit, and
//! transactions commit in any order, so a reader can see offset 8 while 7 is still in flight
//! and move past it for good. Filtering on `xmin` snapshots, as some systems do, narrows that
//! window without closing it.
//!
//! The lock is held only for the append itself, never across application work; stream names
//! are sorted so two multi-stream appends always lock in the same order and cannot deadlock.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstream_core::driver::{DriverError, NewMessage, check_stream_name};
use sqlx::AssertSqlSafe;

use crate::PgDriver;

/// An append turned into the statement's parameters: per stream (in name order) its name and
/// message count; per message its stream, distance from the stream's last message of the
/// append, body, headers and key.
pub(crate) struct PreparedAppend {
    pub(crate) names: Vec<String>,
    counts: Vec<i64>,
    streams: Vec<String>,
    backs: Vec<i64>,
    bodies: Vec<Vec<u8>>,
    headers: Vec<Option<serde_json::Value>>,
    keys: Vec<Option<Vec<u8>>>,
}

impl PreparedAppend {
    /// Checks `messages` (see [`refuse_what_postgres_cannot_store`]) and lays them out.
    pub(crate) fn new(messages: Vec<NewMessage>) -> Result<Self, DriverError> {
        refuse_what_postgres_cannot_store(&messages)?;
        let mut per_stream: BTreeMap<&str, i64> = BTreeMap::new();
        for message in &messages {
            *per_stream.entry(message.stream()).or_default() += 1;
        }
        let names: Vec<String> = per_stream.keys().map(|s| (*s).to_owned()).collect();
        let counts: Vec<i64> = per_stream.values().copied().collect();

        // Each message's distance from the last message of its stream in this append: the
        // last gets the new head, the one before it head - 1, and so on.
        let mut left: BTreeMap<String, i64> =
            names.iter().cloned().zip(counts.iter().copied()).collect();
        let count = messages.len();
        let mut prepared = PreparedAppend {
            names,
            counts,
            streams: Vec::with_capacity(count),
            backs: Vec::with_capacity(count),
            bodies: Vec::with_capacity(count),
            headers: Vec::with_capacity(count),
            keys: Vec::with_capacity(count),
        };
        for message in messages {
            let (stream, body, message_headers, key) = message.into_parts();
            let remaining = left.get_mut(&stream).ok_or_else(|| {
                DriverError::failed(format!("stream {stream} missing from its own append"))
            })?;
            *remaining -= 1;
            prepared.backs.push(*remaining);
            prepared.streams.push(stream);
            prepared.bodies.push(body);
            prepared.keys.push(key);
            prepared
                .headers
                .push((!message_headers.is_empty()).then(|| {
                    serde_json::Value::Object(
                        message_headers
                            .into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect(),
                    )
                }));
        }
        Ok(prepared)
    }

    /// The append statement with its parameters; it returns each stream's new head.
    pub(crate) fn query<'q>(
        &'q self,
        statement: &Arc<str>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, (String, i64), sqlx::postgres::PgArguments> {
        sqlx::query_as(AssertSqlSafe(Arc::clone(statement)))
            .bind(&self.names)
            .bind(&self.counts)
            .bind(&self.streams)
            .bind(&self.backs)
            .bind(&self.bodies)
            .bind(&self.headers)
            .bind(&self.keys)
    }

    /// The one-message append statement with its parameters, if this append is one message;
    /// it returns the message's offset.
    pub(crate) fn single<'q>(
        &'q self,
        statement: &Arc<str>,
    ) -> Option<sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments>>
    {
        let ([stream], [body], [headers], [key]) = (
            self.streams.as_slice(),
            self.bodies.as_slice(),
            self.headers.as_slice(),
            self.keys.as_slice(),
        ) else {
            return None;
        };
        Some(
            sqlx::query_scalar(AssertSqlSafe(Arc::clone(statement)))
                .bind(stream)
                .bind(body)
                .bind(headers)
                .bind(key),
        )
    }

    /// The statement staging these messages in the outbox (see `outbox`), with their logs,
    /// bodies, headers and keys as arrays, in order.
    pub(crate) fn stage<'q>(
        &'q self,
        statement: &Arc<str>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(AssertSqlSafe(Arc::clone(statement)))
            .bind(&self.streams)
            .bind(&self.bodies)
            .bind(&self.headers)
            .bind(&self.keys)
    }

    /// Each message's offset, in input order, from the heads the statement returned.
    pub(crate) fn offsets(&self, rows: Vec<(String, i64)>) -> Result<Vec<u64>, DriverError> {
        let heads: BTreeMap<String, i64> = rows.into_iter().collect();
        self.streams
            .iter()
            .zip(&self.backs)
            .map(|(stream, back)| {
                let head = heads.get(stream).ok_or_else(|| {
                    DriverError::failed(format!("append returned no head for stream {stream}"))
                })?;
                let offset = head - back;
                u64::try_from(offset)
                    .ok()
                    .filter(|&o| o > 0)
                    .ok_or_else(|| DriverError::failed(format!("append computed offset {offset}")))
            })
            .collect()
    }
}

impl PgDriver {
    pub(crate) async fn append_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<u64>, DriverError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = PreparedAppend::new(messages)?;
        // Wakes the streams' waiters once the statement is over, however it ends (even if
        // this future is dropped): after a commit they must learn of it, and after a failure
        // a spurious wake-up costs one read.
        let _wake = WakeWhenDone {
            driver: self,
            streams: &prepared.names,
        };
        let what = || format!("appending to {}", prepared.names.join(", "));
        let (held, pool) = (&self.inner.appends, &self.inner.pool);
        if let Some(one) = prepared.single(&self.inner.sql.append_one) {
            let append = async {
                let mut connection = held.connection(pool).await?;
                let offset = one.fetch_one(&mut *connection).await?;
                connection.keep();
                Ok(offset)
            };
            let offset = self.run(what, append).await?;
            return u64::try_from(offset)
                .ok()
                .filter(|&o| o > 0)
                .map(|o| vec![o])
                .ok_or_else(|| DriverError::failed(format!("append computed offset {offset}")));
        }
        let append = async {
            let mut connection = held.connection(pool).await?;
            let rows = prepared
                .query(&self.inner.sql.append)
                .fetch_all(&mut *connection)
                .await?;
            connection.keep();
            Ok(rows)
        };
        let rows = self.run(what, append).await?;
        prepared.offsets(rows)
    }
}

/// Refuses, before anything is sent, what PostgreSQL cannot store faithfully: stream names the
/// engine would not accept (callers may append through the driver directly), and NUL
/// characters in headers, which `jsonb` rejects.
pub(crate) fn refuse_what_postgres_cannot_store(
    messages: &[NewMessage],
) -> Result<(), DriverError> {
    let mut checked = None;
    for message in messages {
        // A run of messages to one stream needs its name checked once.
        if checked != Some(message.stream()) {
            check_stream_name(message.stream())?;
            checked = Some(message.stream());
        }
        for (name, value) in message.headers() {
            if name.contains('\0') || value.contains('\0') {
                return Err(DriverError::InvalidInput(format!(
                    "header {:?} of a message to {}: PostgreSQL cannot store NUL characters in \
                     header names or values",
                    name.escape_debug().to_string(),
                    message.stream()
                )));
            }
        }
    }
    Ok(())
}

/// Hands an append's streams to the notifier when dropped.
pub(crate) struct WakeWhenDone<'a> {
    pub(crate) driver: &'a PgDriver,
    pub(crate) streams: &'a [String],
}

impl Drop for WakeWhenDone<'_> {
    fn drop(&mut self) {
        self.driver.inner.notifier.appended(self.streams);
    }
}

//! PostgreSQL storage for flowstream: streams and consumer groups in your existing database.
//!
//! ```no_run
//! use std::sync::Arc;
//! use flowstream_core::{Consumer, Driver, NewMessage, Producer};
//! use flowstream_postgres::PgDriver;
//!
//! # async fn demo() -> Result<(), flowstream_core::Error> {
//! let driver: Arc<dyn Driver> = Arc::new(
//!     PgDriver::builder("postgres://app@localhost/app")
//!         .schema("flowstream")      // every table lives here; created and migrated on connect
//!         .max_connections(10)
//!         .connect()
//!         .await?,
//! );
//! Producer::new(driver.clone()).send(NewMessage::new("orders", "order 1")).await?;
//! let mut consumer = Consumer::builder(driver, "orders", "billing").build().await?;
//! # Ok(()) }
//! ```
//!
//! # Offsets
//!
//! Offsets are dense per stream and visible in order: an append locks its stream's head row
//! (`UPDATE … SET head = head + n RETURNING head`) for the length of its transaction, so
//! appends to one stream commit in offset order and a reader never sees offset `n` before
//! every offset below it. A sequence would not do: its numbers are taken before commit and
//! transactions commit in any order. The full argument is in the `offsets` module.
//!
//! # Notifications
//!
//! Each driver instance keeps one LISTEN connection, opened with its first waiter, and fans
//! notifications out to every consumer in the process. An append does not notify inside its transaction (`NOTIFY` would
//! hold a database-wide lock through the commit's flush, and serialise every producer
//! process): once it commits, the driver wakes this process's waiters at once and sends one
//! `NOTIFY` for the others on a connection of its own, without waiting for a flush, gathering
//! the appends that complete meanwhile into the next one. After the
//! listener reconnects, every waiter re-reads (notifications sent meanwhile are lost), and a
//! slow periodic wake-up ([`PgDriverBuilder::fallback_poll`], every 30 s by default) is the
//! safety net. That wake-up is what an idle consumer costs: per period, its stream and
//! background task each look once (two point reads each: four per consumer blocked in `wait`,
//! two for one that is not), and nothing in between.
//!
//! # What it refuses
//!
//! Headers are stored as `jsonb`, which cannot hold a NUL character: a header name or value
//! containing one is refused ([`Error::Refused`]) before
//! anything is written, as every flowstream driver does. Bodies are `bytea` and hold anything.
//!
//! # Schema
//!
//! All tables live in one schema (default `flowstream`), with their own migrations table, so
//! they never collide with the application's. Migrations are embedded and run on connect
//! (unless [`PgDriverBuilder::run_migrations`] is off), all pending ones in one transaction (a
//! failure changes nothing), safely from several processes at once.

mod batch;
mod builder;
mod catalog;
mod errors;
mod held;
mod in_tx;
mod listener;
mod migrate;
mod notifier;
mod offsets;
mod outbox;
mod schema;
mod staging;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use flowstream_core::Error;
use flowstream_core::driver::{
    Applied, Batch, ChangeHub, Driver, DriverError, Expected, Headers, Message, NewMessage,
    ReadBuffer, Record, Revision, StorageErrorKind, check_stream_name,
};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};

pub use builder::PgDriverBuilder;
use errors::storage_error;
use listener::{Change, ListenerTask};
use schema::Queries;
pub use schema::{DEFAULT_SCHEMA, MAX_SCHEMA_LEN, validate_schema};

/// The sqlx this driver is built with, so an application passes the same version's types
/// (its pool, its transactions) to flowstream.
pub use sqlx;

/// Default for [`PgDriverBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default for [`PgDriverBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`PgDriverBuilder::fallback_poll`].
pub const DEFAULT_FALLBACK_POLL: Duration = Duration::from_secs(30);
/// Default for [`PgDriverBuilder::operation_timeout`].
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Driver`] on PostgreSQL. Cheap to clone; clones share the pool and the listener.
#[derive(Clone)]
pub struct PgDriver {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    hub: ChangeHub,
    schema: String,
    channel: String,
    sql: Queries,
    operation_timeout: Duration,
    notifier: notifier::Notifier,
    relay: outbox::Relay,
    listen_health: Arc<listener::Health>,
    _listener: ListenerTask,
    /// The connection appends take when it is free.
    appends: held::Held,
}

impl std::fmt::Debug for PgDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDriver")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgDriver {
    /// Connects with default settings; see [`PgDriver::builder`] and
    /// [`PgDriverBuilder::connect`] for the errors.
    ///
    /// # Cancel safety
    ///
    /// As [`PgDriverBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a driver for the server at `url`
    /// (`postgres://user:password@host:port/database`).
    pub fn builder(url: impl Into<String>) -> PgDriverBuilder {
        PgDriverBuilder {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            fallback_poll: DEFAULT_FALLBACK_POLL,
            run_migrations: true,
            migrate_to: None,
            application_name: "flowstream".to_owned(),
            listen_url: None,
        }
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Whether notifications reach this driver's LISTEN connection, as its last check found:
    /// `None` until it has listened (a driver listens once something waits on it), `Some(false)`
    /// when they do not (a pooler in transaction mode in the way: see
    /// [`PgDriverBuilder::listen_url`]; the driver checks again every 30 s meanwhile, and
    /// a check that arrives, however late, makes it `Some(true)`). For health checks.
    pub fn notifications_arrive(&self) -> Option<bool> {
        self.inner.listen_health.arrive()
    }

    /// The connection pool, for tools and tests that need raw SQL on the same database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Runs one storage call under the operation timeout, naming what it was `doing` in any
    /// error. A call cut short may or may not have been applied, like any other lost
    /// connection: the error is retryable.
    async fn run<T>(
        &self,
        doing: impl FnOnce() -> String,
        call: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DriverError> {
        let limit = self.inner.operation_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(error)) => Err(storage_error(&doing(), error)),
            Err(_) => Err(DriverError::unavailable(format!(
                "{}: PostgreSQL did not answer within {limit:?}",
                doing()
            ))),
        }
    }

    /// A prepared query on one of the driver's statements.
    fn query(
        statement: &Arc<str>,
    ) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(AssertSqlSafe(Arc::clone(statement)))
    }
}

fn to_i64(value: u64) -> i64 {
    // Offsets and revisions never reach i64::MAX; clamp rather than wrap if asked for more.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, what: &str) -> Result<u64, DriverError> {
    u64::try_from(value).map_err(|_| {
        DriverError::storage(
            StorageErrorKind::Corrupt,
            format!("negative {what} stored: {value}"),
        )
    })
}

/// Decodes one row of a stream read into `read`. Headers were written as a JSON object of
/// strings (the read returns NULL for an empty one, which needs no decoding); any other shape
/// was not written by flowstream and is reported, not dropped.
fn decode_message(read: &mut ReadBuffer, stream: &str, row: &PgRow) -> Result<(), DriverError> {
    // Columns by position, in the read statement's order: a lookup by name per column and
    // row costs more than the decoding itself.
    let column = |e: sqlx::Error| storage_error(&format!("decoding a message of {stream}"), e);
    let offset: i64 = row.try_get(0).map_err(column)?;
    let body: &[u8] = row.try_get(1).map_err(column)?;
    let headers: Option<serde_json::Value> = row.try_get(2).map_err(column)?;
    let key: Option<Vec<u8>> = row.try_get(3).map_err(column)?;
    let micros: i64 = row.try_get(4).map_err(column)?;
    let corrupt = |what: &str| {
        DriverError::storage(
            StorageErrorKind::Corrupt,
            format!("stored message {stream}/{offset} {what}"),
        )
    };
    let headers = match headers {
        None => Headers::new(),
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(value) => Ok((name, value)),
                _ => Err(corrupt(&format!(
                    "has a header {name:?} that is not a string"
                ))),
            })
            .collect::<Result<Headers, DriverError>>()?,
        Some(_) => return Err(corrupt("has headers that are not a JSON object")),
    };
    read.push(
        to_u64(offset, "offset")?,
        body,
        headers,
        key,
        UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
    );
    Ok(())
}

#[async_trait]
impl Driver for PgDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        self.append_batch(messages).await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        check_stream_name(stream)?;
        let query = Self::query(&self.inner.sql.read)
            .bind(stream)
            .bind(to_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self
            .run(
                || format!("reading stream {stream}"),
                query.fetch_all(&self.inner.pool),
            )
            .await?;
        let mut read = ReadBuffer::new(stream.into(), rows.len());
        for row in &rows {
            decode_message(&mut read, stream, row)?;
        }
        Ok(read.finish())
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        check_stream_name(stream)?;
        let query = Self::query(&self.inner.sql.head).bind(stream);
        let row = self
            .run(
                || format!("reading the head of stream {stream}"),
                query.fetch_optional(&self.inner.pool),
            )
            .await?;
        let Some(row) = row else {
            return Ok(0);
        };
        let head: i64 = row
            .try_get(0)
            .map_err(|e| storage_error("decoding a stream head", e))?;
        to_u64(head, "head")
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        check_stream_name(stream)?;
        let query = Self::query(&self.inner.sql.trim)
            .bind(stream)
            .bind(to_i64(through));
        let done = self
            .run(
                || format!("trimming stream {stream}"),
                query.execute(&self.inner.pool),
            )
            .await?;
        Ok(done.rows_affected())
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        let query = Self::query(&self.inner.sql.get_record).bind(key);
        let row = self
            .run(
                || format!("reading record {key}"),
                query.fetch_optional(&self.inner.pool),
            )
            .await?;
        row.map(|row| decode_record(key, &row)).transpose()
    }

    async fn put_record(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        let query = self.record_query(key, value, expected, notify);
        let row = self
            .run(
                || format!("writing record {key}"),
                query.fetch_optional(&self.inner.pool),
            )
            .await?;
        if let Some(row) = row {
            let revision: i64 = row
                .try_get("revision")
                .map_err(|e| storage_error("decoding a record revision", e))?;
            return Ok(Revision(to_u64(revision, "revision")?));
        }
        // The compare-and-swap lost. Read the winner in a statement of its own: its snapshot
        // is taken after the write that beat ours committed, so it is at least that new.
        let current = self.get_record(key).await?;
        Err(DriverError::Conflict {
            key: key.to_owned(),
            current,
        })
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, DriverError> {
        self.apply_batch(batch).await
    }

    async fn delete_log(&self, log: &str) -> Result<bool, DriverError> {
        self.delete_whole_log(log).await
    }

    async fn logs(&self) -> Result<Vec<(String, u64)>, DriverError> {
        self.list_logs().await
    }

    async fn delete_record(
        &self,
        key: &str,
        expected: Revision,
        notify: bool,
    ) -> Result<(), DriverError> {
        self.delete_record_if(key, expected, notify).await
    }

    async fn records(&self, prefix: &str) -> Result<Vec<(String, Record)>, DriverError> {
        self.list_records(prefix).await
    }

    fn changes(&self) -> &ChangeHub {
        &self.inner.hub
    }

    async fn flush_wakeups(&self) -> Result<(), DriverError> {
        let limit = self.inner.operation_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let flush = async {
            self.settle_staged(deadline).await?;
            self.inner.notifier.flush().await
        };
        tokio::time::timeout_at(deadline, flush)
            .await
            .unwrap_or_else(|_| {
                Err(DriverError::unavailable(format!(
                    "staged messages not relayed, or wake-ups not sent, within {limit:?}: \
                     consumers in other processes find those messages at their next poll"
                )))
            })
    }
}

impl PgDriver {
    /// The compare-and-swap statement of one record write; it returns the new revision, or no
    /// row when `expected` does not hold.
    fn record_query(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Expected,
        notify: bool,
    ) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let sql = &self.inner.sql;
        let statement = match (expected, notify) {
            (Expected::Absent, false) => &sql.create_record,
            (Expected::Absent, true) => &sql.create_record_notify,
            (Expected::Revision(_), false) => &sql.update_record,
            (Expected::Revision(_), true) => &sql.update_record_notify,
        };
        let mut query = Self::query(statement).bind(key.to_owned()).bind(value);
        if let Expected::Revision(Revision(revision)) = expected {
            query = query.bind(to_i64(revision));
        }
        if notify {
            query = query
                .bind(self.inner.channel.clone())
                .bind(listener::payload(std::iter::once(Change::Record(key))));
        }
        query
    }
}

fn decode_record(key: &str, row: &PgRow) -> Result<Record, DriverError> {
    let column = |e: sqlx::Error| storage_error(&format!("decoding record {key}"), e);
    let revision: i64 = row.try_get("revision").map_err(column)?;
    let value: serde_json::Value = row.try_get("value").map_err(column)?;
    Ok(Record {
        value,
        revision: Revision(to_u64(revision, "revision")?),
    })
}

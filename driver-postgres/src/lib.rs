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
//! Each driver instance keeps one LISTEN connection and fans notifications out to every
//! consumer in the process; writers send one NOTIFY per transaction, inside it. After the
//! listener reconnects, every waiter re-reads (notifications sent meanwhile are lost), and a
//! slow periodic wake-up ([`PgDriverBuilder::fallback_poll`]) is the safety net.
//!
//! # Schema
//!
//! All tables live in one schema (default `flowstream`), with their own migrations table, so
//! they never collide with the application's. Migrations are embedded and run on connect
//! (unless [`PgDriverBuilder::run_migrations`] is off), safely from several processes at once.

mod errors;
mod listener;
mod offsets;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use flowstream_core::{
    ChangeHub, Driver, DriverError, Error, Expected, Headers, Message, NewMessage, Record, Revision,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Row};

use errors::driver_error;
use listener::{Change, ListenerTask};
use schema::Queries;
pub use schema::{DEFAULT_SCHEMA, MAX_SCHEMA_LEN, validate_schema};

/// Default for [`PgDriverBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default for [`PgDriverBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`PgDriverBuilder::fallback_poll`].
pub const DEFAULT_FALLBACK_POLL: Duration = Duration::from_secs(30);
/// Default for [`PgDriverBuilder::operation_timeout`].
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures a [`PgDriver`]; made by [`PgDriver::builder`].
#[must_use = "call .connect().await"]
pub struct PgDriverBuilder {
    url: String,
    schema: String,
    max_connections: u32,
    connect_timeout: Duration,
    operation_timeout: Duration,
    fallback_poll: Duration,
    run_migrations: bool,
    migrate_to: Option<i64>,
    application_name: String,
}

impl std::fmt::Debug for PgDriverBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("PgDriverBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("fallback_poll", &self.fallback_poll)
            .field("run_migrations", &self.run_migrations)
            .field("application_name", &self.application_name)
            .finish_non_exhaustive()
    }
}

impl PgDriverBuilder {
    /// The schema holding flowstream's tables (default `flowstream`). Lower-case letters,
    /// digits and `_`; see [`validate_schema`].
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most connections the pool opens, including the one kept for LISTEN (default 10, at
    /// least 2).
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections;
        self
    }

    /// How long to wait for a connection, at connect and later from the pool (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest a storage call may take, waiting for a connection included, before it fails
    /// with a retryable error (default 30 s). Bounds every call when the server hangs
    /// instead of failing (a frozen host, a stalled network).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How often every waiter is woken to re-read, as a safety net should a notification
    /// ever be missed (default 30 s). Costs one or two point reads per consumer per period.
    pub fn fallback_poll(mut self, every: Duration) -> Self {
        self.fallback_poll = every;
        self
    }

    /// Whether `connect` creates and migrates the schema (default `true`). Turn it off when
    /// migrations are applied by a deployment step.
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// The `application_name` of the driver's connections, as `pg_stat_activity` shows it
    /// (default `flowstream`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    #[doc(hidden)]
    /// Applies migrations only up to `version` (for upgrade tests).
    pub fn migrate_to(mut self, version: i64) -> Self {
        self.migrate_to = Some(version);
        self
    }

    /// Connects, migrates (unless told not to) and starts listening for notifications.
    ///
    /// Errors: [`Error::InvalidConfig`] for a bad URL or schema name; [`Error::Connect`] when
    /// the server is unreachable or refuses the connection (the message names host, port and
    /// database, never the password).
    pub async fn connect(self) -> Result<PgDriver, Error> {
        validate_schema(&self.schema)?;
        if self.max_connections < 2 {
            return Err(Error::InvalidConfig(
                "max_connections must be at least 2: one is kept for LISTEN".into(),
            ));
        }
        if self.fallback_poll.is_zero() {
            return Err(Error::InvalidConfig(
                "fallback_poll must be above zero".into(),
            ));
        }
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| Error::InvalidConfig(format!("invalid PostgreSQL URL: {e}")))?
            .application_name(&self.application_name);
        let target = format!(
            "PostgreSQL at {}:{}, database {}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        let connect_error = |e: sqlx::Error| Error::Connect {
            target: target.clone(),
            source: Box::new(e),
        };
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        if self.run_migrations {
            schema::migrator(&self.schema, self.migrate_to)
                .run(&pool)
                .await
                .map_err(|e| {
                    Error::Storage(DriverError::failed(format!(
                        "migrating schema {} failed: {e}",
                        self.schema
                    )))
                })?;
        }
        let hub = ChangeHub::new();
        let channel = schema::channel(&self.schema);
        let listener = listener::start(&pool, channel.clone(), hub.clone(), self.fallback_poll)
            .await
            .map_err(connect_error)?;
        tracing::debug!(%target, schema = %self.schema, "connected");
        Ok(PgDriver {
            inner: Arc::new(Inner {
                sql: Queries::new(&self.schema),
                pool,
                hub,
                schema: self.schema,
                channel,
                operation_timeout: self.operation_timeout,
                _listener: listener,
            }),
        })
    }
}

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
    _listener: ListenerTask,
}

impl std::fmt::Debug for PgDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDriver")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgDriver {
    /// Connects with default settings; see [`PgDriver::builder`].
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
        }
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool, for tools and tests that need raw SQL on the same database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Runs one storage call under the operation timeout. A call cut short may or may not
    /// have been applied, like any other lost connection: the error is retryable.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        let limit = self.inner.operation_timeout;
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(DriverError::unavailable(format!(
                "PostgreSQL did not answer within {limit:?}"
            )))
        })
    }
}

fn to_i64(value: u64) -> i64 {
    // Offsets and revisions never reach i64::MAX; clamp rather than wrap if asked for more.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, what: &str) -> Result<u64, DriverError> {
    u64::try_from(value)
        .map_err(|_| DriverError::failed(format!("negative {what} stored: {value}")))
}

#[async_trait]
impl Driver for PgDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        self.timed(self.append_batch(messages)).await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        let query = sqlx::query(AssertSqlSafe(self.inner.sql.read.clone()))
            .bind(stream)
            .bind(to_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self
            .timed(async {
                query
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(driver_error)
            })
            .await?;
        let stream: std::sync::Arc<str> = stream.into();
        rows.into_iter()
            .map(|row| {
                let offset: i64 = row.try_get("offset").map_err(driver_error)?;
                let body: Vec<u8> = row.try_get("body").map_err(driver_error)?;
                let headers: serde_json::Value = row.try_get("headers").map_err(driver_error)?;
                let micros: i64 = row.try_get("produced_micros").map_err(driver_error)?;
                let headers = match headers {
                    serde_json::Value::Object(map) => map
                        .into_iter()
                        .filter_map(|(k, v)| match v {
                            serde_json::Value::String(v) => Some((k, v)),
                            _ => None,
                        })
                        .collect(),
                    _ => Headers::new(),
                };
                Ok(Message::new(
                    std::sync::Arc::clone(&stream),
                    to_u64(offset, "offset")?,
                    body,
                    headers,
                    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                ))
            })
            .collect()
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        let query = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.head.clone())).bind(stream);
        let head: Option<i64> = self
            .timed(async {
                query
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(driver_error)
            })
            .await?;
        to_u64(head.unwrap_or(0), "head")
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        let query = sqlx::query(AssertSqlSafe(self.inner.sql.trim.clone()))
            .bind(stream)
            .bind(to_i64(through));
        let done = self
            .timed(async { query.execute(&self.inner.pool).await.map_err(driver_error) })
            .await?;
        Ok(done.rows_affected())
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        let query = sqlx::query(AssertSqlSafe(self.inner.sql.get_record.clone())).bind(key);
        let row = self
            .timed(async {
                query
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(driver_error)
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let revision: i64 = row.try_get("revision").map_err(driver_error)?;
        let value: serde_json::Value = row.try_get("value").map_err(driver_error)?;
        Ok(Some(Record {
            value,
            revision: Revision(to_u64(revision, "revision")?),
        }))
    }

    async fn put_record(
        &self,
        key: &str,
        value: serde_json::Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        let sql = &self.inner.sql;
        let statement = match (expected, notify) {
            (Expected::Absent, false) => &sql.create_record,
            (Expected::Absent, true) => &sql.create_record_notify,
            (Expected::Revision(_), false) => &sql.update_record,
            (Expected::Revision(_), true) => &sql.update_record_notify,
        };
        let mut query = sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(key)
            .bind(value);
        if let Expected::Revision(Revision(revision)) = expected {
            query = query.bind(to_i64(revision));
        }
        if notify {
            query = query
                .bind(&self.inner.channel)
                .bind(listener::payload(std::iter::once(Change::Record(key))));
        }
        let row = self
            .timed(async {
                query
                    .fetch_optional(&self.inner.pool)
                    .await
                    .map_err(driver_error)
            })
            .await?;
        let Some(row) = row else {
            return Err(DriverError::Conflict {
                key: key.to_owned(),
            });
        };
        let revision: i64 = row.try_get("revision").map_err(driver_error)?;
        Ok(Revision(to_u64(revision, "revision")?))
    }

    fn changes(&self) -> &ChangeHub {
        &self.inner.hub
    }
}

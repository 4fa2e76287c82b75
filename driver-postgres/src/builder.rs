//! Configuring and connecting a [`PgDriver`]: settings checked before anything is sent,
//! a first connection that reports the server's real answer at once, then migrations (or a
//! check that they were applied), the pool and the listener.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::Error;
use flowstream_core::driver::{ChangeHub, DriverError, StorageErrorKind};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::errors::cause;
use crate::held::{Held, PING_IF_IDLE_FOR};
use crate::notifier::Notifier;
use crate::outbox::Relay;
use crate::schema::{self, Queries, validate_schema};
use crate::{Inner, PgDriver, listener, migrate};

/// Configures a [`PgDriver`]; made by [`PgDriver::builder`].
#[must_use = "call .connect().await"]
pub struct PgDriverBuilder {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) max_connections: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) fallback_poll: Duration,
    pub(crate) run_migrations: bool,
    pub(crate) migrate_to: Option<i64>,
    pub(crate) application_name: String,
    pub(crate) listen_url: Option<String>,
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
            .field("listen_url", &self.listen_url.as_ref().map(|_| "(set)"))
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
    /// least 2). The driver opens two more, outside the pool: one to send notifications, and
    /// one for appends and staged sends, opened at the first of them (a statement run through
    /// the pool costs a second round trip: sqlx pings each connection it takes back).
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
    /// ever be missed (default 30 s). Costs each consumer two point reads per period (its
    /// background task reads the group record and the stream's head), and two more while it
    /// is blocked in `wait` (its stream, then the head): measured, 4.0 transactions per idle
    /// consumer per period (see the project's BENCHMARKS.md).
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

    /// A direct URL (to the server itself, not through a connection pooler) for the two
    /// connections that need a session of their own: the one that LISTENs for changes and the
    /// one that NOTIFYs after appends. Everything else goes through the main URL.
    ///
    /// A pooler in transaction mode (PgBouncer's `pool_mode = transaction`) lends a server
    /// connection per transaction, so a LISTEN made through it ends up on a connection other
    /// clients use, and notifications never reach the driver. The driver checks this whenever
    /// it starts listening (it sends a notification through its pool and waits up to 3 s for
    /// it); if it does not arrive, it logs an error naming this setting, reports it through
    /// [`PgDriver::notifications_arrive`], and wakes waiting consumers every second instead.
    /// The URL is checked like the main one (`InvalidConfig`).
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
        self
    }

    /// Applies migrations only up to `version` (for upgrade tests).
    #[doc(hidden)]
    pub fn migrate_to(mut self, version: i64) -> Self {
        self.migrate_to = Some(version);
        self
    }

    /// Connects, migrates (unless told not to) and starts listening for notifications.
    ///
    /// Errors:
    /// - [`Error::InvalidConfig`] for a URL that is not `postgres://` or `postgresql://`, a
    ///   bad schema name, fewer than 2 connections or a zero timeout or period, before
    ///   anything is sent;
    /// - [`Error::Storage`] of kind [`StorageErrorKind::Connect`] when the server is
    ///   unreachable or refuses the connection: at once when it refuses (a wrong port, a
    ///   missing database or user, a wrong password), after `connect_timeout` when it does
    ///   not answer. The message names host, port and database, never the password;
    /// - `Error::Storage(DriverError::NotFound(_))` when migrations are off and the schema
    ///   does not hold flowstream's tables;
    /// - `Error::Storage` of kind `Failed` when a migration fails; the schema is then left as
    ///   it was (all pending migrations run in one transaction).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes what it opened. Migrations cut short are rolled back by the
    /// server with their transaction.
    pub async fn connect(self) -> Result<PgDriver, Error> {
        self.check()?;
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| Error::InvalidConfig(format!("invalid PostgreSQL URL: {e}")))?
            .application_name(&self.application_name);
        let target = format!(
            "PostgreSQL at {}:{}, database {}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        let connect_error = |e: sqlx::Error| {
            Error::Storage(
                DriverError::storage(
                    StorageErrorKind::Connect,
                    format!("could not connect to {target}"),
                )
                .with_cause(cause(e)),
            )
        };
        // One connection first, outside the pool: the pool retries a refused connection until
        // its timeout, where a direct attempt reports the server's answer at once.
        let first =
            tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&options))
                .await
                .map_err(|_| {
                    Error::Storage(DriverError::storage(
                        StorageErrorKind::Connect,
                        format!("{target} did not answer within {:?}", self.connect_timeout),
                    ))
                })?
                .map_err(connect_error)?;
        // Closing is a courtesy to the server; the connection is gone either way.
        drop(first.close().await);
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            // sqlx pings every connection it hands out by default: a round trip before each
            // statement, about a fifth of a single send's time here. Only connections that sat
            // idle long enough for the server to have restarted or dropped them unseen are
            // pinged; one that dies in steady use fails its statement (an `Unavailable`
            // error, retryable) and the pool replaces it.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.clone());
        if self.run_migrations {
            migrate::migrate(&pool, &self.schema, self.migrate_to).await?;
        } else {
            migrate::check_migrated(&pool, &self.schema).await?;
        }
        let hub = ChangeHub::new();
        let channel = schema::channel(&self.schema);
        // LISTEN, and the NOTIFY of appends, need a session of their own: on the direct URL
        // when the main one goes through a pooler.
        let direct = match &self.listen_url {
            Some(url) => Some(
                PgConnectOptions::from_str(url)
                    .map_err(|e| Error::InvalidConfig(format!("invalid listen_url: {e}")))?
                    .application_name(&self.application_name),
            ),
            None => None,
        };
        let health = Arc::new(listener::Health::default());
        let notifier = Notifier::start(
            direct.clone().unwrap_or_else(|| options.clone()),
            channel.clone(),
            hub.clone(),
            self.operation_timeout,
        );
        let listener = listener::start(
            direct,
            &pool,
            channel.clone(),
            hub.clone(),
            self.fallback_poll,
            notifier.own_pid(),
            Arc::clone(&health),
        );
        tracing::debug!(%target, schema = %self.schema, "connected");
        let driver = PgDriver {
            inner: Arc::new(Inner {
                sql: Queries::new(&self.schema),
                pool,
                hub,
                schema: self.schema,
                channel,
                operation_timeout: self.operation_timeout,
                notifier,
                relay: Relay::new(),
                listen_health: health,
                _listener: listener,
                appends: Held::new(options),
            }),
        };
        driver
            .inner
            .relay
            .start(Arc::downgrade(&driver.inner), self.fallback_poll);
        Ok(driver)
    }

    /// The settings checks made before anything is sent to the server.
    fn check(&self) -> Result<(), Error> {
        let scheme = self.url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(Error::InvalidConfig(format!(
                "not a PostgreSQL URL: it must start with postgres:// or postgresql://, got {}",
                scheme.map_or_else(|| "no scheme".to_owned(), |s| format!("{s}://"))
            )));
        }
        validate_schema(&self.schema)?;
        if self.max_connections < 2 {
            return Err(Error::InvalidConfig(
                "max_connections must be at least 2: one is kept for LISTEN".into(),
            ));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("operation_timeout", self.operation_timeout),
            ("fallback_poll", self.fallback_poll),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!("{name} must be above zero")));
            }
        }
        Ok(())
    }
}

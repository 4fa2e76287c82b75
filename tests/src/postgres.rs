//! PostgreSQL for the tests: the server named by `FLOWSTREAM_PG_URL` when it is set, otherwise
//! one container per test binary started with testcontainers (what a user with Docker gets).
//! With neither, every PostgreSQL test fails with a message saying how to provide one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flowstream_core::Driver;
use flowstream_postgres::{PgDriver, PgDriverBuilder};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

use crate::Backend;

/// Environment variable naming the server to test against.
pub const URL_VAR: &str = "FLOWSTREAM_PG_URL";
/// Environment variable naming the image (`name:tag`) testcontainers starts otherwise.
pub const IMAGE_VAR: &str = "FLOWSTREAM_PG_IMAGE";
/// The image used when [`IMAGE_VAR`] is not set: the official one, a current major version.
pub const DEFAULT_IMAGE: &str = "postgres:18-alpine";

struct Container {
    runtime: tokio::runtime::Runtime,
    handle: ContainerAsync<Postgres>,
}

/// The database of one test binary: resolved on first use, removed by [`TestDatabase::stop`].
pub struct TestDatabase {
    url: OnceLock<Result<String, String>>,
    container: Mutex<Option<Container>>,
}

/// The test binary's database.
pub static DATABASE: TestDatabase = TestDatabase {
    url: OnceLock::new(),
    container: Mutex::new(None),
};

impl TestDatabase {
    /// The server's URL, starting a container on first use if `FLOWSTREAM_PG_URL` is unset.
    /// Panics (failing the test) with instructions when no database can be had.
    pub fn url(&self) -> String {
        let resolved = self.url.get_or_init(|| match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Ok(url),
            // On a thread of its own: callers are usually inside a runtime already, and
            // the container keeps a runtime of its own for its whole life.
            _ => std::thread::scope(|scope| {
                scope
                    .spawn(|| self.start_container())
                    .join()
                    .unwrap_or_else(|_| Err("starting the container panicked".to_owned()))
            }),
        });
        match resolved {
            Ok(url) => url.clone(),
            Err(why) => panic!(
                "no PostgreSQL to test against: {why}\n\
                 Set {URL_VAR}=postgres://user:password@host:port/database to use a running \
                 server, or start Docker so that testcontainers can run {DEFAULT_IMAGE} \
                 (another image with {IMAGE_VAR}=name:tag)."
            ),
        }
    }

    /// Whether this run uses a container started by testcontainers.
    pub fn uses_container(&self) -> bool {
        self.container
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn start_container(&self) -> Result<String, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let (handle, url) = runtime.block_on(start_container())?;
        *self
            .container
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Container { runtime, handle });
        Ok(url)
    }

    /// Removes the container, if this run started one. Call once all tests are done.
    pub fn stop(&self) {
        let container = self
            .container
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Container { runtime, handle }) = container
            && let Err(error) = runtime.block_on(handle.rm())
        {
            eprintln!("testcontainers: removing the container failed: {error}");
        }
    }
}

/// A schema name no other test (in this run or an earlier one) uses.
pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000_000)
        .unwrap_or_default();
    format!(
        "t{stamp}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A driver builder for `schema` on the test database, with test-friendly settings: the
/// safety-net poll is slowed down so that idle-cost tests measure the engine alone.
pub fn builder(schema: &str) -> PgDriverBuilder {
    PgDriver::builder(DATABASE.url())
        .schema(schema)
        .max_connections(8)
        .fallback_poll(Duration::from_secs(600))
}

/// Drops a test schema and everything in it.
pub async fn drop_schema(schema: &str) {
    let admin = builder(schema)
        .run_migrations(false)
        .connect()
        .await
        .expect("connect to drop the test schema");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(admin.pool())
    .await
    .expect("drop test schema");
}

/// Each test gets its own schema; every `open` connects a new driver instance to it.
pub struct PgBackend {
    /// The test's schema.
    pub schema: String,
}

impl PgBackend {
    /// A backend on a fresh schema.
    pub fn new() -> Self {
        PgBackend {
            schema: unique_schema(),
        }
    }
}

impl Default for PgBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Backend for PgBackend {
    async fn open(&self) -> Arc<dyn Driver> {
        let driver: Arc<dyn Driver> = Arc::new(
            builder(&self.schema)
                .connect()
                .await
                .expect("connect to the test database"),
        );
        driver
    }

    fn durable(&self) -> bool {
        true
    }

    async fn cleanup(&self) {
        drop_schema(&self.schema).await;
    }
}

/// A test named `{prefix}::{name}` that runs `body` with a fresh schema on the test database,
/// dropping the schema afterwards if the body passed.
pub fn schema_trial<F, Fut>(prefix: &str, name: &str, body: F) -> libtest_mimic::Trial
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    libtest_mimic::Trial::test(format!("{prefix}::{name}"), move || {
        crate::suite::block_on(async move {
            let schema = unique_schema();
            body(schema.clone()).await;
            drop_schema(&schema).await;
        });
        Ok(())
    })
}

/// Whether this run starts its own containers (no `FLOWSTREAM_PG_URL`).
pub fn uses_containers() -> bool {
    std::env::var(URL_VAR).map_or(true, |url| url.is_empty())
}

/// Starts a PostgreSQL container of the test image ([`IMAGE_VAR`], or [`DEFAULT_IMAGE`]);
/// returns it with the URL of its `postgres` database. Dropping the handle removes it.
pub async fn start_container() -> Result<(ContainerAsync<Postgres>, String), String> {
    let image = std::env::var(IMAGE_VAR).unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let (name, tag) = image
        .rsplit_once(':')
        .ok_or_else(|| format!("{IMAGE_VAR}={image:?} is not name:tag"))?;
    let handle = Postgres::default()
        .with_host_auth()
        .with_name(name)
        .with_tag(tag)
        .start()
        .await
        .map_err(|e| format!("{URL_VAR} is not set and starting {image} failed: {e}"))?;
    let host = handle
        .get_host()
        .await
        .map_err(|e| format!("container host: {e}"))?;
    let port = handle
        .get_host_port_ipv4(5432)
        .await
        .map_err(|e| format!("container port: {e}"))?;
    eprintln!("testcontainers: started {image} at {host}:{port}");
    Ok((
        handle,
        format!("postgres://postgres@{host}:{port}/postgres"),
    ))
}

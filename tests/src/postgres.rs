//! PostgreSQL for the tests, found in this order (and named on standard error):
//!
//! 1. the server named by `FLOWSTREAM_PG_URL`, when it is set;
//! 2. a container started by testcontainers, when a Docker engine answers (what a user with
//!    Docker gets);
//! 3. a private throwaway cluster made with the installed server's own `initdb` and `pg_ctl`,
//!    on a free port under a temporary directory;
//! 4. otherwise every PostgreSQL test fails with one message naming the three ways.
//!
//! One database serves a whole test binary; [`TestDatabase::stop`] removes a container or a
//! cluster at the end.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flowstream_core::Driver;
use flowstream_postgres::{PgDriver, PgDriverBuilder};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

use crate::DriverFactory;
use crate::cluster::Cluster;

/// Environment variable naming the server to test against.
pub const URL_VAR: &str = "FLOWSTREAM_PG_URL";
/// Environment variable naming the image (`name:tag`) testcontainers starts otherwise.
pub const IMAGE_VAR: &str = "FLOWSTREAM_PG_IMAGE";
/// The image used when [`IMAGE_VAR`] is not set: the official one, a current major version.
pub const DEFAULT_IMAGE: &str = "postgres:18-alpine";
/// Connections the private cluster accepts: the PostgreSQL tests run one per CPU at a time,
/// and the busiest opens about 30 (its driver's pool, a tail consumer, an admin pool).
fn cluster_connections() -> u32 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(threads * 30 + 40)
        .unwrap_or(u32::MAX)
        .max(100)
}

#[derive(Debug)]
struct Container {
    runtime: tokio::runtime::Runtime,
    handle: ContainerAsync<Postgres>,
}

/// What a test binary's database runs on.
#[derive(Debug)]
enum Provider {
    Container(Box<Container>),
    Cluster(Cluster),
}

/// The database of one test binary: resolved on first use, removed by [`TestDatabase::stop`].
#[derive(Debug)]
pub struct TestDatabase {
    url: OnceLock<Result<String, String>>,
    provider: Mutex<Option<Provider>>,
}

/// The test binary's database.
pub static DATABASE: TestDatabase = TestDatabase {
    url: OnceLock::new(),
    provider: Mutex::new(None),
};

impl TestDatabase {
    /// The server's URL, finding a database on first use (see the module docs). Panics
    /// (failing the test) with instructions when none can be had.
    pub fn url(&self) -> String {
        let resolved = self.url.get_or_init(|| {
            // On a thread of its own: callers are usually inside a runtime already, and a
            // container keeps a runtime of its own for its whole life.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| self.resolve())
                    .join()
                    .unwrap_or_else(|_| Err("finding a database panicked".to_owned()))
            })
        });
        match resolved {
            Ok(url) => url.clone(),
            Err(why) => panic!("no PostgreSQL to test against.\n{why}"),
        }
    }

    fn resolve(&self) -> Result<String, String> {
        if let Ok(url) = std::env::var(URL_VAR)
            && !url.is_empty()
        {
            eprintln!("flowstream tests: PostgreSQL from {URL_VAR}");
            return Ok(url);
        }
        let docker = match docker_answers() {
            Ok(()) => match self.start_container() {
                Ok(url) => return Ok(url),
                Err(why) => why,
            },
            Err(why) => why,
        };
        let cluster = match Cluster::try_start(cluster_connections()) {
            Ok(cluster) => {
                let url = cluster.url();
                eprintln!(
                    "flowstream tests: PostgreSQL from a private cluster on 127.0.0.1:{} \
                     (initdb/pg_ctl; {docker}), removed at the end",
                    cluster.port()
                );
                *self.lock() = Some(Provider::Cluster(cluster));
                return Ok(url);
            }
            Err(why) => why,
        };
        Err(format!(
            "The PostgreSQL tests find a server in one of three ways; none worked:\n\
             1. {URL_VAR}=postgres://user:password@host:port/database names a running server: \
             not set.\n\
             2. A Docker engine, where testcontainers starts {DEFAULT_IMAGE} (another image with \
             {IMAGE_VAR}=name:tag): {docker}.\n\
             3. PostgreSQL's server programs, which make a private throwaway cluster: {cluster}."
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Provider>> {
        self.provider
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this run uses a container started by testcontainers.
    pub fn uses_container(&self) -> bool {
        matches!(*self.lock(), Some(Provider::Container(_)))
    }

    fn start_container(&self) -> Result<String, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let (handle, url) = runtime.block_on(start_container())?;
        eprintln!(
            "flowstream tests: PostgreSQL from a testcontainers container, removed at the end"
        );
        *self.lock() = Some(Provider::Container(Box::new(Container { runtime, handle })));
        Ok(url)
    }

    /// Removes the container or the cluster, if this run started one. Call once all tests
    /// are done.
    pub fn stop(&self) {
        match self.lock().take() {
            Some(Provider::Container(container)) => {
                let Container { runtime, handle } = *container;
                if let Err(error) = runtime.block_on(handle.rm()) {
                    eprintln!("testcontainers: removing the container failed: {error}");
                }
            }
            // Dropping the cluster stops its server and deletes its directory.
            Some(Provider::Cluster(cluster)) => drop(cluster),
            None => {}
        }
    }
}

/// Whether a Docker engine answers a ping where testcontainers looks for one: `DOCKER_HOST`
/// when set, else the usual sockets (the system one, rootless Docker's, Docker Desktop's).
/// `Err` says why not, for the message of the next way.
pub fn docker_answers() -> Result<(), String> {
    let hosts: Vec<String> = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => vec![host],
        _ => {
            let mut sockets = vec!["/var/run/docker.sock".to_owned()];
            if let Ok(runtime) = std::env::var("XDG_RUNTIME_DIR") {
                sockets.push(format!("{runtime}/docker.sock"));
                sockets.push(format!("{runtime}/.docker/run/docker.sock"));
            }
            if let Ok(home) = std::env::var("HOME") {
                sockets.push(format!("{home}/.docker/run/docker.sock"));
                sockets.push(format!("{home}/.docker/desktop/docker.sock"));
            }
            sockets.into_iter().map(|s| format!("unix://{s}")).collect()
        }
    };
    let mut why = Vec::new();
    for host in &hosts {
        match ping(host) {
            Ok(()) => return Ok(()),
            Err(error) => why.push(error),
        }
    }
    Err(why.join("; "))
}

fn ping(host: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut answer = String::new();
    let outcome = if let Some(path) = host.strip_prefix("unix://") {
        std::os::unix::net::UnixStream::connect(path).and_then(|mut socket| {
            socket.set_read_timeout(Some(timeout))?;
            socket.write_all(request)?;
            socket.read_to_string(&mut answer)
        })
    } else if let Some(address) = host.strip_prefix("tcp://") {
        use std::net::ToSocketAddrs;
        address
            .to_socket_addrs()
            .and_then(|mut addresses| {
                addresses
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))
            })
            .and_then(|address| std::net::TcpStream::connect_timeout(&address, timeout))
            .and_then(|mut socket| {
                socket.set_read_timeout(Some(timeout))?;
                socket.write_all(request)?;
                socket.read_to_string(&mut answer)
            })
    } else {
        return Err(format!("DOCKER_HOST={host} is neither unix:// nor tcp://"));
    };
    match outcome {
        Ok(_) if answer.starts_with("HTTP/1.") && answer.contains(" 200 ") => Ok(()),
        Ok(_) => Err(format!(
            "the Docker engine at {host} did not answer its ping"
        )),
        Err(error) => Err(format!("no Docker engine answers at {host} ({error})")),
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
///
/// # Cancel safety
///
/// A dropped call may or may not have dropped the schema.
pub async fn drop_schema(schema: &str) {
    let admin = sqlx::PgPool::connect(&DATABASE.url())
        .await
        .expect("connect to drop the test schema");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop test schema");
    admin.close().await;
}

/// Each test gets its own schema; every `open` connects a new driver instance to it.
#[derive(Debug)]
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
impl DriverFactory for PgBackend {
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

/// The conformance suite with the driver's pool behind a real PgBouncer in transaction mode
/// (one per test, started on first use, stopped with the backend) and its LISTEN and NOTIFY
/// connections on the direct URL (`listen_url`), as a deployment behind a pooler runs it.
#[derive(Debug)]
pub struct PgBouncerBackend {
    /// The test's schema.
    pub schema: String,
    bouncer: OnceLock<crate::pgbouncer::PgBouncer>,
}

impl PgBouncerBackend {
    /// A backend on a fresh schema; PgBouncer starts with the first driver.
    pub fn new() -> Self {
        PgBouncerBackend {
            schema: unique_schema(),
            bouncer: OnceLock::new(),
        }
    }

    fn pool_url(&self) -> String {
        self.bouncer
            .get_or_init(|| {
                crate::pgbouncer::PgBouncer::start(&DATABASE.url()).expect("PgBouncer starts")
            })
            .url()
    }
}

impl Default for PgBouncerBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl DriverFactory for PgBouncerBackend {
    async fn open(&self) -> Arc<dyn Driver> {
        let pool_url = self.pool_url();
        let driver = PgDriver::builder(pool_url)
            .listen_url(DATABASE.url())
            .schema(&self.schema)
            .max_connections(8)
            .fallback_poll(Duration::from_secs(600))
            .connect()
            .await
            .unwrap_or_else(|e| {
                let log = self.bouncer.get().map(|b| b.log()).unwrap_or_default();
                panic!("connect through PgBouncer: {e}\n{log}")
            });
        Arc::new(driver)
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

/// Whether tests that start containers of their own can run: no `FLOWSTREAM_PG_URL` (a run
/// against a given server starts nothing), and a Docker engine answering.
pub fn uses_containers() -> bool {
    std::env::var(URL_VAR).map_or(true, |url| url.is_empty()) && docker_answers().is_ok()
}

/// Starts a PostgreSQL container of the test image ([`IMAGE_VAR`], or [`DEFAULT_IMAGE`]);
/// returns it with the URL of its `postgres` database. Dropping the handle removes it.
///
/// # Cancel safety
///
/// A container started before the drop is removed with its handle.
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

//! The conformance suite and the PostgreSQL-specific tests, against a real server:
//! `FLOWSTREAM_PG_URL` when set, otherwise a container started by testcontainers.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use flowstream_core::driver::DriverError;
use flowstream_core::{Consumer, Driver, Error, NewMessage, Producer, StorageErrorKind, Wake};
use flowstream_postgres::PgDriver;
use flowstream_tests::history::Outcome;
use flowstream_tests::postgres::{
    DATABASE, PgBackend, builder, schema_trial, start_container, uses_containers,
};
use flowstream_tests::workload::{Event, follow};
use flowstream_tests::{
    BOUND, InstrumentedDriver, assert_causes_printed_once, consumer, drain, error_chain,
    eventually, eventually_async, produce, stored_group, suite,
};
use sqlx::{AssertSqlSafe, Row};
use tokio::time::Instant;

mod pg_in_tx;

/// Guarantee 2 under real concurrency: 16 producers on separate connections, 2,000 single
/// sends each, while a consumer tails the stream. It sees exactly 1..=32,000, in order, each
/// producer's messages in that producer's order.
async fn gapless_under_sixteen_concurrent_producers(schema: String) {
    const PRODUCERS: usize = 16;
    const EACH: usize = 2_000;
    let driver: Arc<dyn Driver> = Arc::new(
        builder(&schema)
            .max_connections(24)
            .connect()
            .await
            .expect("connect"),
    );
    let mut tail = consumer(&driver, "busy", "tail")
        .batch_size(1_000)
        .build()
        .await
        .expect("consumer");
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let driver = driver.clone();
            tokio::spawn(async move { produce(&driver, "busy", &format!("{p}-"), EACH).await })
        })
        .collect();

    let total = (PRODUCERS * EACH) as u64;
    let mut next_offset = 1u64;
    let mut next_index: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while next_offset <= total {
        assert!(
            Instant::now() < deadline,
            "tail stalled at offset {next_offset}"
        );
        while let Some(message) = tail.next().await.expect("next") {
            assert_eq!(
                message.offset(),
                next_offset,
                "offsets are dense and in order"
            );
            let (producer, index) = message
                .body_str()
                .and_then(|b| b.split_once('-'))
                .expect("body");
            let expected = next_index.entry(producer.to_owned()).or_default();
            assert_eq!(
                index.parse::<usize>().expect("index"),
                *expected,
                "producer {producer} order"
            );
            *expected += 1;
            next_offset += 1;
        }
        tail.commit(next_offset - 1).await.ok();
        tail.wait(BOUND).await.expect("wait");
    }
    for producer in producers {
        producer.await.expect("producer");
    }
    assert_eq!(next_index.len(), PRODUCERS);
    assert!(next_index.values().all(|&n| n == EACH));
    assert_eq!(driver.head("busy").await.expect("head"), total);
}

/// Guarantee 2 with a forced interleaving: a slow producer holds a transaction that has taken
/// the next offset; an append from another connection and reads from a third never expose a
/// later offset while the earlier one is pending. (A sequence-based design fails this: the
/// second append would commit offset 3 while 2 is still in flight, and the reader would see
/// 1, 3.)
async fn reader_never_sees_past_a_pending_offset(schema: String) {
    let driver = builder(&schema).connect().await.expect("connect");
    let shared: Arc<dyn Driver> = Arc::new(driver.clone());
    produce(&shared, "s", "first", 1).await;

    let mut slow = driver.pool().begin().await.expect("begin");
    let taken: i64 = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {schema}.streams SET head = head + 1 WHERE name = 's' RETURNING head"
    )))
    .fetch_one(&mut *slow)
    .await
    .expect("take the next offset")
    .get(0);
    assert_eq!(taken, 2);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.messages (stream, \"offset\", body) VALUES ('s', 2, 'slow')"
    )))
    .execute(&mut *slow)
    .await
    .expect("insert the slow message");

    let fast_driver = shared.clone();
    let fast = tokio::spawn(async move {
        Producer::new(fast_driver)
            .send(NewMessage::new("s", "fast"))
            .await
    });
    // Read repeatedly while the slow transaction is open: only offset 1 may ever be visible.
    let window = Instant::now() + Duration::from_millis(500);
    while Instant::now() < window {
        let seen: Vec<u64> = shared
            .read("s", 0, 10)
            .await
            .expect("read")
            .iter()
            .map(|m| m.offset())
            .collect();
        assert_eq!(
            seen,
            vec![1],
            "a later offset became visible while offset 2 was pending"
        );
        assert_eq!(shared.head("s").await.expect("head"), 1);
        tokio::task::yield_now().await;
    }
    assert!(
        !fast.is_finished(),
        "the second append waits for the first to commit"
    );

    slow.commit().await.expect("commit the slow producer");
    let fast_offset = fast.await.expect("task").expect("fast send");
    assert_eq!(fast_offset, 3);
    let seen: Vec<u64> = shared
        .read("s", 0, 10)
        .await
        .expect("read")
        .iter()
        .map(|m| m.offset())
        .collect();
    assert_eq!(seen, vec![1, 2, 3]);
}

/// A stored row whose headers flowstream could not have written (a non-string value, put
/// there by hand) is reported as damage, never read back with the header silently dropped;
/// the rows before it still read.
async fn headers_not_written_by_flowstream_are_reported_not_dropped(schema: String) {
    let driver = builder(&schema).connect().await.expect("connect");
    let shared: Arc<dyn Driver> = Arc::new(driver.clone());
    produce(&shared, "s", "m", 1).await;
    sqlx::query(AssertSqlSafe(format!(
        "WITH h AS (UPDATE {schema}.streams SET head = head + 1 WHERE name = 's' RETURNING head) \
         INSERT INTO {schema}.messages (stream, \"offset\", body, headers) \
         SELECT 's', head, 'x', '{{\"attempt\": 2}}' FROM h"
    )))
    .execute(driver.pool())
    .await
    .expect("store a hand-written row");
    let read = shared.read("s", 0, 10).await;
    match read {
        Err(error) => {
            assert_eq!(
                error.storage_kind(),
                Some(StorageErrorKind::Corrupt),
                "{error}"
            );
            assert!(
                error.to_string().contains("s/2"),
                "names the message: {error}"
            );
        }
        Ok(messages) => panic!(
            "read {} messages, one with its header dropped",
            messages.len()
        ),
    }
    assert_eq!(shared.read("s", 0, 1).await.expect("read").len(), 1);
}

/// Guarantee 8 across processes: the wake-up an append sends after it commits, outside its
/// transaction, reaches a consumer on another driver instance (its own pool and listener;
/// the safety net is ten minutes away), also after every connection of the producing driver,
/// its notifying one included, was killed.
async fn appends_wake_consumers_on_other_driver_instances(schema: String) {
    let producing: Arc<dyn Driver> = Arc::new(
        builder(&schema)
            .application_name("flowstream-test-producer")
            .connect()
            .await
            .expect("connect the producing driver"),
    );
    let (counting, consuming) = counting_driver(&schema).await;
    produce(&producing, "s", "m", 1).await;
    let mut c = consumer(&consuming, "s", "g")
        .build()
        .await
        .expect("consumer");
    assert_eq!(drain(&mut c).await.len(), 1);
    let admin = sqlx::PgPool::connect(&DATABASE.url()).await.expect("pool");
    for round in 0..2 {
        if round == 1 {
            let killed: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'flowstream-test-producer'",
            )
            .fetch_one(&admin)
            .await
            .expect("terminate the producing driver's connections");
            assert!(killed >= 2, "its pool, listener and notifier: {killed}");
        }
        let waiting = asleep_in_wait(c, &counting).await;
        let producer = Producer::new(producing.clone());
        eventually_async("a send goes through", BOUND, async || {
            producer.send(NewMessage::new("s", "late")).await.is_ok()
        })
        .await;
        let (woke, back) = waiting.await.expect("task");
        assert_eq!(
            woke,
            Wake::Messages,
            "round {round}: woken by the other driver's append"
        );
        c = back;
        assert!(!drain(&mut c).await.is_empty());
    }
    admin.close().await;
}

/// A driver on `schema` that counts its storage calls, and the same driver as a plain one.
async fn counting_driver(schema: &str) -> (Arc<InstrumentedDriver>, Arc<dyn Driver>) {
    let counting = InstrumentedDriver::new(Arc::new(
        builder(schema)
            .connect()
            .await
            .expect("connect the consuming driver"),
    ));
    let consuming: Arc<dyn Driver> = counting.clone();
    (counting, consuming)
}

/// Starts `c` waiting in a task and returns once it sleeps: `wait` reads the stream and its
/// head (through `counting`) before it does, and from then on only a notification can wake it
/// before its timeout. The task returns how it woke, and the consumer.
async fn asleep_in_wait(
    mut c: Consumer,
    counting: &InstrumentedDriver,
) -> tokio::task::JoinHandle<(Wake, Consumer)> {
    let reads = counting.reads();
    let waiting = tokio::spawn(async move {
        let woke = c.wait(BOUND).await.expect("wait");
        (woke, c)
    });
    eventually("the consumer is waiting", BOUND, || {
        counting.reads() >= reads + 2
    })
    .await;
    waiting
}

/// A producer that flushes before its driver goes, as a process exiting after it sent, has
/// told consumers elsewhere: a consumer on another driver, asleep in `wait` with its safety
/// net ten minutes away, wakes on each round's message. Each round's producing driver is new
/// (its notifying connection not yet open) and dropped right after the flush; without the
/// flush its wake-up went with it.
async fn a_producer_that_flushes_before_it_goes_wakes_consumers_elsewhere(schema: String) {
    let (counting, consuming) = counting_driver(&schema).await;
    let mut c = consumer(&consuming, "s", "g")
        .build()
        .await
        .expect("consumer");
    for round in 0..5 {
        let waiting = asleep_in_wait(c, &counting).await;
        let producer = Producer::new(Arc::new(
            builder(&schema)
                .connect()
                .await
                .expect("connect the producing driver"),
        ));
        producer
            .send(NewMessage::new("s", format!("round {round}")))
            .await
            .expect("send");
        producer.flush().await.expect("flush");
        drop(producer);
        let (woke, back) = waiting.await.expect("task");
        assert_eq!(
            woke,
            Wake::Messages,
            "round {round}: woken by a gone producer"
        );
        c = back;
        assert_eq!(drain(&mut c).await.len(), 1);
    }
}

/// A process that stages its sends (`send_staged`) and flushes before it goes has told
/// consumers elsewhere too: the flush waits in line for the outbox, held here by another
/// relay, appends what was staged once it has it, and sends the wake-up of that append.
/// Without that its rows stayed staged until some relay's sweep, ten minutes away.
async fn a_staged_sender_that_flushes_before_it_goes_wakes_consumers_elsewhere(schema: String) {
    let (counting, consuming) = counting_driver(&schema).await;
    let c = consumer(&consuming, "s", "g")
        .build()
        .await
        .expect("consumer");
    let waiting = asleep_in_wait(c, &counting).await;
    let pg = builder(&schema)
        .connect()
        .await
        .expect("connect the producing driver");
    let producer = Producer::new(Arc::new(pg.clone()));
    let admin = sqlx::PgPool::connect(&DATABASE.url()).await.expect("pool");
    let mut relay_held = admin.begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock(hashtext('flowstream.outbox'), hashtext('{schema}'))"
    )))
    .execute(&mut *relay_held)
    .await
    .expect("hold the relay");

    let staged = producer
        .prepare([NewMessage::new("s", "staged")])
        .await
        .expect("prepare");
    pg.send_staged(staged).await.expect("staged");
    let flush = {
        let producer = producer.clone();
        tokio::spawn(async move { producer.flush().await })
    };
    let in_line = async || -> bool {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND wait_event = 'advisory' AND query LIKE 'SELECT pg_advisory_xact_lock%' \
             AND query LIKE '%' || $1 || '%'",
        )
        .bind(format!("hashtext('{schema}')"))
        .fetch_one(&admin)
        .await
        .expect("pg_stat_activity");
        waiting == 1
    };
    eventually_async("the flush waits in line for the outbox", BOUND, in_line).await;
    assert!(!flush.is_finished(), "a flush waits for the staged message");
    relay_held.commit().await.expect("let the relay go");
    flush.await.expect("task").expect("flush");
    drop(producer);
    drop(pg);

    let (woke, mut c) = waiting.await.expect("task");
    assert_eq!(woke, Wake::Messages, "woken by a gone staging producer");
    let bodies: Vec<Vec<u8>> = drain(&mut c)
        .await
        .iter()
        .map(|m| m.body().to_vec())
        .collect();
    assert_eq!(bodies, [b"staged".to_vec()]);
    admin.close().await;
}

/// A process that only produces holds no LISTEN connection (and so receives none of the
/// other processes' notifications); its first waiter starts one, and is woken through it.
async fn a_driver_that_only_produces_does_not_listen(schema: String) {
    const NAME: &str = "flowstream-test-listen";
    let driver: Arc<dyn Driver> = Arc::new(
        builder(&schema)
            .application_name(NAME)
            .connect()
            .await
            .expect("connect"),
    );
    let admin = sqlx::PgPool::connect(&DATABASE.url()).await.expect("pool");
    let listening = async || -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
        )
        .bind(NAME)
        .fetch_one(&admin)
        .await
        .expect("pg_stat_activity")
    };
    produce(&driver, "s", "m", 20).await;
    assert_eq!(listening().await, 0, "a producer alone does not LISTEN");

    let other: Arc<dyn Driver> = Arc::new(builder(&schema).connect().await.expect("connect"));
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    assert_eq!(drain(&mut c).await.len(), 20);
    eventually_async("the first waiter starts the LISTEN", BOUND, async || {
        listening().await == 1
    })
    .await;
    let waiting = tokio::spawn(async move { c.wait(BOUND).await.expect("wait") });
    produce(&other, "s", "n", 1).await;
    assert_eq!(
        waiting.await.expect("task"),
        Wake::Messages,
        "woken by another driver's append"
    );
    admin.close().await;
}

fn spawn_consumer(schema: &str, takeover_ms: u64) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-consumer"))
        .args([
            &DATABASE.url(),
            schema,
            "jobs",
            "workers",
            &takeover_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .expect("start consumer process");
    let lines = follow(&mut child);
    (child, lines)
}

fn expect_line(lines: &mpsc::Receiver<String>, wanted: &str) {
    let line = lines
        .recv_timeout(BOUND)
        .expect("a line from the consumer process");
    assert_eq!(line, wanted);
}

/// The offset of a `delivered G N` line.
fn processed(line: &str) -> Option<u64> {
    match Event::parse(line)? {
        Event::Delivered { offset, .. } => Some(offset),
        _ => None,
    }
}

/// The offset of a `commit G N accepted` line.
fn committed(line: &str) -> Option<u64> {
    match Event::parse(line)? {
        Event::Commit {
            offset,
            outcome: Outcome::Accepted,
            ..
        } => Some(offset),
        _ => None,
    }
}

/// Guarantees 3 and 4 across processes: two OS processes in one group; the active one is
/// killed with SIGKILL mid-stream; the other takes over after `takeover_after`, resumes right
/// after the committed offset, and every message is processed at least once.
async fn killed_process_is_replaced_by_another_process(schema: String) {
    const TOTAL: u64 = 300;
    const TAKEOVER_MS: u64 = 500;
    let driver: Arc<dyn Driver> = Arc::new(builder(&schema).connect().await.expect("connect"));
    let (mut first, first_lines) = spawn_consumer(&schema, TAKEOVER_MS);
    expect_line(&first_lines, "active after 0 gen 1");
    let (mut second, second_lines) = spawn_consumer(&schema, TAKEOVER_MS);
    expect_line(&second_lines, "standby");

    let producer_driver = driver.clone();
    let producing = tokio::spawn(async move {
        let producer = Producer::new(producer_driver);
        for i in 1..=TOTAL {
            producer
                .send(NewMessage::new("jobs", format!("job {i}")))
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });

    let mut seen = BTreeSet::new();
    let mut first_processed = 0;
    let mut last_committed_by_first = 0;
    while first_processed < 100 {
        let line = tokio::task::block_in_place(|| first_lines.recv_timeout(BOUND))
            .expect("first consumer output");
        if let Some(offset) = processed(&line) {
            seen.insert(offset);
            first_processed += 1;
        }
    }
    first.kill().expect("SIGKILL the active consumer");
    first.wait().expect("reap it");
    let killed_at = Instant::now();
    // Everything it printed before dying, up to the end of its output.
    for line in first_lines.iter() {
        if let Some(offset) = processed(&line) {
            seen.insert(offset);
        } else if let Some(offset) = committed(&line) {
            last_committed_by_first = offset;
        }
    }

    let mut resumed_after = None;
    let mut first_after_takeover = None;
    while (seen.len() as u64) < TOTAL || resumed_after.is_none() {
        let line = tokio::task::block_in_place(|| second_lines.recv_timeout(BOUND))
            .expect("second consumer output");
        if let Some(Event::Active {
            after: committed, ..
        }) = Event::parse(&line)
        {
            assert!(
                killed_at.elapsed() >= Duration::from_millis(TAKEOVER_MS / 2),
                "took over too early"
            );
            resumed_after = Some(committed);
        } else if let Some(offset) = processed(&line) {
            assert!(resumed_after.is_some(), "a standby processed a message");
            first_after_takeover.get_or_insert(offset);
            seen.insert(offset);
        }
    }
    producing.await.expect("producer");
    second.kill().expect("stop the second consumer");
    second.wait().expect("reap it");

    let resumed_after = resumed_after.expect("took over");
    // The dead consumer's last commit may have reached the server after its last line.
    assert!(
        resumed_after >= last_committed_by_first,
        "{resumed_after} < {last_committed_by_first}"
    );
    assert_eq!(
        first_after_takeover,
        Some(resumed_after + 1),
        "resumes right after the commit"
    );
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<BTreeSet<_>>(),
        "every message processed at least once"
    );
}

/// Two processes connecting to a fresh schema at once both succeed; each migration is
/// applied once.
async fn concurrent_first_connections_migrate_once(schema: String) {
    let (a, b) = tokio::join!(builder(&schema).connect(), builder(&schema).connect());
    let a = a.expect("first connect");
    b.expect("second connect");
    let versions: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM {schema}._flowstream_migrations ORDER BY version"
    )))
    .fetch_all(a.pool())
    .await
    .expect("read migrations");
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
}

/// A schema created by an older version is upgraded in place on connect, keeping its data.
async fn upgrade_keeps_existing_data(schema: String) {
    let old = builder(&schema)
        .migrate_to(1)
        .connect()
        .await
        .expect("old version");
    // What the first version stored for five messages (this version's statements need the
    // later migrations, so they cannot write it).
    for statement in [
        format!("INSERT INTO {schema}.streams (name, head) VALUES ('kept', 5)"),
        format!(
            "INSERT INTO {schema}.messages (stream, \"offset\", body) \
             SELECT 'kept', i, convert_to('m' || (i - 1), 'UTF8') FROM generate_series(1, 5) i"
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(old.pool())
            .await
            .expect("store as the first version did");
    }
    drop(old);

    let new: Arc<dyn Driver> = Arc::new(builder(&schema).connect().await.expect("upgrade"));
    let messages = new.read("kept", 0, 10).await.expect("read");
    assert_eq!(messages.len(), 5);
    assert_eq!(messages[4].body_str(), Some("m4"));
    assert_eq!(messages[4].key(), None);
    let mut c = consumer(&new, "kept", "g")
        .build()
        .await
        .expect("groups work after the upgrade");
    assert_eq!(c.next().await.expect("next").expect("message").offset(), 1);
}

/// Takes the error out of a connect that had to fail with a storage error of `kind`.
fn expect_kind(result: Result<PgDriver, Error>, kind: StorageErrorKind) -> Error {
    match result {
        Err(error) if error.storage_kind() == Some(kind) => error,
        other => panic!("expected a {kind} error, got {other:?}"),
    }
}

/// Connection problems at `connect` are clear errors that name the server, never the password,
/// and come at once when the server answers at once. Each cause is printed once in the chain.
async fn connect_errors_name_the_server_not_the_password(schema: String) {
    // Nothing listens on port 1: refused at once, long before the connect timeout.
    let unreachable = tokio::time::timeout(
        BOUND,
        PgDriver::builder("postgres://app:s3cret-pw@127.0.0.1:1/appdb")
            .schema(schema.as_str())
            .connect_timeout(Duration::from_secs(600))
            .connect(),
    )
    .await
    .expect("a refused connection is reported at once, not after connect_timeout");
    let error = expect_kind(unreachable, StorageErrorKind::Connect);
    let shown = format!("{} {error:?}", error_chain(&error));
    assert!(
        shown.contains("127.0.0.1:1") && shown.contains("appdb"),
        "{shown}"
    );
    assert!(
        shown.to_lowercase().contains("refused"),
        "the real cause: {shown}"
    );
    assert!(!shown.contains("s3cret-pw"), "the password leaked: {shown}");
    assert_causes_printed_once(&error);

    let mut url = DATABASE.url();
    let cut = url.rfind('/').expect("url has a database");
    url.truncate(cut);
    url.push_str("/no_such_database_here");
    let missing = PgDriver::builder(url)
        .schema(schema.as_str())
        .connect()
        .await;
    let error = expect_kind(missing, StorageErrorKind::Connect);
    let chain = error_chain(&error);
    assert!(chain.contains("no_such_database_here"), "{chain}");
    assert!(
        !chain.contains(" at line "),
        "no line of the server's source code: {chain}"
    );
    assert_causes_printed_once(&error);

    let builder_debug = format!("{:?}", PgDriver::builder("postgres://u:hunter22@h/db"));
    assert!(!builder_debug.contains("hunter22"), "{builder_debug}");
}

/// Settings that cannot work are configuration errors at connect, before anything is sent;
/// a schema that was never migrated is reported at connect when migrations are off; a
/// migration that fails leaves the schema as it was.
async fn bad_settings_and_schemas_fail_at_connect(schema: String) {
    for (what, result) in [
        (
            "not a URL",
            PgDriver::builder("not a url at all").connect().await,
        ),
        (
            "another scheme",
            PgDriver::builder("mysql://root@127.0.0.1:3306/test")
                .connect()
                .await,
        ),
        (
            "a schema that is not an identifier",
            PgDriver::builder(DATABASE.url())
                .schema("Robert'); DROP TABLE x;--")
                .connect()
                .await,
        ),
        (
            "a zero operation timeout",
            builder(&schema)
                .operation_timeout(Duration::ZERO)
                .connect()
                .await,
        ),
        (
            "a zero connect timeout",
            builder(&schema)
                .connect_timeout(Duration::ZERO)
                .connect()
                .await,
        ),
    ] {
        assert!(
            matches!(result, Err(Error::InvalidConfig(_))),
            "{what}: {result:?}"
        );
    }

    let unmigrated = builder(&schema).run_migrations(false).connect().await;
    assert!(
        matches!(unmigrated, Err(Error::Storage(DriverError::NotFound(_)))),
        "{unmigrated:?}"
    );

    // The application already has a table named like one of ours in the schema it gives us:
    // the first migration applies, the second fails, and neither may stay.
    let admin = sqlx::PgPool::connect(&DATABASE.url()).await.expect("pool");
    for statement in [
        format!("CREATE SCHEMA {schema}"),
        format!("CREATE TABLE {schema}.records (id int PRIMARY KEY, note text)"),
        format!("INSERT INTO {schema}.records VALUES (1, 'the application''s row')"),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .expect("application setup");
    }
    let failed = builder(&schema).connect().await;
    let error = expect_kind(failed, StorageErrorKind::Failed);
    assert!(
        error_chain(&error).contains("already exists"),
        "{}",
        error_chain(&error)
    );
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
         ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .expect("list tables");
    assert_eq!(left, vec!["records".to_owned()], "the schema is as it was");
    let note: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT note FROM {schema}.records WHERE id = 1"
    )))
    .fetch_one(&admin)
    .await
    .expect("the application's row");
    assert_eq!(note, "the application's row");
}

/// A connection lost mid-run (the server terminated every connection of the driver) surfaces
/// at most as retryable errors, and the consumer loop recovers: it is woken and receives new
/// messages once reconnected.
async fn consumer_recovers_after_its_connections_are_killed(schema: String) {
    let (app, victim) = named_driver(&schema).await;
    let admin = builder(&schema).connect().await.expect("admin connection");
    let other: Arc<dyn Driver> = Arc::new(admin.clone());
    let mut c = consumer(&victim, "s", "g").build().await.expect("consumer");
    produce(&other, "s", "before", 1).await;
    assert_eq!(c.next().await.expect("next").expect("message").offset(), 1);
    c.commit(1).await.expect("commit");

    kill_connections(&admin, &app).await;
    produce(&other, "s", "after", 1).await;

    let deadline = Instant::now() + BOUND;
    let message = loop {
        assert!(Instant::now() < deadline, "the consumer never recovered");
        match c.next().await {
            Ok(Some(message)) => break message,
            Ok(None) => {
                // A long wait: only a wake-up (after the listener reconnected) ends it in time.
                c.wait(BOUND).await.ok();
            }
            Err(error) => assert!(error.is_retryable(), "not retryable: {error}"),
        }
    };
    assert_eq!(message.offset(), 2);
    let mut committed = c.commit(2).await;
    if committed.as_ref().is_err_and(Error::is_retryable) {
        committed = c.commit(2).await;
    }
    committed.expect("commit after recovery");
    assert_eq!(stored_group(&other, "s", "g").await.committed, 2);
}

/// A driver whose connections carry a name of their own (`fs-{schema}`), to find them in
/// `pg_stat_activity`; returns the name and the driver.
async fn named_driver(schema: &str) -> (String, Arc<dyn Driver>) {
    let app = format!("fs-{schema}");
    let driver = builder(schema)
        .application_name(app.as_str())
        .connect()
        .await
        .expect("connect");
    (app, Arc::new(driver))
}

/// How many of the server's connections named `app` last ran a single-message append: sends
/// one after another share the connection a driver keeps for appends (a pooled one would
/// change hands while sqlx pings it on its way back).
async fn append_backends(admin: &PgDriver, app: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
         AND query LIKE 'WITH head AS%'",
    )
    .bind(app)
    .fetch_one(admin.pool())
    .await
    .expect("pg_stat_activity")
}

/// Terminates, on the server, every connection named `app`; there must be some.
async fn kill_connections(admin: &PgDriver, app: &str) {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(app)
    .fetch_all(admin.pool())
    .await
    .expect("terminate");
    assert!(!killed.is_empty(), "the driver had connections to kill");
}

/// A producer's appends survive their connection being killed: after a second of idleness
/// the connection is found dead before use and replaced, so the send succeeds; killed while
/// in steady use, one send may fail (retryable) and the next succeeds. Nothing is lost. Sends
/// one after another share one connection.
async fn a_producer_recovers_after_its_connections_are_killed(schema: String) {
    let (app, victim) = named_driver(&schema).await;
    let victim = Producer::new(victim);
    let admin = builder(&schema).connect().await.expect("admin connection");
    for _ in 0..5 {
        victim
            .send(NewMessage::new("s", "before"))
            .await
            .expect("send");
    }
    assert_eq!(
        append_backends(&admin, &app).await,
        1,
        "five sends in a row went through one connection"
    );
    kill_connections(&admin, &app).await;
    // Not a wait for something to happen: the case under test is a connection left idle past
    // the driver's one-second rule (checked before use after that), and only time makes it so.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    victim
        .send(NewMessage::new("s", "after idling"))
        .await
        .expect("a send after idling finds its connection dead and opens another");

    kill_connections(&admin, &app).await;
    let sent = victim.send(NewMessage::new("s", "at once")).await;
    if let Err(error) = &sent {
        assert!(error.is_retryable(), "not retryable: {error}");
        victim
            .send(NewMessage::new("s", "at once"))
            .await
            .expect("the send after a failed one opens a new connection");
    }
    let stored: Vec<String> = admin
        .read("s", 0, 10)
        .await
        .expect("read")
        .iter()
        .map(|m| String::from_utf8_lossy(m.body()).into_owned())
        .collect();
    let (first, again) = stored.split_at(6.min(stored.len()));
    assert_eq!(
        first,
        [
            "before",
            "before",
            "before",
            "before",
            "before",
            "after idling"
        ],
        "{stored:?}"
    );
    // A failed send's outcome is unknown in general (a reply lost after the commit): the
    // retry may store the message a second time, never lose it.
    assert!(
        (1..=2).contains(&again.len()) && again.iter().all(|body| body == "at once"),
        "{stored:?}"
    );
}

/// Guarantee 8 on PostgreSQL: a thousand consumers on one driver share one LISTEN connection.
async fn thousand_consumers_share_one_listening_connection(schema: String) {
    let (app, driver) = named_driver(&schema).await;
    let mut consumers = Vec::new();
    for i in 0..1_000 {
        consumers.push(
            consumer(&driver, "s", &format!("g{i}"))
                .build()
                .await
                .expect("consumer"),
        );
    }
    let admin = builder(&schema).connect().await.expect("admin");
    let rows = sqlx::query(
        "SELECT count(*) FILTER (WHERE query ILIKE 'LISTEN%') AS listening, count(*) AS total \
         FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_one(admin.pool())
    .await
    .expect("pg_stat_activity");
    let listening: i64 = rows.get("listening");
    let total: i64 = rows.get("total");
    assert_eq!(listening, 1, "one LISTEN connection for the whole driver");
    assert!(total <= 8, "connections stay within the pool: {total}");
}

/// A frozen server (`docker pause`: connections hang instead of failing) is bounded by the
/// driver's operation timeout: calls fail with retryable errors instead of hanging, and the
/// consumer carries on once the server thaws. Runs on a container of its own.
async fn frozen_server_calls_time_out_and_recover() {
    let (container, url) = start_container()
        .await
        .unwrap_or_else(|why| panic!("{why}"));
    let driver: Arc<dyn Driver> = Arc::new(
        PgDriver::builder(url)
            .operation_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect"),
    );
    produce(&driver, "s", "m", 2).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let first = c.next().await.expect("next").expect("message 1");

    container.pause().await.expect("docker pause");
    let started = Instant::now();
    let frozen = c.commit(first.offset()).await;
    let waited = started.elapsed();
    assert!(
        frozen.as_ref().is_err_and(Error::is_retryable),
        "{frozen:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "the call hung for {waited:?}"
    );
    container.unpause().await.expect("docker unpause");

    let deadline = Instant::now() + BOUND;
    loop {
        match c.commit(first.offset()).await {
            Ok(()) => break,
            Err(error) => assert!(error.is_retryable(), "{error}"),
        }
        assert!(Instant::now() < deadline, "never recovered after the thaw");
    }
    let second = loop {
        match c.next().await {
            Ok(Some(message)) => break message,
            Ok(None) => panic!("message 2 is there"),
            Err(error) => assert!(error.is_retryable(), "{error}"),
        }
    };
    assert_eq!(second.offset(), 2);
    c.commit(2).await.expect("commit after the thaw");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 2);
    drop((c, driver));
    container.rm().await.expect("remove the container");
}

/// Retention applied from two driver instances (two pools, as two processes would) at once,
/// on a stream being appended to: together they delete what the policy says, once, and the
/// newest messages stay.
async fn retention_from_two_drivers_at_once(schema: String) {
    use flowstream_core::{Admin, Retention};
    let first: Arc<dyn Driver> = Arc::new(builder(&schema).connect().await.expect("connect"));
    let second: Arc<dyn Driver> = Arc::new(builder(&schema).connect().await.expect("connect"));
    let producer = Producer::new(first.clone());
    for chunk in 0..30 {
        let batch: Vec<NewMessage> = (0..1_000)
            .map(|i| NewMessage::new("kept", format!("{chunk}-{i}")))
            .collect();
        producer.send_batch(batch).await.expect("send");
    }
    let (a, b) = (Admin::new(first.clone()), Admin::new(second.clone()));
    a.set_retention("kept", Retention::new().max_messages(5_000))
        .await
        .expect("policy");
    let (one, two) = tokio::join!(a.apply_retention("kept"), b.apply_retention("kept"));
    assert_eq!(one.expect("first") + two.expect("second"), 25_000);
    let stored = a.stream("kept").await.expect("stream").expect("exists");
    let partition = &stored.partitions[0];
    assert_eq!(
        (partition.first, partition.head, partition.messages),
        (Some(25_001), 30_000, 5_000)
    );
}

/// A real PgBouncer in transaction mode in the LISTEN path: a driver whose LISTEN goes
/// through it (`listen_url` naming the pooler) finds that notifications do not arrive, says
/// so, and its waiting consumers still get new messages (a one-second look); a driver that
/// listens directly is woken by notifications (with the test's 10-minute safety net, nothing
/// else could wake it within the bound). The pool itself goes direct here, so any PgBouncer
/// release serves; the suite behind the pooler is `postgres_pgbouncer::conformance::…`.
async fn listen_through_pgbouncer_is_detected(schema: String) {
    let bouncer =
        flowstream_tests::pgbouncer::PgBouncer::start(&DATABASE.url()).expect("PgBouncer starts");
    let open = |listen_url: Option<String>| {
        let mut builder = builder(&schema);
        if let Some(url) = listen_url {
            builder = builder.listen_url(url);
        }
        builder.connect()
    };
    let pooled = open(Some(bouncer.url())).await.expect("connect");
    let direct = open(None).await.expect("connect");
    assert_eq!(pooled.notifications_arrive(), None, "nothing listens yet");
    let producer = Producer::new(Arc::new(open(None).await.expect("a producer")));

    for (driver, arrive) in [(pooled, false), (direct, true)] {
        let name = if arrive { "direct" } else { "pooled" };
        let driver: Arc<PgDriver> = Arc::new(driver);
        let as_dyn: Arc<dyn Driver> = driver.clone();
        let mut waiting = consumer(&as_dyn, "behind", name)
            .build()
            .await
            .expect("consumer");
        drain(&mut waiting).await;
        eventually("the listener has checked its notifications", BOUND, || {
            driver.notifications_arrive().is_some()
        })
        .await;
        assert_eq!(
            driver.notifications_arrive(),
            Some(arrive),
            "{name}: {}",
            bouncer.log()
        );
        producer
            .send(NewMessage::new("behind", name))
            .await
            .expect("send");
        assert_eq!(
            waiting.wait(BOUND).await.expect("wait"),
            Wake::Messages,
            "{name}: a waiting consumer learns of the message"
        );
        let got = drain(&mut waiting).await;
        assert_eq!(got.last().and_then(|m| m.body_str()), Some(name));
        waiting.shutdown().await.expect("shutdown");
    }
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = suite::trials("postgres", PgBackend::new);
    trials.extend([
        schema_trial(
            "postgres",
            "gapless_under_sixteen_concurrent_producers",
            gapless_under_sixteen_concurrent_producers,
        ),
        schema_trial(
            "postgres",
            "reader_never_sees_past_a_pending_offset",
            reader_never_sees_past_a_pending_offset,
        ),
        schema_trial(
            "postgres",
            "killed_process_is_replaced_by_another_process",
            killed_process_is_replaced_by_another_process,
        ),
        schema_trial(
            "postgres",
            "retention_from_two_drivers_at_once",
            retention_from_two_drivers_at_once,
        ),
        schema_trial(
            "postgres",
            "concurrent_first_connections_migrate_once",
            concurrent_first_connections_migrate_once,
        ),
        schema_trial(
            "postgres",
            "upgrade_keeps_existing_data",
            upgrade_keeps_existing_data,
        ),
        schema_trial(
            "postgres",
            "connect_errors_name_the_server_not_the_password",
            connect_errors_name_the_server_not_the_password,
        ),
        schema_trial(
            "postgres",
            "a_driver_that_only_produces_does_not_listen",
            a_driver_that_only_produces_does_not_listen,
        ),
        schema_trial(
            "postgres",
            "appends_wake_consumers_on_other_driver_instances",
            appends_wake_consumers_on_other_driver_instances,
        ),
        schema_trial(
            "postgres",
            "a_producer_that_flushes_before_it_goes_wakes_consumers_elsewhere",
            a_producer_that_flushes_before_it_goes_wakes_consumers_elsewhere,
        ),
        schema_trial(
            "postgres",
            "a_staged_sender_that_flushes_before_it_goes_wakes_consumers_elsewhere",
            a_staged_sender_that_flushes_before_it_goes_wakes_consumers_elsewhere,
        ),
        schema_trial(
            "postgres",
            "headers_not_written_by_flowstream_are_reported_not_dropped",
            headers_not_written_by_flowstream_are_reported_not_dropped,
        ),
        schema_trial(
            "postgres",
            "bad_settings_and_schemas_fail_at_connect",
            bad_settings_and_schemas_fail_at_connect,
        ),
        schema_trial(
            "postgres",
            "consumer_recovers_after_its_connections_are_killed",
            consumer_recovers_after_its_connections_are_killed,
        ),
        schema_trial(
            "postgres",
            "a_producer_recovers_after_its_connections_are_killed",
            a_producer_recovers_after_its_connections_are_killed,
        ),
        schema_trial(
            "postgres",
            "thousand_consumers_share_one_listening_connection",
            thousand_consumers_share_one_listening_connection,
        ),
        schema_trial(
            "postgres",
            "in_tx::commit_in_stores_the_commit_with_the_applications_writes",
            pg_in_tx::commit_in_stores_the_commit_with_the_applications_writes,
        ),
        schema_trial(
            "postgres",
            "in_tx::a_fenced_consumer_cannot_commit_in_a_transaction",
            pg_in_tx::a_fenced_consumer_cannot_commit_in_a_transaction,
        ),
        schema_trial(
            "postgres",
            "in_tx::a_serialization_failure_is_retryable_unless_fenced",
            pg_in_tx::a_serialization_failure_is_retryable_unless_fenced,
        ),
        schema_trial(
            "postgres",
            "in_tx::a_frozen_transaction_does_not_block_takeovers",
            pg_in_tx::a_frozen_transaction_does_not_block_takeovers,
        ),
        schema_trial(
            "postgres",
            "in_tx::send_in_is_delivered_after_commit_and_never_after_rollback",
            pg_in_tx::send_in_is_delivered_after_commit_and_never_after_rollback,
        ),
        schema_trial(
            "postgres",
            "in_tx::concurrent_send_in_callers_stay_gapless_and_ordered",
            pg_in_tx::concurrent_send_in_callers_stay_gapless_and_ordered,
        ),
        schema_trial(
            "postgres",
            "in_tx::staged_sends_stay_gapless_and_ordered",
            pg_in_tx::staged_sends_stay_gapless_and_ordered,
        ),
        schema_trial(
            "postgres",
            "in_tx::staged_and_transactional_sends_mix",
            pg_in_tx::staged_and_transactional_sends_mix,
        ),
        schema_trial(
            "postgres",
            "in_tx::staged_sends_in_flight_together_share_a_row",
            pg_in_tx::staged_sends_in_flight_together_share_a_row,
        ),
        schema_trial(
            "postgres",
            "in_tx::a_staged_send_is_checked_before_it_is_stored",
            pg_in_tx::a_staged_send_is_checked_before_it_is_stored,
        ),
        schema_trial(
            "postgres",
            "in_tx::a_long_transaction_holds_back_nobody",
            pg_in_tx::a_long_transaction_holds_back_nobody,
        ),
        schema_trial(
            "postgres",
            "in_tx::messages_staged_by_a_dead_process_are_moved",
            pg_in_tx::messages_staged_by_a_dead_process_are_moved,
        ),
        schema_trial(
            "postgres",
            "in_tx::what_cannot_be_honoured_is_refused",
            pg_in_tx::what_cannot_be_honoured_is_refused,
        ),
        schema_trial(
            "postgres",
            "in_tx::a_relay_killed_mid_round_loses_and_duplicates_nothing",
            pg_in_tx::a_relay_killed_mid_round_loses_and_duplicates_nothing,
        ),
    ]);
    if uses_containers() {
        trials.push(libtest_mimic::Trial::test(
            "postgres::container::frozen_server_calls_time_out_and_recover",
            || {
                suite::block_on(frozen_server_calls_time_out_and_recover());
                Ok(())
            },
        ));
    } else {
        eprintln!(
            "postgres::container::frozen_server_calls_time_out_and_recover needs containers \
             of its own: it runs when {} is unset and a Docker engine answers",
            flowstream_tests::postgres::URL_VAR
        );
    }
    if flowstream_tests::pgbouncer::find().is_some()
        || std::env::var_os(flowstream_tests::pgbouncer::REQUIRE_VAR).is_some()
    {
        trials.push(schema_trial(
            "postgres",
            "listen_through_pgbouncer_is_detected",
            listen_through_pgbouncer_is_detected,
        ));
    } else {
        eprintln!(
            "postgres::listen_through_pgbouncer_is_detected needs pgbouncer installed \
             (apt-get install pgbouncer); CI installs it and sets {}",
            flowstream_tests::pgbouncer::REQUIRE_VAR
        );
    }
    // The whole suite again with the pool behind PgBouncer in transaction mode: what a
    // deployment behind a pooler relies on. It needs a PgBouncer that keeps prepared
    // statements (1.21 or later); where one is required and too old, the connects fail.
    if flowstream_tests::pgbouncer::carries_prepared_statements()
        || std::env::var_os(flowstream_tests::pgbouncer::REQUIRE_VAR).is_some()
    {
        trials.extend(suite::trials(
            "postgres_pgbouncer",
            flowstream_tests::postgres::PgBouncerBackend::new,
        ));
    } else {
        eprintln!(
            "postgres_pgbouncer::conformance::* needs PgBouncer 1.21 or later (on PATH or \
             named by {}); CI builds one and sets {}",
            flowstream_tests::pgbouncer::PROGRAM_VAR,
            flowstream_tests::pgbouncer::REQUIRE_VAR
        );
    }
    let conclusion = libtest_mimic::run(&args, trials);
    DATABASE.stop();
    conclusion.exit_code()
}

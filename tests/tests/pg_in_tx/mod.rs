//! Sends and commits inside the application's own PostgreSQL transaction (`PgDriver::send_in`,
//! `PgDriver::commit_in`): stored with the application's writes or not at all, fenced for a
//! consumer that lost its group, a serialization failure told apart from a fencing, and sends
//! relayed in order without holding anybody back.

use std::sync::Arc;

use flowstream_core::{Consumer, Driver, Error, Message, NewMessage, Producer};
use flowstream_postgres::PgDriver;
use flowstream_tests::postgres::builder;
use flowstream_tests::{
    BOUND, consumer, next_message as next, produce, stored_group, taken_over_while_handling,
    until_active,
};
use sqlx::{AssertSqlSafe, Row};
use tokio::time::Instant;

async fn connect(schema: &str) -> PgDriver {
    let pg = builder(schema).connect().await.expect("connect");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {schema}.effects (id int8 PRIMARY KEY)"
    )))
    .execute(pg.pool())
    .await
    .expect("create the effects table");
    pg
}

async fn effects(pg: &PgDriver) -> Vec<i64> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT id FROM {}.effects ORDER BY id",
        pg.schema()
    )))
    .fetch_all(pg.pool())
    .await
    .expect("read effects")
    .iter()
    .map(|row| row.get::<i64, _>("id"))
    .collect()
}

/// Handles `msg` in one transaction: its effect row and the commit past it, committed if
/// `keep`, rolled back otherwise.
async fn handle(
    pg: &PgDriver,
    consumer: &mut Consumer,
    msg: &Message,
    keep: bool,
) -> Result<(), Error> {
    let mut tx = pg.pool().begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {}.effects (id) VALUES ($1)",
        pg.schema()
    )))
    .bind(i64::try_from(msg.offset()).expect("small offset"))
    .execute(&mut *tx)
    .await
    .expect("effect");
    let commit = consumer.prepare_commit(msg)?;
    pg.commit_in(&mut tx, &commit).await?;
    if keep {
        tx.commit().await.expect("commit");
    } else {
        tx.rollback().await.expect("rollback");
    }
    Ok(())
}

/// A commit made in the application's transaction is stored with its writes when it commits,
/// and neither is when it rolls back; the consumer goes on as the owner afterwards, its own
/// commits and heartbeats unhindered.
pub(crate) async fn commit_in_stores_the_commit_with_the_applications_writes(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    produce(&driver, "s", "m", 3).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let first = next(&mut c).await;
    handle(&pg, &mut c, &first, true).await.expect("handled");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 1);
    assert_eq!(effects(&pg).await, [1]);

    let second = next(&mut c).await;
    handle(&pg, &mut c, &second, false)
        .await
        .expect("handled, then rolled back");
    assert_eq!(
        stored_group(&driver, "s", "g").await.committed,
        1,
        "rolled back"
    );
    assert_eq!(effects(&pg).await, [1], "rolled back with the commit");

    // Handled again after the rollback, in a transaction of its own: stored now.
    handle(&pg, &mut c, &second, true).await.expect("handled");
    // A second transaction committing it (a retry after an ambiguous failure, say) is
    // refused, so it cannot store the effects twice.
    let mut again = pg.pool().begin().await.expect("begin");
    let commit = c.prepare_commit(&second).expect("prepare");
    let twice = pg.commit_in(&mut again, &commit).await;
    assert!(
        matches!(twice, Err(Error::AlreadyCommitted { offset: 2, .. })),
        "{twice:?}"
    );
    drop(again);
    let third = next(&mut c).await;
    c.commit(&third)
        .await
        .expect("a plain commit after commits in transactions");
    let group = stored_group(&driver, "s", "g").await;
    assert_eq!((group.committed, group.generation), (3, 1));
    assert!(c.is_active(), "still the owner");
    assert_eq!(effects(&pg).await, [1, 2]);
    c.shutdown().await.expect("shutdown");
}

/// A consumer that lost its group to another cannot commit in a transaction: `commit_in`
/// fails with `Fenced`, and its transaction, rolled back, leaves no effect.
pub(crate) async fn a_fenced_consumer_cannot_commit_in_a_transaction(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let (_faulty, mut zombie, mut standby, delivered) = taken_over_while_handling(&driver).await;
    let fenced = handle(&pg, &mut zombie, &delivered, true).await;
    assert!(matches!(fenced, Err(Error::Fenced { .. })), "{fenced:?}");
    assert_eq!(effects(&pg).await, Vec::<i64>::new(), "no effect");
    let group = stored_group(&driver, "s", "g").await;
    assert_eq!((group.committed, group.generation), (0, 2));
    let again = next(&mut standby).await;
    assert_eq!(again.offset(), delivered.offset());
    handle(&pg, &mut standby, &again, true)
        .await
        .expect("the new owner commits");
    assert_eq!(effects(&pg).await, [1]);
    standby.shutdown().await.expect("shutdown");
}

/// Under `REPEATABLE READ`, a group record changed after the transaction began (here by the
/// consumer's own plain commit) makes the server refuse the transaction: a retryable error,
/// not `Fenced`, since the consumer still owns the group; the retried transaction commits.
pub(crate) async fn a_serialization_failure_is_retryable_unless_fenced(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    produce(&driver, "s", "m", 2).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    let mut tx = pg.pool().begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .expect("isolation");
    // The snapshot is taken by the first query, before the record changes.
    sqlx::query("SELECT 1")
        .execute(&mut *tx)
        .await
        .expect("snapshot");
    c.commit(&first).await.expect("plain commit meanwhile");
    let commit = c.prepare_commit(&second).expect("prepare");
    let refused = pg.commit_in(&mut tx, &commit).await;
    assert!(
        refused.as_ref().is_err_and(Error::is_retryable),
        "{refused:?}"
    );
    tx.rollback().await.expect("rollback");
    let mut retry = pg.pool().begin().await.expect("begin");
    pg.commit_in(&mut retry, &commit).await.expect("retried");
    retry.commit().await.expect("commit");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 2);
    c.shutdown().await.expect("shutdown");
}

/// A client that stops while its transaction holds the group record (after `commit_in`,
/// before it commits) does not keep the group from being taken over: the server ends the idle
/// transaction after `takeover_after`, and with it the commit and the effect.
pub(crate) async fn a_frozen_transaction_does_not_block_takeovers(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    produce(&driver, "s", "m", 1).await;
    let mut frozen = consumer(&driver, "s", "g").build().await.expect("first");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let delivered = next(&mut frozen).await;
    let mut tx = pg.pool().begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.effects (id) VALUES (1)"
    )))
    .execute(&mut *tx)
    .await
    .expect("effect");
    let commit = frozen.prepare_commit(&delivered).expect("prepare");
    pg.commit_in(&mut tx, &commit).await.expect("commit_in");
    // The process stops here: no heartbeat, no further statement in `tx`.
    drop(frozen);
    // Without the server ending the frozen transaction, the takeover would wait on its lock.
    until_active(&mut standby).await;
    let late = tx.commit().await;
    assert!(
        late.is_err(),
        "the frozen transaction was ended by the server"
    );
    assert_eq!(effects(&pg).await, Vec::<i64>::new(), "rolled back");
    let group = stored_group(&driver, "s", "g").await;
    assert_eq!((group.committed, group.generation), (0, 2));
    standby.shutdown().await.expect("shutdown");
}

/// A consumer of `stream` in a group of its own, on `driver`.
async fn tail(driver: &Arc<dyn Driver>, stream: &str) -> Consumer {
    consumer(driver, stream, "tail")
        .build()
        .await
        .expect("tail")
}

/// Messages sent in the application's transaction are delivered once it commits, with dense
/// offsets, and never when it rolls back; read, transform, send and commit in one transaction
/// is exactly once.
pub(crate) async fn send_in_is_delivered_after_commit_and_never_after_rollback(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let producer = Producer::new(driver.clone());
    let mut out = tail(&driver, "out").await;

    let mut rolled_back = pg.pool().begin().await.expect("begin");
    let staged = producer
        .prepare([NewMessage::new("out", "never")])
        .await
        .expect("prepare");
    pg.send_in(&mut rolled_back, staged).await.expect("send_in");
    rolled_back.rollback().await.expect("rollback");

    produce(&driver, "in", "m", 2).await;
    let mut c = consumer(&driver, "in", "transform")
        .build()
        .await
        .expect("consumer");
    for _ in 0..2 {
        let msg = next(&mut c).await;
        let mut tx = pg.pool().begin().await.expect("begin");
        let derived = producer
            .prepare([
                NewMessage::new("out", format!("{}-a", msg.body_str().expect("utf-8"))),
                NewMessage::new("out", format!("{}-b", msg.body_str().expect("utf-8"))),
            ])
            .await
            .expect("prepare");
        pg.send_in(&mut tx, derived).await.expect("send_in");
        let commit = c.prepare_commit(&msg).expect("prepare commit");
        pg.commit_in(&mut tx, &commit).await.expect("commit_in");
        tx.commit().await.expect("commit");
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let msg = tokio::time::timeout(BOUND, out.recv())
            .await
            .expect("delivered within the bound")
            .expect("recv");
        seen.push((msg.offset(), msg.body_str().expect("utf-8").to_owned()));
    }
    let expected: Vec<(u64, String)> = ["m0-a", "m0-b", "m1-a", "m1-b"]
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u64 + 1, (*b).to_owned()))
        .collect();
    assert_eq!(
        seen, expected,
        "in order, dense, the rolled-back one nowhere"
    );
    assert_eq!(stored_group(&driver, "in", "transform").await.committed, 2);
    assert_eq!(driver.head("out").await.expect("head"), 4);
    c.shutdown().await.expect("shutdown");
    out.shutdown().await.expect("shutdown");
}

/// Many callers on several drivers (several relays) sending in their own transactions at
/// once: every message is delivered once, offsets dense, each caller's in its order.
pub(crate) async fn concurrent_send_in_callers_stay_gapless_and_ordered(schema: String) {
    concurrent_callers(schema, |_| Via::Transaction).await;
}

/// Callers staging their sends (`send_staged`, each a transaction of its own) on several
/// drivers, so several relays take turns: every message delivered once, offsets dense, each
/// caller's in its order. Only the calls wake the relays (their sweeps are 10 minutes apart).
pub(crate) async fn staged_sends_stay_gapless_and_ordered(schema: String) {
    concurrent_callers(schema, |_| Via::Staged).await;
}

/// Staging callers and callers sending in their transactions at once, on several drivers:
/// both kinds delivered once, dense, each caller's in its order.
pub(crate) async fn staged_and_transactional_sends_mix(schema: String) {
    concurrent_callers(schema, |caller| {
        if caller % 2 == 0 {
            Via::Transaction
        } else {
            Via::Staged
        }
    })
    .await;
}

/// How a caller of [`concurrent_callers`] sends.
#[derive(Clone, Copy)]
enum Via {
    /// `send_in` in a transaction of the caller's.
    Transaction,
    /// `send_staged`.
    Staged,
}

async fn concurrent_callers(schema: String, via: impl Fn(usize) -> Via) {
    const CALLERS: usize = 8;
    const EACH: usize = 40;
    let first = connect(&schema).await;
    let mut drivers = vec![first];
    for _ in 1..3 {
        drivers.push(builder(&schema).connect().await.expect("connect"));
    }
    let reader: Arc<dyn Driver> = Arc::new(drivers[0].clone());
    let mut out = tail(&reader, "out").await;
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let pg = drivers[caller % drivers.len()].clone();
            let via = via(caller);
            tokio::spawn(async move {
                let producer = Producer::new(Arc::new(pg.clone()));
                for i in 0..EACH {
                    let staged = producer
                        .prepare([NewMessage::new("out", format!("{caller}-{i}"))])
                        .await
                        .expect("prepare");
                    match via {
                        Via::Transaction => {
                            let mut tx = pg.pool().begin().await.expect("begin");
                            pg.send_in(&mut tx, staged).await.expect("send_in");
                            tx.commit().await.expect("commit");
                        }
                        Via::Staged => pg.send_staged(staged).await.expect("send_staged"),
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    let total = CALLERS * EACH;
    let mut next_of = [0usize; CALLERS];
    let deadline = Instant::now() + BOUND * 2;
    for offset in 1..=total as u64 {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, out.recv())
            .await
            .unwrap_or_else(|_| panic!("offset {offset} not delivered in time"))
            .expect("recv");
        assert_eq!(msg.offset(), offset, "dense");
        let body = msg.body_str().expect("utf-8");
        let (caller, i) = body.split_once('-').expect("caller-i");
        let caller: usize = caller.parse().expect("caller");
        assert_eq!(
            i.parse::<usize>().expect("i"),
            next_of[caller],
            "{body} in order"
        );
        next_of[caller] += 1;
    }
    assert_eq!(
        reader.head("out").await.expect("head"),
        total as u64,
        "nothing twice"
    );
    out.shutdown().await.expect("shutdown");
}

/// A staged send PostgreSQL could not store faithfully is refused before anything is
/// staged, and the sends around it are delivered.
pub(crate) async fn a_staged_send_is_checked_before_it_is_stored(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let producer = Producer::new(driver.clone());
    let mut out = tail(&driver, "out").await;
    pg.send_staged(prepared(&producer, "before").await)
        .await
        .expect("staged");
    let refused = pg.send_staged(unstorable(&producer).await).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    pg.send_staged(prepared(&producer, "after").await)
        .await
        .expect("staged");
    for (offset, body) in [(1, "before"), (2, "after")] {
        let msg = tokio::time::timeout(BOUND, out.recv())
            .await
            .expect("delivered by the relay")
            .expect("recv");
        assert_eq!((msg.offset(), msg.body()), (offset, body.as_bytes()));
    }
    assert_eq!(driver.head("out").await.expect("head"), 2, "nothing else");
    out.shutdown().await.expect("shutdown");
}

/// One message to `out`, prepared.
async fn prepared(producer: &Producer, body: &'static str) -> flowstream_core::PreparedSend {
    producer
        .prepare([NewMessage::new("out", body)])
        .await
        .expect("prepare")
}

/// A message to `out` with a header PostgreSQL cannot store, prepared.
async fn unstorable(producer: &Producer) -> flowstream_core::PreparedSend {
    producer
        .prepare([NewMessage::new("out", "bad").with_header("nul\0", "x")])
        .await
        .expect("prepare")
}

/// Staged sends made while another is being staged wait for it, then go in as one outbox
/// row, in the order they were made, and a bad call among them is refused alone. Made
/// deterministic by holding the relay (its lock taken by hand) and the outbox (locked
/// against inserts) while the first send is staged.
pub(crate) async fn staged_sends_in_flight_together_share_a_row(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let producer = Producer::new(driver.clone());
    let mut out = tail(&driver, "out").await;
    let mut relay_held = pg.pool().begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock(hashtext('flowstream.outbox'), hashtext('{schema}'))"
    )))
    .execute(&mut *relay_held)
    .await
    .expect("hold the relay");
    let mut inserts_held = pg.pool().begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {schema}.outbox IN EXCLUSIVE MODE"
    )))
    .execute(&mut *inserts_held)
    .await
    .expect("hold inserts");

    let first = {
        let (pg, send) = (pg.clone(), prepared(&producer, "first").await);
        tokio::spawn(async move { pg.send_staged(send).await })
    };
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE 'INSERT INTO {schema}.outbox%'"
    );
    let deadline = Instant::now() + BOUND;
    loop {
        let blocked: i64 = sqlx::query_scalar(AssertSqlSafe(waiting.clone()))
            .fetch_one(pg.pool())
            .await
            .expect("look at the server");
        if blocked == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the first insert never started");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // Made while the first is in flight: each joins the queue when first polled.
    let (left, right) = (
        prepared(&producer, "left").await,
        prepared(&producer, "right").await,
    );
    let bad = unstorable(&producer).await;
    let mut left = std::pin::pin!(pg.send_staged(left));
    assert!(poll_once(left.as_mut()).await.is_none());
    let refused = pg.send_staged(bad).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    let mut right = std::pin::pin!(pg.send_staged(right));
    assert!(poll_once(right.as_mut()).await.is_none());

    inserts_held.commit().await.expect("let inserts go");
    first.await.expect("task").expect("first staged");
    let (left, right) = tokio::join!(left, right);
    left.expect("left staged beside a bad call");
    right.expect("right staged beside a bad call");
    let rows: Vec<Vec<Vec<u8>>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT bodies FROM {schema}.outbox ORDER BY id"
    )))
    .fetch_all(pg.pool())
    .await
    .expect("read the outbox");
    let rows: Vec<Vec<&[u8]>> = rows
        .iter()
        .map(|row| row.iter().map(Vec::as_slice).collect())
        .collect();
    assert_eq!(
        rows,
        [vec![&b"first"[..]], vec![&b"left"[..], &b"right"[..]]],
        "the two calls made meanwhile share a row, in order"
    );

    relay_held.commit().await.expect("let the relay go");
    for (offset, body) in [(1, "first"), (2, "left"), (3, "right")] {
        let msg = tokio::time::timeout(BOUND, out.recv())
            .await
            .expect("delivered by the relay")
            .expect("recv");
        assert_eq!((msg.offset(), msg.body()), (offset, body.as_bytes()));
    }
    assert_eq!(driver.head("out").await.expect("head"), 3, "nothing else");
    out.shutdown().await.expect("shutdown");
}

/// Polls `future` once: its output if that finished it.
pub(crate) async fn poll_once<F: std::future::Future>(
    mut future: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    use std::task::Poll;
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// A caller that holds its transaction open (idle) for seconds holds nobody back: plain sends
/// and other callers' transactions are delivered meanwhile, and its message arrives once it
/// commits, after them.
pub(crate) async fn a_long_transaction_holds_back_nobody(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let producer = Producer::new(driver.clone());
    let mut out = tail(&driver, "out").await;
    let mut long = pg.pool().begin().await.expect("begin");
    let staged = producer
        .prepare([NewMessage::new("out", "late")])
        .await
        .expect("prepare");
    pg.send_in(&mut long, staged).await.expect("send_in");
    let opened = Instant::now();

    produce(&driver, "out", "plain", 100).await;
    let mut other = pg.pool().begin().await.expect("begin");
    let staged = producer
        .prepare([NewMessage::new("out", "other")])
        .await
        .expect("prepare");
    pg.send_in(&mut other, staged).await.expect("send_in");
    other.commit().await.expect("commit");
    for offset in 1..=101 {
        let msg = tokio::time::timeout(BOUND, out.recv())
            .await
            .expect("delivered while the long transaction is open")
            .expect("recv");
        assert_eq!(msg.offset(), offset);
        assert_ne!(
            msg.body(),
            b"late",
            "delivered before its transaction committed"
        );
    }
    // Idle in its transaction for a while longer, as a slow caller would be.
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(2), out.recv()).await;
    assert!(
        quiet.is_err(),
        "nothing more while the long transaction is open"
    );
    assert!(opened.elapsed() >= std::time::Duration::from_secs(2));
    long.commit().await.expect("commit");
    let late = tokio::time::timeout(BOUND, out.recv())
        .await
        .expect("delivered after its commit")
        .expect("recv");
    assert_eq!((late.offset(), late.body()), (102, &b"late"[..]));
    out.shutdown().await.expect("shutdown");
}

/// Staged messages whose transaction committed but which no relay moved (their process died
/// first) are moved by the next driver that starts on the schema.
pub(crate) async fn messages_staged_by_a_dead_process_are_moved(schema: String) {
    let pg = connect(&schema).await;
    // Staged as `send_in` stages them, by a connection whose driver never relays them.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.outbox (streams, bodies, headers, keys) \
         VALUES (ARRAY['out'], ARRAY['orphan'::bytea], ARRAY[NULL::jsonb], ARRAY[NULL::bytea])"
    )))
    .execute(pg.pool())
    .await
    .expect("stage");
    let fresh: Arc<dyn Driver> = Arc::new(builder(&schema).connect().await.expect("connect"));
    let mut out = tail(&fresh, "out").await;
    let msg = tokio::time::timeout(BOUND, out.recv())
        .await
        .expect("moved by the new driver's relay")
        .expect("recv");
    assert_eq!((msg.offset(), msg.body()), (1, &b"orphan"[..]));
    out.shutdown().await.expect("shutdown");
}

/// What `commit_in` and `send_in` cannot honour is refused with a typed error and commits
/// nothing: a message of another stream or another group's, a standby's commit, a
/// transaction that already failed, a transaction on a database without flowstream's tables.
pub(crate) async fn what_cannot_be_honoured_is_refused(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    produce(&driver, "s", "m", 1).await;
    produce(&driver, "other", "o", 1).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let mut elsewhere = consumer(&driver, "other", "g")
        .build()
        .await
        .expect("other");
    let mine = next(&mut c).await;
    let foreign = next(&mut elsewhere).await;
    let wrong = c.prepare_commit(&foreign);
    assert!(matches!(wrong, Err(Error::WrongStream { .. })), "{wrong:?}");
    let not_mine = standby.prepare_commit(&mine);
    assert!(
        matches!(not_mine, Err(Error::NotDeliveredHere { .. })),
        "{not_mine:?}"
    );
    let standing_by = standby.prepare_commit_at(mine.offset());
    assert!(
        matches!(standing_by, Err(Error::Standby { .. })),
        "{standing_by:?}"
    );
    let mut other_group = consumer(&driver, "s", "h")
        .build()
        .await
        .expect("other group");
    let theirs = next(&mut other_group).await;
    let foreign_group = c.prepare_commit(&theirs);
    assert!(
        matches!(foreign_group, Err(Error::NotDeliveredHere { .. })),
        "{foreign_group:?}"
    );
    other_group.shutdown().await.expect("shutdown");

    let mut failed = pg.pool().begin().await.expect("begin");
    let broken = sqlx::query("SELECT 1 / 0").execute(&mut *failed).await;
    assert!(broken.is_err());
    let commit = c.prepare_commit(&mine).expect("prepare");
    let refused = pg.commit_in(&mut failed, &commit).await;
    assert!(
        refused.as_ref().is_err_and(|e| !e.is_retryable()),
        "{refused:?}"
    );
    drop(failed);
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);

    let url = flowstream_tests::postgres::DATABASE.url();
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let other_db = sqlx::PgPool::connect_with(options.database("template1"))
        .await
        .expect("connect to another database");
    let mut tx = other_db.begin().await.expect("begin");
    let missing = pg.commit_in(&mut tx, &commit).await;
    assert!(
        matches!(&missing, Err(Error::Storage(e)) if e.to_string().contains("missing")),
        "{missing:?}"
    );
    drop(tx);
    let mut tx = other_db.begin().await.expect("begin");
    let staged = Producer::new(driver.clone())
        .prepare([NewMessage::new("s", "x")])
        .await
        .expect("prepare");
    let missing = pg.send_in(&mut tx, staged).await;
    assert!(
        matches!(&missing, Err(Error::Storage(e)) if e.to_string().contains("missing")),
        "{missing:?}"
    );
    drop(tx);
    assert_eq!(driver.head("s").await.expect("head"), 1, "nothing sent");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);
    for consumer in [c, standby, elsewhere] {
        consumer.shutdown().await.expect("shutdown");
    }
}

/// A relay that dies in the middle of a round (its connection ends after it took the staged
/// rows, before it committed) moves nothing and loses nothing: the rows come back, and the
/// next round delivers them once.
pub(crate) async fn a_relay_killed_mid_round_loses_and_duplicates_nothing(schema: String) {
    let pg = connect(&schema).await;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let mut out = tail(&driver, "out").await;
    // A round as the relay runs it, by hand, up to the append: the relay lock taken, the
    // staged row deleted.
    let mut dying = pg.pool().acquire().await.expect("connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *dying)
        .await
        .expect("pid");
    let mut round = sqlx::Connection::begin(&mut *dying).await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock(hashtext('flowstream.outbox'), hashtext('{schema}'))"
    )))
    .execute(&mut *round)
    .await
    .expect("relay lock");
    let producer = Producer::new(driver.clone());
    let mut tx = pg.pool().begin().await.expect("begin");
    let staged = producer
        .prepare([NewMessage::new("out", "once")])
        .await
        .expect("prepare");
    pg.send_in(&mut tx, staged).await.expect("send_in");
    tx.commit().await.expect("commit");
    let taken = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {schema}.outbox RETURNING id"
    )))
    .fetch_all(&mut *round)
    .await
    .expect("take the staged row");
    assert_eq!(taken.len(), 1);
    // The relay dies: its server session is ended, its round rolled back.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(pg.pool())
        .await
        .expect("terminate");
    drop(round);
    drop(dying);
    let msg = tokio::time::timeout(BOUND, out.recv())
        .await
        .expect("moved by a later round")
        .expect("recv");
    assert_eq!((msg.offset(), msg.body()), (1, &b"once"[..]));
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), out.recv()).await;
    assert!(more.is_err(), "moved once");
    assert_eq!(driver.head("out").await.expect("head"), 1);
    out.shutdown().await.expect("shutdown");
}

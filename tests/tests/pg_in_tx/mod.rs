//! Commits inside the application's own PostgreSQL transaction (`PgDriver::commit_in`): stored
//! with the application's writes or not at all, fenced for a consumer that lost its group,
//! and a serialization failure told apart from a fencing.

use std::sync::Arc;

use flowstream_core::{Consumer, Driver, Error, Message};
use flowstream_postgres::PgDriver;
use flowstream_tests::postgres::builder;
use flowstream_tests::{BOUND, InstrumentedDriver, consumer, produce, stored_group};
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

async fn next(consumer: &mut Consumer) -> Message {
    consumer.next().await.expect("next").expect("a message")
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

    // Committed again in a transaction of its own: writing the same commit twice is harmless.
    handle(&pg, &mut c, &second, true).await.expect("handled");
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
    produce(&driver, "s", "m", 1).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let through: Arc<dyn Driver> = faulty.clone();
    let mut zombie = consumer(&through, "s", "g").build().await.expect("zombie");
    let mut standby = consumer(&driver, "s", "g").build().await.expect("standby");
    let delivered = next(&mut zombie).await;
    // Cut off, the zombie cannot heartbeat: the standby takes over once the message waits
    // `takeover_after`.
    faulty.set_partitioned(true);
    let deadline = Instant::now() + BOUND;
    while !standby.is_active() {
        assert!(Instant::now() < deadline, "no takeover within {BOUND:?}");
        standby.wait(BOUND).await.expect("wait");
    }
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
    let deadline = Instant::now() + BOUND;
    while !standby.is_active() {
        assert!(
            Instant::now() < deadline,
            "the takeover waited on the frozen transaction"
        );
        standby.wait(BOUND).await.expect("wait");
    }
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

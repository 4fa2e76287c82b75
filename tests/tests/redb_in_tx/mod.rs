//! Sends and commits inside the application's own redb write transaction (`RedbDriver::write`,
//! `AppTx::send`, `AppTx::commit`): stored with the application's tables or not at all,
//! fenced for a consumer that lost its group, and flowstream's own tables out of the
//! application's reach.

use std::sync::Arc;

use flowstream_core::{Consumer, Driver, Error, Message, NewMessage, Producer};
use flowstream_redb::RedbDriver;
use flowstream_redb::redb::{ReadableTable, TableDefinition};
use flowstream_tests::{
    BOUND, consumer, next_after_wait, next_message as next, produce, stored_group, suite,
    taken_over_while_handling,
};
use tokio::time::Instant;

const EFFECTS: TableDefinition<'_, u64, ()> = TableDefinition::new("effects");

async fn effects(redb: &RedbDriver) -> Vec<u64> {
    redb.read_tables(|tx| -> Result<Vec<u64>, Error> {
        let Ok(table) = tx.open_table(EFFECTS) else {
            return Ok(Vec::new());
        };
        Ok(table
            .iter()
            .expect("iterate")
            .map(|entry| entry.expect("entry").0.value())
            .collect())
    })
    .await
    .expect("read effects")
}

/// Handles `msg` in one write transaction: its effect row and the commit past it, stored if
/// `keep`, dropped otherwise (the closure fails after writing both).
async fn handle(
    redb: &RedbDriver,
    consumer: &mut Consumer,
    msg: &Message,
    keep: bool,
) -> Result<(), Error> {
    let commit = consumer.prepare_commit(msg)?;
    let offset = msg.offset();
    redb.write(move |tx| {
        tx.open_table(EFFECTS)?
            .insert(offset, ())
            .map_err(|e| Error::Refused {
                reason: e.to_string(),
            })?;
        tx.commit(&commit)?;
        if keep {
            Ok(())
        } else {
            Err(Error::InvalidConfig("the handler gave up".into()))
        }
    })
    .await
}

fn test(
    name: &str,
    body: fn(RedbDriver) -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
) -> libtest_mimic::Trial {
    libtest_mimic::Trial::test(format!("redb_file::in_tx::{name}"), move || {
        let dir = tempfile::tempdir().expect("temp dir");
        suite::block_on(async move {
            let redb = RedbDriver::open(dir.path().join("flowstream.redb"))
                .await
                .expect("open");
            body(redb).await;
        });
        Ok(())
    })
}

/// The trials of this module.
pub(crate) fn trials() -> Vec<libtest_mimic::Trial> {
    vec![
        test("a_commit_is_stored_with_the_applications_tables", |redb| {
            Box::pin(a_commit_is_stored_with_the_applications_tables(redb))
        }),
        test("a_fenced_consumer_cannot_commit_in_a_transaction", |redb| {
            Box::pin(a_fenced_consumer_cannot_commit_in_a_transaction(redb))
        }),
        test("flowstreams_tables_are_out_of_reach", |redb| {
            Box::pin(flowstreams_tables_are_out_of_reach(redb))
        }),
        test(
            "read_transform_send_and_commit_in_one_transaction",
            |redb| Box::pin(read_transform_send_and_commit_in_one_transaction(redb)),
        ),
        test(
            "a_message_of_an_ended_claim_cannot_be_committed_in_a_transaction",
            |redb| Box::pin(a_message_of_an_ended_claim_cannot_be_committed_in_a_transaction(redb)),
        ),
        test(
            "a_commit_in_a_transaction_commits_the_messages_partition",
            |redb| {
                Box::pin(a_commit_in_a_transaction_commits_the_messages_partition(
                    redb,
                ))
            },
        ),
    ]
}

/// A commit written in the application's transaction is stored with its tables when the
/// closure returns `Ok`, and neither is when it fails; the consumer goes on as the owner.
async fn a_commit_is_stored_with_the_applications_tables(redb: RedbDriver) {
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    produce(&driver, "s", "m", 3).await;
    let mut c = consumer(&driver, "s", "g").build().await.expect("consumer");
    let first = next(&mut c).await;
    handle(&redb, &mut c, &first, true).await.expect("handled");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 1);
    assert_eq!(effects(&redb).await, [1]);

    let second = next(&mut c).await;
    let gave_up = handle(&redb, &mut c, &second, false).await;
    assert!(
        matches!(gave_up, Err(Error::InvalidConfig(_))),
        "{gave_up:?}"
    );
    assert_eq!(
        stored_group(&driver, "s", "g").await.committed,
        1,
        "dropped"
    );
    assert_eq!(effects(&redb).await, [1], "dropped with the commit");

    handle(&redb, &mut c, &second, true).await.expect("handled");
    let third = next(&mut c).await;
    c.commit(&third)
        .await
        .expect("a plain commit after commits in transactions");
    let group = stored_group(&driver, "s", "g").await;
    assert_eq!((group.committed, group.generation), (3, 1));
    assert!(c.is_active(), "still the owner");
    assert_eq!(effects(&redb).await, [1, 2]);
    c.shutdown().await.expect("shutdown");
}

/// A consumer that lost its group cannot commit in a transaction: `Fenced`, and nothing of the
/// transaction is stored.
async fn a_fenced_consumer_cannot_commit_in_a_transaction(redb: RedbDriver) {
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    let (_faulty, mut zombie, mut standby, delivered) = taken_over_while_handling(&driver).await;
    let fenced = handle(&redb, &mut zombie, &delivered, true).await;
    assert!(matches!(fenced, Err(Error::Fenced { .. })), "{fenced:?}");
    assert_eq!(effects(&redb).await, Vec::<u64>::new(), "no effect");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);
    let again = next(&mut standby).await;
    handle(&redb, &mut standby, &again, true)
        .await
        .expect("the new owner commits");
    assert_eq!(effects(&redb).await, [1]);
    standby.shutdown().await.expect("shutdown");
}

/// The application cannot open flowstream's tables through its transaction.
async fn flowstreams_tables_are_out_of_reach(redb: RedbDriver) {
    const RECORDS: TableDefinition<'_, &str, u64> = TableDefinition::new("records");
    // Where the messages of the file's first stream are kept.
    const FIRST_LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("flowstream/log/1");
    let refused = redb.write(|tx| tx.open_table(RECORDS).map(drop)).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    produce(&driver, "s", "m", 1).await;
    let refused = redb
        .write(|tx| {
            tx.open_table(FIRST_LOG)?.insert(2, b"forged".as_slice())?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await;
    let refused = refused.expect_err("a stream's table is refused");
    assert!(
        matches!(refused.downcast_ref::<Error>(), Some(Error::Refused { .. })),
        "{refused:?}"
    );
    assert_eq!(
        driver.head("s").await.expect("head"),
        1,
        "the store still works"
    );
}

/// Read one stream, send derived messages to another and commit the first, all in one write
/// transaction: once stored, the derived messages and the commit are there together (and a
/// waiting consumer of the output is woken); a transaction that fails stores neither.
async fn read_transform_send_and_commit_in_one_transaction(redb: RedbDriver) {
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    let producer = Producer::new(driver.clone());
    produce(&driver, "in", "m", 2).await;
    let mut c = consumer(&driver, "in", "transform")
        .build()
        .await
        .expect("consumer");
    let mut out = consumer(&driver, "out", "tail")
        .build()
        .await
        .expect("tail");

    let first = next(&mut c).await;
    let derived = producer
        .prepare([NewMessage::new("out", "never")])
        .await
        .expect("prepare");
    let commit = c.prepare_commit(&first).expect("prepare commit");
    let failed = redb
        .write(move |tx| {
            tx.send(derived)?;
            tx.commit(&commit)?;
            Err::<(), _>(Error::InvalidConfig("the handler gave up".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(driver.head("out").await.expect("head"), 0, "nothing sent");
    assert_eq!(stored_group(&driver, "in", "transform").await.committed, 0);

    for msg in [first, next(&mut c).await] {
        let body = msg.body_str().expect("utf-8").to_owned();
        let derived = producer
            .prepare([NewMessage::new("out", format!("{body}!"))])
            .await
            .expect("prepare");
        let commit = c.prepare_commit(&msg).expect("prepare commit");
        let offsets = redb
            .write(move |tx| {
                let offsets = tx.send(derived)?;
                tx.commit(&commit)?;
                Ok::<_, Error>(offsets)
            })
            .await
            .expect("one transaction");
        assert_eq!(offsets, [msg.offset()], "offsets known at once");
    }
    assert_eq!(stored_group(&driver, "in", "transform").await.committed, 2);
    for expected in ["m0!", "m1!"] {
        let msg = tokio::time::timeout(BOUND, out.recv())
            .await
            .expect("woken by the commit")
            .expect("recv");
        assert_eq!(msg.body_str(), Some(expected));
    }
    c.shutdown().await.expect("shutdown");
    out.shutdown().await.expect("shutdown");
}

/// On a partitioned stream, a commit in a transaction commits the message's partition, up to
/// the message, and no other.
async fn a_commit_in_a_transaction_commits_the_messages_partition(redb: RedbDriver) {
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    flowstream_core::Admin::new(driver.clone())
        .create_stream("p", 2)
        .await
        .expect("create");
    let producer = Producer::new(driver.clone());
    for partition in [0, 1, 1] {
        producer
            .send(NewMessage::new("p", format!("to {partition}")).to_partition(partition))
            .await
            .expect("send");
    }
    let mut member = consumer(&driver, "p", "g")
        .join_delay(std::time::Duration::ZERO)
        .build()
        .await
        .expect("member");
    let mut last_of_1 = None;
    for _ in 0..3 {
        let msg = next_after_wait(&mut member).await;
        if msg.partition() == 1 {
            last_of_1 = Some(msg);
        }
    }
    let msg = last_of_1.expect("partition 1 delivered");
    assert_eq!(msg.offset(), 2);
    let commit = member.prepare_commit(&msg).expect("prepare");
    redb.write(move |tx| tx.commit(&commit))
        .await
        .expect("commit in a transaction");
    let committed = |partition| {
        let driver = driver.clone();
        async move {
            flowstream_core::GroupState::load_partition(driver.as_ref(), "p", "g", partition)
                .await
                .expect("load")
                .map_or(0, |g| g.committed)
        }
    };
    assert_eq!((committed(0).await, committed(1).await), (0, 2));
    member.shutdown().await.expect("shutdown");
}

/// A consumer that lost its claim and then won the group back cannot commit, in a
/// transaction, a message it delivered under the old claim: another owner may have handled it
/// meanwhile.
async fn a_message_of_an_ended_claim_cannot_be_committed_in_a_transaction(redb: RedbDriver) {
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    let (faulty, mut first, second, old) = taken_over_while_handling(&driver).await;
    faulty.set_partitioned(false);
    second.shutdown().await.expect("hand the group back");
    let deadline = Instant::now() + BOUND;
    while first.generation_in(0) != Some(3) {
        assert!(
            Instant::now() < deadline,
            "the first consumer did not win the group back"
        );
        first.wait(BOUND).await.expect("wait");
        drop(first.next().await.expect("next"));
    }
    let stale = first.prepare_commit(&old);
    assert!(
        matches!(stale, Err(Error::Fenced { generation: 1, .. })),
        "{stale:?}"
    );
    first.shutdown().await.expect("shutdown");
}

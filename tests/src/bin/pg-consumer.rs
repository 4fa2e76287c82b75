//! Test helper: one consumer of a group on PostgreSQL, in its own process.
//!
//! `pg-consumer URL SCHEMA STREAM GROUP TAKEOVER_MS [PROCESS_MS]` prints one line per event,
//! flushed at once so a parent process can follow it and build a history:
//!
//! - `standby` after joining as a standby;
//! - `active after C gen G` after joining or taking over (C: the committed offset it resumes
//!   after, G: the generation of its claim);
//! - on a partitioned stream, instead of those two, `owns P,Q,…` (or `owns -` for none) after
//!   joining and whenever what it owns changes;
//! - `delivered G N P` when `next()` returns offset N of partition P under generation G (the
//!   partition's claim);
//! - `commit G N P accepted|fenced|failed` after committing it.
//!
//! Each message is "processed" for PROCESS_MS (default 0) between delivery and commit.
//!
//! For the crash-poison test, from the environment: `FLOWSTREAM_TEST_MAX_DELIVERIES` sets the
//! consumer's `max_deliveries`; a message whose body starts with `FLOWSTREAM_TEST_POISON`
//! aborts the process once delivered (and printed); one whose body starts with
//! `FLOWSTREAM_TEST_SLOW` is processed for three `takeover_after`s.
//!
//! For the exactly-once test, `FLOWSTREAM_TEST_EFFECTS` set: each message is handled in one
//! transaction that inserts `(partition, offset)` into the schema's `effects` table, is
//! processed for PROCESS_MS inside it, and commits the message with `commit_in`; the commit
//! line says `accepted` only once that transaction committed.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, Driver, Error, Message, Wake};
use flowstream_postgres::PgDriver;
use sqlx::AssertSqlSafe;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // A parent that went away cannot be told anything; nothing else to do about it.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn say_active(consumer: &Consumer) {
    if consumer.member_id().is_some() {
        let owned: Vec<String> = consumer.assignment().iter().map(u32::to_string).collect();
        let owned = if owned.is_empty() {
            "-".to_owned()
        } else {
            owned.join(",")
        };
        return say(format!("owns {owned}"));
    }
    say(format!(
        "active after {} gen {}",
        consumer.committed().unwrap_or(0),
        consumer.generation().unwrap_or(0)
    ));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (url, schema, stream, group, takeover_ms, process_ms) = match args.as_slice() {
        [_, url, schema, stream, group, takeover] => (url, schema, stream, group, takeover, "0"),
        [_, url, schema, stream, group, takeover, process] => {
            (url, schema, stream, group, takeover, process.as_str())
        }
        _ => {
            return Err(
                "usage: pg-consumer URL SCHEMA STREAM GROUP TAKEOVER_MS [PROCESS_MS]".into(),
            );
        }
    };
    // Exit when the parent goes away (its end of our standard input closes), however it died.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let takeover = Duration::from_millis(takeover_ms.parse()?);
    let processing = Duration::from_millis(process_ms.parse()?);
    let pg = PgDriver::builder(url.as_str())
        .schema(schema.as_str())
        .max_connections(4)
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let driver: Arc<dyn Driver> = Arc::new(pg.clone());
    let effects = std::env::var_os("FLOWSTREAM_TEST_EFFECTS").is_some();
    let poison = std::env::var("FLOWSTREAM_TEST_POISON").ok();
    let slow = std::env::var("FLOWSTREAM_TEST_SLOW").ok();
    let mut builder = Consumer::builder(driver, stream.as_str(), group.as_str())
        .takeover_after(takeover)
        .heartbeat_every(takeover / 3)
        .batch_size(10);
    if let Ok(max) = std::env::var("FLOWSTREAM_TEST_MAX_DELIVERIES") {
        builder = builder.max_deliveries(max.parse()?);
    }
    let mut consumer = builder.build().await?;
    let starts = |prefix: &Option<String>, body: &[u8]| {
        prefix
            .as_ref()
            .is_some_and(|p| body.starts_with(p.as_bytes()))
    };
    if consumer.is_active() || consumer.member_id().is_some() {
        say_active(&consumer);
    } else {
        say("standby".to_owned());
    }
    let mut owned = consumer.assignment();
    loop {
        // A member of a group over partitions says what it owns whenever that changes, busy
        // or not (wait's wake-ups only come when it is idle).
        if consumer.member_id().is_some() && consumer.assignment() != owned {
            owned = consumer.assignment();
            say_active(&consumer);
        }
        match consumer.next().await {
            Ok(Some(message)) => {
                let generation = consumer.generation().unwrap_or(0);
                let (offset, partition) = (message.offset(), message.partition());
                say(format!("delivered {generation} {offset} {partition}"));
                if starts(&poison, message.body()) {
                    std::process::abort();
                }
                if starts(&slow, message.body()) {
                    tokio::time::sleep(takeover * 3).await;
                }
                let committed = if effects {
                    handle_in_tx(&pg, &mut consumer, &message, processing).await
                } else {
                    if !processing.is_zero() {
                        tokio::time::sleep(processing).await;
                    }
                    consumer.commit(&message).await
                };
                let outcome = match committed {
                    Ok(()) => "accepted",
                    Err(Error::Fenced { .. }) => "fenced",
                    Err(_) => "failed",
                };
                say(format!(
                    "commit {generation} {offset} {partition} {outcome}"
                ));
            }
            Ok(None) => match consumer.wait(Duration::from_secs(5)).await {
                Ok(Wake::Activated | Wake::Assignment) => say_active(&consumer),
                Ok(_) => {}
                Err(error) => say(format!("error: {error}")),
            },
            Err(error) => {
                say(format!("error: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Handles `message` exactly once: its effect row and its commit in one transaction, with the
/// processing time inside it (so a kill lands in the transaction as often as not).
async fn handle_in_tx(
    pg: &PgDriver,
    consumer: &mut Consumer,
    message: &Message,
    processing: Duration,
) -> Result<(), Error> {
    let failed = |e: sqlx::Error| {
        Error::Storage(flowstream_core::driver::DriverError::failed(e.to_string()))
    };
    let mut tx = pg.pool().begin().await.map_err(failed)?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {}.effects (partition, \"offset\") VALUES ($1, $2)",
        pg.schema()
    )))
    .bind(i64::from(message.partition()))
    .bind(i64::try_from(message.offset()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await
    .map_err(failed)?;
    if !processing.is_zero() {
        tokio::time::sleep(processing).await;
    }
    let commit = consumer.prepare_commit(message)?;
    pg.commit_in(&mut tx, &commit).await?;
    tx.commit().await.map_err(failed)
}

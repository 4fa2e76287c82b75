//! Test helper: handles a redb store's stream `in` exactly once, until it is killed.
//!
//! `redb-effects PATH` consumes `in` in group `g` (`takeover_after` 200 ms, so that the next
//! process takes over from a killed one quickly) and handles each message in one
//! `RedbDriver::write`: it adds one to the message's count in the `effects` table and commits
//! the message with `AppTx::commit`. It prints `applied N` after each, and `done` once the
//! stream is handled, then keeps the file open until it is killed.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, Error};
use flowstream_redb::RedbDriver;
use flowstream_redb::redb::{ReadableTable, TableDefinition};

/// Offset → how many times its effect was applied.
const EFFECTS: TableDefinition<'_, u64, u64> = TableDefinition::new("effects");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path] = args.as_slice() else {
        return Err("usage: redb-effects PATH".into());
    };
    let redb = RedbDriver::open(path).await?;
    let driver: Arc<dyn flowstream_core::Driver> = Arc::new(redb.clone());
    let head = driver.head("in").await?;
    let mut consumer = Consumer::builder(driver, "in", "g")
        .takeover_after(Duration::from_millis(200))
        .heartbeat_every(Duration::from_millis(50))
        .build()
        .await?;
    let mut out = std::io::stdout().lock();
    loop {
        let Some(msg) = consumer.next().await? else {
            if consumer.committed() == Some(head) {
                break;
            }
            consumer.wait(Duration::from_secs(1)).await?;
            continue;
        };
        let offset = msg.offset();
        let commit = consumer.prepare_commit(&msg)?;
        redb.write(move |tx| {
            let mut effects = tx.open_table(EFFECTS)?;
            let applied = effects
                .get(offset)
                .map_err(|e| Error::Refused {
                    reason: e.to_string(),
                })?
                .map_or(0, |v| v.value());
            effects
                .insert(offset, applied + 1)
                .map_err(|e| Error::Refused {
                    reason: e.to_string(),
                })?;
            drop(effects);
            tx.commit(&commit)
        })
        .await?;
        writeln!(out, "applied {offset}")?;
        out.flush()?;
        if offset == head {
            break;
        }
    }
    writeln!(out, "done")?;
    out.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}

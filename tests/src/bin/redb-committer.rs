//! Test helper: commits a group's offsets on a redb store, then waits to be killed.
//!
//! `redb-committer PATH immediate|deferred` appends messages 1..=10 to `log`, consumes them in
//! group `g` committing each one, and calls `RedbDriver::sync` after the fifth. It prints
//! `committed N` after each commit and `synced 5` after the sync, then `done`, and keeps the
//! file open until it is killed. `deferred` opens the store with record writes deferred for an
//! hour, so that nothing but the sync makes them durable while it lives.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, NewMessage, Producer};
use flowstream_redb::{RecordDurability, RedbDriver};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, mode] = args.as_slice() else {
        return Err("usage: redb-committer PATH immediate|deferred".into());
    };
    let durability = match mode.as_str() {
        "immediate" => RecordDurability::Immediate,
        "deferred" => RecordDurability::Deferred {
            within: Duration::from_secs(3600),
        },
        other => return Err(format!("unknown mode {other}").into()),
    };
    let driver = Arc::new(
        RedbDriver::builder(path)
            .record_durability(durability)
            .open()
            .await?,
    );
    Producer::new(driver.clone())
        .send_batch((1..=10).map(|i| NewMessage::new("log", format!("m{i}"))))
        .await?;
    let mut consumer = Consumer::builder(driver.clone(), "log", "g")
        .build()
        .await?;
    let mut out = std::io::stdout().lock();
    for _ in 0..10 {
        let msg = consumer.next().await?.ok_or("the stream ended early")?;
        consumer.commit(msg.offset()).await?;
        writeln!(out, "committed {}", msg.offset())?;
        out.flush()?;
        if msg.offset() == 5 {
            driver.sync().await?;
            writeln!(out, "synced 5")?;
            out.flush()?;
        }
    }
    writeln!(out, "done")?;
    out.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}

//! Test helper: appends batches to a redb store in a loop until it is killed.
//!
//! `redb-writer PATH FIRST_BATCH` sends batch after batch, batch `b` holding `1 + b % 7`
//! messages with bodies `b{b}.{i}/{k}`, and prints `acked {b} {first_offset} {k}` (flushed)
//! each time a send returns `Ok`.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::io::Write;

use flowstream_core::{NewMessage, Producer};
use flowstream_redb::RedbDriver;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, first] = args.as_slice() else {
        return Err("usage: redb-writer PATH FIRST_BATCH".into());
    };
    let producer = Producer::new(std::sync::Arc::new(RedbDriver::open(path).await?));
    let mut out = std::io::stdout().lock();
    for batch in first.parse::<u64>()?.. {
        let size = 1 + batch % 7;
        let messages = (0..size).map(|i| NewMessage::new("log", format!("b{batch}.{i}/{size}")));
        let offsets = producer.send_batch(messages).await?;
        writeln!(out, "acked {batch} {} {size}", offsets[0])?;
        out.flush()?;
    }
    Ok(())
}

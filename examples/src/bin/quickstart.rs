//! Quickstart: a durable stream in an embedded redb file, a producer and a consumer group.
//!
//! ```text
//! cargo run -p flowstream-examples --bin quickstart [-- DATA_DIR]
//! ```
//!
//! Data goes to `DATA_DIR` (default `./flowstream-data`). Each run produces three messages and
//! consumes with the group `printer`: a second run resumes right after what the first committed.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use flowstream_core::{Consumer, Driver, NewMessage, Producer};
use flowstream_redb::RedbDriver;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "flowstream-data".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("quickstart.redb");
    println!("store: {}", path.display());

    let driver: Arc<dyn Driver> = Arc::new(RedbDriver::open(&path).await?);
    let run = driver.head("greetings").await? / 3 + 1;

    let producer = Producer::new(driver.clone());
    let offsets = producer
        .send_batch(
            (1..=3).map(|i| NewMessage::new("greetings", format!("hello #{i} of run {run}"))),
        )
        .await?;
    println!("produced offsets {offsets:?}");

    let mut consumer = Consumer::builder(driver, "greetings", "printer")
        .build()
        .await?;
    while let Some(message) = consumer.next().await? {
        println!(
            "consumed offset {}: {}",
            message.offset(),
            message.body_str().unwrap_or("<binary>")
        );
        consumer.commit(message.offset()).await?;
    }
    println!(
        "committed up to {:?}; run again to resume from there",
        consumer.committed()
    );
    consumer.shutdown().await?;
    Ok(())
}

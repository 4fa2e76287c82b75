//! Quickstart: a durable stream, a producer and a consumer group.
//!
//! ```text
//! cargo run -p flowstream-examples --bin quickstart [-- DATA_DIR]
//! cargo run -p flowstream-examples --bin quickstart -- --postgres postgres://user@localhost/db
//! FLOWSTREAM_PG_URL=postgres://user@localhost/db cargo run -p flowstream-examples --bin quickstart
//! ```
//!
//! Without a PostgreSQL URL, data goes to an embedded redb file under `DATA_DIR` (default
//! `./flowstream-data`); with one, to the schema `flowstream` of that database. Each run
//! produces three messages and consumes with the group `printer`: a second run resumes right
//! after what the first committed.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use flowstream_core::{Consumer, Driver, NewMessage, Producer};
use flowstream_postgres::PgDriver;
use flowstream_redb::RedbDriver;

async fn open_store() -> Result<Arc<dyn Driver>, Box<dyn Error>> {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    let first = args.next();
    let url = match first.as_deref() {
        Some("--postgres") => Some(args.next().ok_or("--postgres needs a URL")?),
        _ => std::env::var("FLOWSTREAM_PG_URL")
            .ok()
            .filter(|url| !url.is_empty()),
    };
    if let Some(url) = url {
        let driver = PgDriver::connect(&url).await?;
        println!("store: PostgreSQL, schema {}", driver.schema());
        return Ok(Arc::new(driver));
    }
    let dir = PathBuf::from(first.unwrap_or_else(|| "flowstream-data".into()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("quickstart.redb");
    println!("store: {}", path.display());
    Ok(Arc::new(RedbDriver::open(&path).await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let driver = open_store().await?;
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

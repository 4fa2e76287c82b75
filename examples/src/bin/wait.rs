//! `wait`: a consumer blocked at the head of a stream is woken by a producer, without polling.
//!
//! ```text
//! cargo run -p flowstream-examples --bin wait
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, Driver, NewMessage, Producer};
use flowstream_redb::RedbDriver;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let driver: Arc<dyn Driver> = Arc::new(RedbDriver::in_memory()?);
    let mut consumer = Consumer::builder(driver.clone(), "events", "waiter")
        .build()
        .await?;

    let producer = Producer::new(driver);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!("producer: sending one message");
        if let Err(error) = producer.send(NewMessage::new("events", "wake up")).await {
            eprintln!("producer failed: {error}");
        }
    });

    let started = Instant::now();
    println!("consumer: waiting (timeout 30 s)");
    let woke = consumer.wait(Duration::from_secs(30)).await?;
    println!("consumer: woken by {woke:?} after {:?}", started.elapsed());
    while let Some(message) = consumer.next().await? {
        println!("consumer: got {:?}", message.body_str());
        consumer.commit(message.offset()).await?;
    }
    consumer.shutdown().await?;
    Ok(())
}

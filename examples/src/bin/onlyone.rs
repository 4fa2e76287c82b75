//! `onlyone`: two consumers in one group; one is active, the other standby. When the active
//! one shuts down, the standby takes over at once and resumes after the committed offset.
//!
//! ```text
//! cargo run -p flowstream-examples --bin onlyone
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, Driver, NewMessage, Producer};
use flowstream_redb::RedbDriver;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let driver: Arc<dyn Driver> = Arc::new(RedbDriver::in_memory()?);
    Producer::new(driver.clone())
        .send_batch((1..=6).map(|i| NewMessage::new("jobs", format!("job {i}"))))
        .await?;

    let mut a = Consumer::builder(driver.clone(), "jobs", "workers")
        .build()
        .await?;
    let mut b = Consumer::builder(driver, "jobs", "workers").build().await?;
    println!("a active: {}, b active: {}", a.is_active(), b.is_active());
    println!(
        "b.next() while standby: {:?}",
        b.next().await?.map(|m| m.offset())
    );

    for _ in 0..3 {
        if let Some(message) = a.next().await? {
            println!("a processed {:?}", message.body_str());
            a.commit(message.offset()).await?;
        }
    }
    println!("a shuts down");
    a.shutdown().await?;

    let woke = b.wait(Duration::from_secs(10)).await?;
    println!("b woken: {woke:?}, active: {}", b.is_active());
    while let Some(message) = b.next().await? {
        println!("b processed {:?}", message.body_str());
        b.commit(message.offset()).await?;
    }
    b.shutdown().await?;
    Ok(())
}

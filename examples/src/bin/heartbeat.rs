//! `heartbeat`: an active consumer that takes longer than `takeover_after` over one message
//! keeps its claim, because it heartbeats while messages are pending. The standby never
//! takes over.
//!
//! ```text
//! cargo run -p flowstream-examples --bin heartbeat
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
        .send(NewMessage::new("reports", "a slow report"))
        .await?;
    let builder = |driver: &Arc<dyn Driver>| {
        Consumer::builder(driver.clone(), "reports", "renderers")
            .takeover_after(Duration::from_secs(2))
            .heartbeat_every(Duration::from_millis(500))
    };
    let mut slow = builder(&driver).build().await?;
    let mut standby = builder(&driver).build().await?;

    let Some(message) = slow.next().await? else {
        return Err("expected a message".into());
    };
    println!(
        "slow consumer: processing {:?} for 5 s (takeover_after is 2 s)",
        message.body_str()
    );
    let woke = standby.wait(Duration::from_secs(5)).await?;
    println!(
        "standby after 5 s: {woke:?}, active: {}",
        standby.is_active()
    );
    slow.commit(message.offset()).await?;
    println!(
        "slow consumer: committed, still active: {}",
        slow.is_active()
    );
    slow.shutdown().await?;
    standby.shutdown().await?;
    Ok(())
}

//! Test helper: one consumer of a group on PostgreSQL, in its own process.
//!
//! `pg-consumer URL SCHEMA STREAM GROUP TAKEOVER_MS` prints one line per event, flushed at
//! once so a parent process can follow it: `active after C` or `standby` after joining, and
//! `active after C` whenever it takes over (C: the committed offset it resumes after); `processed N` before committing offset N, `committed N` after.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Consumer, Driver, Wake};
use flowstream_postgres::PgDriver;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // A parent that went away cannot be told anything; nothing else to do about it.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, schema, stream, group, takeover_ms] = args.as_slice() else {
        return Err("usage: pg-consumer URL SCHEMA STREAM GROUP TAKEOVER_MS".into());
    };
    let takeover = Duration::from_millis(takeover_ms.parse()?);
    let driver: Arc<dyn Driver> = Arc::new(
        PgDriver::builder(url.as_str())
            .schema(schema.as_str())
            .max_connections(4)
            .connect()
            .await?,
    );
    let mut consumer = Consumer::builder(driver, stream.as_str(), group.as_str())
        .takeover_after(takeover)
        .heartbeat_every(takeover / 3)
        .batch_size(10)
        .build()
        .await?;
    if consumer.is_active() {
        say(format!(
            "active after {}",
            consumer.committed().unwrap_or(0)
        ));
    } else {
        say("standby".to_owned());
    }
    loop {
        match consumer.next().await {
            Ok(Some(message)) => {
                say(format!("processed {}", message.offset()));
                match consumer.commit(message.offset()).await {
                    Ok(()) => say(format!("committed {}", message.offset())),
                    Err(error) => say(format!("commit failed: {error}")),
                }
            }
            Ok(None) => {
                if consumer.wait(Duration::from_secs(5)).await? == Wake::Activated {
                    // Nothing has been committed since the takeover: this is where it resumes.
                    say(format!(
                        "active after {}",
                        consumer.committed().unwrap_or(0)
                    ));
                }
            }
            Err(error) => {
                say(format!("error: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

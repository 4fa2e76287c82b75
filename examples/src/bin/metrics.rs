//! Metrics for Prometheus: flowstream records through the `metrics` facade, and this program
//! installs a Prometheus recorder and serves what it holds on `/metrics`.
//!
//! ```text
//! cargo run -p flowstream-examples --bin metrics [-- ADDRESS]    # default 127.0.0.1:9898
//! curl -s http://127.0.0.1:9898/metrics | grep flowstream_
//! ```
//!
//! It produces and consumes a message every 100 ms on a redb file under `./flowstream-data`,
//! and refreshes the group's lag every second (`Admin::groups` sets the gauge). Stop it with
//! Ctrl-C.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::{Admin, Consumer, Driver, NewMessage, Producer};
use flowstream_redb::RedbDriver;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Before any consumer is built: consumers register their counters when they start.
    let handle = PrometheusBuilder::new().install_recorder()?;
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9898".into());
    let listener = TcpListener::bind(&address).await?;
    println!("metrics on http://{address}/metrics");
    tokio::spawn(serve(listener, handle));

    std::fs::create_dir_all("flowstream-data")?;
    let driver: Arc<dyn Driver> = Arc::new(RedbDriver::open("flowstream-data/metrics.redb").await?);
    let producer = Producer::new(driver.clone());
    let admin = Admin::new(driver.clone());
    let mut consumer = Consumer::builder(driver, "ticks", "counter")
        .build()
        .await?;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    for tick in 0u64.. {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        producer
            .send(NewMessage::new("ticks", tick.to_string()))
            .await?;
        while let Some(message) = consumer.next().await? {
            consumer.commit(&message).await?;
        }
        if tick % 10 == 0 {
            admin.groups("ticks").await?;
        }
    }
    consumer.shutdown().await?;
    Ok(())
}

/// Answers every connection with the recorder's text format: enough for a Prometheus scrape.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let body = handle.render();
        tokio::spawn(async move {
            // The request itself does not matter: whatever was asked, the metrics answer.
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: \
                 {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

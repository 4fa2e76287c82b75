//! `flowstream tail`: print a stream's messages as they come, from a place, alone or as a
//! member of a consumer group that commits what it printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flowstream_core::driver::{Subscription, Topic};
use flowstream_core::{Admin, Consumer, Driver, Message, StartFrom};
use serde_json::json;

use crate::output::{escaped, hex, time};
use crate::store::Failure;

/// What to print and when to stop.
pub(crate) struct Tail {
    pub(crate) stream: String,
    pub(crate) from: StartFrom,
    pub(crate) exit_at_head: bool,
    pub(crate) count: Option<u64>,
    pub(crate) json: bool,
}

/// Messages read per call when reading without a group.
const READ_BATCH: usize = 500;
/// How long a follower sleeps without a notification before it looks anyway.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Follows the stream without a group: each partition read from its place, in turn.
pub(crate) async fn alone(driver: Arc<dyn Driver>, tail: Tail) -> Result<(), Failure> {
    if tail.count == Some(0) {
        return Ok(());
    }
    let admin = Admin::new(driver.clone());
    let partitions = admin.partitions(&tail.stream).await?;
    let mut cursors = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let log = log_name(&tail.stream, partition);
        let next = admin.offset_at(&tail.stream, partition, tail.from).await?;
        let changes = driver.changes().subscribe(Topic::Stream(log.clone()));
        cursors.push((log, next - 1, changes));
    }
    let mut printed = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    loop {
        let mut any = false;
        for (log, after, _) in &mut cursors {
            let messages = driver.read(log, *after, READ_BATCH).await?;
            for message in &messages {
                if !written(print(&mut out, message, partitions, tail.json))? {
                    return Ok(());
                }
                printed += 1;
                if tail.count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            if let Some(last) = messages.last() {
                *after = last.offset();
                any = true;
            }
        }
        if !written(out.flush())? {
            return Ok(());
        }
        if any {
            continue;
        }
        if tail.exit_at_head {
            return Ok(());
        }
        let woken = futures_any(cursors.iter_mut().map(|(_, _, s)| s));
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = stop_requested() => return Ok(()),
        }
    }
}

/// Follows the stream as a member of `group`, committing what it printed.
pub(crate) async fn in_group(
    driver: Arc<dyn Driver>,
    tail: Tail,
    group: &str,
) -> Result<(), Failure> {
    if tail.count == Some(0) {
        return Ok(());
    }
    let partitions = Admin::new(driver.clone()).partitions(&tail.stream).await?;
    let mut builder = Consumer::builder(driver, tail.stream.as_str(), group).start_from(tail.from);
    if partitions > 1 {
        // A stable member id per process would survive restarts; a tail is a passer-by.
        builder = builder.join_delay(Duration::ZERO);
    }
    let mut consumer = builder.build().await?;
    let result = follow(&mut consumer, &tail, partitions, group).await;
    let shutdown = consumer.shutdown().await.map_err(Failure::from);
    result.and(shutdown)
}

async fn follow(
    consumer: &mut Consumer,
    tail: &Tail,
    partitions: u32,
    group: &str,
) -> Result<(), Failure> {
    let mut printed = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    loop {
        // Commits are per partition: the last message printed of each.
        let mut last: BTreeMap<u32, Message> = BTreeMap::new();
        while let Some(message) = consumer.next().await? {
            if !written(print(&mut out, &message, partitions, tail.json))? {
                return Ok(());
            }
            printed += 1;
            last.insert(message.partition(), message);
            if tail.count.is_some_and(|count| printed >= count) {
                break;
            }
        }
        if !written(out.flush())? {
            return Ok(());
        }
        for message in last.values() {
            consumer.commit(message).await?;
        }
        if tail.count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
        if !last.is_empty() {
            continue;
        }
        if tail.exit_at_head {
            if consumer.is_active() {
                return Ok(());
            }
            return Err(Failure::store(format!(
                "another consumer holds group {group:?} of {:?}: stop it, or tail with \
                 another group",
                tail.stream
            )));
        }
        tokio::select! {
            woke = consumer.wait(LOOK_EVERY) => { woke?; }
            () = stop_requested() => return Ok(()),
        }
    }
}

/// Ctrl-C, or (on Unix) SIGTERM as `kill` and service managers send: either ends a tail
/// the way reaching its count does, so a group member hands its group over at once instead
/// of leaving it to a takeover.
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn log_name(stream: &str, partition: u32) -> String {
    if partition == 0 {
        stream.to_owned()
    } else {
        format!("{stream}/{partition}")
    }
}

/// Resolves when any of `subscriptions` sees a change.
async fn futures_any<'a>(subscriptions: impl Iterator<Item = &'a mut Subscription>) {
    let waits: Vec<_> = subscriptions.map(|s| Box::pin(s.changed())).collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures_select_all(waits).await;
}

async fn futures_select_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> F::Output {
    std::future::poll_fn(move |cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(output);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Whether a write reached standard output: `false` once its reader went away (`tail | head`),
/// which ends the tail quietly.
fn written(result: std::io::Result<()>) -> Result<bool, Failure> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(Failure::store(format!("writing standard output: {error}"))),
    }
}

fn print(
    out: &mut impl Write,
    message: &Message,
    partitions: u32,
    json: bool,
) -> std::io::Result<()> {
    if json {
        let body = match message.body_str() {
            Some(text) => json!({ "body": text }),
            None => json!({ "body_hex": hex(message.body()) }),
        };
        let mut line = json!({
            "stream": message.stream(),
            "partition": message.partition(),
            "offset": message.offset(),
            "produced_at": time(message.produced_at()),
            "headers": message.headers(),
        });
        if let (Some(object), Some(body)) = (line.as_object_mut(), body.as_object()) {
            object.extend(body.clone());
            if let Some(key) = message.key() {
                object.insert("key".into(), json!(escaped(key)));
            }
        }
        writeln!(out, "{line}")?;
        return Ok(());
    }
    let position = if partitions > 1 {
        format!("{}:{}", message.partition(), message.offset())
    } else {
        message.offset().to_string()
    };
    let headers: Vec<String> = message
        .headers()
        .iter()
        .map(|(name, value)| format!("{}={}", escaped(name.as_bytes()), escaped(value.as_bytes())))
        .collect();
    let headers = if headers.is_empty() {
        "-".to_owned()
    } else {
        headers.join(",")
    };
    writeln!(
        out,
        "{position}\t{}\t{headers}\t{}",
        time(message.produced_at()),
        escaped(message.body())
    )?;
    Ok(())
}

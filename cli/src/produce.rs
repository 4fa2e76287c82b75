//! `flowstream produce`: standard input, one message per line, sent in batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstream_core::{Admin, Driver, JSON_CONTENT_TYPE, NewMessage, Producer, partition_for_key};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::store::Failure;

/// How a run is told to route its messages.
pub(crate) struct Routing {
    pub(crate) key: Option<String>,
    pub(crate) partition: Option<u32>,
}

/// Inputs shorter than this (in time) show no progress bar.
const QUIET_FOR: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    driver: Arc<dyn Driver>,
    stream: &str,
    json: bool,
    batch: usize,
    routing: Routing,
) -> Result<(), Failure> {
    let partitions = Admin::new(driver.clone()).partitions(stream).await?;
    let producer = Producer::new(driver);
    let mut lines = BufReader::new(tokio::io::stdin());
    let mut stored = Stored::default();
    let mut pending: Vec<NewMessage> = Vec::with_capacity(batch);
    let mut line = Vec::new();
    let mut number = 0u64;
    let started = Instant::now();
    let mut progress: Option<ProgressBar> = None;
    loop {
        line.clear();
        let read = lines.read_until(b'\n', &mut line).await?;
        if read == 0 {
            break;
        }
        number += 1;
        strip_line_end(&mut line);
        if json {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(error) = serde_json::from_slice::<serde_json::Value>(&line) {
                send(&producer, &mut pending, &mut stored).await?;
                announce(&producer).await;
                return Err(Failure::input(format!(
                    "line {number} is not JSON ({error}); {} — nothing from line {number} on \
                     was sent",
                    stored.summary(stream)
                )));
            }
        }
        let turn = stored.count + pending.len() as u64;
        pending.push(message(stream, &line, json, &routing, partitions, turn));
        if pending.len() >= batch {
            send(&producer, &mut pending, &mut stored).await?;
            if progress.is_none() && started.elapsed() >= QUIET_FOR {
                progress = Some(progress_bar());
            }
            if let Some(bar) = &progress {
                bar.set_position(stored.count);
            }
        }
    }
    send(&producer, &mut pending, &mut stored).await?;
    announce(&producer).await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    println!("{}", stored.summary(stream));
    Ok(())
}

/// Sees the wake-ups of what was sent out before the process exits, so that consumers
/// elsewhere get the messages now rather than at their next poll. A failure here loses
/// nothing stored: it is reported and the run still succeeds.
async fn announce(producer: &Producer) {
    if let Err(error) = producer.flush().await {
        eprintln!("flowstream: warning: {error}");
    }
}

fn strip_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

fn message(
    stream: &str,
    line: &[u8],
    json: bool,
    routing: &Routing,
    partitions: u32,
    turn: u64,
) -> NewMessage {
    let mut message = NewMessage::new(stream, line.to_vec());
    if json {
        message = message.with_header(flowstream_core::CONTENT_TYPE, JSON_CONTENT_TYPE);
    }
    // Routed here rather than by the producer, so the summary can say where each went.
    let partition = match (&routing.key, routing.partition) {
        (_, Some(partition)) => partition,
        (Some(key), None) => partition_for_key(key.as_bytes(), partitions),
        (None, None) => u32::try_from(turn % u64::from(partitions)).unwrap_or(0),
    };
    if let Some(key) = &routing.key {
        message = message.with_key(key.as_str());
    }
    if partitions > 1 || routing.partition.is_some() {
        message = message.to_partition(partition);
    }
    message
}

async fn send(
    producer: &Producer,
    pending: &mut Vec<NewMessage>,
    stored: &mut Stored,
) -> Result<(), Failure> {
    if pending.is_empty() {
        return Ok(());
    }
    let partitions: Vec<u32> = pending.iter().map(|m| m.partition().unwrap_or(0)).collect();
    let offsets = match producer.send_batch(std::mem::take(pending)).await {
        Ok(offsets) => offsets,
        Err(error) => {
            let before = format!("{} before the failure", stored.summary("the stream"));
            return Err(Failure::from(error).adding(&before));
        }
    };
    for (partition, offset) in partitions.into_iter().zip(offsets) {
        stored.add(partition, offset);
    }
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} messages stored ({per_sec})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What was stored so far: per partition, the first and last offset.
#[derive(Default)]
struct Stored {
    count: u64,
    ranges: BTreeMap<u32, (u64, u64)>,
}

impl Stored {
    fn add(&mut self, partition: u32, offset: u64) {
        self.count += 1;
        let range = self.ranges.entry(partition).or_insert((offset, offset));
        range.0 = range.0.min(offset);
        range.1 = range.1.max(offset);
    }

    fn summary(&self, stream: &str) -> String {
        let noun = if self.count == 1 {
            "message"
        } else {
            "messages"
        };
        let mut out = format!("stored {} {noun} in {stream}", self.count);
        match self.ranges.len() {
            0 => {}
            1 if self.ranges.contains_key(&0) => {
                let (first, last) = self.ranges[&0];
                out.push_str(&format!(": offsets {first}-{last}"));
            }
            _ => {
                let parts: Vec<String> = self
                    .ranges
                    .iter()
                    .map(|(p, (first, last))| format!("partition {p} offsets {first}-{last}"))
                    .collect();
                out.push_str(&format!(": {}", parts.join(", ")));
            }
        }
        out
    }
}

//! `--long`: one stream filled to `--messages` (10M by default), measured at 1M and at the
//! end, to show that nothing degrades with the stream's length: produce rate, `head`, latency,
//! consume rate and a consumer's memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstream_core::{Consumer, NewMessage, StartFrom};

use crate::flow::Flowstream;
use crate::options::{Backend, Options};
use crate::report::{Report, group_digits};
use crate::system::System;
use crate::workload::{body, chunks, unique};
use crate::{BoxError, measure_in_child};

/// Messages per measured block: the first block is "at 1M", the last "at the end".
const BLOCK: usize = 1_000_000;

/// Runs the long rows on `flow`, a fresh store; returns the stream it filled and its length
/// (for the memory rows, which need the store closed on redb).
pub(crate) async fn rows(
    flow: &Flowstream,
    options: &Options,
    report: &mut Report,
) -> Result<(String, usize), BoxError> {
    let (total, block) = sizes(options.messages);
    let stream = unique("long");
    let name = flow.name();
    let at_first = format!("at {}", group_digits(block as f64));
    let at_end = format!("at {}", group_digits(total as f64));
    let payload = body(options.body);

    // Produce in batches of 1,000; the first and the last block are timed, and probed after.
    let mut filled = 0;
    let mut first_rate = 0.0;
    let mut block_start = Instant::now();
    for (_, n) in chunks(total, 1000) {
        flow.producer()
            .send_batch((0..n).map(|_| NewMessage::new(&stream, payload.clone())))
            .await?;
        filled += n;
        if filled == block {
            first_rate = block as f64 / block_start.elapsed().as_secs_f64();
            probe(flow, &stream, &at_first, options, report).await?;
        }
        if filled == total - block {
            block_start = Instant::now();
        }
        if filled % BLOCK == 0 {
            println!("  filled {}", group_digits(filled as f64));
        }
    }
    let last_rate = block as f64 / block_start.elapsed().as_secs_f64();
    probe(flow, &stream, &at_end, options, report).await?;
    for (label, rate) in [("first", first_rate), ("last", last_rate)] {
        report.rate(
            &format!(
                "long stream: produce, batches of 1,000, {label} {}",
                group_digits(block as f64)
            ),
            &name,
            rate,
        );
    }

    // Consume it all as one group, committing per read; the first and the last block timed.
    let mut consumer = Consumer::builder(Arc::clone(flow.driver()), &stream, "long")
        .batch_size(1000)
        .build()
        .await?;
    let mut seen = 0;
    let mut since_commit = 0;
    let mut started = Instant::now();
    let mut first = Duration::ZERO;
    while seen < total {
        let message = consumer
            .next()
            .await?
            .ok_or_else(|| format!("the long stream ended after {seen}"))?;
        seen += 1;
        since_commit += 1;
        if since_commit == 1000 {
            consumer.commit(message.offset()).await?;
            since_commit = 0;
        }
        if seen == block {
            first = started.elapsed();
        }
        if seen == total - block {
            started = Instant::now();
        }
    }
    let last = started.elapsed();
    consumer.shutdown().await?;
    for (label, took) in [("first", first), ("last", last)] {
        report.rate(
            &format!(
                "long stream: consume, {label} {}",
                group_digits(block as f64)
            ),
            &name,
            block as f64 / took.as_secs_f64(),
        );
    }
    Ok((stream, total))
}

/// The raw ceiling filled to the same length the same way (batches of 1,000, `write(head,
/// count)` storing offsets `head + 1 ..= head + count`), its first and last block timed: what
/// the store itself does as a table grows, beside flowstream's own figures.
pub(crate) async fn raw_rows<F, Fut>(
    name: &str,
    options: &Options,
    report: &mut Report,
    mut write: F,
) -> Result<(), BoxError>
where
    F: FnMut(u64, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let (total, block) = sizes(options.messages);
    let mut filled = 0;
    let mut first_rate = 0.0;
    let mut block_start = Instant::now();
    for (head, n) in chunks(total, 1000) {
        write(head as u64, n).await?;
        filled += n;
        if filled == block {
            first_rate = block as f64 / block_start.elapsed().as_secs_f64();
        }
        if filled == total - block {
            block_start = Instant::now();
        }
    }
    let last_rate = block as f64 / block_start.elapsed().as_secs_f64();
    for (label, rate) in [("first", first_rate), ("last", last_rate)] {
        report.rate(
            &format!(
                "long stream: produce, batches of 1,000, {label} {}",
                group_digits(block as f64)
            ),
            name,
            rate,
        );
    }
    Ok(())
}

/// The stream's length and the block measured at its start and end: whole batches of 1,000,
/// the block at most 1M and at most half the stream.
fn sizes(messages: usize) -> (usize, usize) {
    let total = (messages / 1000 * 1000).max(2000);
    let block = (BLOCK.min(total / 2) / 1000 * 1000).max(1000);
    (total, block)
}

/// `head` and end-to-end latency on the long stream as it stands.
async fn probe(
    flow: &Flowstream,
    stream: &str,
    at: &str,
    options: &Options,
    report: &mut Report,
) -> Result<(), BoxError> {
    let name = flow.name();
    let mut heads = Vec::with_capacity(200);
    for _ in 0..200 {
        let start = Instant::now();
        flow.driver().head(stream).await?;
        heads.push(start.elapsed());
    }
    heads.sort_unstable();
    report.push(
        &format!("long stream: head() p50 {at}"),
        &name,
        heads[heads.len() / 2].as_secs_f64() * 1e6,
        "µs",
        true,
    );

    let rate = 1_000;
    let expected = (rate as f64 * options.latency_for.as_secs_f64()) as usize;
    let receiver = flow
        .receive_latencies(stream, StartFrom::Latest, expected, 1000)
        .await?;
    flow.send_paced(stream, rate, options.latency_for, options.body)
        .await?;
    if let Some((_, p99, _)) = receiver.await??.summary() {
        report.push(
            &format!("long stream: latency p99 at 1,000 msg/s {at}"),
            &name,
            p99.as_secs_f64() * 1000.0,
            "ms",
            true,
        );
    }
    Ok(())
}

/// Peak memory of a fresh process consuming the first block of `stream`, then all of it.
pub(crate) async fn memory_rows(
    backend: Backend,
    stream: &str,
    options: &Options,
    report: &mut Report,
) -> Result<(), BoxError> {
    let name = format!("flowstream ({})", backend.name());
    let (total, block) = sizes(options.messages);
    for count in [block, total] {
        let rss = measure_in_child(backend, stream, count, options).await?;
        report.push(
            &format!(
                "long stream: peak RSS consuming {}",
                group_digits(count as f64)
            ),
            &name,
            rss as f64 / 1048576.0,
            "MiB",
            true,
        );
    }
    Ok(())
}

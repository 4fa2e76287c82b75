//! Rows for sends and commits inside the application's transaction: `send_in` (PostgreSQL) /
//! `AppTx::send` (redb) beside plain sends, their call-to-delivery latency, and consuming with
//! `commit_in` beside `commit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstream_core::{Consumer, NewMessage, PreparedSend, Producer, StartFrom, TxCommit};
use flowstream_postgres::PgDriver;
use flowstream_redb::RedbDriver;
use tokio::task::JoinSet;

use crate::BoxError;
use crate::flow::Flowstream;
use crate::report::Report;
use crate::system::System;
use crate::workload::{Sizes, body, paced, stamped_body, unique};

/// The driver of a flow, for its transactional calls.
#[derive(Debug, Clone)]
pub(crate) enum TxDriver {
    Postgres(PgDriver),
    Redb(RedbDriver),
}

impl TxDriver {
    /// Sends `messages` in a transaction of their own, committed.
    async fn send_in(&self, messages: PreparedSend) -> Result<(), BoxError> {
        match self {
            TxDriver::Postgres(pg) => {
                let mut tx = pg.pool().begin().await?;
                pg.send_in(&mut tx, messages).await?;
                tx.commit().await?;
            }
            TxDriver::Redb(redb) => {
                redb.write(move |tx| tx.send(messages).map(drop)).await?;
            }
        }
        Ok(())
    }

    /// Commits in a transaction of its own, with nothing else in it.
    async fn commit_in(&self, commit: TxCommit) -> Result<(), BoxError> {
        match self {
            TxDriver::Postgres(pg) => {
                let mut tx = pg.pool().begin().await?;
                pg.commit_in(&mut tx, &commit).await?;
                tx.commit().await?;
            }
            TxDriver::Redb(redb) => {
                redb.write(move |tx| tx.commit(&commit)).await?;
            }
        }
        Ok(())
    }
}

/// Waits until `stream` holds `count` messages (the relay has moved them all).
async fn until_stored(flow: &Flowstream, stream: &str, count: usize) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while flow.driver().head(stream).await? < count as u64 {
        if Instant::now() > deadline {
            return Err(format!("{stream} did not reach {count} messages").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// `count` messages in transactions of `batch`, one after the other; msg/s until all are stored.
async fn batches(
    flow: &Flowstream,
    tx: &TxDriver,
    count: usize,
    batch: usize,
    size: usize,
) -> Result<f64, BoxError> {
    let stream = unique("send-in");
    let payload = body(size);
    let start = Instant::now();
    for _ in 0..count / batch {
        let messages = (0..batch).map(|_| NewMessage::new(&stream, payload.clone()));
        tx.send_in(flow.producer().prepare(messages).await?).await?;
    }
    until_stored(flow, &stream, count / batch * batch).await?;
    Ok((count / batch * batch) as f64 / start.elapsed().as_secs_f64())
}

/// 64 tasks, each sending one message per transaction; msg/s until all are stored.
async fn singles(
    flow: &Flowstream,
    tx: &TxDriver,
    count: usize,
    size: usize,
) -> Result<f64, BoxError> {
    const TASKS: usize = 64;
    let stream: Arc<str> = unique("send-in-singles").into();
    let each = count / TASKS;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (tx, producer, stream) = (tx.clone(), flow.producer().clone(), Arc::clone(&stream));
        tasks.spawn(async move {
            for _ in 0..each {
                let prepared = producer
                    .prepare([NewMessage::new(&*stream, body(size))])
                    .await?;
                tx.send_in(prepared).await?;
            }
            Ok::<_, BoxError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    until_stored(flow, &stream, each * TASKS).await?;
    Ok((each * TASKS) as f64 / start.elapsed().as_secs_f64())
}

/// Reads `stream` (`count` messages) as a new group that commits every `read_batch` messages
/// with `commit_in`, in a transaction holding nothing else.
async fn consume(
    flow: &Flowstream,
    tx: &TxDriver,
    stream: &str,
    count: usize,
    read_batch: usize,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    let mut consumer = Consumer::builder(Arc::clone(flow.driver()), stream, unique("commit-in"))
        .batch_size(read_batch)
        .build()
        .await?;
    let mut seen = 0;
    while seen < count {
        let Some(message) = consumer.next().await? else {
            return Err(format!("stream {stream} ended after {seen} of {count}").into());
        };
        seen += 1;
        if seen % read_batch == 0 || seen == count {
            tx.commit_in(consumer.prepare_commit(&message)?).await?;
        }
    }
    consumer.shutdown().await?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// The rows of one flow; `consumed` is the stream of the consume row. Returns false if a
/// figure could not be measured.
pub(crate) async fn rows(
    flow: &Flowstream,
    tx: &TxDriver,
    sizes: &Sizes,
    consumed: Option<&str>,
    report: &mut Report,
) -> bool {
    let name = format!("send_in: {}", flow.name());
    let mut ok = true;
    match batches(flow, tx, sizes.produce, 1000, sizes.body).await {
        Ok(rate) => report.rate("produce, batches of 1,000", &name, rate),
        Err(error) => {
            report.skip("produce, batches of 1,000", &name, error.to_string());
            ok = false;
        }
    }
    match singles(flow, tx, sizes.singles, sizes.body).await {
        Ok(rate) => report.rate("produce, 64 tasks × single sends", &name, rate),
        Err(error) => {
            report.skip("produce, 64 tasks × single sends", &name, error.to_string());
            ok = false;
        }
    }
    let latency_name = format!("send_in + commit: {}", flow.name());
    match latency(flow, tx, sizes).await {
        Ok(summary) => report.latencies("at 1,000 msg/s", &latency_name, summary),
        Err(error) => {
            report.skip("latency at 1,000 msg/s", &latency_name, error.to_string());
            ok = false;
        }
    }
    if let Some(stream) = consumed {
        let scenario = format!(
            "consume {} messages, one group",
            crate::report::group_digits(sizes.consume as f64)
        );
        let name = format!("commit_in: {}", flow.name());
        match consume(flow, tx, stream, sizes.consume, sizes.read_batch).await {
            Ok(rate) => report.rate(&scenario, &name, rate),
            Err(error) => {
                report.skip(&scenario, &name, error.to_string());
                ok = false;
            }
        }
    }
    ok
}

/// Stamped messages at 1,000 per second for 5 s (1 s in a smoke run), each sent in a
/// transaction of its own; time from the call (staging and commit included) to delivery.
async fn latency(
    flow: &Flowstream,
    tx: &TxDriver,
    sizes: &Sizes,
) -> Result<Option<(Duration, Duration, Duration)>, BoxError> {
    const RATE: u64 = 1000;
    let duration = if sizes.consume < 100_000 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let stream: Arc<str> = unique("send-in-latency").into();
    let expected = (RATE as f64 * duration.as_secs_f64()) as usize;
    let receiver = flow
        .receive_latencies(&stream, StartFrom::Earliest, expected, sizes.read_batch)
        .await?;
    let producer: Producer = flow.producer().clone();
    let size = sizes.body;
    paced(RATE, duration, || {
        let (tx, producer, stream) = (tx.clone(), producer.clone(), Arc::clone(&stream));
        async move {
            let prepared = producer
                .prepare([NewMessage::new(&*stream, stamped_body(size))])
                .await?;
            tx.send_in(prepared).await
        }
    })
    .await?;
    Ok(receiver.await??.summary())
}

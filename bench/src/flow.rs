//! flowstream itself, on either driver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstream_core::{Consumer, Driver, NewMessage, Producer, StartFrom, Wake};
use sqlx::PgPool;

use crate::BoxError;
use crate::procstat;
use crate::system::System;
use crate::workload::{Latencies, Sizes, body, chunks, paced, singles, stamped_body, unique};

/// How the consume rows commit, once per read batch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Commits {
    /// `commit`, waiting for the write.
    Wait,
    /// `commit_in_background`: the next batch is handled while the commit is written.
    Background,
}

pub(crate) struct Flowstream {
    label: &'static str,
    driver: Arc<dyn Driver>,
    producer: Producer,
    /// On PostgreSQL, a pool on the same database, to count the transactions the server ran.
    server: Option<PgPool>,
    /// The driver itself, for sends and commits inside transactions.
    tx: Option<crate::in_tx_rows::TxDriver>,
    /// On redb: the stream the last produce row wrote, deleted before the next produce row
    /// (untimed), as the raw redb row deletes its table, so both write into a file whose
    /// previous row's pages are free.
    last_produced: Option<std::sync::Mutex<Option<String>>>,
}

/// What `idle_cpu` measured.
pub(crate) struct IdleCost {
    /// CPU time this process used during the window.
    pub(crate) cpu: Duration,
    /// Transactions the database server committed during the window (PostgreSQL only).
    pub(crate) server_transactions: Option<u64>,
}

impl Flowstream {
    pub(crate) fn new(
        label: &'static str,
        driver: Arc<dyn Driver>,
        server: Option<PgPool>,
    ) -> Self {
        let producer = Producer::new(Arc::clone(&driver));
        Flowstream {
            label,
            driver,
            producer,
            server,
            tx: None,
            last_produced: None,
        }
    }

    /// The same flow, deleting each produce row's stream before the next produce row.
    pub(crate) fn clearing_produce_rows(mut self) -> Self {
        self.last_produced = Some(std::sync::Mutex::new(None));
        self
    }

    /// The stream for a produce row: deletes the previous row's stream first when clearing.
    async fn produce_stream(&self, prefix: &str) -> Result<String, BoxError> {
        let stream = unique(prefix);
        let Some(last) = &self.last_produced else {
            return Ok(stream);
        };
        let previous = last
            .lock()
            .map_err(|_| "a produce row panicked")?
            .replace(stream.clone());
        if let Some(previous) = previous {
            self.driver.delete_log(&previous).await?;
        }
        Ok(stream)
    }

    /// The same flow, with its driver for transactional calls.
    pub(crate) fn with_tx(mut self, tx: crate::in_tx_rows::TxDriver) -> Self {
        self.tx = Some(tx);
        self
    }

    /// Its driver for transactional calls, if it has one.
    pub(crate) fn tx(&self) -> Option<&crate::in_tx_rows::TxDriver> {
        self.tx.as_ref()
    }

    pub(crate) fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    pub(crate) fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Transactions the database has committed or rolled back so far, from the server's own
    /// statistics; `None` when not on PostgreSQL.
    async fn server_transactions(&self) -> Result<Option<u64>, BoxError> {
        let Some(pool) = &self.server else {
            return Ok(None);
        };
        // Flush this backend's own counts first; the others flush theirs within a second of
        // going idle, far inside the window.
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(pool)
            .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        Ok(Some(u64::try_from(total)?))
    }

    async fn fill(&self, stream: &str, count: usize, body: &[u8]) -> Result<(), BoxError> {
        for (_, n) in chunks(count, 1000) {
            self.producer
                .send_batch((0..n).map(|_| NewMessage::new(stream, body.to_vec())))
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn read_all(
        &self,
        stream: &str,
        count: usize,
        group: &str,
        read_batch: usize,
        commits: Commits,
    ) -> Result<usize, BoxError> {
        let mut consumer = Consumer::builder(Arc::clone(&self.driver), stream, group)
            .batch_size(read_batch)
            .build()
            .await?;
        let mut seen = 0;
        let mut since_commit = 0;
        while seen < count {
            match consumer.next().await? {
                Some(message) => {
                    seen += 1;
                    since_commit += 1;
                    if since_commit == read_batch {
                        match commits {
                            Commits::Wait => consumer.commit(message.offset()).await?,
                            Commits::Background => {
                                consumer.commit_in_background(message.offset()).await?
                            }
                        }
                        since_commit = 0;
                    }
                }
                None => {
                    return Err(format!("stream {stream} ended after {seen} of {count}").into());
                }
            }
        }
        if since_commit > 0 {
            consumer.commit(count as u64).await?;
        }
        consumer.shutdown().await?;
        Ok(seen)
    }

    /// Reads `stream` (`count` messages) as a new group that nacks every `every`-th message
    /// once, with no delay, and commits once per read batch otherwise; returns the time it took
    /// to handle the stream's `count` messages and the number of nacks. Ordered (`park`
    /// false): a nacked message comes back before the next. Parked: it is copied to the retry
    /// stream and comes back after the shortest parking delay (1 s); copies that come back
    /// while the stream is read are handled in the timing (committed once per read batch, as
    /// the stream's messages are), the rest after it, and the run ends only once every copy
    /// came back.
    pub(crate) async fn read_nacking(
        &self,
        stream: &str,
        count: usize,
        read_batch: usize,
        every: u64,
        park: bool,
    ) -> Result<(Duration, usize), BoxError> {
        let start = Instant::now();
        let mut builder = Consumer::builder(Arc::clone(&self.driver), stream, unique("nacks"))
            .batch_size(read_batch);
        if park {
            builder = builder.park_retries();
        }
        let mut consumer = builder.build().await?;
        let (mut nacks, mut since_commit, mut last) = (0, 0, 0);
        let (mut elapsed, mut copies) = (None, 0);
        while last < count as u64 || copies < nacks * usize::from(park) {
            if last >= count as u64 && elapsed.is_none() {
                elapsed = Some(start.elapsed());
            }
            let Some(message) = consumer.next().await? else {
                consumer.wait(Duration::from_secs(5)).await?;
                continue;
            };
            if message.stream() != stream {
                // A parked copy: committed like the stream's messages, once per read batch
                // (and the last one).
                copies += 1;
                if copies % read_batch == 0 || copies == nacks {
                    consumer.commit(&message).await?;
                }
                continue;
            }
            if message.attempt() == 1 && message.offset() % every == 0 {
                consumer
                    .nack_after(&message, Duration::ZERO, "bench")
                    .await?;
                nacks += 1;
                // The nack committed everything before the message (and, parked, the message).
                since_commit = 0;
                last = last.max(message.offset() - u64::from(!park));
                continue;
            }
            last = message.offset();
            since_commit += 1;
            if since_commit == read_batch {
                consumer.commit(last).await?;
                since_commit = 0;
            }
        }
        if since_commit > 0 {
            consumer.commit(last).await?;
        }
        consumer.shutdown().await?;
        Ok((elapsed.unwrap_or_else(|| start.elapsed()), nacks))
    }

    /// Fills a stream of `sizes.consume` messages and reads it as one group, then again as
    /// another group that commits in the background; returns both reading times and the
    /// stream, which the memory figure reads again in a fresh process.
    pub(crate) async fn consume_stream(
        &self,
        sizes: &Sizes,
    ) -> Result<(Duration, Duration, String), BoxError> {
        let stream = unique("consume");
        self.fill(&stream, sizes.consume, &body(sizes.body)).await?;
        let start = Instant::now();
        self.read_all(
            &stream,
            sizes.consume,
            "bench",
            sizes.read_batch,
            Commits::Wait,
        )
        .await?;
        let waiting = start.elapsed();
        let start = Instant::now();
        self.read_all(
            &stream,
            sizes.consume,
            "bench-background",
            sizes.read_batch,
            Commits::Background,
        )
        .await?;
        Ok((waiting, start.elapsed(), stream))
    }

    /// Reads `stream` (`count` messages) as a new group and returns the time it took and the
    /// peak resident memory of this process; run in a process of its own, which does nothing
    /// else.
    pub(crate) async fn consume_alone(
        &self,
        stream: &str,
        count: usize,
        read_batch: usize,
    ) -> Result<(Duration, u64), BoxError> {
        let start = Instant::now();
        self.read_all(stream, count, &unique("memory"), read_batch, Commits::Wait)
            .await?;
        let elapsed = start.elapsed();
        Ok((
            elapsed,
            procstat::peak_rss().ok_or("no memory figures from /proc")?,
        ))
    }

    /// Joins a new group on `stream` starting at `start` and, in a task, records the latency
    /// of the next `expected` messages (stamped bodies), committing after each read.
    pub(crate) async fn receive_latencies(
        &self,
        stream: &str,
        start: StartFrom,
        expected: usize,
        read_batch: usize,
    ) -> Result<tokio::task::JoinHandle<Result<Latencies, BoxError>>, BoxError> {
        let mut consumer = Consumer::builder(Arc::clone(&self.driver), stream, unique("latency"))
            .start_from(start)
            .batch_size(read_batch)
            .build()
            .await?;
        Ok(tokio::spawn(async move {
            let mut latencies = Latencies::with_capacity(expected);
            while latencies.len() < expected {
                let mut last = None;
                while let Some(message) = consumer.next().await? {
                    latencies.record(message.body());
                    last = Some(message.offset());
                }
                if let Some(offset) = last {
                    consumer.commit(offset).await?;
                }
                if latencies.len() < expected
                    && consumer.wait(Duration::from_secs(10)).await? == Wake::TimedOut
                {
                    return Err(
                        format!("{} of {expected} messages arrived", latencies.len()).into(),
                    );
                }
            }
            consumer.shutdown().await?;
            Ok::<_, BoxError>(latencies)
        }))
    }

    /// Sends `rate` stamped messages of `size` bytes per second to `stream` for `duration`,
    /// each send its own task.
    pub(crate) async fn send_paced(
        &self,
        stream: &str,
        rate: u64,
        duration: Duration,
        size: usize,
    ) -> Result<(), BoxError> {
        let stream: Arc<str> = stream.into();
        paced(rate, duration, || {
            let (producer, stream) = (self.producer.clone(), Arc::clone(&stream));
            async move {
                producer
                    .send(NewMessage::new(&*stream, stamped_body(size)))
                    .await?;
                Ok(())
            }
        })
        .await?;
        Ok(())
    }

    /// CPU this process uses while `consumers` consumers, each the active member of its own
    /// group, wait for messages for `window`; on PostgreSQL also the transactions the server
    /// ran meanwhile (the safety-net wake-ups are the only ones expected).
    pub(crate) async fn idle_cpu(
        &self,
        consumers: usize,
        window: Duration,
    ) -> Result<IdleCost, BoxError> {
        let stream = unique("idle");
        self.producer
            .send(NewMessage::new(&stream, "start"))
            .await?;
        let mut waiting = tokio::task::JoinSet::new();
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        for group in 0..consumers {
            let mut consumer =
                Consumer::builder(Arc::clone(&self.driver), &stream, format!("g{group}"))
                    .build()
                    .await?;
            // Commit what is there, so the group is idle (nothing pending, no heartbeats).
            while let Some(message) = consumer.next().await? {
                consumer.commit(message.offset()).await?;
            }
            let mut stopped = stop.subscribe();
            waiting.spawn(async move {
                loop {
                    tokio::select! {
                        woke = consumer.wait(Duration::from_secs(3600)) => { woke?; }
                        _ = stopped.recv() => break,
                    }
                }
                consumer.shutdown().await?;
                Ok::<(), flowstream_core::Error>(())
            });
        }
        // Let the joins settle before the window opens. On PostgreSQL, wait out the server's
        // statistics too: a backend that went idle flushes its counts within 10 s, and counts
        // of what ran before must not land in the window.
        let settle = if self.server.is_some() && window >= Duration::from_secs(10) {
            Duration::from_secs(11)
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(settle).await;
        let transactions_before = self.server_transactions().await?;
        let before = procstat::cpu_time().ok_or("no CPU figures from /proc")?;
        tokio::time::sleep(window).await;
        let used = procstat::cpu_time().ok_or("no CPU figures from /proc")? - before;
        let transactions_after = self.server_transactions().await?;
        let _ = stop.send(());
        while let Some(done) = waiting.join_next().await {
            done??;
        }
        Ok(IdleCost {
            cpu: used,
            // The two counting queries are transactions too.
            server_transactions: transactions_before
                .zip(transactions_after)
                .map(|(before, after)| after.saturating_sub(before).saturating_sub(2)),
        })
    }
}

#[async_trait::async_trait]
impl System for Flowstream {
    fn name(&self) -> String {
        self.label.to_owned()
    }

    async fn produce_batches(
        &self,
        batch: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let stream = self.produce_stream("batches").await?;
        let body = body(sizes.body);
        let start = Instant::now();
        for (_, n) in chunks(sizes.produce, batch) {
            self.producer
                .send_batch((0..n).map(|_| NewMessage::new(&stream, body.clone())))
                .await?;
        }
        Ok(Some(start.elapsed()))
    }

    async fn produce_singles(
        &self,
        tasks: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let stream: Arc<str> = self.produce_stream("singles").await?.into();
        let body = body(sizes.body);
        let start = Instant::now();
        let producer = self.producer.clone();
        singles(tasks, sizes.singles, move |_| {
            let (producer, stream, body) = (producer.clone(), Arc::clone(&stream), body.clone());
            async move {
                producer.send(NewMessage::new(&*stream, body)).await?;
                Ok(())
            }
        })
        .await?;
        Ok(Some(start.elapsed()))
    }

    // The consume row is measured by `consume_stream`, which also times background commits
    // and leaves the stream for the memory figure.

    async fn latency(
        &self,
        rate: u64,
        duration: Duration,
        sizes: &Sizes,
    ) -> Result<Option<Latencies>, BoxError> {
        let stream: Arc<str> = unique("latency").into();
        let expected = (rate as f64 * duration.as_secs_f64()) as usize;
        let receiver = self
            .receive_latencies(&stream, StartFrom::Earliest, expected, sizes.read_batch)
            .await?;
        self.send_paced(&stream, rate, duration, sizes.body).await?;
        Ok(Some(receiver.await??))
    }
}

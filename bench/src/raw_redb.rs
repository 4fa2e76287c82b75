//! redb ceilings: plain tables written and read directly, every write transaction committed
//! durably as flowstream's are.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::BoxError;
use crate::system::System;
use crate::workload::{Latencies, Sizes, body, chunks, paced, singles, stamped_body};

const RAW: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raw");

pub(crate) struct RawRedb {
    db: Arc<Database>,
}

impl RawRedb {
    /// A fresh file at `path` with a page cache of `cache` bytes (flowstream's, so that both
    /// read the same way).
    pub(crate) fn create(path: &Path, cache: usize) -> Result<Self, BoxError> {
        Ok(RawRedb {
            db: Arc::new(Database::builder().set_cache_size(cache).create(path)?),
        })
    }

    /// Appends `count` copies of `body` after `head` in one durable transaction, on a
    /// blocking thread.
    pub(crate) async fn write_batch(
        &self,
        head: u64,
        count: usize,
        body: Arc<[u8]>,
    ) -> Result<(), BoxError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(RAW)?;
                for i in 1..=count as u64 {
                    table.insert(head + i, &*body)?;
                }
            }
            tx.commit()?;
            Ok::<_, BoxError>(())
        })
        .await?
    }

    pub(crate) async fn clear(&self) -> Result<(), BoxError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write()?;
            tx.delete_table(RAW)?;
            tx.commit()?;
            Ok::<_, BoxError>(())
        })
        .await?
    }
}

#[async_trait::async_trait]
impl System for RawRedb {
    fn name(&self) -> String {
        "raw redb".to_owned()
    }

    async fn produce_batches(
        &self,
        batch: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        self.clear().await?;
        let body: Arc<[u8]> = body(sizes.body).into();
        let start = Instant::now();
        for (head, n) in chunks(sizes.produce, batch) {
            self.write_batch(head as u64, n, Arc::clone(&body)).await?;
        }
        Ok(Some(start.elapsed()))
    }

    /// One durable transaction per message; redb has one writer, so they queue.
    async fn produce_singles(
        &self,
        tasks: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        self.clear().await?;
        let body: Arc<[u8]> = body(sizes.body).into();
        let start = Instant::now();
        let db = Arc::clone(&self.db);
        singles(tasks, sizes.singles, move |i| {
            let raw = RawRedb {
                db: Arc::clone(&db),
            };
            let body = Arc::clone(&body);
            async move { raw.write_batch(i as u64, 1, body).await }
        })
        .await?;
        Ok(Some(start.elapsed()))
    }

    /// The floor under flowstream's latency on redb: each message its own durable
    /// transaction (as a lone send is), its key passed in memory to a reader that reads it
    /// back in a read transaction on a blocking thread.
    async fn latency(
        &self,
        rate: u64,
        duration: Duration,
        sizes: &Sizes,
    ) -> Result<Option<Latencies>, BoxError> {
        self.clear().await?;
        let expected = (rate as f64 * duration.as_secs_f64()) as usize;
        let (written, mut to_read) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let db = Arc::clone(&self.db);
        let reader = tokio::spawn(async move {
            let mut latencies = Latencies::with_capacity(expected);
            while latencies.len() < expected {
                let Some(key) = to_read.recv().await else {
                    return Err(
                        format!("{} of {expected} messages arrived", latencies.len()).into(),
                    );
                };
                let db = Arc::clone(&db);
                let body = tokio::task::spawn_blocking(move || {
                    let tx = db.begin_read()?;
                    let table = tx.open_table(RAW)?;
                    let value = table.get(key)?.ok_or("written key not found")?;
                    Ok::<_, BoxError>(value.value().to_vec())
                })
                .await??;
                latencies.record(&body);
            }
            Ok::<_, BoxError>(latencies)
        });
        let next_key = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let size = sizes.body;
        paced(rate, duration, || {
            let db = Arc::clone(&self.db);
            let written = written.clone();
            let key = next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                let body = stamped_body(size);
                tokio::task::spawn_blocking(move || {
                    let tx = db.begin_write()?;
                    tx.open_table(RAW)?.insert(key, body.as_slice())?;
                    tx.commit()?;
                    Ok::<_, BoxError>(())
                })
                .await??;
                written.send(key).map_err(|_| "the reader stopped")?;
                Ok(())
            }
        })
        .await?;
        Ok(Some(reader.await??))
    }

    /// A range scan in slices of `read_batch` keys, each slice its own read transaction, the
    /// bodies copied out as a reader would.
    async fn consume(&self, sizes: &Sizes) -> Result<Option<Duration>, BoxError> {
        self.clear().await?;
        let body: Arc<[u8]> = body(sizes.body).into();
        for (head, n) in chunks(sizes.consume, 100_000) {
            self.write_batch(head as u64, n, Arc::clone(&body)).await?;
        }
        let db = Arc::clone(&self.db);
        let (total, read_batch) = (sizes.consume as u64, sizes.read_batch as u64);
        let start = Instant::now();
        let seen = tokio::task::spawn_blocking(move || {
            let mut seen = 0_u64;
            let mut bytes = 0_usize;
            while seen < total {
                let tx = db.begin_read()?;
                let table = tx.open_table(RAW)?;
                let mut batch: Vec<(u64, Vec<u8>)> = Vec::with_capacity(read_batch as usize);
                for entry in table.range(seen + 1..=seen + read_batch)? {
                    let (key, value) = entry?;
                    batch.push((key.value(), value.value().to_vec()));
                }
                if batch.is_empty() {
                    break;
                }
                seen += batch.len() as u64;
                bytes += batch.iter().map(|(_, v)| v.len()).sum::<usize>();
            }
            Ok::<_, BoxError>((seen, bytes))
        })
        .await??;
        if seen.0 != total {
            return Err(format!("raw redb scan saw {} of {total}", seen.0).into());
        }
        Ok(Some(start.elapsed()))
    }
}

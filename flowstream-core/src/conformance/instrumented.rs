//! A driver that wraps a real one to count calls, inject faults and record accepted writes.
//!
//! One wrapper does all three, so the delegation to the real driver is written once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::driver::{
    Applied, Batch, ChangeHub, Driver, DriverError, Expected, Message, NewMessage, Record, Revision,
};
use async_trait::async_trait;
use serde_json::Value;

/// Wraps a real driver: counts calls, injects faults on demand, records accepted writes.
#[derive(Debug)]
pub struct InstrumentedDriver {
    inner: Arc<dyn Driver>,
    reads: AtomicU64,
    stream_reads: AtomicU64,
    writes: AtomicU64,
    largest_read: AtomicUsize,
    partitioned: AtomicBool,
    lose_next_write_reply: AtomicBool,
    hold_next_write_reply: Mutex<Option<Duration>>,
    append_before_head: Mutex<Option<NewMessage>>,
    accepted: Mutex<Vec<(String, Revision, Value)>>,
}

impl InstrumentedDriver {
    /// Wraps `inner`, with no fault armed.
    pub fn new(inner: Arc<dyn Driver>) -> Arc<Self> {
        Arc::new(InstrumentedDriver {
            inner,
            reads: AtomicU64::new(0),
            stream_reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            largest_read: AtomicUsize::new(0),
            partitioned: AtomicBool::new(false),
            lose_next_write_reply: AtomicBool::new(false),
            hold_next_write_reply: Mutex::default(),
            append_before_head: Mutex::default(),
            accepted: Mutex::default(),
        })
    }

    /// Calls that read: `read`, `head`, `get_record`.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// `read` calls alone.
    pub fn stream_reads(&self) -> u64 {
        self.stream_reads.load(Ordering::SeqCst)
    }

    /// Calls that write: `append`, `trim`, `put_record`.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The most messages one `read` call returned.
    pub fn largest_read(&self) -> usize {
        self.largest_read.load(Ordering::SeqCst)
    }

    /// While partitioned, every call fails with a retryable error and reaches nothing.
    pub fn set_partitioned(&self, partitioned: bool) {
        self.partitioned.store(partitioned, Ordering::SeqCst);
    }

    /// Whether the partition is on.
    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::SeqCst)
    }

    /// The next `head` call first appends `message` (straight to the real driver), as a
    /// producer racing with the caller would.
    pub fn append_before_next_head(&self, message: NewMessage) {
        *self
            .append_before_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
    }

    /// The next record write (`put_record`, or `apply` of a batch with records) is applied,
    /// then reported as a lost connection.
    pub fn lose_next_write_reply(&self) {
        self.lose_next_write_reply.store(true, Ordering::SeqCst);
    }

    /// The next record write is applied, then its reply is held back for `delay`, as a slow
    /// network would; a caller that gives up meanwhile leaves the write applied.
    pub fn hold_next_write_reply(&self, delay: Duration) {
        *self
            .hold_next_write_reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(delay);
    }

    /// Every record write the store accepted through this wrapper: key, revision, value.
    pub fn accepted_writes(&self) -> Vec<(String, Revision, Value)> {
        self.accepted.lock().expect("accepted writes").clone()
    }

    fn call(&self, counter: &AtomicU64) -> Result<(), DriverError> {
        counter.fetch_add(1, Ordering::SeqCst);
        if self.partitioned.load(Ordering::SeqCst) {
            return Err(DriverError::unavailable(
                "injected fault: network partition",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for InstrumentedDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        self.call(&self.writes)?;
        self.inner.append(messages).await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        self.call(&self.reads)?;
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        let messages = self.inner.read(stream, after, limit).await?;
        self.largest_read
            .fetch_max(messages.len(), Ordering::SeqCst);
        Ok(messages)
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        self.call(&self.reads)?;
        let racing = self
            .append_before_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(message) = racing {
            self.inner.append(vec![message]).await?;
        }
        self.inner.head(stream).await
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        self.call(&self.writes)?;
        self.inner.trim(stream, through).await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        self.call(&self.reads)?;
        self.inner.get_record(key).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        self.call(&self.writes)?;
        let revision = self
            .inner
            .put_record(key, value.clone(), expected, notify)
            .await?;
        self.note_accepted(std::iter::once((key.to_owned(), revision, value)))
            .await?;
        Ok(revision)
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, DriverError> {
        self.call(&self.writes)?;
        let records: Vec<(String, Value)> = batch
            .records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let applied = self.inner.apply(batch).await?;
        if !records.is_empty() {
            let written = records
                .into_iter()
                .zip(applied.revisions.iter().copied())
                .map(|((key, value), revision)| (key, revision, value));
            self.note_accepted(written).await?;
        }
        Ok(applied)
    }

    async fn delete_log(&self, log: &str) -> Result<bool, DriverError> {
        self.call(&self.writes)?;
        self.inner.delete_log(log).await
    }

    async fn logs(&self) -> Result<Vec<(String, u64)>, DriverError> {
        self.call(&self.reads)?;
        self.inner.logs().await
    }

    async fn delete_record(
        &self,
        key: &str,
        expected: Revision,
        notify: bool,
    ) -> Result<(), DriverError> {
        self.call(&self.writes)?;
        self.inner.delete_record(key, expected, notify).await
    }

    async fn records(&self, prefix: &str) -> Result<Vec<(String, Record)>, DriverError> {
        self.call(&self.reads)?;
        self.inner.records(prefix).await
    }

    fn changes(&self) -> &ChangeHub {
        self.inner.changes()
    }

    async fn flush_wakeups(&self) -> Result<(), DriverError> {
        self.inner.flush_wakeups().await
    }
}

impl InstrumentedDriver {
    /// Notes record writes the store accepted, then plays the reply faults armed for them.
    async fn note_accepted(
        &self,
        writes: impl Iterator<Item = (String, Revision, Value)>,
    ) -> Result<(), DriverError> {
        self.accepted
            .lock()
            .expect("accepted writes")
            .extend(writes);
        let hold = self
            .hold_next_write_reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(delay) = hold {
            tokio::time::sleep(delay).await;
        }
        if self.lose_next_write_reply.swap(false, Ordering::SeqCst) {
            return Err(DriverError::unavailable(
                "injected fault: write applied, reply lost",
            ));
        }
        Ok(())
    }
}

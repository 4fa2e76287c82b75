//! Drivers that wrap a real one to count calls or inject faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use flowstream_core::{
    ChangeHub, Driver, DriverError, Expected, Message, NewMessage, Record, Revision,
};
use serde_json::Value;

/// Counts storage calls, to prove what the engine does (and does not do) while idle.
#[derive(Debug)]
pub struct CountingDriver {
    inner: Arc<dyn Driver>,
    reads: AtomicU64,
    writes: AtomicU64,
    largest_read: AtomicUsize,
}

impl CountingDriver {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Driver>) -> Arc<Self> {
        Arc::new(CountingDriver {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            largest_read: AtomicUsize::new(0),
        })
    }

    /// Calls that read: `read`, `head`, `get_record`.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Calls that write: `append`, `trim`, `put_record`.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The most messages one `read` call returned.
    pub fn largest_read(&self) -> usize {
        self.largest_read.load(Ordering::SeqCst)
    }

    fn read_call(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }

    fn write_call(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Driver for CountingDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        self.write_call();
        self.inner.append(messages).await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        self.read_call();
        let messages = self.inner.read(stream, after, limit).await?;
        self.largest_read
            .fetch_max(messages.len(), Ordering::SeqCst);
        Ok(messages)
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        self.read_call();
        self.inner.head(stream).await
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        self.write_call();
        self.inner.trim(stream, through).await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        self.read_call();
        self.inner.get_record(key).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        self.write_call();
        self.inner.put_record(key, value, expected, notify).await
    }

    fn changes(&self) -> &ChangeHub {
        self.inner.changes()
    }
}

/// Injects faults between the engine and a real driver.
#[derive(Debug)]
pub struct FaultyDriver {
    inner: Arc<dyn Driver>,
    partitioned: AtomicBool,
    lose_next_write_reply: AtomicBool,
}

impl FaultyDriver {
    /// Wraps `inner`, with no fault armed.
    pub fn new(inner: Arc<dyn Driver>) -> Arc<Self> {
        Arc::new(FaultyDriver {
            inner,
            partitioned: AtomicBool::new(false),
            lose_next_write_reply: AtomicBool::new(false),
        })
    }

    /// While partitioned, every call fails with a retryable error and reaches nothing.
    pub fn set_partitioned(&self, partitioned: bool) {
        self.partitioned.store(partitioned, Ordering::SeqCst);
    }

    /// Whether the partition is on.
    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::SeqCst)
    }

    /// The next `put_record` is applied, then reported as a lost connection.
    pub fn lose_next_write_reply(&self) {
        self.lose_next_write_reply.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), DriverError> {
        if self.partitioned.load(Ordering::SeqCst) {
            return Err(DriverError::unavailable(
                "injected fault: network partition",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for FaultyDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        self.check()?;
        self.inner.append(messages).await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        self.check()?;
        self.inner.read(stream, after, limit).await
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        self.check()?;
        self.inner.head(stream).await
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        self.check()?;
        self.inner.trim(stream, through).await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        self.check()?;
        self.inner.get_record(key).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        self.check()?;
        let revision = self.inner.put_record(key, value, expected, notify).await?;
        if self.lose_next_write_reply.swap(false, Ordering::SeqCst) {
            return Err(DriverError::unavailable(
                "injected fault: write applied, reply lost",
            ));
        }
        Ok(revision)
    }

    fn changes(&self) -> &ChangeHub {
        self.inner.changes()
    }
}

/// Records every accepted record write with its revision: the in-process counterpart of the
/// PostgreSQL audit trigger, for the history checker.
#[derive(Debug)]
pub struct RecordingDriver {
    inner: Arc<dyn Driver>,
    writes: std::sync::Mutex<Vec<(String, Revision, Value)>>,
}

impl RecordingDriver {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Driver>) -> Arc<Self> {
        Arc::new(RecordingDriver {
            inner,
            writes: std::sync::Mutex::default(),
        })
    }

    /// Every accepted write so far: key, revision, value.
    pub fn writes(&self) -> Vec<(String, Revision, Value)> {
        self.writes.lock().expect("writes").clone()
    }
}

#[async_trait]
impl Driver for RecordingDriver {
    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
        self.inner.append(messages).await
    }

    async fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, DriverError> {
        self.inner.read(stream, after, limit).await
    }

    async fn head(&self, stream: &str) -> Result<u64, DriverError> {
        self.inner.head(stream).await
    }

    async fn trim(&self, stream: &str, through: u64) -> Result<u64, DriverError> {
        self.inner.trim(stream, through).await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, DriverError> {
        self.inner.get_record(key).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: Value,
        expected: Expected,
        notify: bool,
    ) -> Result<Revision, DriverError> {
        let revision = self
            .inner
            .put_record(key, value.clone(), expected, notify)
            .await?;
        self.writes
            .lock()
            .expect("writes")
            .push((key.to_owned(), revision, value));
        Ok(revision)
    }

    fn changes(&self) -> &ChangeHub {
        self.inner.changes()
    }
}

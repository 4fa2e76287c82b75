//! The conformance suite against the embedded redb driver: on a file, on a file whose record
//! writes are deferred (`RecordDurability::Deferred`), and in memory.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstream_core::Driver;
use flowstream_redb::{RecordDurability, RedbDriver};
use flowstream_tests::{DriverFactory, suite};

mod redb_in_tx;

/// A redb file in a fresh temporary directory; each `open` opens the file again.
struct FileBackend {
    dir: tempfile::TempDir,
    records: RecordDurability,
}

#[async_trait]
impl DriverFactory for FileBackend {
    async fn open(&self) -> Arc<dyn Driver> {
        Arc::new(
            RedbDriver::builder(self.dir.path().join("flowstream.redb"))
                .record_durability(self.records)
                .open()
                .await
                .expect("open redb file"),
        )
    }

    fn durable(&self) -> bool {
        true
    }
}

/// An in-memory database; every `open` returns a handle on the same one.
struct MemoryBackend {
    driver: RedbDriver,
}

#[async_trait]
impl DriverFactory for MemoryBackend {
    async fn open(&self) -> Arc<dyn Driver> {
        Arc::new(self.driver.clone())
    }

    fn durable(&self) -> bool {
        false
    }
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = suite::trials("redb_file", || FileBackend {
        dir: tempfile::tempdir().expect("temp dir"),
        records: RecordDurability::Immediate,
    });
    trials.extend(suite::trials("redb_deferred", || FileBackend {
        dir: tempfile::tempdir().expect("temp dir"),
        records: RecordDurability::Deferred {
            within: Duration::from_millis(50),
        },
    }));
    trials.extend(suite::trials("redb_memory", || MemoryBackend {
        driver: RedbDriver::in_memory().expect("in-memory redb"),
    }));
    trials.extend(redb_in_tx::trials());
    libtest_mimic::run(&args, trials).exit_code()
}

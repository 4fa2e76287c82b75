//! The conformance suite against the embedded redb driver, on a file and in memory.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use flowstream_core::Driver;
use flowstream_redb::RedbDriver;
use flowstream_tests::{DriverFactory, suite};

/// A redb file in a fresh temporary directory; each `open` opens the file again.
struct FileBackend {
    dir: tempfile::TempDir,
}

#[async_trait]
impl DriverFactory for FileBackend {
    async fn open(&self) -> Arc<dyn Driver> {
        Arc::new(
            RedbDriver::open(self.dir.path().join("flowstream.redb"))
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
    });
    trials.extend(suite::trials("redb_memory", || MemoryBackend {
        driver: RedbDriver::in_memory().expect("in-memory redb"),
    }));
    libtest_mimic::run(&args, trials).exit_code()
}

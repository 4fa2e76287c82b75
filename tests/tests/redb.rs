//! The conformance suite against the embedded redb driver, on a file and in memory.

use std::sync::Arc;

use async_trait::async_trait;
use flowstream_core::Driver;
use flowstream_redb::RedbDriver;
use flowstream_tests::{Backend, conformance_tests, durability_tests};

/// A redb file in a fresh temporary directory; each `open` opens the file again.
struct FileBackend {
    dir: tempfile::TempDir,
}

fn file() -> FileBackend {
    FileBackend {
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

#[async_trait]
impl Backend for FileBackend {
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

fn memory() -> MemoryBackend {
    MemoryBackend {
        driver: RedbDriver::in_memory().expect("in-memory redb"),
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn open(&self) -> Arc<dyn Driver> {
        Arc::new(self.driver.clone())
    }

    fn durable(&self) -> bool {
        false
    }
}

mod redb_file {
    use super::*;
    conformance_tests!(file());
    durability_tests!(file());
}

mod redb_memory {
    use super::*;
    conformance_tests!(memory());
}

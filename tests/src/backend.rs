//! What the suite needs from a driver under test.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowstream_core::Driver;

/// A store the conformance suite runs against.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A driver instance on this backend's store. Called again after a simulated restart.
    async fn open(&self) -> Arc<dyn Driver>;

    /// Whether a driver from a later [`open`](Backend::open) sees what earlier instances
    /// stored (a file or a server), rather than only what the same instance holds.
    fn durable(&self) -> bool;

    /// Removes what the test stored (e.g. drops its PostgreSQL schema). Runs after a scenario
    /// that passed.
    async fn cleanup(&self) {}
}

/// Drops a driver after waiting (bounded) until nothing else holds it, as a process exit
/// would: consumers' background tasks release their handle asynchronously after a drop.
pub async fn close(driver: Arc<dyn Driver>) {
    crate::eventually(
        "every handle on the driver is released",
        Duration::from_secs(10),
        || Arc::strong_count(&driver) == 1,
    )
    .await;
    drop(driver);
}

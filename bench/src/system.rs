//! What every measured system (flowstream, a raw storage ceiling, a peer) can be asked to do.
//! A system answers `Ok(None)` for a scenario it has no equivalent of.

use std::time::Duration;

use crate::BoxError;
use crate::workload::{Latencies, Sizes};

#[async_trait::async_trait]
pub(crate) trait System: Send + Sync {
    /// The name printed in the table.
    fn name(&self) -> String;

    /// The name in the consume row, when what it reads differs from what `name` says.
    fn consume_name(&self) -> String {
        self.name()
    }

    /// One producer appending `sizes.produce` messages in batches of `batch`, each batch
    /// durable before the next is sent. Returns the elapsed time.
    async fn produce_batches(
        &self,
        _batch: usize,
        _sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        Ok(None)
    }

    /// `tasks` concurrent tasks, each sending one message at a time and waiting for it to be
    /// durable, `sizes.singles` messages in all. Returns the elapsed time.
    async fn produce_singles(
        &self,
        _tasks: usize,
        _sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        Ok(None)
    }

    /// One group reading a stream of `sizes.consume` messages (filled beforehand, untimed),
    /// acknowledging once per batch. Returns the elapsed time of the reading alone.
    async fn consume(&self, _sizes: &Sizes) -> Result<Option<Duration>, BoxError> {
        Ok(None)
    }

    /// Messages sent at a steady `rate` per second for `duration`, each by its own task, and
    /// consumed as they arrive; one send→delivery latency per message.
    async fn latency(
        &self,
        _rate: u64,
        _duration: Duration,
        _sizes: &Sizes,
    ) -> Result<Option<Latencies>, BoxError> {
        Ok(None)
    }
}

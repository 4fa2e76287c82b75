//! The stream record: how many partitions a stream has, and how keys map to them. Written
//! once, when the stream is created as partitioned; never changed, because a new count would
//! send existing keys to other partitions. A stream without one is unpartitioned (one
//! partition), as every stream was before partitions existed.

use serde::{Deserialize, Serialize};

use crate::driver::{Driver, DriverError, StorageErrorKind};
use crate::error::Error;

/// The only partitioner so far; named in the record so another can be added without
/// misreading old streams.
pub(crate) const MURMUR2: &str = "murmur2";

/// The record as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredStream {
    pub(crate) partitions: u32,
    pub(crate) partitioner: String,
}

/// What every stream record's key starts with.
pub(crate) const STREAM_KEY_PREFIX: &str = "stream/";

/// Record key of a stream's record. Names cannot contain `/`, so keys cannot collide.
pub(crate) fn stream_key(stream: &str) -> String {
    format!("{STREAM_KEY_PREFIX}{stream}")
}

/// The partition count of `stream` as stored: 1 when it has no record.
pub(crate) async fn load_partitions(driver: &dyn Driver, stream: &str) -> Result<u32, Error> {
    let key = stream_key(stream);
    let Some(record) = driver.get_record(&key).await? else {
        return Ok(1);
    };
    let stored: StoredStream = serde_json::from_value(record.value).map_err(|e| {
        DriverError::failed(format!("record {key:?} is not a valid stream record")).caused_by(e)
    })?;
    if stored.partitioner != MURMUR2 || stored.partitions == 0 {
        return Err(Error::Storage(DriverError::storage(
            StorageErrorKind::Incompatible,
            format!(
                "stream {stream:?} has {} partitions by {:?}, which this version of flowstream \
                 cannot use",
                stored.partitions, stored.partitioner
            ),
        )));
    }
    Ok(stored.partitions)
}

//! [`RecordDurability::Deferred`]: record writes committed without an `fdatasync`, made durable
//! by a later durable commit.
//!
//! redb keeps commits in order and a durable commit persists every commit before it, so the
//! durable state of the file is always a prefix of its commit history: a crash can only lose
//! the latest non-durable record writes, never an append (each append is a durable commit) and
//! never a record write older than an append.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flowstream_core::Error;
use flowstream_core::driver::DriverError;
use redb::Database;

use crate::RecordDurability;
use crate::errors::storage;

/// The deferred setting of one driver and its sync timer.
#[derive(Debug, Clone)]
pub(crate) struct Deferred {
    within: Duration,
    /// A sync is scheduled and has not started: later writes ride on it.
    scheduled: Arc<AtomicBool>,
    /// Syncs the timer ran, for tests.
    syncs: Arc<AtomicU64>,
}

impl Deferred {
    pub(crate) fn from_setting(setting: RecordDurability) -> Result<Option<Self>, Error> {
        match setting {
            RecordDurability::Immediate => Ok(None),
            RecordDurability::Deferred { within } if within.is_zero() => Err(Error::InvalidConfig(
                "RecordDurability::Deferred needs a `within` above zero".into(),
            )),
            RecordDurability::Deferred { within } => Ok(Some(Deferred {
                within,
                scheduled: Arc::new(AtomicBool::new(false)),
                syncs: Arc::new(AtomicU64::new(0)),
            })),
        }
    }

    /// What a record write needs to schedule its sync from the blocking thread it commits on.
    pub(crate) fn for_this_write(&self, db: &Arc<Database>) -> Result<PendingSync, DriverError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            DriverError::failed("a redb record write needs a tokio runtime for its sync timer")
        })?;
        Ok(PendingSync {
            deferred: self.clone(),
            db: Arc::downgrade(db),
            runtime,
        })
    }

    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Acquire)
    }
}

/// Schedules the sync that makes a non-durable record write durable.
#[derive(Debug)]
pub(crate) struct PendingSync {
    deferred: Deferred,
    /// Weak, so that a dropped driver closes its file at once (closing makes every commit
    /// durable) rather than when the timer fires.
    db: Weak<Database>,
    runtime: tokio::runtime::Handle,
}

impl PendingSync {
    /// Called right after the non-durable commit: makes sure a sync follows within the bound.
    pub(crate) fn committed(self) {
        let PendingSync {
            deferred,
            db,
            runtime,
        } = self;
        if deferred.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(async move {
            tokio::time::sleep(deferred.within).await;
            // Cleared before the sync starts: a write committed from here on is either covered
            // by this sync or schedules the next one.
            deferred.scheduled.store(false, Ordering::Release);
            let Some(db) = db.upgrade() else {
                return;
            };
            match tokio::task::spawn_blocking(move || sync(&db)).await {
                Ok(Ok(())) => {
                    deferred.syncs.fetch_add(1, Ordering::AcqRel);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "redb: making deferred record writes durable failed; the next write retries");
                }
                Err(error) => {
                    tracing::warn!(%error, "redb: the deferred sync task failed; the next write retries");
                }
            }
        });
    }
}

/// An empty durable commit: makes every earlier commit durable.
pub(crate) fn sync(db: &Database) -> Result<(), DriverError> {
    let txn = db.begin_write().map_err(storage)?;
    txn.commit().map_err(storage)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use flowstream_core::driver::{Driver, Expected};

    use crate::{RecordDurability, RedbDriver};

    #[tokio::test]
    async fn a_deferred_record_write_is_synced_within_the_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let driver = RedbDriver::builder(dir.path().join("deferred.redb"))
            .record_durability(RecordDurability::Deferred {
                within: std::time::Duration::from_millis(20),
            })
            .open()
            .await
            .expect("open");
        let deferred = driver.deferred.clone().expect("deferred");
        for i in 0..3 {
            let expected = if i == 0 {
                Expected::Absent
            } else {
                Expected::Revision(flowstream_core::driver::Revision(i))
            };
            driver
                .put_record("k", serde_json::json!(i), expected, false)
                .await
                .expect("write");
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while deferred.syncs() == 0 {
            assert!(Instant::now() < deadline, "no sync within 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_zero_bound_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let result = RedbDriver::builder(dir.path().join("zero.redb"))
            .record_durability(RecordDurability::Deferred {
                within: std::time::Duration::ZERO,
            })
            .open()
            .await;
        assert!(matches!(
            result,
            Err(flowstream_core::Error::InvalidConfig(_))
        ));
    }
}

//! [`Driver::apply`](flowstream_core::Driver::apply): appends and record writes in one
//! transaction.
//!
//! The record writes run first, in key order, then the append. Every write path of the driver
//! takes its row locks in that order (records by key, then stream heads by name; a plain
//! append or record write takes one kind only), so two batches cannot deadlock each other or
//! the plain paths. A failed compare-and-swap rolls the transaction back before the append is
//! sent. Notifications follow the plain paths: a record's `pg_notify` is part of its
//! statement (sent by PostgreSQL at commit, never for a rollback), and the appended streams go
//! to the notifier once the transaction is over.

use flowstream_core::driver::{Applied, Batch, Driver, DriverError, Revision};
use sqlx::Row;

use crate::offsets::{PreparedAppend, WakeWhenDone};
use crate::{PgDriver, to_u64};

/// How the transaction ended, short of a storage error.
enum Outcome {
    Committed {
        revisions: Vec<i64>,
        heads: Vec<(String, i64)>,
    },
    /// The record at this index of the batch failed its precondition; nothing was stored.
    Conflict(usize),
}

impl PgDriver {
    pub(crate) async fn apply_batch(&self, batch: Batch) -> Result<Applied, DriverError> {
        batch.check()?;
        let Batch { messages, records } = batch;
        let append = if messages.is_empty() {
            None
        } else {
            Some(PreparedAppend::new(messages)?)
        };
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|&a, &b| records[a].key.cmp(&records[b].key));
        let names: &[String] = append.as_ref().map_or(&[], |a| &a.names);
        // Wakes the appended streams' waiters however the transaction ends, as a plain append
        // does (a spurious wake-up after a failure costs one read).
        let _wake = WakeWhenDone {
            driver: self,
            streams: names,
        };
        let work = async {
            let mut tx = self.pool().begin().await?;
            let mut revisions = vec![0; records.len()];
            for &i in &order {
                let record = &records[i];
                let query = self.record_query(
                    &record.key,
                    record.value.clone(),
                    record.expected,
                    record.notify,
                );
                let Some(row) = query.fetch_optional(&mut *tx).await? else {
                    tx.rollback().await?;
                    return Ok(Outcome::Conflict(i));
                };
                revisions[i] = row.try_get("revision")?;
            }
            let heads = match &append {
                Some(append) => {
                    append
                        .query(&self.inner.sql.append)
                        .fetch_all(&mut *tx)
                        .await?
                }
                None => Vec::new(),
            };
            tx.commit().await?;
            Ok(Outcome::Committed { revisions, heads })
        };
        let outcome = self.run(|| describe(&records, names), work).await?;
        match outcome {
            Outcome::Committed { revisions, heads } => {
                let revisions = revisions
                    .into_iter()
                    .map(|r| to_u64(r, "revision").map(Revision))
                    .collect::<Result<_, _>>()?;
                let offsets = match &append {
                    Some(append) => append.offsets(heads)?,
                    None => Vec::new(),
                };
                Ok(Applied { offsets, revisions })
            }
            Outcome::Conflict(i) => {
                let key = &records[i].key;
                // Read after the rollback, in a statement of its own: at least as new as the
                // write that made the precondition fail.
                let current = self.get_record(key).await?;
                Err(DriverError::Conflict {
                    key: key.clone(),
                    current,
                })
            }
        }
    }
}

/// What a batch was doing, for its errors.
fn describe(records: &[flowstream_core::driver::RecordWrite], streams: &[String]) -> String {
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    format!(
        "applying a batch (records: {}; appends to: {})",
        keys.join(", "),
        streams.join(", ")
    )
}

//! Listing and deleting: the driver calls behind the admin API (every log with its head,
//! records by prefix, a log deleted whole, a record deleted by compare-and-swap).

use flowstream_core::driver::{Driver, DriverError, Record, Revision, check_stream_name};
use sqlx::Row;

use crate::errors::storage_error;
use crate::listener::{self, Change};
use crate::offsets::WakeWhenDone;
use crate::{PgDriver, decode_record, to_i64, to_u64};

impl PgDriver {
    pub(crate) async fn list_logs(&self) -> Result<Vec<(String, u64)>, DriverError> {
        let rows = self
            .run(
                || "listing streams".to_owned(),
                Self::query(&self.inner.sql.list_logs).fetch_all(&self.inner.pool),
            )
            .await?;
        let mut logs = rows
            .iter()
            .map(|row| {
                let name: String = row
                    .try_get("name")
                    .map_err(|e| storage_error("decoding a stream name", e))?;
                let head: i64 = row
                    .try_get("head")
                    .map_err(|e| storage_error("decoding a stream head", e))?;
                Ok((name, to_u64(head, "head")?))
            })
            .collect::<Result<Vec<_>, DriverError>>()?;
        // By bytes, whatever the database's collation.
        logs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(logs)
    }

    pub(crate) async fn list_records(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Record)>, DriverError> {
        let query = Self::query(&self.inner.sql.list_records).bind(prefix);
        let rows = self
            .run(
                || format!("listing records under {prefix:?}"),
                query.fetch_all(&self.inner.pool),
            )
            .await?;
        let mut records = rows
            .iter()
            .map(|row| {
                let key: String = row
                    .try_get("key")
                    .map_err(|e| storage_error("decoding a record key", e))?;
                let record = decode_record(&key, row)?;
                Ok((key, record))
            })
            .collect::<Result<Vec<_>, DriverError>>()?;
        records.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(records)
    }

    pub(crate) async fn delete_record_if(
        &self,
        key: &str,
        expected: Revision,
        notify: bool,
    ) -> Result<(), DriverError> {
        let sql = &self.inner.sql;
        let statement = if notify {
            &sql.delete_record_notify
        } else {
            &sql.delete_record
        };
        let mut query = Self::query(statement)
            .bind(key.to_owned())
            .bind(to_i64(expected.0));
        if notify {
            query = query
                .bind(self.inner.channel.clone())
                .bind(listener::payload(std::iter::once(Change::Record(key))));
        }
        let row = self
            .run(
                || format!("deleting record {key}"),
                query.fetch_optional(&self.inner.pool),
            )
            .await?;
        if row.is_some() {
            return Ok(());
        }
        // As for a write: read the winner in a statement of its own.
        let current = Driver::get_record(self, key).await?;
        Err(DriverError::Conflict {
            key: key.to_owned(),
            current,
        })
    }

    /// Deletes the head row first, in its own statement: that waits for appends holding it,
    /// then keeps later ones waiting until this transaction ends. The messages are deleted by
    /// a second statement, whose snapshot is taken after the appends that went first
    /// committed, so none of their messages survives the delete (one statement, with both in
    /// one snapshot, would miss them and leave offsets the next log would reuse).
    pub(crate) async fn delete_whole_log(&self, log: &str) -> Result<bool, DriverError> {
        check_stream_name(log)?;
        let names = [log.to_owned()];
        let _wake = WakeWhenDone {
            driver: self,
            streams: &names,
        };
        let work = async {
            let mut tx = self.pool().begin().await?;
            let head = Self::query(&self.inner.sql.delete_head)
                .bind(log)
                .fetch_optional(&mut *tx)
                .await?;
            Self::query(&self.inner.sql.delete_messages)
                .bind(log)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(head.is_some())
        };
        self.run(|| format!("deleting stream {log}"), work).await
    }
}

//! The application's own write transactions on the flowstream file: its tables, written in
//! the same redb transaction as appends ([`AppTx::send`]) and a consumer's commit
//! ([`AppTx::commit`]), so that the effects of handling messages, the messages they produce
//! and the commit past them are stored together or not at all.

use flowstream_core::driver::Topic;
use flowstream_core::{Error, PreparedSend, TxCommit};
use redb::{
    MultimapTableDefinition, MultimapTableHandle, ReadableTable, TableDefinition, TableHandle,
    WriteTransaction,
};

use crate::errors::storage;
use crate::schema::{LOG_PREFIX, META, RECORDS, STREAMS};
use crate::{RedbDriver, append_in, live_record, refuse_unportable};

/// A write transaction of the application's on the flowstream file, handed to the closure of
/// [`RedbDriver::write`]: it opens the application's tables, never flowstream's, and writes
/// consumers' commits.
pub struct AppTx<'a> {
    txn: &'a WriteTransaction,
    /// The streams appended to, notified once the transaction commits.
    touched: Vec<String>,
}

impl std::fmt::Debug for AppTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTx").finish_non_exhaustive()
    }
}

/// Refuses the names of flowstream's own tables.
fn check_table(name: &str) -> Result<(), Error> {
    let ours = [META.name(), STREAMS.name(), RECORDS.name()];
    if ours.contains(&name) || name.starts_with(LOG_PREFIX) {
        return Err(Error::Refused {
            reason: format!(
                "table {name:?} is flowstream's own; the application's tables need other names \
                 (flowstream uses {ours:?} and names beginning with {LOG_PREFIX:?})"
            ),
        });
    }
    Ok(())
}

impl<'a> AppTx<'a> {
    /// Opens (or creates) one of the application's tables. The names of flowstream's tables
    /// (`flowstream`, `streams`, `records`, and those beginning with `flowstream/log/`) are
    /// refused ([`Error::Refused`]).
    pub fn open_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<'_, K, V>,
    ) -> Result<redb::Table<'a, K, V>, Error> {
        check_table(definition.name())?;
        Ok(self.txn.open_table(definition).map_err(storage)?)
    }

    /// Opens (or creates) one of the application's multimap tables; names as
    /// [`open_table`](AppTx::open_table).
    pub fn open_multimap_table<K: redb::Key + 'static, V: redb::Key + 'static>(
        &self,
        definition: MultimapTableDefinition<'_, K, V>,
    ) -> Result<redb::MultimapTable<'a, K, V>, Error> {
        check_table(definition.name())?;
        Ok(self.txn.open_multimap_table(definition).map_err(storage)?)
    }

    /// Appends messages ([`Producer::prepare`](flowstream_core::Producer::prepare)) in this
    /// transaction: they are stored, with their offsets, if and only if it commits, and waiting
    /// consumers are woken then. Returns their offsets (final: redb runs one write transaction
    /// at a time, so no other append can come between). [`Error::Refused`] for a batch no
    /// store accepts (a NUL in a header, a stream whose offsets would run out): nothing of it
    /// is written, so the transaction may still commit the rest of its work.
    pub fn send(&mut self, messages: PreparedSend) -> Result<Vec<u64>, Error> {
        let messages = messages.into_messages();
        refuse_unportable(&messages)?;
        let (offsets, touched) = append_in(self.txn, messages)?;
        self.touched.extend(touched);
        Ok(offsets)
    }

    /// Writes a consumer's commit
    /// ([`Consumer::prepare_commit`](flowstream_core::Consumer::prepare_commit)) in this
    /// transaction: it counts once the transaction commits, with everything else written in
    /// it. [`Error::Fenced`] if another consumer owns the group (partition) now, or the
    /// message was delivered under a claim that has ended; [`Error::AlreadyCommitted`] if
    /// the group committed past it already: return the error from the closure, and nothing
    /// of the transaction is stored. redb runs one write
    /// transaction at a time, so no takeover can come between this check and the commit.
    pub fn commit(&mut self, commit: &TxCommit) -> Result<(), Error> {
        let key = commit.record_key();
        let mut records = self.txn.open_table(RECORDS).map_err(storage)?;
        let (revision, stored) = match records.get(key).map_err(storage)? {
            Some(entry) => {
                let (revision, json) = entry.value();
                (revision, live_record(key, revision, json)?)
            }
            None => (0, None),
        };
        let value = commit.apply(stored.map(|record| record.value))?;
        records
            .insert(key, (revision + 1, value.to_string().as_str()))
            .map_err(storage)?;
        Ok(())
    }
}

impl RedbDriver {
    /// Runs `work` in one durable write transaction on the flowstream file, on a blocking
    /// thread: the application's tables ([`AppTx::open_table`]), appends ([`AppTx::send`]) and
    /// consumers' commits ([`AppTx::commit`]) are stored together when `work` returns `Ok`,
    /// and nothing is when it returns `Err` (the error is returned as it is). Reading one
    /// stream, writing derived messages to another and committing the first in one `write` is
    /// exactly once. Failures of the transaction itself
    /// come back as `E::from(Error)`.
    ///
    /// redb runs one write transaction at a time: while `work` runs, every other writer of the
    /// file waits (appends, commits, heartbeats, other `write`s). Keep it short, and do no
    /// slow I/O in it; unlike PostgreSQL's `send_in`, a long transaction here holds everyone
    /// back.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use flowstream_core::{Consumer, Driver, NewMessage, Producer};
    /// # use flowstream_redb::RedbDriver;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// use flowstream_redb::redb::{ReadableTable, TableDefinition};
    ///
    /// const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("totals");
    ///
    /// let redb = RedbDriver::in_memory()?;
    /// let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    /// Producer::new(driver.clone()).send(NewMessage::new("payments", "5")).await?;
    /// let mut consumer = Consumer::builder(driver, "payments", "totals").build().await?;
    /// while let Some(msg) = consumer.next().await? {
    ///     let amount: u64 = msg.body_str().unwrap_or("0").parse()?;
    ///     let commit = consumer.prepare_commit(&msg)?;
    ///     redb.write(move |tx| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///         let mut totals = tx.open_table(TOTALS)?;
    ///         let total = totals.get("all")?.map_or(0, |t| t.value());
    ///         totals.insert("all", total + amount)?;
    ///         drop(totals);
    ///         tx.commit(&commit)?; // Err(Fenced): the total is not stored either
    ///         Ok(())
    ///     })
    ///     .await?;
    /// }
    /// # consumer.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// The transaction runs on a blocking thread and finishes (commits or not) even if this
    /// future is dropped; only its result is lost.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut AppTx<'_>) -> Result<T, E> + Send + 'static,
    {
        let hub = self.hub.clone();
        let outcome = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(storage)?;
                let mut tx = AppTx {
                    txn: &txn,
                    touched: Vec::new(),
                };
                let done = work(&mut tx);
                let touched = tx.touched;
                if done.is_ok() {
                    txn.commit().map_err(storage)?;
                    for stream in touched {
                        hub.notify(&Topic::Stream(stream));
                    }
                }
                // An error drops the transaction: redb aborts it, nothing is stored.
                Ok(done)
            })
            .await;
        match outcome {
            Ok(done) => done,
            Err(failed) => Err(E::from(Error::from(failed))),
        }
    }

    /// Runs `work` in a read transaction on the flowstream file, on a blocking thread, to
    /// read the application's tables (a snapshot: what was committed when it began).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn read_tables<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, E> + Send + 'static,
    {
        let outcome = self
            .blocking(move |db| {
                let txn = redb::ReadableDatabase::begin_read(db).map_err(storage)?;
                Ok(work(&txn))
            })
            .await;
        match outcome {
            Ok(done) => done,
            Err(failed) => Err(E::from(Error::from(failed))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowstream_core::{Driver, NewMessage, Producer};

    use crate::RedbDriver;
    use crate::schema::STREAMS;

    /// A batch refused because one of its streams is full writes nothing for the others
    /// either, even when the application ignores the error and commits its transaction.
    #[tokio::test]
    async fn a_refused_send_leaves_nothing_in_a_transaction_committed_anyway() {
        let redb = RedbDriver::in_memory().expect("store");
        let driver: Arc<dyn Driver> = Arc::new(redb.clone());
        driver
            .append(vec![NewMessage::new("full", "1")])
            .await
            .expect("creates the stream");
        redb.write(|tx| {
            tx.txn
                .open_table(STREAMS)?
                .insert("full", (1, u64::MAX - 1))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await
        .expect("the stream is made nearly full");
        let batch =
            ["a-first", "full", "full", "z-last"].map(|stream| NewMessage::new(stream, "m"));
        let prepared = Producer::new(driver.clone())
            .prepare(batch)
            .await
            .expect("prepared");
        let refused = redb
            .write(move |tx| {
                let refused = tx.send(prepared);
                Ok::<_, flowstream_core::Error>(refused)
            })
            .await
            .expect("the transaction commits");
        assert!(
            matches!(refused, Err(flowstream_core::Error::Refused { .. })),
            "{refused:?}"
        );
        for stream in ["a-first", "z-last"] {
            assert_eq!(driver.head(stream).await.expect("head"), 0, "{stream}");
        }
        assert_eq!(driver.head("full").await.expect("head"), u64::MAX - 1);
    }
}

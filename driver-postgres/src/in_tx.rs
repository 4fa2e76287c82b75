//! Writes inside the application's own transaction: a consumer's commit
//! ([`PgDriver::commit_in`]), next to the effects of handling the messages.

use flowstream_core::driver::Driver;
use flowstream_core::{Error, TxCommit};
use sqlx::{Postgres, Transaction};

use crate::errors::storage_error;
use crate::{PgDriver, decode_record};

/// SQLSTATEs of a transaction the server could not serialize (serialization failure,
/// deadlock): the application retries the whole transaction, unless the group was lost.
fn serialization_failure(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

impl PgDriver {
    /// Writes a consumer's commit ([`Consumer::prepare_commit`](flowstream_core::Consumer::prepare_commit))
    /// in the application's transaction `tx`, so that the commit and the application's own
    /// writes in `tx` are stored together or not at all. The transaction must be on this
    /// driver's database; the commit counts once `tx` commits.
    ///
    /// ```no_run
    /// # async fn demo(pg: flowstream_postgres::PgDriver, mut consumer: flowstream_core::Consumer)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use flowstream_core::Error;
    /// use flowstream_postgres::sqlx;
    ///
    /// while let Some(msg) = consumer.next().await? {
    ///     let mut tx = pg.pool().begin().await?;
    ///     sqlx::query("INSERT INTO seen (id) VALUES ($1) ON CONFLICT DO NOTHING")
    ///         .bind(msg.offset() as i64)
    ///         .execute(&mut *tx)
    ///         .await?;
    ///     let commit = consumer.prepare_commit(&msg)?;
    ///     match pg.commit_in(&mut tx, &commit).await {
    ///         Ok(()) => tx.commit().await?,        // the row and the commit, together
    ///         Err(Error::Fenced { .. }) => break,  // dropping `tx` rolls the row back too
    ///         Err(other) => return Err(other.into()),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// It locks the group record (`SELECT … FOR UPDATE`) and writes it only while it names
    /// this consumer, active, in the generation the messages were delivered in; the lock holds
    /// until `tx` ends, so a takeover cannot come between the check and the commit, and
    /// waits for `tx` (as do this consumer's heartbeats): call it last, just before committing.
    /// So that a client that stops while holding the lock (a frozen process, a hung task)
    /// cannot keep the group from being taken over, it also sets
    /// `idle_in_transaction_session_timeout` to the consumer's `takeover_after` for the rest
    /// of `tx` (`SET LOCAL`): the server ends a session that sits that long in `tx` without a
    /// statement, which rolls `tx` back.
    ///
    /// Errors:
    /// - [`Error::Fenced`]: another consumer owns the group (partition) now, or the message
    ///   was delivered under a claim that has ended; roll `tx` back.
    /// - [`Error::AlreadyCommitted`]: the group has committed past the message already (its
    ///   effects were stored by an earlier transaction); roll `tx` back.
    /// - A retryable storage error when the server could not serialize `tx` (SQLSTATE 40001
    ///   or 40P01 under `REPEATABLE READ` or `SERIALIZABLE`, when the record changed after
    ///   `tx` began, by a heartbeat say) and this consumer still owns the claim: retry the
    ///   whole transaction. If it lost the claim, the error is `Fenced` instead.
    /// - Any other storage error: `tx` is in an unknown state; roll it back.
    ///
    /// No timeout is applied here: `tx` is the application's.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, `tx` may or may not hold the write; rolling it back is
    /// always safe.
    pub async fn commit_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        commit: &TxCommit,
    ) -> Result<(), Error> {
        let key = commit.record_key();
        let idle_limit = format!("{}ms", commit.takeover_after().as_millis().max(1));
        let locked = Self::query(&self.inner.sql.lock_record)
            .bind(key)
            .bind(idle_limit)
            .fetch_optional(&mut **tx)
            .await;
        let row = match locked {
            Ok(row) => row,
            Err(error) => return Err(self.failed_in_tx(commit, error).await),
        };
        let current = row
            .map(|row| decode_record(key, &row))
            .transpose()?
            .map(|record| record.value);
        let value = commit.apply(current)?;
        let written = Self::query(&self.inner.sql.overwrite_record)
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(error) => Err(self.failed_in_tx(commit, error).await),
        }
    }

    /// The error for a statement of `commit` that failed in the application's transaction: a
    /// serialization failure is `Fenced` if the record, read outside the transaction, no
    /// longer names the commit's claim.
    async fn failed_in_tx(&self, commit: &TxCommit, error: sqlx::Error) -> Error {
        let serialization = serialization_failure(&error);
        let failed = storage_error(
            &format!(
                "committing offset {} in the application's transaction",
                commit.offset()
            ),
            error,
        );
        if !serialization {
            return Error::Storage(failed);
        }
        match self.get_record(commit.record_key()).await {
            Ok(current) if commit.still_owned(current.as_ref().map(|r| &r.value)) => {
                Error::Storage(failed)
            }
            Ok(current) => match commit.apply(current.map(|record| record.value)) {
                Err(fenced @ (Error::Fenced { .. } | Error::AlreadyCommitted { .. })) => fenced,
                _ => Error::Storage(failed),
            },
            // Ownership unknown: the transaction failed anyway, and may be retried.
            Err(_) => Error::Storage(failed),
        }
    }
}

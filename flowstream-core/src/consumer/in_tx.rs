//! Commits inside the application's own transaction: [`crate::Consumer::prepare_commit`] makes
//! a [`TxCommit`], and a driver writes it in a transaction of the application's
//! (`PgDriver::commit_in` on PostgreSQL, `AppTx::commit` on redb), next to the handler's own
//! writes, so that the commit and the effects of handling the messages are stored together or
//! not at all.
//!
//! The write is fenced by ownership, not by revision: the driver locks the group record in
//! the application's transaction, and [`TxCommit::apply`] accepts it only while it still
//! names this consumer, active, in the generation the messages were delivered in. The
//! generation changes only when ownership does, so heartbeats and this consumer's own commits
//! since the delivery do not fence it; a takeover does. The lock holds until the application's
//! transaction ends, so no takeover can slip in between the check and the commit: one that
//! comes later waits for the lock and then finds the new revision.

use std::time::Duration;

use serde_json::Value;

use super::state::StoredGroup;
use crate::driver::DriverError;
use crate::error::Error;

/// A commit to write inside the application's own transaction, as the owner of the claim the
/// messages were delivered in. Made by [`Consumer::prepare_commit`](crate::Consumer::prepare_commit);
/// written by a driver's transactional call (see the driver's docs). Writing it a second
/// time, or after a later commit, fails with [`Error::AlreadyCommitted`]: the transaction
/// carrying it must not store its effects again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxCommit {
    key: String,
    group: String,
    consumer: String,
    generation: u64,
    offset: u64,
    takeover_after: Duration,
}

impl TxCommit {
    pub(super) fn new(
        key: String,
        group: String,
        consumer: String,
        (generation, offset): (u64, u64),
        takeover_after: Duration,
    ) -> Self {
        TxCommit {
            key,
            group,
            consumer,
            generation,
            offset,
            takeover_after,
        }
    }

    /// The key of the group record the commit writes (see [`Driver`](crate::Driver) on
    /// records).
    pub fn record_key(&self) -> &str {
        &self.key
    }

    /// The offset it commits.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The generation of the claim it commits under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The consumer's `takeover_after`: the longest a driver should let a transaction that
    /// holds the group record sit idle (a frozen process would otherwise keep every takeover
    /// waiting).
    pub fn takeover_after(&self) -> Duration {
        self.takeover_after
    }

    /// The group record to write, given the record as the transaction holds it (locked
    /// against other writers until the transaction ends). The caller must roll its
    /// transaction back on an error: [`Error::Fenced`] when the record no longer names this
    /// consumer, active, in the commit's generation; [`Error::AlreadyCommitted`] when the
    /// group has committed this far already (the messages were handled, and their effects
    /// stored, by an earlier transaction).
    pub fn apply(&self, current: Option<Value>) -> Result<Value, Error> {
        let fenced = || Error::Fenced {
            group: self.group.clone(),
            generation: self.generation,
        };
        let Some(current) = current else {
            return Err(fenced());
        };
        let mut state: StoredGroup = serde_json::from_value(current).map_err(|e| {
            DriverError::failed(format!(
                "group record {:?} is not a valid group state",
                self.key
            ))
            .caused_by(e)
        })?;
        if state.owner != self.consumer || state.generation != self.generation || !state.active {
            return Err(fenced());
        }
        if self.offset <= state.committed {
            // Handled and committed already (by another claim, or by this transaction's
            // earlier attempt whose commit went through): the caller's effects must not be
            // stored a second time.
            return Err(Error::AlreadyCommitted {
                offset: self.offset,
                committed: state.committed,
            });
        }
        state.advance_to(self.offset);
        state.written_micros = Some(super::retry::micros_since_epoch(
            std::time::SystemTime::now(),
        ));
        let value = serde_json::to_value(&state)
            .map_err(|e| DriverError::failed("encoding a group record".to_owned()).caused_by(e))?;
        Ok(value)
    }

    /// Whether the record (read after the transaction failed) still names this consumer as the
    /// owner of the commit's claim: then a failed transaction (a serialization failure, say)
    /// was not a fencing, and may be retried.
    pub fn still_owned(&self, current: Option<&Value>) -> bool {
        current
            .and_then(|value| serde_json::from_value::<StoredGroup>(value.clone()).ok())
            .is_some_and(|state| {
                state.owner == self.consumer && state.generation == self.generation && state.active
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owner: &str, generation: u64, active: bool, committed: u64) -> Value {
        serde_json::json!({
            "owner": owner, "generation": generation, "active": active, "committed": committed,
            "probe": committed + 1,
        })
    }

    fn commit(offset: u64) -> TxCommit {
        TxCommit::new(
            "group/s/g".into(),
            "g".into(),
            "me".into(),
            (3, offset),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn writes_only_as_the_owner_of_its_generation() {
        let written = commit(7)
            .apply(Some(record("me", 3, true, 4)))
            .expect("owner");
        assert_eq!(written["committed"], 7);
        assert_eq!(written["generation"], 3);
        assert!(
            written.get("probe").is_none(),
            "the probe it passed is over"
        );
        assert!(matches!(
            commit(4).apply(Some(record("me", 3, true, 4))),
            Err(Error::AlreadyCommitted {
                offset: 4,
                committed: 4
            })
        ));
        for fenced in [
            record("other", 4, true, 4),
            record("me", 4, true, 4),
            record("me", 3, false, 4),
        ] {
            assert!(matches!(
                commit(7).apply(Some(fenced)),
                Err(Error::Fenced { generation: 3, .. })
            ));
        }
        assert!(matches!(commit(7).apply(None), Err(Error::Fenced { .. })));
        assert!(commit(7).still_owned(Some(&record("me", 3, true, 9))));
        assert!(!commit(7).still_owned(Some(&record("me", 4, true, 9))));
        assert!(!commit(7).still_owned(None));
    }
}

//! [`Batch`]: appends and record writes that a driver applies in one transaction
//! ([`Driver::apply`](super::Driver::apply)).

use serde_json::Value;

use super::{DriverError, Expected, NewMessage, Revision};

/// A record write inside a [`Batch`]: a compare-and-swap, as
/// [`put_record`](super::Driver::put_record) makes on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    /// The record key.
    pub key: String,
    /// The value to store.
    pub value: Value,
    /// The precondition; the whole batch fails if it does not hold.
    pub expected: Expected,
    /// Whether subscribers of the record's topic are woken after the commit.
    pub notify: bool,
}

/// Appends and record writes applied all together or not at all: a dead letter and the
/// commit that moves past it, say, or messages and the outbox record that produced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Messages to append, to any logs, with [`append`](super::Driver::append)'s rules.
    pub messages: Vec<NewMessage>,
    /// Record writes; each key at most once.
    pub records: Vec<RecordWrite>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a message to append.
    #[must_use]
    pub fn append(mut self, message: NewMessage) -> Self {
        self.messages.push(message);
        self
    }

    /// Adds a record write.
    #[must_use]
    pub fn put_record(
        mut self,
        key: impl Into<String>,
        value: Value,
        expected: Expected,
        notify: bool,
    ) -> Self {
        self.records.push(RecordWrite {
            key: key.into(),
            value,
            expected,
            notify,
        });
        self
    }

    /// Refuses a batch no driver can apply: the same record written twice (which write would
    /// win is not defined). Drivers call it before they touch storage.
    pub fn check(&self) -> Result<(), DriverError> {
        let mut keys: Vec<&str> = self.records.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(DriverError::InvalidInput(format!(
                "record {:?} is written twice in one batch",
                pair[0]
            )));
        }
        Ok(())
    }
}

/// What an applied [`Batch`] stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// One offset per message of the batch, in its order.
    pub offsets: Vec<u64>,
    /// One new revision per record write of the batch, in its order.
    pub revisions: Vec<Revision>,
}

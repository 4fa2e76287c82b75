//! Turning a place in a log (the earliest message, the head, an offset, a time) into an offset,
//! for a new group's start and for a reset.
//!
//! Time is each message's `produced_at`, stamped by the storage when it commits the append
//! (PostgreSQL: the server's clock at the start of the append's transaction; redb: the
//! writing process's clock). The search is a binary search over offsets, so it reads about
//! `log2(messages)` single messages whatever the stream's length. It is exact when
//! `produced_at` never decreases along the log, which holds for one producer sending one call
//! after another and for redb's single writer (as long as the clock is not set back). With
//! concurrent producers on PostgreSQL, an append that started earlier can commit later, so
//! times along the log can step back by as much as appends overlap; the search then returns an
//! offset where the times cross the one asked for, and messages within that overlap on either
//! side may fall either way.

use std::time::SystemTime;

use crate::driver::{Driver, DriverError};

/// A place in a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Before the first message still stored (at the head when none is).
    Earliest,
    /// After the last message.
    Latest,
    /// Before this offset: it is the next message delivered (if still stored; else the first
    /// one stored after it). Past the head: at the head.
    Offset(u64),
    /// Before the first message produced at or after this time; at the head if none was.
    Time(SystemTime),
}

/// The committed offset that puts a group at `place` in `log`: the offset before the next
/// message it will be handed.
pub(crate) async fn committed_for(
    driver: &dyn Driver,
    log: &str,
    place: Place,
) -> Result<u64, DriverError> {
    match place {
        // Just before the first message still stored (so that a trim after this is seen as
        // one); at the head if none is.
        Place::Earliest => match message_from(driver, log, 1).await? {
            Some((first, _)) => Ok(first - 1),
            None => driver.head(log).await,
        },
        Place::Latest => driver.head(log).await,
        Place::Offset(offset) => {
            let head = driver.head(log).await?;
            Ok(offset.saturating_sub(1).min(head))
        }
        Place::Time(time) => Ok(first_at_or_after(driver, log, time)
            .await?
            .map_or(driver.head(log).await?, |offset| offset - 1)),
    }
}

/// The first offset whose message was produced at or after `time` (see the module's notes on
/// what that means with concurrent producers), or `None` if every stored message is older.
pub(crate) async fn first_at_or_after(
    driver: &dyn Driver,
    log: &str,
    time: SystemTime,
) -> Result<Option<u64>, DriverError> {
    let Some(first) = message_from(driver, log, 1).await? else {
        return Ok(None);
    };
    // Read after the first message, so that it is at least that message's offset even if
    // the log is trimmed and appended to in between.
    let head = driver.head(log).await?.max(first.0);
    if first.1 >= time {
        return Ok(Some(first.0));
    }
    // Invariant: the message at `low` is older than `time`; the answer is in (low, high].
    let (mut low, mut high) = (first.0, head.saturating_add(1));
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match message_from(driver, log, middle).await? {
            // A message at or after `middle` (trimmed ones are skipped).
            Some((offset, produced_at)) if offset < high => {
                if produced_at >= time {
                    high = offset;
                } else {
                    low = offset;
                }
            }
            // Nothing stored in [middle, high): trimmed while we searched. Trims take a prefix,
            // so everything below `high` is gone too.
            _ => low = middle,
        }
    }
    Ok((high <= head).then_some(high))
}

/// The first stored message at or after `offset`: its offset and time.
async fn message_from(
    driver: &dyn Driver,
    log: &str,
    offset: u64,
) -> Result<Option<(u64, SystemTime)>, DriverError> {
    let read = driver.read(log, offset.saturating_sub(1), 1).await?;
    Ok(read.first().map(|m| (m.offset(), m.produced_at())))
}

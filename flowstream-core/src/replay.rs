//! Replaying dead letters: [`Admin::replay_dead_letters`](crate::Admin::replay_dead_letters).

use serde_json::json;

use crate::consumer::dead_letter_headers as h;
use crate::driver::{Batch, Driver, DriverError, Expected};
use crate::error::{Error, NameKind};
use crate::message::{Message, NewMessage};
use crate::names::{dead_letter_stream, log_name, validate_name};
use crate::partition::load_partitions;

/// Dead letters moved per transaction.
const CHUNK: usize = 500;

/// The record saying up to which offset of a group's dead-letter stream was replayed.
fn replay_key(stream: &str, group: &str) -> String {
    format!("replay/{stream}/{group}")
}

pub(crate) async fn replay(driver: &dyn Driver, stream: &str, group: &str) -> Result<u64, Error> {
    validate_name(NameKind::Stream, stream)?;
    validate_name(NameKind::Group, group)?;
    let dlq = dead_letter_stream(stream, group);
    let key = replay_key(stream, group);
    let partitions = load_partitions(driver, stream).await?;
    let mut moved = 0;
    loop {
        let (through, expected) = match driver.get_record(&key).await? {
            None => (0, Expected::Absent),
            Some(record) => {
                let through = record.value.get("through").and_then(|t| t.as_u64());
                let through = through.ok_or_else(|| {
                    DriverError::failed(format!("record {key:?} is not a replay position"))
                })?;
                (through, Expected::Revision(record.revision))
            }
        };
        let letters = driver.read(&dlq, through, CHUNK).await?;
        let Some(last) = letters.last().map(Message::offset) else {
            // Nothing new; what an earlier replay moved and could not trim goes now.
            if through > 0
                && let Err(error) = driver.trim(&dlq, through).await
            {
                tracing::warn!(stream, group, error = %crate::error::Chain(&error), "replayed dead letters not trimmed");
            }
            return Ok(moved);
        };
        let now = crate::consumer::millis_since_epoch(std::time::SystemTime::now());
        let copies = letters
            .iter()
            .map(|letter| back_to_source(letter, stream, partitions, now))
            .collect::<Result<Vec<_>, Error>>()?;
        let count = copies.len() as u64;
        let batch = Batch {
            messages: copies,
            records: Vec::new(),
        }
        .put_record(key.clone(), json!({ "through": last }), expected, false);
        match driver.apply(batch).await {
            Ok(_) => {
                moved += count;
                // The record already keeps them from being replayed twice; trimming only
                // frees the space, and a failure here is made good by the next replay.
                if let Err(error) = driver.trim(&dlq, last).await {
                    tracing::warn!(stream, group, error = %crate::error::Chain(&error), "replayed dead letters not trimmed");
                }
            }
            // Another replay moved this chunk first: look again from where it got.
            Err(DriverError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// The copy of a dead letter that goes back to its partition of `stream`.
fn back_to_source(
    letter: &Message,
    stream: &str,
    partitions: u32,
    now_ms: u64,
) -> Result<NewMessage, Error> {
    let partition = letter
        .headers()
        .get(h::PARTITION)
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    if partition >= partitions {
        return Err(Error::NoSuchPartition {
            stream: stream.to_owned(),
            partition,
            partitions,
        });
    }
    let mut copy = NewMessage::new(log_name(stream, partition), letter.body().to_vec());
    for (name, value) in letter.headers() {
        copy = copy.with_header(name.as_str(), value.as_str());
    }
    if let Some(key) = letter.key() {
        copy = copy.with_key(key.to_vec());
    }
    Ok(copy.with_header(h::REPLAYED_AT_MS, now_ms.to_string()))
}

//! The listing and managing commands: `streams`, `groups`, `reset`, `trim`, `delete`,
//! `retention`, `replay`.

use std::time::Duration;

use flowstream_core::{Admin, StartFrom};
use serde_json::{Value, json};

use crate::output::{Table, maybe_time};
use crate::store::Failure;

pub(crate) async fn streams(admin: &Admin, as_json: bool) -> Result<(), Failure> {
    let streams = admin.streams().await?;
    if as_json {
        let listed: Vec<Value> = streams
            .iter()
            .map(|s| {
                json!({
                    "stream": s.name,
                    "messages": s.messages(),
                    "last_produced": s.last_produced().map(crate::output::time),
                    "partitions": s.partitions.iter().map(|p| json!({
                        "partition": p.partition,
                        "first": p.first,
                        "head": p.head,
                        "messages": p.messages,
                        "last_produced": p.last_produced.map(crate::output::time),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", Value::Array(listed));
        return Ok(());
    }
    let mut table = Table::new(vec![
        "STREAM",
        "PARTITION",
        "FIRST",
        "HEAD",
        "MESSAGES",
        "LAST-PRODUCED",
    ]);
    for stream in &streams {
        for p in &stream.partitions {
            table.row(vec![
                stream.name.clone(),
                p.partition.to_string(),
                p.first.map_or_else(|| "-".to_owned(), |f| f.to_string()),
                p.head.to_string(),
                p.messages.to_string(),
                maybe_time(p.last_produced),
            ]);
        }
    }
    print!("{}", table.render());
    Ok(())
}

pub(crate) async fn groups(admin: &Admin, stream: &str, as_json: bool) -> Result<(), Failure> {
    if admin.stream(stream).await?.is_none() {
        return Err(Failure::not_found(format!(
            "stream {stream:?} does not exist (see `flowstream streams`)"
        )));
    }
    let groups = admin.groups(stream).await?;
    if as_json {
        let listed: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "group": g.name,
                    "lag": g.lag(),
                    "members": g.members,
                    "partitions": g.partitions.iter().map(|p| json!({
                        "partition": p.partition,
                        "committed": p.committed,
                        "head": p.head,
                        "lag": p.lag,
                        "owner": p.owner,
                        "active": p.active,
                        "generation": p.generation,
                        "last_write": p.last_write.map(crate::output::time),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", Value::Array(listed));
        return Ok(());
    }
    let mut table = Table::new(vec![
        "GROUP",
        "PARTITION",
        "COMMITTED",
        "HEAD",
        "LAG",
        "OWNER",
        "ACTIVE",
        "GENERATION",
        "LAST-WRITE",
    ]);
    for group in &groups {
        for p in &group.partitions {
            table.row(vec![
                group.name.clone(),
                p.partition.to_string(),
                p.committed.to_string(),
                p.head.to_string(),
                p.lag.to_string(),
                if p.owner.is_empty() {
                    "-".to_owned()
                } else {
                    p.owner.clone()
                },
                if p.active { "yes" } else { "no" }.to_owned(),
                p.generation.to_string(),
                maybe_time(p.last_write),
            ]);
        }
    }
    print!("{}", table.render());
    Ok(())
}

pub(crate) async fn reset(
    admin: &Admin,
    stream: &str,
    group: &str,
    to: StartFrom,
    partition: Option<u32>,
) -> Result<(), Failure> {
    // A misspelled stream would otherwise get a group of its own.
    require_stream(admin, stream).await?;
    let moved: Vec<(u32, u64)> = match partition {
        Some(partition) => vec![(
            partition,
            admin.reset_partition(stream, group, partition, to).await?,
        )],
        None => (0..)
            .zip(admin.reset_group(stream, group, to).await?)
            .collect(),
    };
    for (partition, committed) in moved {
        println!(
            "group {group} of {stream}, partition {partition}: committed {committed}, next \
             message {}",
            committed + 1
        );
    }
    Ok(())
}

pub(crate) async fn trim(admin: &Admin, stream: &str, through: u64) -> Result<(), Failure> {
    require_stream(admin, stream).await?;
    let deleted = admin.trim(stream, through).await?;
    println!("deleted {deleted} messages of {stream} up to offset {through}");
    Ok(())
}

pub(crate) async fn delete(admin: &Admin, stream: &str, confirmed: bool) -> Result<(), Failure> {
    if !confirmed {
        return Err(Failure::input(format!(
            "deleting {stream:?} removes its messages and groups for good: add --yes to do it"
        )));
    }
    let deleted = admin.delete_stream(stream).await?;
    println!(
        "deleted {stream}: {} logs, {} messages, {} records",
        deleted.logs, deleted.messages, deleted.records
    );
    Ok(())
}

/// What `retention` was asked to do.
pub(crate) struct RetentionChange {
    pub(crate) max_messages: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) keep_unconsumed: bool,
    pub(crate) clear: bool,
    pub(crate) apply: bool,
    pub(crate) json: bool,
}

pub(crate) async fn retention(
    admin: &Admin,
    stream: &str,
    change: RetentionChange,
) -> Result<(), Failure> {
    if change.clear {
        let had = admin.clear_retention(stream).await?;
        println!(
            "{}",
            if had {
                format!("removed the retention policy of {stream}")
            } else {
                format!("{stream} had no retention policy")
            }
        );
        return Ok(());
    }
    if change.max_messages.is_some() || change.max_age.is_some() || change.keep_unconsumed {
        // What is not given stays as it was: `--max-age` alone must not drop a
        // `keep_unconsumed` set earlier (the next trim could pass a group).
        let current = admin.retention(stream).await?.unwrap_or_default();
        let mut policy = current.keep_unconsumed(change.keep_unconsumed || current.keep_unconsumed);
        if let Some(messages) = change.max_messages {
            policy = policy.max_messages(messages);
        }
        if let Some(age) = change.max_age {
            policy = policy.max_age(age);
        }
        admin.set_retention(stream, policy).await?;
    }
    let policy = admin.retention(stream).await?;
    let deleted = if change.apply {
        Some(admin.apply_retention(stream).await?)
    } else {
        None
    };
    if change.json {
        let shown = policy.map(|p| {
            json!({
                "max_messages": p.max_messages,
                "max_age_ms": p.max_age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                "keep_unconsumed": p.keep_unconsumed,
            })
        });
        println!(
            "{}",
            json!({ "stream": stream, "policy": shown, "deleted": deleted })
        );
        return Ok(());
    }
    match policy {
        None => println!("{stream}: no retention policy (messages are kept until trimmed)"),
        Some(p) => {
            let mut parts = Vec::new();
            if let Some(messages) = p.max_messages {
                parts.push(format!("at most {messages} messages per partition"));
            }
            if let Some(age) = p.max_age {
                parts.push(format!("dropped after {}", humantime::format_duration(age)));
            }
            if p.keep_unconsumed {
                parts.push("never past the slowest group".to_owned());
            }
            println!("{stream}: {}", parts.join(", "));
        }
    }
    if let Some(deleted) = deleted {
        println!("deleted {deleted} messages");
    }
    Ok(())
}

pub(crate) async fn replay(admin: &Admin, stream: &str, group: &str) -> Result<(), Failure> {
    let moved = admin.replay_dead_letters(stream, group).await?;
    println!("replayed {moved} dead letters of group {group} to {stream}");
    Ok(())
}

async fn require_stream(admin: &Admin, stream: &str) -> Result<(), Failure> {
    if admin.stream(stream).await?.is_none() {
        return Err(Failure::not_found(format!(
            "stream {stream:?} does not exist (see `flowstream streams`)"
        )));
    }
    Ok(())
}

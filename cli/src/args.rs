//! The command line, as clap parses it.

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::place::Place;

/// Produce to, tail and look inside flowstream streams, on PostgreSQL or in a redb file.
///
/// Exit codes: 0 done; 1 the store failed (unreachable, locked, damaged); 2 bad usage or
/// input; 3 not found (a stream, a file, a schema without flowstream's tables, or a stream
/// deleted under a running `tail --group`); 4 another consumer took `tail --group`'s group over.
#[derive(Debug, Parser)]
#[command(name = "flowstream", version)]
pub(crate) struct Cli {
    /// Where the streams are: a PostgreSQL URL (postgres://user@host/db) or the path of a redb
    /// file.
    #[arg(long, short = 's', env = "FLOWSTREAM_STORE", global = true)]
    pub(crate) store: Option<String>,

    /// The PostgreSQL schema holding flowstream's tables.
    #[arg(
        long,
        env = "FLOWSTREAM_SCHEMA",
        default_value = flowstream_postgres::DEFAULT_SCHEMA,
        global = true
    )]
    pub(crate) schema: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send the lines of standard input to a stream, one message per line, in batches.
    Produce {
        /// The stream.
        stream: String,
        /// Each line is a JSON document (checked before it is sent; blank lines are skipped),
        /// sent with `content-type: application/json`.
        #[arg(long)]
        json: bool,
        /// Messages per send.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
        /// The key of every message (on a partitioned stream: its partition).
        #[arg(long, conflicts_with = "partition")]
        key: Option<String>,
        /// The partition every message goes to (partitioned streams).
        #[arg(long)]
        partition: Option<u32>,
    },

    /// Print a stream's messages and follow it, like `tail -f`.
    Tail {
        /// The stream.
        stream: String,
        /// Where to start: earliest, latest, an offset, a time (2026-12-06T10:00:00Z) or an age
        /// (15m: that long ago). As a group member: where a new group starts.
        #[arg(long, default_value = "earliest")]
        from: Place,
        /// Read as a member of this consumer group, committing what it printed.
        #[arg(long)]
        group: Option<String>,
        /// Stop once the head is reached instead of following.
        #[arg(long)]
        exit_at_head: bool,
        /// Stop after this many messages.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },

    /// List the streams, with each partition's extent.
    Streams {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Show a stream's consumer groups: committed offsets, lag, owners.
    Groups {
        /// The stream.
        stream: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Move a group's committed offset (its running consumers go on from there).
    Reset {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
        /// Where to: earliest, latest, an offset (the next message delivered), a time or an age.
        #[arg(long)]
        to: Place,
        /// Only this partition.
        #[arg(long)]
        partition: Option<u32>,
    },

    /// Delete a stream's messages up to an offset (in every partition).
    Trim {
        /// The stream.
        stream: String,
        /// The last offset deleted.
        #[arg(long)]
        through: u64,
    },

    /// Delete a stream with its groups and retention policy.
    Delete {
        /// The stream.
        stream: String,
        /// Confirms the delete (required).
        #[arg(long)]
        yes: bool,
    },

    /// Show, set, clear or apply a stream's retention policy.
    Retention {
        /// The stream.
        stream: String,
        /// Keep at most this many messages per partition.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Drop messages older than this (30s, 15m, 12h, 7d).
        #[arg(long, value_parser = parse_duration)]
        max_age: Option<Duration>,
        /// Never trim what a group has not committed.
        #[arg(long)]
        keep_unconsumed: bool,
        /// Remove the policy.
        #[arg(long, conflicts_with_all = ["max_messages", "max_age", "keep_unconsumed"])]
        clear: bool,
        /// Apply the policy now (after setting it, if given).
        #[arg(long)]
        apply: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Move a group's dead letters back to their stream.
    Replay {
        /// The stream.
        stream: String,
        /// The group whose dead letters go back.
        group: String,
    },
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it as 30s, 15m, 12h or 7d)"))
}

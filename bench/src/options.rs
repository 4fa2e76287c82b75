//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

use crate::workload::Sizes;

pub(crate) const USAGE: &str = "\
usage: flowstream-bench [options]

  --driver postgres|redb|all   which flowstream drivers to measure (default all)
  --pg-url URL                 PostgreSQL (default $FLOWSTREAM_PG_URL, else
                               postgres://postgres@127.0.0.1:5432/postgres)
  --redis-url URL              Redis (default redis://127.0.0.1:6379)
  --nats-url URL               NATS with JetStream (default 127.0.0.1:4222)
  --no-peers                   skip Redis and NATS
  --smoke                      tiny counts: checks that every row runs, measures nothing
  --body BYTES                 message body size (default 100)
  --messages N                 length of the stream the consume rows read (default 1000000)
  --dir PATH                   where redb files go (default target/flowstream-bench)
  --redb-cache MIB             redb's page cache, for flowstream and the raw row alike
                               (default 16, flowstream's default)
  --json PATH                  where figures go (default target/flowstream-bench/results.json)
  --fleet-only                 only the fleet rows (PostgreSQL: producer processes, next to a
                               one-row INSERT from as many clients)
  --retention-only             only the retention rows (latency at 2,000 msg/s on a stream of
                               --messages, alone and while those are trimmed; the trim's rate)
  --partitions-only            only the partition rows (keyed produce next to unkeyed, an
                               8-partition stream consumed by 1, 2 and 4 member processes, a
                               member killed under load)
  --long                       the long-stream rows instead: fill a stream of --messages
                               (default 10000000 here) and measure produce, head, latency,
                               consume and memory on it, at 1M and at the end
  --median FILE...             print the median and spread of the figures in the --json files
                               of several runs, and measure nothing

The bench drops and recreates the PostgreSQL schemas flowstream_bench and
flowstream_bench_raw, and switches Redis's persistence for the appendfsync
rows, restoring it afterwards.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Redb,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Redb => "redb",
        }
    }

    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "postgres" => Ok(Backend::Postgres),
            "redb" => Ok(Backend::Redb),
            other => Err(format!("unknown driver {other:?}")),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) backends: Vec<Backend>,
    pub(crate) pg_url: String,
    pub(crate) redis_url: String,
    pub(crate) nats_url: String,
    pub(crate) peers: bool,
    pub(crate) smoke: bool,
    pub(crate) body: usize,
    pub(crate) messages: usize,
    pub(crate) dir: PathBuf,
    pub(crate) json: PathBuf,
    pub(crate) tasks: usize,
    pub(crate) rates: Vec<u64>,
    pub(crate) latency_for: Duration,
    pub(crate) idle_consumers: usize,
    pub(crate) idle_for: Duration,
    /// Internal: run as the consumer process of the memory figure, reading this stream.
    pub(crate) memory_child: Option<(Backend, String)>,
    /// Internal: run alone the "batches of 1,000" produce row on this backend and print its
    /// time (a process to profile).
    pub(crate) produce_child: Option<Backend>,
    /// Internal: run as a member process of the partition rows, on this stream.
    pub(crate) member_child: Option<String>,
    /// In a member process: stop once the group committed this many messages (0: never).
    pub(crate) member_expects: usize,
    /// Set in a fleet producer process: how long to send, the stream, and the schema.
    pub(crate) fleet_child: Option<(Duration, String, String)>,
    /// In a fleet producer process: how many tasks send through its producer.
    pub(crate) fleet_tasks: usize,
    /// How long each fleet row sends.
    pub(crate) fleet_for: Duration,
    /// Run the fleet rows and nothing else.
    pub(crate) fleet_only: bool,
    /// In a fleet producer process: send this many messages per second, stamped, instead of
    /// flat out.
    pub(crate) fleet_rate: Option<u64>,
    /// In a fleet producer process: send through the outbox (`send_staged`).
    pub(crate) fleet_staged: bool,
    /// Run the long-stream rows and nothing else.
    pub(crate) long: bool,
    /// Run the partition rows and nothing else.
    pub(crate) partitions_only: bool,
    /// Run the retention rows and nothing else.
    pub(crate) retention_only: bool,
    /// Summarize these result files and measure nothing.
    pub(crate) median: Vec<PathBuf>,
    /// redb's page cache in bytes, flowstream's and the raw row's.
    pub(crate) redb_cache: usize,
    /// Print the usage and stop.
    pub(crate) help: bool,
}

impl Options {
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            backends: vec![Backend::Postgres, Backend::Redb],
            pg_url: std::env::var("FLOWSTREAM_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            nats_url: "127.0.0.1:4222".to_owned(),
            peers: true,
            smoke: false,
            body: 100,
            messages: 1_000_000,
            dir: PathBuf::from("target/flowstream-bench"),
            json: PathBuf::from("target/flowstream-bench/results.json"),
            tasks: 64,
            rates: vec![1_000, 10_000],
            latency_for: Duration::from_secs(5),
            idle_consumers: 1_000,
            // Two of PostgreSQL's default fallback_poll periods, so the row includes what the
            // safety-net wake-ups cost.
            idle_for: Duration::from_secs(60),
            memory_child: None,
            produce_child: None,
            member_child: None,
            member_expects: 0,
            fleet_child: None,
            fleet_tasks: 1,
            fleet_for: Duration::from_secs(5),
            fleet_only: false,
            fleet_rate: None,
            fleet_staged: false,
            redb_cache: flowstream_redb::DEFAULT_CACHE_SIZE,
            long: false,
            partitions_only: false,
            retention_only: false,
            median: Vec::new(),
            help: false,
        };
        let mut child_backend = None;
        let mut messages_set = false;
        let mut child_stream = None;
        let mut fleet_millis = None;
        let mut fleet_schema = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--driver" => {
                    options.backends = match value()?.as_str() {
                        "all" => vec![Backend::Postgres, Backend::Redb],
                        other => vec![Backend::parse(other)?],
                    }
                }
                "--memory-child" => child_backend = Some(Backend::parse(&value()?)?),
                "--stream" => child_stream = Some(value()?),
                "--member-child" => options.member_child = Some(value()?),
                "--produce-child" => options.produce_child = Some(Backend::parse(&value()?)?),
                "--member-expects" => options.member_expects = number(&arg, &value()?)?,
                "--fleet-child" => fleet_millis = Some(number(&arg, &value()?)?),
                "--fleet-schema" => fleet_schema = Some(value()?),
                "--fleet-tasks" => options.fleet_tasks = number(&arg, &value()?)?.max(1),
                "--fleet-only" => options.fleet_only = true,
                "--fleet-staged" => options.fleet_staged = true,
                "--fleet-rate" => {
                    options.fleet_rate =
                        Some(u64::try_from(number(&arg, &value()?)?).unwrap_or(u64::MAX));
                }
                "--long" => options.long = true,
                "--partitions-only" => options.partitions_only = true,
                "--retention-only" => options.retention_only = true,
                "--redb-cache" => options.redb_cache = number(&arg, &value()?)? * 1024 * 1024,
                "--median" => {
                    options.median.extend(args.by_ref().map(PathBuf::from));
                }
                "--pg-url" => options.pg_url = value()?,
                "--redis-url" => options.redis_url = value()?,
                "--nats-url" => options.nats_url = value()?,
                "--no-peers" => options.peers = false,
                "--smoke" => options.smoke = true,
                "--body" => options.body = number(&arg, &value()?)?,
                "--messages" => {
                    options.messages = number(&arg, &value()?)?;
                    messages_set = true;
                }
                "--dir" => options.dir = value()?.into(),
                "--json" => options.json = value()?.into(),
                "--help" | "-h" => options.help = true,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if let Some(millis) = fleet_millis {
            let stream = child_stream.clone().ok_or("--fleet-child needs --stream")?;
            let schema = fleet_schema.ok_or("--fleet-child needs --fleet-schema")?;
            options.fleet_child = Some((
                Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)),
                stream,
                schema,
            ));
        }
        options.memory_child = child_backend.zip(child_stream);
        if options.long && !messages_set {
            options.messages = 10_000_000;
        }
        if options.body < 8 {
            return Err("--body must be at least 8 (latency rows stamp the body)".to_owned());
        }
        if options.smoke {
            options.messages = options.messages.min(5_000);
            options.latency_for = Duration::from_millis(200);
            options.idle_consumers = 20;
            options.idle_for = Duration::from_secs(1);
            options.fleet_for = Duration::from_millis(300);
        }
        Ok(options)
    }

    pub(crate) fn sizes(&self) -> Sizes {
        let (produce, singles) = if self.smoke {
            (2_000, 640)
        } else {
            (200_000, 20_000)
        };
        Sizes {
            body: self.body,
            produce,
            singles,
            consume: self.messages,
            read_batch: 1_000,
        }
    }
}

fn number(option: &str, value: &str) -> Result<usize, String> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{option} takes a number, got {value:?}"))
}

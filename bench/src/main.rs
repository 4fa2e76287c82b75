//! flowstream's benchmark: produce, consume, latency, memory and idle cost, each flowstream
//! figure measured in the same run as the raw storage ceiling (plain SQL on PostgreSQL, plain
//! tables on redb) and the peers on this machine (Redis Streams, NATS JetStream).
//!
//! ```text
//! cargo run --release -p flowstream-bench -- [--driver postgres|redb|all] [--smoke] [--no-peers]
//! ```
//! `--help` lists every option. It prints each figure as it is measured, then a Markdown table
//! with `flowstream ÷ this` ratios, and writes the figures as JSON.

// Counts and rates are computed from measured floats and durations; truncating them is the
// rounding a figure wants.
#![allow(clippy::cast_possible_truncation)]

mod fleet;
mod fleet_rows;
mod flow;
mod in_tx_rows;
mod long;
mod machine;
mod median;
mod nats_peer;
mod options;
mod partition_rows;
mod procstat;
mod raw_pg;
mod raw_redb;
mod redis_peer;
mod report;
mod retention_rows;
mod system;
mod workload;

use std::sync::Arc;
use std::time::Duration;

use flowstream_postgres::PgDriver;
use flowstream_redb::{RecordDurability, RedbDriver};

use crate::flow::Flowstream;
use crate::options::{Backend, Options};
use crate::raw_pg::{RawPg, Write};
use crate::raw_redb::RawRedb;
use crate::report::Report;
use crate::system::System;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The schema flowstream's own PostgreSQL tables go in; dropped and recreated at every run.
pub(crate) const PG_SCHEMA: &str = "flowstream_bench";

#[tokio::main]
async fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n\n{}", options::USAGE);
            std::process::exit(2);
        }
    };
    if options.help {
        println!("{}", options::USAGE);
        return;
    }
    if !options.median.is_empty() {
        match median::table(&options.median) {
            Ok(table) => println!("{table}"),
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Some((window, stream, schema)) = &options.fleet_child {
        let load = match options.fleet_rate {
            Some(rate) => fleet::Load::Paced { rate },
            None => fleet::Load::FlatOut {
                tasks: options.fleet_tasks,
            },
        };
        let sent = fleet::child(
            &options.pg_url,
            schema,
            stream,
            load,
            *window,
            options.body,
            options.fleet_staged,
        )
        .await;
        if let Err(error) = sent {
            eprintln!("{error}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(stream) = &options.member_child {
        let expected = options.member_expects;
        if let Err(error) = partition_rows::member_child(&options.pg_url, stream, expected).await {
            eprintln!("{error}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(backend) = options.produce_child {
        if let Err(error) = produce_alone(backend, &options).await {
            eprintln!("{error}");
            std::process::exit(1);
        }
        return;
    }
    if let Some((backend, stream)) = &options.memory_child {
        if let Err(error) = consume_alone(*backend, stream, &options).await {
            eprintln!("{error}");
            std::process::exit(1);
        }
        return;
    }
    match run(&options).await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("some flowstream figures could not be measured (see above)");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            std::process::exit(1);
        }
    }
}

/// Runs every scenario; `Ok(false)` when a flowstream figure failed.
async fn run(options: &Options) -> Result<bool, BoxError> {
    let sizes = options.sizes();
    let mut flows: Vec<(Backend, Flowstream)> = Vec::new();
    let mut others: Vec<Box<dyn System>> = Vec::new();
    let mut report = Report::default();

    if options.backends.contains(&Backend::Postgres) {
        reset_pg_schema(&options.pg_url).await?;
        RawPg::reset(&options.pg_url).await?;
        flows.push((
            Backend::Postgres,
            open_flowstream(Backend::Postgres, options).await?,
        ));
        for write in [Write::LockedInsert, Write::Insert, Write::Copy] {
            others.push(Box::new(RawPg::connect(&options.pg_url, write).await?));
        }
    }
    if options.backends.contains(&Backend::Redb) {
        std::fs::create_dir_all(&options.dir)?;
        for file in [FLOW_FILE, RAW_FILE] {
            let file = options.dir.join(file);
            if file.exists() {
                std::fs::remove_file(file)?;
            }
        }
        flows.push((
            Backend::Redb,
            open_flowstream(Backend::Redb, options).await?,
        ));
        others.push(Box::new(RawRedb::create(
            &options.dir.join(RAW_FILE),
            options.redb_cache,
        )?));
    }
    let mut redis_saved = None;
    if options.peers {
        match redis_peer::RedisPeer::connect(&options.redis_url).await {
            Ok((memory, durable, saved)) => {
                others.push(Box::new(memory));
                others.push(Box::new(durable));
                redis_saved = Some(saved);
            }
            Err(error) => report.skip("all", "Redis Streams", error.to_string()),
        }
        match nats_peer::NatsPeer::connect(&options.nats_url).await {
            Ok(nats) => others.push(Box::new(nats)),
            Err(error) => report.skip("all", "NATS JetStream", error.to_string()),
        }
    }

    let mut ok = true;
    let window = if options.smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    };
    let scenario = "machine: fdatasync per second, 4 KiB rewrites in --dir";
    println!("{scenario}");
    match machine::fsync_rate(&options.dir, window).await {
        Ok(rate) => report.push(scenario, "this machine", rate, "syncs/s", false),
        Err(error) => report.skip(scenario, "this machine", error.to_string()),
    }
    if options.long {
        drop(others);
        ok &= long_rows(flows, options, &mut report).await;
        println!("\n{}", report.table());
        write_json(options, &report, &sizes)?;
        return Ok(ok);
    }
    if options.fleet_only {
        let pg = flows
            .iter()
            .find(|(b, _)| *b == Backend::Postgres)
            .map(|(_, f)| f);
        ok &= fleet_rows::rows(options, pg, &mut report).await;
        println!("\n{}", report.table());
        write_json(options, &report, &sizes)?;
        return Ok(ok);
    }
    if options.retention_only {
        for (_, flow) in &flows {
            settle(options).await?;
            ok &= retention_rows::rows(flow, &sizes, options.smoke, &mut report).await;
        }
        println!("\n{}", report.table());
        write_json(options, &report, &sizes)?;
        return Ok(ok);
    }
    if options.partitions_only {
        ok &= partition_rows::only(&flows, options, &sizes, &mut report).await;
        println!("\n{}", report.table());
        write_json(options, &report, &sizes)?;
        return Ok(ok);
    }
    let mut systems: Vec<(&dyn System, bool)> = flows
        .iter()
        .map(|(_, f)| (f as &dyn System, true))
        .collect();
    systems.extend(others.iter().map(|o| (o.as_ref(), false)));

    // Untimed: connections opened, statements prepared, files grown, before any figure.
    let warm_up = workload::Sizes {
        produce: 2_000,
        ..sizes.clone()
    };
    for &(system, is_flow) in &systems {
        if let Err(error) = system.produce_batches(100, &warm_up).await {
            if is_flow {
                return Err(error);
            }
            // Its rows will say it was skipped, and why.
            println!("  warm-up of {} failed: {error}", system.name());
        }
    }

    for batch in [100, 1000] {
        let scenario = format!("produce, batches of {}", report::group_digits(batch as f64));
        println!("{scenario}");
        for &(system, is_flow) in &systems {
            settle(options).await?;
            let result = system.produce_batches(batch, &sizes).await;
            ok &= record_rate(
                &mut report,
                &scenario,
                system,
                sizes.produce,
                result,
                is_flow,
            );
        }
    }

    let scenario = format!("produce, {} tasks × single sends", options.tasks);
    println!("{scenario}");
    for &(system, is_flow) in &systems {
        settle(options).await?;
        let result = system.produce_singles(options.tasks, &sizes).await;
        ok &= record_rate(
            &mut report,
            &scenario,
            system,
            sizes.singles,
            result,
            is_flow,
        );
    }

    for (_, flow) in &flows {
        ok &= partition_rows::produce_rows(flow, options, &sizes, &mut report).await;
    }

    if options.backends.contains(&Backend::Postgres) {
        let pg = flows
            .iter()
            .find(|(b, _)| *b == Backend::Postgres)
            .map(|(_, f)| f);
        ok &= fleet_rows::rows(options, pg, &mut report).await;
        if let Some(pg) = pg {
            ok &= partition_rows::member_rows(pg, options, &mut report).await;
        }
    }

    let scenario = format!(
        "consume {} messages, one group",
        report::group_digits(sizes.consume as f64)
    );
    println!(
        "{scenario} (reads and acks of {} messages)",
        sizes.read_batch
    );
    let mut consumed: Vec<(Backend, String)> = Vec::new();
    for (backend, flow) in &flows {
        settle(options).await?;
        match flow.consume_stream(&sizes).await {
            Ok((elapsed, background, stream)) => {
                report.rate(
                    &scenario,
                    &flow.name(),
                    sizes.consume as f64 / elapsed.as_secs_f64(),
                );
                let name = format!("background commits: {}", flow.name());
                report.rate(
                    &scenario,
                    &name,
                    sizes.consume as f64 / background.as_secs_f64(),
                );
                println!("  (stream {stream})");
                consumed.push((*backend, stream));
            }
            Err(error) => {
                report.skip(&scenario, &flow.name(), error.to_string());
                ok = false;
            }
        }
    }
    if options.backends.contains(&Backend::Redb) {
        ok &= deferred_consume_row(options, &scenario, &mut report).await;
    }
    // Retries: the same stream read by groups that nack a share of the messages once.
    let modes = [(false, "ordered"), (true, "parked")];
    for ((every, share), (park, mode)) in [(1000, "0.1%"), (100, "1%")]
        .into_iter()
        .flat_map(|share| modes.map(|mode| (share, mode)))
    {
        for (backend, stream) in &consumed {
            let Some((_, flow)) = flows.iter().find(|(b, _)| b == backend) else {
                continue;
            };
            settle(options).await?;
            let name = format!("{share} nacked once ({mode}): {}", flow.name());
            match flow
                .read_nacking(stream, sizes.consume, sizes.read_batch, every, park)
                .await
            {
                Ok((elapsed, _)) => report.rate(
                    &scenario,
                    &name,
                    sizes.consume as f64 / elapsed.as_secs_f64(),
                ),
                Err(error) => {
                    report.skip(&scenario, &name, error.to_string());
                    ok = false;
                }
            }
        }
    }
    // Sends and commits inside transactions, beside the plain rows above.
    println!("sends and commits inside the application's transaction");
    for (backend, flow) in &flows {
        let Some(tx) = flow.tx() else {
            continue;
        };
        settle(options).await?;
        let stream = consumed
            .iter()
            .find(|(b, _)| b == backend)
            .map(|(_, s)| s.as_str());
        ok &= in_tx_rows::rows(flow, tx, &sizes, stream, &mut report).await;
    }
    for (_, flow) in &flows {
        settle(options).await?;
        ok &= retention_rows::rows(flow, &sizes, options.smoke, &mut report).await;
    }
    for system in &others {
        settle(options).await?;
        match system.consume(&sizes).await {
            Ok(Some(elapsed)) => report.rate(
                &scenario,
                &system.consume_name(),
                sizes.consume as f64 / elapsed.as_secs_f64(),
            ),
            Ok(None) => {}
            Err(error) => report.skip(&scenario, &system.consume_name(), error.to_string()),
        }
    }

    for &rate in &options.rates {
        settle(options).await?;
        let label = report::group_digits(rate as f64);
        println!(
            "end-to-end latency at {label} msg/s for {:?}",
            options.latency_for
        );
        for &(system, is_flow) in &systems {
            match system.latency(rate, options.latency_for, &sizes).await {
                Ok(Some(latencies)) => {
                    let at = format!("at {label} msg/s");
                    report.latencies(&at, &system.name(), latencies.summary());
                }
                Ok(None) => {}
                Err(error) => {
                    report.skip(
                        &format!("latency at {label} msg/s"),
                        &system.name(),
                        error.to_string(),
                    );
                    ok &= !is_flow;
                }
            }
        }
    }

    let scenario = format!(
        "idle: {} waiting consumers, CPU over {:?}",
        options.idle_consumers, options.idle_for
    );
    println!("{scenario}");
    for (_, flow) in &flows {
        match flow
            .idle_cpu(options.idle_consumers, options.idle_for)
            .await
        {
            Ok(cost) => {
                let share = cost.cpu.as_secs_f64() / options.idle_for.as_secs_f64() * 100.0;
                report.push(&scenario, &flow.name(), share, "% of a core", true);
                if let Some(transactions) = cost.server_transactions {
                    let periods = options.idle_for.as_secs_f64()
                        / flowstream_postgres::DEFAULT_FALLBACK_POLL.as_secs_f64();
                    let each = transactions as f64 / options.idle_consumers as f64 / periods;
                    report.push(
                        &format!(
                            "idle: PostgreSQL transactions per waiting consumer per \
                             fallback_poll period ({:?}, the default)",
                            flowstream_postgres::DEFAULT_FALLBACK_POLL
                        ),
                        &flow.name(),
                        each,
                        "transactions",
                        true,
                    );
                }
            }
            Err(error) => {
                report.skip(&scenario, &flow.name(), error.to_string());
                ok = false;
            }
        }
    }

    if let Some(saved) = redis_saved {
        saved.restore().await?;
    }

    // Memory is measured in a fresh process that only consumes, so nothing this one did
    // before (filling the stream, other scenarios) counts. redb allows one process per file:
    // close ours first.
    drop(systems);
    drop(others);
    drop(flows);
    let scenario = format!(
        "peak RSS of a process consuming {} messages",
        report::group_digits(sizes.consume as f64)
    );
    println!("{scenario}");
    for (backend, stream) in consumed {
        let name = format!("flowstream ({})", backend.name());
        match measure_in_child(backend, &stream, options.messages, options).await {
            Ok(rss) => report.push(&scenario, &name, rss as f64 / 1048576.0, "MiB", true),
            Err(error) => {
                report.skip(&scenario, &name, error.to_string());
                ok = false;
            }
        }
    }

    let table = report.table();
    println!("\n{table}");
    write_json(options, &report, &sizes)?;
    Ok(ok)
}

/// Writes the figures and how they were made to `--json`.
fn write_json(options: &Options, report: &Report, sizes: &workload::Sizes) -> Result<(), BoxError> {
    let run = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "body_bytes": sizes.body,
        "produce_messages": sizes.produce,
        "single_sends": sizes.singles,
        "consume_messages": sizes.consume,
        "read_batch": sizes.read_batch,
        "latency_seconds": options.latency_for.as_secs_f64(),
    });
    if let Some(parent) = options.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&report.json(run))?,
    )?;
    println!("figures written to {}", options.json.display());
    Ok(())
}

/// The redb files, in `--dir`.
const FLOW_FILE: &str = "flowstream.redb";
const DEFERRED_FILE: &str = "flowstream-deferred.redb";
const RAW_FILE: &str = "raw.redb";

async fn open_flowstream(backend: Backend, options: &Options) -> Result<Flowstream, BoxError> {
    Ok(match backend {
        Backend::Postgres => {
            // Default settings but the pool size and the name: fallback_poll is the default
            // (30 s), so the idle row shows what its wake-ups cost.
            let driver = PgDriver::builder(&options.pg_url)
                .schema(PG_SCHEMA)
                .max_connections(16)
                .application_name("flowstream-bench")
                .connect()
                .await?;
            let server = driver.pool().clone();
            Flowstream::new(
                "flowstream (postgres)",
                Arc::new(driver.clone()),
                Some(server),
            )
            .with_tx(in_tx_rows::TxDriver::Postgres(driver))
        }
        Backend::Redb => {
            let driver = RedbDriver::builder(options.dir.join(FLOW_FILE))
                .cache_size(options.redb_cache)
                .open()
                .await?;
            Flowstream::new("flowstream (redb)", Arc::new(driver.clone()), None)
                .with_tx(in_tx_rows::TxDriver::Redb(driver))
                .clearing_produce_rows()
        }
    })
}

/// redb consume with `RecordDurability::Deferred` (commits made durable by the next append or
/// within 100 ms), on a file of its own. Returns false if it failed.
async fn deferred_consume_row(options: &Options, scenario: &str, report: &mut Report) -> bool {
    let name = "deferred commits: flowstream (redb)";
    let result = async {
        let path = options.dir.join(DEFERRED_FILE);
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        let driver = RedbDriver::builder(&path)
            .cache_size(options.redb_cache)
            .record_durability(RecordDurability::Deferred {
                within: Duration::from_millis(100),
            })
            .open()
            .await?;
        let flow = Flowstream::new("flowstream (redb, deferred)", Arc::new(driver), None);
        let (elapsed, _, _) = flow.consume_stream(&options.sizes()).await?;
        Ok::<_, BoxError>(elapsed)
    }
    .await;
    match result {
        Ok(elapsed) => {
            report.rate(
                scenario,
                name,
                options.messages as f64 / elapsed.as_secs_f64(),
            );
            true
        }
        Err(error) => {
            report.skip(scenario, name, error.to_string());
            false
        }
    }
}

/// The `--long` rows on each driver. Returns false if one failed.
async fn long_rows(
    flows: Vec<(Backend, Flowstream)>,
    options: &Options,
    report: &mut Report,
) -> bool {
    let mut ok = true;
    for (backend, flow) in flows {
        println!("long stream on {}", backend.name());
        let _ = settle(options).await;
        let filled = long::rows(&flow, options, report).await;
        // redb has one process per file: the memory rows' processes open it after us.
        drop(flow);
        let result = match filled {
            Ok((stream, _)) => long::memory_rows(backend, &stream, options, report).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            report.skip(
                "long stream",
                &format!("flowstream ({})", backend.name()),
                error.to_string(),
            );
            ok = false;
        }
        let _ = settle(options).await;
        if let Err(error) = raw_long_rows(backend, options, report).await {
            report.skip(
                "long stream",
                &format!("raw {}", backend.name()),
                error.to_string(),
            );
        }
    }
    ok
}

/// The raw ceiling of `backend` filled as long as flowstream's long stream: whether a
/// produce rate falling with the length is the store's or flowstream's.
async fn raw_long_rows(
    backend: Backend,
    options: &Options,
    report: &mut Report,
) -> Result<(), BoxError> {
    let body: Arc<[u8]> = workload::body(options.body).into();
    match backend {
        Backend::Postgres => {
            RawPg::reset(&options.pg_url).await?;
            let raw = RawPg::connect(&options.pg_url, Write::LockedInsert).await?;
            let stream = workload::unique("long");
            raw.create_stream(&stream).await?;
            let name = raw.name();
            long::raw_rows(&name, options, report, |head, n| {
                let (raw, stream, body) = (&raw, &stream, Arc::clone(&body));
                async move { raw.write_batch(stream, head as i64, n, &body).await }
            })
            .await
        }
        Backend::Redb => {
            let raw = RawRedb::create(&options.dir.join(RAW_FILE), options.redb_cache)?;
            raw.clear().await?;
            let name = raw.name();
            long::raw_rows(&name, options, report, |head, n| {
                raw.write_batch(head, n, Arc::clone(&body))
            })
            .await
        }
    }
}

/// Runs this program again to consume `count` messages of `stream` and report its peak
/// resident memory.
pub(crate) async fn measure_in_child(
    backend: Backend,
    stream: &str,
    count: usize,
    options: &Options,
) -> Result<u64, BoxError> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--memory-child", backend.name(), "--stream", stream])
        .args(["--messages", &count.to_string()])
        .args(["--pg-url", &options.pg_url])
        .args([
            "--redb-cache",
            &(options.redb_cache / 1024 / 1024).to_string(),
        ])
        .arg("--dir")
        .arg(&options.dir)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "consumer process failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let rss = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_bytes "))
        .ok_or("consumer process printed no peak_rss_bytes line")?;
    Ok(rss.trim().parse()?)
}

/// The child side of [`measure_in_child`].
async fn consume_alone(backend: Backend, stream: &str, options: &Options) -> Result<(), BoxError> {
    let flow = open_flowstream(backend, options).await?;
    let (elapsed, rss) = flow
        .consume_alone(stream, options.messages, options.sizes().read_batch)
        .await?;
    println!("elapsed_seconds {}", elapsed.as_secs_f64());
    println!("peak_rss_bytes {rss}");
    Ok(())
}

/// The "batches of 1,000" produce row alone, in a process of its own, so that a profiler
/// sees nothing else: prints the time it took.
async fn produce_alone(backend: Backend, options: &Options) -> Result<(), BoxError> {
    let flow = open_flowstream(backend, options).await?;
    let sizes = options.sizes();
    let elapsed = flow
        .produce_batches(1_000, &sizes)
        .await?
        .ok_or("the produce row measured nothing")?;
    println!("elapsed_seconds {}", elapsed.as_secs_f64());
    println!("messages {}", sizes.produce);
    Ok(())
}

/// Records `count / elapsed` or the failure; returns false if a flowstream figure failed.
fn record_rate(
    report: &mut Report,
    scenario: &str,
    system: &dyn System,
    count: usize,
    result: Result<Option<Duration>, BoxError>,
    is_flow: bool,
) -> bool {
    match result {
        Ok(Some(elapsed)) => {
            report.rate(
                scenario,
                &system.name(),
                count as f64 / elapsed.as_secs_f64(),
            );
            true
        }
        Ok(None) => true,
        Err(error) => {
            report.skip(scenario, &system.name(), error.to_string());
            !is_flow
        }
    }
}

/// Before each row: the bulk rows leave PostgreSQL hundreds of MB of WAL behind, and the
/// checkpoint they trigger would land in whichever row comes next. Start every row from a
/// fresh checkpoint, so each pays only for the WAL it writes itself.
pub(crate) async fn settle(options: &Options) -> Result<(), BoxError> {
    if options.backends.contains(&Backend::Postgres) {
        checkpoint(&options.pg_url).await?;
    }
    Ok(())
}

async fn checkpoint(url: &str) -> Result<(), BoxError> {
    use sqlx::Executor;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    pool.execute("CHECKPOINT").await?;
    pool.close().await;
    Ok(())
}

async fn reset_pg_schema(url: &str) -> Result<(), BoxError> {
    use sqlx::Executor;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    pool.execute(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"
    )))
    .await?;
    pool.close().await;
    Ok(())
}

//! The fleet rows (PostgreSQL only): producer processes next to a plain one-row `INSERT` from
//! as many clients, latency with the sends coming from 4 processes, and the fleet beside
//! another application that notifies.

use std::time::Duration;

use crate::flow::Flowstream;
use crate::options::Options;
use crate::report::{self, Report};
use crate::{BoxError, PG_SCHEMA, fleet, raw_pg, settle, workload};

/// The fleet rows (PostgreSQL only): single sends from separate processes, next to a plain
/// one-row `INSERT` from as many clients; latency with the sends coming from 4 processes; and
/// flowstream's fleet beside another application that notifies. `pg` is this process's
/// flowstream on PostgreSQL, for the latency consumer. Returns false if a flowstream figure
/// failed.
pub(crate) async fn rows(options: &Options, pg: Option<&Flowstream>, report: &mut Report) -> bool {
    const FLOW: &str = "flowstream (postgres)";
    const STAGED: &str = "flowstream (postgres), send_staged";
    let mut ok = true;
    for (processes, tasks, streams) in [(1, 1, 1), (8, 1, 1), (8, 1, 8), (4, 16, 1), (4, 16, 8)] {
        let scenario = format!(
            "produce, {processes} process{} × {tasks} task{} × single sends, {streams} stream{}",
            if processes == 1 { "" } else { "es" },
            if tasks == 1 { "" } else { "s" },
            if streams == 1 { "" } else { "s" },
        );
        println!("{scenario}");
        if let Err(error) = settle(options).await {
            report.skip(&scenario, FLOW, error.to_string());
            return false;
        }
        let load = fleet::Load::FlatOut { tasks };
        match fleet_run(options, processes, load, streams, false, None).await {
            Ok(rate) => report.push(&scenario, FLOW, rate, "msg/s", false),
            Err(error) => {
                report.skip(&scenario, FLOW, error.to_string());
                ok = false;
            }
        }
        // The same fleet staging its sends through the outbox, counted once delivered.
        if streams == 1 {
            let _ = settle_outbox(options).await;
            match fleet_run(options, processes, load, streams, true, None).await {
                Ok(rate) => report.push(&scenario, STAGED, rate, "msg/s", false),
                Err(error) => {
                    report.skip(&scenario, STAGED, error.to_string());
                    ok = false;
                }
            }
        }
        if streams == 1 && tasks == 1 {
            let raw = "raw pg: one-row INSERT per transaction";
            let _ = settle(options).await;
            match fleet::raw_insert(
                &options.pg_url,
                raw_pg::SCHEMA,
                processes,
                options.fleet_for,
                options.body,
            )
            .await
            {
                Ok(rate) => report.push(&scenario, raw, rate, "msg/s", false),
                Err(error) => report.skip(&scenario, raw, error.to_string()),
            }
        }
    }

    if let Some(pg) = pg {
        let rate = if options.smoke { 400 } else { 10_000 };
        let processes = 4;
        let label = report::group_digits(rate as f64);
        println!("end-to-end latency at {label} msg/s sent by {processes} processes");
        for (staged, system) in [(false, FLOW), (true, STAGED)] {
            let _ = if staged {
                settle_outbox(options).await
            } else {
                settle(options).await
            };
            match fleet_latency(options, pg, processes, rate, staged).await {
                Ok(summary) => {
                    let at = format!("at {label} msg/s sent by {processes} processes");
                    report.latencies(&at, system, summary);
                }
                Err(error) => {
                    report.skip(
                        &format!("latency at {label} msg/s sent by {processes} processes"),
                        system,
                        error.to_string(),
                    );
                    ok = false;
                }
            }
        }
    }

    // Another application's NOTIFY traffic in the same database: its rate alone and beside
    // flowstream's 8-process fleet on 8 streams, and the fleet's rate beside it (the fleet row
    // above is the same fleet alone).
    let clients = 4;
    let app = format!("another application: INSERT + pg_notify per transaction, {clients} clients");
    let alone = format!("{app}, alone");
    let beside = format!("{app}, beside flowstream's 8 × 1 fleet on 8 streams");
    let fleet_beside = "produce, 8 processes × 1 task × single sends, 8 streams, beside another application's notifications";
    println!("{app}");
    let _ = settle(options).await;
    match fleet::notifying_app(&options.pg_url, raw_pg::SCHEMA, clients, options.fleet_for).await {
        Ok(rate) => report.push(&alone, "another application", rate, "transactions/s", false),
        Err(error) => report.skip(&alone, "another application", error.to_string()),
    }
    let _ = settle(options).await;
    let (started, sending) = tokio::sync::oneshot::channel();
    let (fleet, other) = tokio::join!(
        fleet_run(
            options,
            8,
            fleet::Load::FlatOut { tasks: 1 },
            8,
            false,
            Some(started)
        ),
        async {
            // Starts once the fleet's processes are sending, not while they connect.
            sending.await.map_err(|_| "the fleet did not start")?;
            fleet::notifying_app(&options.pg_url, raw_pg::SCHEMA, clients, options.fleet_for).await
        }
    );
    match fleet {
        Ok(rate) => report.push(fleet_beside, FLOW, rate, "msg/s", false),
        Err(error) => {
            report.skip(fleet_beside, FLOW, error.to_string());
            ok = false;
        }
    }
    match other {
        Ok(rate) => report.push(
            &beside,
            "another application",
            rate,
            "transactions/s",
            false,
        ),
        Err(error) => report.skip(&beside, "another application", error.to_string()),
    }
    ok
}

/// Settles as [`settle`] does, after vacuuming the outbox: without autovacuum (as on the
/// machine the figures come from) the dead rows of earlier staged rows would slow this one's
/// relay rounds, which walk the outbox's index from its oldest entry.
async fn settle_outbox(options: &Options) -> Result<(), BoxError> {
    use sqlx::Executor;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&options.pg_url)
        .await?;
    pool.execute(sqlx::AssertSqlSafe(format!("VACUUM {PG_SCHEMA}.outbox")))
        .await?;
    pool.close().await;
    settle(options).await
}

/// One fleet run on fresh streams, its sends staged if `staged`; `started` hears when the
/// processes start sending.
async fn fleet_run(
    options: &Options,
    processes: usize,
    load: fleet::Load,
    streams: usize,
    staged: bool,
    started: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<f64, BoxError> {
    let prefix = workload::unique("fleet");
    let names: Vec<String> = (0..streams).map(|i| format!("{prefix}-{i}")).collect();
    let setting = fleet::Setting {
        pg_url: &options.pg_url,
        schema: PG_SCHEMA,
        window: options.fleet_for,
        body_size: options.body,
        staged,
    };
    fleet::flowstream(setting, processes, load, &names, started).await
}

/// Latency of `rate` messages per second sent (staged if `staged`) by `processes` processes
/// to one stream, read by a consumer in this process: `(p50, p99, max)`.
async fn fleet_latency(
    options: &Options,
    pg: &Flowstream,
    processes: usize,
    rate: u64,
    staged: bool,
) -> Result<Option<(Duration, Duration, Duration)>, BoxError> {
    let stream = workload::unique("fleet-latency");
    let per_process = rate / processes as u64;
    let expected = (per_process as f64 * options.latency_for.as_secs_f64()) as usize * processes;
    let receiver = pg
        .receive_latencies(
            &stream,
            flowstream_core::StartFrom::Earliest,
            expected,
            1000,
        )
        .await?;
    let setting = fleet::Setting {
        pg_url: &options.pg_url,
        schema: PG_SCHEMA,
        window: options.latency_for,
        body_size: options.body,
        staged,
    };
    let load = fleet::Load::Paced { rate: per_process };
    fleet::flowstream(
        setting,
        processes,
        load,
        std::slice::from_ref(&stream),
        None,
    )
    .await?;
    Ok(receiver.await??.summary())
}

//! The fleet rows: producers in separate processes (copies of this program), each with a few
//! tasks (often one) sending single messages and awaiting each, as a fleet of small services
//! would; next to a plain one-row `INSERT` per transaction from the same number of clients.
//!
//! Unlike the 64-task row, little is shared between the senders: group commit only within a
//! process, one connection pool per process, so what one transaction costs the server (its
//! commit, its wake-up) is what the rows measure.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstream_core::{NewMessage, Producer};
use flowstream_postgres::PgDriver;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::BoxError;
use crate::workload::{body, paced, stamped_body, unique};

/// How each fleet process sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    /// `tasks` tasks, each sending one message and awaiting it, then the next.
    FlatOut { tasks: usize },
    /// A steady `rate` messages per second from this process, each send its own task (as
    /// independent requests of a service), the bodies stamped for the latency rows.
    Paced { rate: u64 },
}

/// Where and how long a fleet sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setting<'a> {
    pub(crate) pg_url: &'a str,
    pub(crate) schema: &'a str,
    pub(crate) window: Duration,
    pub(crate) body_size: usize,
    /// Each send staged through the outbox (`PgDriver::send_staged`) instead of appended; a
    /// process reports once the outbox is empty, so the rate counts delivered messages.
    pub(crate) staged: bool,
}

/// Messages per second sent by `processes` producer processes during the window, process `p`
/// sending to `streams[p % streams.len()]`. `started` hears when they all start sending.
pub(crate) async fn flowstream(
    setting: Setting<'_>,
    processes: usize,
    load: Load,
    streams: &[String],
    started: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<f64, BoxError> {
    let Setting {
        pg_url,
        schema,
        window,
        body_size,
        staged,
    } = setting;
    let mut children = Vec::with_capacity(processes);
    for p in 0..processes {
        let stream = streams.get(p % streams.len().max(1)).ok_or("no stream")?;
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["--fleet-child", &window.as_millis().to_string()])
            .args(["--stream", stream])
            .args(["--pg-url", pg_url, "--fleet-schema", schema])
            .args(["--body", &body_size.to_string()]);
        match load {
            Load::FlatOut { tasks } => command.args(["--fleet-tasks", &tasks.to_string()]),
            Load::Paced { rate } => command.args(["--fleet-rate", &rate.to_string()]),
        };
        if staged {
            command.arg("--fleet-staged");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or("no stdout from a fleet process")?;
        let mut lines = BufReader::new(stdout).lines();
        // Connected and warmed up: the window starts for everyone at once.
        match lines.next_line().await? {
            Some(line) if line == "ready" => {}
            other => return Err(format!("fleet process said {other:?} instead of ready").into()),
        }
        children.push((child, lines));
    }
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().ok_or("no stdin to a fleet process")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
    }
    let go = Instant::now();
    if let Some(started) = started {
        let _ = started.send(());
    }
    let mut sent = 0u64;
    for (mut child, mut lines) in children {
        let line = lines.next_line().await?.unwrap_or_default();
        let count = line
            .strip_prefix("sent ")
            .ok_or_else(|| format!("fleet process said {line:?} instead of its count"))?;
        sent += count.trim().parse::<u64>()?;
        child.wait().await?;
    }
    // Staged sends count once delivered: until the last process saw the outbox empty.
    let took = if staged {
        go.elapsed().max(window)
    } else {
        window
    };
    Ok(sent as f64 / took.as_secs_f64())
}

/// The child side of [`flowstream`]: connects, warms up (20 sends, unstamped, to another
/// stream when paced), says `ready`,
/// waits for `go`, sends as `load` says for `window`, then prints how many it sent.
pub(crate) async fn child(
    pg_url: &str,
    schema: &str,
    stream: &str,
    load: Load,
    window: Duration,
    body_size: usize,
    staged: bool,
) -> Result<(), BoxError> {
    let driver = PgDriver::builder(pg_url)
        .schema(schema)
        .max_connections(4)
        .application_name("flowstream-bench-fleet")
        .connect()
        .await?;
    let staged = staged.then(|| driver.clone());
    let producer = Producer::new(Arc::new(driver));
    let body = body(body_size);
    // Paced runs feed a latency consumer, which must see only stamped messages.
    let warm_up = match load {
        Load::FlatOut { .. } => stream.to_owned(),
        Load::Paced { .. } => format!("{stream}.warm-up"),
    };
    for _ in 0..20 {
        producer
            .send(NewMessage::new(&warm_up, body.clone()))
            .await?;
    }
    println!("ready");
    tokio::task::spawn_blocking(|| {
        let mut go = String::new();
        std::io::stdin().read_line(&mut go)
    })
    .await??;
    let sent = match load {
        Load::FlatOut { tasks } => {
            flat_out(&producer, staged.clone(), stream, tasks, window, &body).await?
        }
        Load::Paced { rate } => {
            let stream: Arc<str> = stream.into();
            paced(rate, window, || {
                let (producer, stream) = (producer.clone(), Arc::clone(&stream));
                let staged = staged.clone();
                async move {
                    let message = NewMessage::new(&*stream, stamped_body(body_size));
                    send(&producer, staged.as_ref(), message).await?;
                    Ok(())
                }
            })
            .await?
        }
    };
    // The process exits next: what it staged must be relayed and its last wake-ups must
    // leave first, or the latency rows' consumer finds the last messages only at its next poll.
    producer.flush().await?;
    println!("sent {sent}");
    Ok(())
}

/// Sends one message through `producer`, or staged through `staged`'s outbox.
async fn send(
    producer: &Producer,
    staged: Option<&PgDriver>,
    message: NewMessage,
) -> Result<(), flowstream_core::Error> {
    match staged {
        Some(driver) => driver.send_staged(producer.prepare([message]).await?).await,
        None => producer.send(message).await.map(drop),
    }
}

/// Sends single messages from `tasks` tasks during `window`: through `producer`, or staged
/// through `staged`'s outbox.
async fn flat_out(
    producer: &Producer,
    staged: Option<PgDriver>,
    stream: &str,
    tasks: usize,
    window: Duration,
    body: &[u8],
) -> Result<u64, BoxError> {
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (producer, body, stream) = (producer.clone(), body.to_vec(), stream.to_owned());
        let staged = staged.clone();
        senders.spawn(async move {
            let mut sent = 0u64;
            while start.elapsed() < window {
                let message = NewMessage::new(&stream, body.clone());
                send(&producer, staged.as_ref(), message).await?;
                sent += 1;
            }
            Ok::<u64, flowstream_core::Error>(sent)
        });
    }
    let mut sent = 0u64;
    while let Some(done) = senders.join_next().await {
        sent += done??;
    }
    Ok(sent)
}

/// Another application in the same database that notifies in its transactions, as job queues
/// do (River, graphile-worker, Oban): `clients` connections each inserting a job and calling
/// `pg_notify` in one statement, one after the other, with a listener of its own draining the
/// channel. Returns its jobs per second during `window`.
pub(crate) async fn notifying_app(
    pg_url: &str,
    raw_schema: &str,
    clients: usize,
    window: Duration,
) -> Result<f64, BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(clients)?)
        .connect(pg_url)
        .await?;
    let table = format!("{raw_schema}.jobs_{}", unique("t").replace('-', "_"));
    pool.execute(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, payload bytea NOT NULL)"
    )))
    .await?;
    let channel = format!("jobs_{}", unique("c").replace('-', "_"));
    let mut listener = sqlx::postgres::PgListener::connect(pg_url).await?;
    listener.listen(&channel).await?;
    let draining = tokio::spawn(async move { while listener.recv().await.is_ok() {} });
    let enqueue = format!(
        "WITH job AS (INSERT INTO {table} (payload) VALUES ($1) RETURNING id) \
         SELECT pg_notify('{channel}', id::text) FROM job"
    );
    let rate = each_client_in_turn(&pool, clients, window, &enqueue, b"job".to_vec()).await;
    draining.abort();
    pool.close().await;
    rate
}

/// Runs `statement` with `value` bound, one call after another on each of `clients`
/// connections of `pool`, during `window`; returns calls per second.
async fn each_client_in_turn(
    pool: &sqlx::PgPool,
    clients: usize,
    window: Duration,
    statement: &str,
    value: Vec<u8>,
) -> Result<f64, BoxError> {
    let statement: Arc<str> = statement.into();
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..clients {
        let (pool, statement, value) = (pool.clone(), Arc::clone(&statement), value.clone());
        tasks.spawn(async move {
            let mut conn = pool.acquire().await?;
            let mut done = 0u64;
            while start.elapsed() < window {
                sqlx::query(AssertSqlSafe(Arc::clone(&statement)))
                    .bind(&value)
                    .execute(&mut *conn)
                    .await?;
                done += 1;
            }
            Ok::<u64, sqlx::Error>(done)
        });
    }
    let mut total = 0u64;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Rows per second inserted by `clients` connections, each running a one-row `INSERT` in its
/// own transaction, one after the other, during `window`: the server's ceiling for what the
/// fleet row does, without offsets or notifications.
pub(crate) async fn raw_insert(
    pg_url: &str,
    raw_schema: &str,
    clients: usize,
    window: Duration,
    body_size: usize,
) -> Result<f64, BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(clients)?)
        .connect(pg_url)
        .await?;
    let table = format!("{raw_schema}.fleet_{}", unique("t").replace('-', "_"));
    pool.execute(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, body bytea NOT NULL, \
         produced_at timestamptz NOT NULL DEFAULT now())"
    )))
    .await?;
    let insert = format!("INSERT INTO {table} (body) VALUES ($1)");
    let rate = each_client_in_turn(&pool, clients, window, &insert, body(body_size)).await;
    pool.close().await;
    rate
}

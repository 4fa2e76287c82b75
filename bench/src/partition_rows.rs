//! The partition rows: keyed produce next to the unkeyed rows; an 8-partition stream consumed
//! by one group of 1, 2 and 4 member processes; and a member killed under load: how long its
//! partitions wait before another member consumes them, and how many messages that rebalance
//! delivered twice.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstream_core::{Admin, Consumer, Driver, GroupState, NewMessage};
use flowstream_postgres::PgDriver;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use crate::flow::Flowstream;
use crate::options::Options;
use crate::report::Report;
use crate::workload::{Sizes, body, chunks, singles, unique};
use crate::{BoxError, PG_SCHEMA};

/// Partitions of every stream here.
pub(crate) const PARTITIONS: u32 = 8;
/// The members' `takeover_after` in the kill row.
const TAKEOVER: Duration = Duration::from_secs(1);
const GROUP: &str = "bench";

/// A key per message, 1,000 distinct ones: the routing work a keyed producer does.
fn key(i: usize) -> String {
    format!("customer-{}", i % 1_000)
}

/// Keyed produce, batches of 1,000 and `tasks` tasks × single sends, to a fresh stream of
/// [`PARTITIONS`] partitions. Returns false if a figure failed.
pub(crate) async fn produce_rows(
    flow: &Flowstream,
    options: &Options,
    sizes: &Sizes,
    report: &mut Report,
) -> bool {
    let mut ok = true;
    let scenario = format!("produce, batches of 1,000, keyed, {PARTITIONS} partitions");
    println!("{scenario}");
    let _ = crate::settle(options).await;
    let batches = async {
        let stream = partitioned(flow.driver(), "keyed-batches").await?;
        let body = body(sizes.body);
        let start = Instant::now();
        let mut sent = 0;
        for (_, n) in chunks(sizes.produce, 1_000) {
            let batch =
                (0..n).map(|i| NewMessage::new(&stream, body.clone()).with_key(key(sent + i)));
            flow.producer().send_batch(batch).await?;
            sent += n;
        }
        Ok::<_, BoxError>(start.elapsed())
    }
    .await;
    ok &= record(report, &scenario, flow, sizes.produce, batches);

    let scenario = format!(
        "produce, {} tasks × single sends, keyed, {PARTITIONS} partitions",
        options.tasks
    );
    println!("{scenario}");
    let _ = crate::settle(options).await;
    let single = async {
        let stream: Arc<str> = partitioned(flow.driver(), "keyed-singles").await?.into();
        let body = body(sizes.body);
        let producer = flow.producer().clone();
        let start = Instant::now();
        singles(options.tasks, sizes.singles, move |i| {
            let (producer, stream, body) = (producer.clone(), Arc::clone(&stream), body.clone());
            async move {
                producer
                    .send(NewMessage::new(&*stream, body).with_key(key(i)))
                    .await?;
                Ok(())
            }
        })
        .await?;
        Ok::<_, BoxError>(start.elapsed())
    }
    .await;
    ok &= record(report, &scenario, flow, sizes.singles, single);
    ok
}

/// `--partitions-only`: the unkeyed produce rows these compare with, the keyed ones, and the
/// member rows. Returns false if a figure failed.
pub(crate) async fn only(
    flows: &[(crate::options::Backend, Flowstream)],
    options: &Options,
    sizes: &Sizes,
    report: &mut Report,
) -> bool {
    use crate::system::System;
    let mut ok = true;
    for (backend, flow) in flows {
        // Untimed warm-up, as in the full run.
        let warm_up = Sizes {
            produce: 2_000,
            ..sizes.clone()
        };
        let _ = flow.produce_batches(100, &warm_up).await;
        let scenario = "produce, batches of 1,000";
        let _ = crate::settle(options).await;
        let batches = flow.produce_batches(1_000, sizes).await;
        ok &= record(report, scenario, flow, sizes.produce, flatten(batches));
        let scenario = format!("produce, {} tasks × single sends", options.tasks);
        let _ = crate::settle(options).await;
        let single = flow.produce_singles(options.tasks, sizes).await;
        ok &= record(report, &scenario, flow, sizes.singles, flatten(single));
        ok &= produce_rows(flow, options, sizes, report).await;
        if *backend == crate::options::Backend::Postgres {
            ok &= member_rows(flow, options, report).await;
        }
    }
    ok
}

fn flatten(result: Result<Option<Duration>, BoxError>) -> Result<Duration, BoxError> {
    result?.ok_or_else(|| "not measured".into())
}

fn record(
    report: &mut Report,
    scenario: &str,
    flow: &Flowstream,
    count: usize,
    result: Result<Duration, BoxError>,
) -> bool {
    use crate::system::System;
    match result {
        Ok(elapsed) => {
            report.rate(scenario, &flow.name(), count as f64 / elapsed.as_secs_f64());
            true
        }
        Err(error) => {
            report.skip(scenario, &flow.name(), error.to_string());
            false
        }
    }
}

async fn partitioned(driver: &Arc<dyn Driver>, prefix: &str) -> Result<String, BoxError> {
    let stream = unique(prefix);
    Admin::new(Arc::clone(driver))
        .create_stream(&stream, PARTITIONS)
        .await?;
    Ok(stream)
}

/// PostgreSQL: an 8-partition stream of `messages` keyed messages consumed by one group of
/// 1, 2 and 4 member processes (copies of this program), all joined and settled before the
/// first message is taken. Aggregate msg/s from the first delivery to the last, and the
/// messages delivered more than once. Then the kill row. Returns false if a figure failed.
pub(crate) async fn member_rows(flow: &Flowstream, options: &Options, report: &mut Report) -> bool {
    let mut ok = true;
    let messages = if options.smoke { 2_000 } else { 200_000 };
    let scenario = format!(
        "consume {}, {PARTITIONS} partitions, one group of member processes",
        crate::report::group_digits(messages as f64)
    );
    println!("{scenario}");
    for members in [1, 2, 4] {
        let _ = crate::settle(options).await;
        let name = if members == 1 {
            "postgres, 1 member process".to_owned()
        } else {
            format!("postgres, {members} member processes")
        };
        match consume_by_members(flow, options, members, messages).await {
            Ok((rate, duplicates)) => {
                report.rate(&scenario, &name, rate);
                report.push(
                    &scenario,
                    &format!("duplicates: {name}"),
                    duplicates as f64,
                    "messages",
                    true,
                );
            }
            Err(error) => {
                report.skip(&scenario, &name, error.to_string());
                ok = false;
            }
        }
    }
    let scenario = format!(
        "a member of 2 killed (SIGKILL), {PARTITIONS} partitions, 2,000 msg/s, takeover_after 1 s"
    );
    println!("{scenario}");
    let _ = crate::settle(options).await;
    match kill_a_member(flow, options).await {
        Ok((waited, duplicates)) => {
            report.push(
                &scenario,
                "its partitions consumed again after",
                waited.as_secs_f64() * 1_000.0,
                "ms",
                true,
            );
            report.push(
                &scenario,
                "messages delivered twice by the rebalance",
                duplicates as f64,
                "messages",
                true,
            );
        }
        Err(error) => {
            report.skip(&scenario, "flowstream (postgres)", error.to_string());
            ok = false;
        }
    }
    ok
}

/// A member process and its output, read as it comes (each line with when it was read), so
/// that a line's time is when the process printed it, give or take the pipe.
struct Member {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
}

impl Member {
    fn spawn(options: &Options, stream: &str, expected: usize) -> Result<Member, BoxError> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--member-child", stream])
            .args(["--member-expects", &expected.to_string()])
            .args(["--pg-url", &options.pg_url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or("no stdout from a member process")?;
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Ok(Member { child, lines })
    }

    async fn timed_line(&mut self) -> Result<(Instant, String), BoxError> {
        Ok(self
            .lines
            .recv()
            .await
            .ok_or("a member process ended early")?)
    }

    async fn line(&mut self) -> Result<String, BoxError> {
        Ok(self.timed_line().await?.1)
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    async fn until(&mut self, prefix: &str) -> Result<String, BoxError> {
        loop {
            let line = self.line().await?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.to_owned());
            }
        }
    }

    async fn say(&mut self, line: &str) -> Result<(), BoxError> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or("no stdin to a member process")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }
}

async fn consume_by_members(
    flow: &Flowstream,
    options: &Options,
    members: usize,
    messages: usize,
) -> Result<(f64, usize), BoxError> {
    let stream = partitioned(flow.driver(), "members").await?;
    let body = body(options.body);
    let mut sent = 0;
    for (_, n) in chunks(messages, 1_000) {
        let batch = (0..n).map(|i| NewMessage::new(&stream, body.clone()).with_key(key(sent + i)));
        flow.producer().send_batch(batch).await?;
        sent += n;
    }
    let mut children = Vec::with_capacity(members);
    for _ in 0..members {
        children.push(Member::spawn(options, &stream, messages)?);
    }
    // Everyone owns its share before anyone consumes: the row measures consuming, not the
    // start-up rebalances.
    let share = PARTITIONS as usize / members;
    for child in &mut children {
        loop {
            let owned = child.until("owns ").await?;
            if owned
                .split(',')
                .filter(|p| !p.is_empty() && *p != "-")
                .count()
                == share
            {
                break;
            }
        }
    }
    for child in &mut children {
        child.say("go").await?;
    }
    let (mut first, mut last, mut delivered) = (u128::MAX, 0u128, 0usize);
    for child in &mut children {
        let done = child.until("done ").await?;
        let numbers: Vec<u128> = done.split(' ').map(str::parse).collect::<Result<_, _>>()?;
        let [count, from, to] = numbers[..] else {
            return Err(format!("a member said {done:?}").into());
        };
        if count > 0 {
            first = first.min(from);
            last = last.max(to);
        }
        delivered += usize::try_from(count)?;
    }
    for mut child in children {
        child.say("stop").await?;
        child.child.wait().await?;
    }
    let elapsed = Duration::from_nanos(u64::try_from(last.saturating_sub(first))?);
    Ok((
        messages as f64 / elapsed.as_secs_f64(),
        delivered.saturating_sub(messages),
    ))
}

/// Two members consume a stream fed at 2,000 msg/s; one is killed. How long until the other
/// delivers a message of a partition the dead one owned, and how many of the dead member's
/// deliveries it delivered again.
async fn kill_a_member(
    flow: &Flowstream,
    options: &Options,
) -> Result<(Duration, usize), BoxError> {
    let stream = partitioned(flow.driver(), "kill").await?;
    let feeding = feed(Arc::clone(flow.driver()), stream.clone(), 2_000);
    let mut victim = Member::spawn(options, &stream, 0)?;
    let mut survivor = Member::spawn(options, &stream, 0)?;
    for member in [&mut victim, &mut survivor] {
        member.say("go").await?;
    }
    // Settled: each owns its half, and the victim has been delivering for a while.
    let mut victims = BTreeSet::new();
    let mut victim_delivered: BTreeSet<(u32, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while victim_delivered.len() < 2_000 || victims.len() != PARTITIONS as usize / 2 {
        if Instant::now() > deadline {
            return Err("the victim never settled".into());
        }
        let line = victim.line().await?;
        if let Some(owned) = line.strip_prefix("owns ") {
            victims = owned.split(',').filter_map(|p| p.parse().ok()).collect();
        } else if let Some(position) = parse_delivered(&line) {
            victim_delivered.insert(position);
        }
    }
    victim.child.start_kill()?;
    let killed = Instant::now();
    victim.child.wait().await?;
    // Whatever it printed before it died counts as delivered by it.
    while let Some((_, line)) = victim.lines.recv().await {
        if let Some(position) = parse_delivered(&line) {
            victim_delivered.insert(position);
        }
    }
    let mut waited = None;
    let mut again = 0;
    let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if Instant::now() > deadline {
            return Err("the survivor never consumed the dead member's partitions".into());
        }
        let (at, line) = survivor.timed_line().await?;
        let Some((partition, offset)) = parse_delivered(&line) else {
            continue;
        };
        // Before the kill it may have held these partitions itself (before the other was
        // admitted): only what it delivers after the kill counts.
        if !victims.contains(&partition) || at < killed {
            continue;
        }
        waited.get_or_insert_with(|| at.duration_since(killed));
        again += usize::from(victim_delivered.contains(&(partition, offset)));
        seen.insert(partition, offset);
        // Past the dead member's last deliveries on every one of its partitions: done.
        let caught_up = victims.iter().all(|p| {
            let top = victim_delivered
                .iter()
                .filter(|(q, _)| q == p)
                .map(|(_, o)| *o)
                .max()
                .unwrap_or(0);
            seen.get(p).is_some_and(|o| *o > top)
        });
        if caught_up {
            break;
        }
    }
    feeding.abort();
    survivor.say("stop").await?;
    survivor.child.wait().await?;
    Ok((waited.unwrap_or_default(), again))
}

fn parse_delivered(line: &str) -> Option<(u32, u64)> {
    let rest = line.strip_prefix("delivered ")?;
    let (partition, offset) = rest.split_once(' ')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

/// Sends keyed messages to `stream` at `rate` per second until aborted.
fn feed(driver: Arc<dyn Driver>, stream: String, rate: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = flowstream_core::Producer::new(driver);
        let body = body(100);
        let every = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
        let mut tick = tokio::time::interval(every);
        for i in 0.. {
            tick.tick().await;
            let message = NewMessage::new(&stream, body.clone()).with_key(key(i));
            if producer.send(message).await.is_err() {
                return;
            }
        }
    })
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The child side of the member rows. Joins the group, says `owns …` whenever what it owns
/// changes, waits for `go`, then consumes, committing in the background every 1,000 messages
/// and at the head. With `expected` > 0 it stops once the group has committed that many
/// messages over all partitions and says `done COUNT FIRST_NS LAST_NS`; with 0 it says
/// `delivered PARTITION OFFSET` for each message, until told `stop`.
pub(crate) async fn member_child(
    pg_url: &str,
    stream: &str,
    expected: usize,
) -> Result<(), BoxError> {
    let driver: Arc<dyn Driver> = Arc::new(
        PgDriver::builder(pg_url)
            .schema(PG_SCHEMA)
            .max_connections(4)
            .application_name("flowstream-bench-member")
            .connect()
            .await?,
    );
    let mut consumer = Consumer::builder(Arc::clone(&driver), stream, GROUP)
        .takeover_after(TAKEOVER)
        .heartbeat_every(TAKEOVER / 3)
        .batch_size(1_000)
        .build()
        .await?;
    let (commands, mut heard) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if commands.send(line).is_err() {
                break;
            }
        }
        // The parent is gone: so are we.
        std::process::exit(0);
    });
    let mut owned = Vec::new();
    let mut say_owned = |consumer: &Consumer| {
        if consumer.assignment() != owned {
            owned = consumer.assignment();
            let list: Vec<String> = owned.iter().map(u32::to_string).collect();
            println!(
                "owns {}",
                if list.is_empty() {
                    "-".to_owned()
                } else {
                    list.join(",")
                }
            );
        }
    };
    say_owned(&consumer);
    loop {
        tokio::select! {
            line = heard.recv() => if line.as_deref() == Some("go") { break },
            _ = consumer.wait(Duration::from_millis(20)) => say_owned(&consumer),
        }
    }
    let (mut count, mut first, mut last) = (0usize, 0u128, 0u128);
    let mut uncommitted = 0;
    let mut last_of: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        if let Ok(line) = heard.try_recv()
            && line == "stop"
        {
            break;
        }
        say_owned(&consumer);
        match consumer.next().await? {
            Some(message) => {
                let now = now_nanos();
                if count == 0 {
                    first = now;
                }
                last = now;
                count += 1;
                if expected == 0 {
                    println!("delivered {} {}", message.partition(), message.offset());
                }
                uncommitted += 1;
                if uncommitted >= 1_000 {
                    consumer.commit_in_background(&message).await?;
                    uncommitted = 0;
                }
                // The last message of each partition is committed at the head, below.
                last_of.insert(message.partition(), message.offset());
            }
            None => {
                for (partition, offset) in std::mem::take(&mut last_of) {
                    match consumer
                        .commit(flowstream_core::Position::new(partition, offset))
                        .await
                    {
                        Ok(()) | Err(flowstream_core::Error::Fenced { .. }) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                uncommitted = 0;
                if expected > 0 && committed_everywhere(&driver, stream).await? >= expected {
                    break;
                }
                consumer.wait(Duration::from_millis(50)).await?;
            }
        }
    }
    if expected > 0 {
        println!("done {count} {first} {last}");
        // Stay in the group until told to stop, so nobody rebalances under the others.
        while let Some(line) = heard.recv().await {
            if line == "stop" {
                break;
            }
        }
    }
    consumer.shutdown().await?;
    Ok(())
}

/// Messages the group has committed over all partitions.
async fn committed_everywhere(driver: &Arc<dyn Driver>, stream: &str) -> Result<usize, BoxError> {
    let mut total = 0;
    for partition in 0..PARTITIONS {
        if let Some(state) =
            GroupState::load_partition(driver.as_ref(), stream, GROUP, partition).await?
        {
            total += usize::try_from(state.committed)?;
        }
    }
    Ok(total)
}

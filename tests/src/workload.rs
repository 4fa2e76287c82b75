//! Multi-process fault workloads on PostgreSQL: consumer processes (`pg-consumer`) in one
//! group, a producer in the test process, and the history they leave behind.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstream_core::driver::{Record, Revision};
use flowstream_core::{
    Admin, Driver, GroupState, NewMessage, Producer, dead_letter_headers, dead_letter_stream,
    partition_for_key,
};
use flowstream_postgres::PgDriver;
use sqlx::{AssertSqlSafe, Row};
use tokio::time::Instant;

use crate::history::{Ack, Commit, Delivery, GroupWrite, History, Outcome};

/// One line of the consumer process's output (see the `pg-consumer` program), parsed once
/// here for every test that follows such a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `standby`: joined as a standby.
    Standby,
    /// `active after C gen G`: joined or took over, resuming after committed offset C.
    Active {
        /// The committed offset it resumes after.
        after: u64,
        /// The generation of its claim.
        generation: u64,
    },
    /// `owns P,Q,…` (`owns -`: none): the partitions it owns now, on a partitioned stream.
    Owns(Vec<u32>),
    /// `delivered G N P`: `next()` returned offset N of partition P under generation G.
    Delivered {
        /// The generation it was delivered under.
        generation: u64,
        /// The offset.
        offset: u64,
        /// The partition (0 on an unpartitioned stream).
        partition: u32,
    },
    /// `commit G N P accepted|fenced|failed`.
    Commit {
        /// The generation it was delivered under.
        generation: u64,
        /// The offset committed.
        offset: u64,
        /// The partition.
        partition: u32,
        /// What the commit returned.
        outcome: Outcome,
    },
}

impl Event {
    /// Parses a line; `None` for anything else (a log line, say).
    pub fn parse(line: &str) -> Option<Event> {
        let words: Vec<&str> = line.split(' ').collect();
        let number = |word: &str| word.parse::<u64>().ok();
        match words.as_slice() {
            ["standby"] => Some(Event::Standby),
            ["active", "after", after, "gen", generation] => Some(Event::Active {
                after: number(after)?,
                generation: number(generation)?,
            }),
            ["owns", "-"] => Some(Event::Owns(Vec::new())),
            ["owns", list] => Some(Event::Owns(
                list.split(',')
                    .map(|p| p.parse().ok())
                    .collect::<Option<Vec<u32>>>()?,
            )),
            ["delivered", generation, offset, partition] => Some(Event::Delivered {
                generation: number(generation)?,
                offset: number(offset)?,
                partition: partition.parse().ok()?,
            }),
            ["commit", generation, offset, partition, outcome] => Some(Event::Commit {
                generation: number(generation)?,
                offset: number(offset)?,
                partition: partition.parse().ok()?,
                outcome: match *outcome {
                    "accepted" => Outcome::Accepted,
                    "fenced" => Outcome::Fenced,
                    _ => Outcome::Failed,
                },
            }),
            _ => None,
        }
    }
}
use crate::postgres::DATABASE;

/// The stream and group every workload uses.
pub const STREAM: &str = "jobs";
/// The group.
pub const GROUP: &str = "workers";

/// Records every write of the `records` table in revision order, so the history holds what
/// the store accepted, whichever process wrote it.
///
/// # Cancel safety
///
/// Dropping the future may leave the audit table without its trigger; the test then fails.
pub async fn install_audit(driver: &PgDriver) {
    let s = driver.schema();
    for statement in [
        format!(
            "CREATE TABLE {s}.audit (key text NOT NULL, revision bigint NOT NULL, value jsonb NOT NULL)"
        ),
        format!(
            "CREATE FUNCTION {s}.audit_records() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO {s}.audit VALUES (NEW.key, NEW.revision, NEW.value); RETURN NEW; END $$"
        ),
        format!(
            "CREATE TRIGGER audit AFTER INSERT OR UPDATE ON {s}.records \
             FOR EACH ROW EXECUTE FUNCTION {s}.audit_records()"
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(driver.pool())
            .await
            .expect("install the audit trigger");
    }
}

/// One consumer process and everything it printed so far.
#[derive(Debug)]
pub struct Process {
    /// Its label in the history.
    pub label: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Its output lines, in order.
    pub events: Vec<String>,
    /// False once killed.
    pub alive: bool,
}

impl Process {
    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, …) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// `kill -9`, then collects everything it printed before dying.
    pub fn kill(&mut self) {
        if !self.alive {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
        // The reader thread ends when the pipe closes: this drains to the very end.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.events.push(line);
        }
    }

    fn pump(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.events.push(line);
        }
    }

    /// Its events so far, parsed.
    pub fn parsed(&self) -> impl DoubleEndedIterator<Item = Event> + '_ {
        self.events.iter().filter_map(|line| Event::parse(line))
    }

    /// Whether its latest role line says it is active.
    pub fn is_active(&self) -> bool {
        self.parsed()
            .rev()
            .find(|e| matches!(e, Event::Active { .. } | Event::Standby))
            .is_some_and(|e| matches!(e, Event::Active { .. }))
    }

    /// Deliveries since it last became active.
    pub fn deliveries_since_active(&self) -> usize {
        self.parsed()
            .rev()
            .take_while(|e| !matches!(e, Event::Active { .. }))
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A failing test must not leave consumers running (stopped ones included).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Consumer processes in one group of one schema, and the producer's acknowledgements.
#[derive(Debug)]
pub struct Workload {
    /// The test schema.
    pub schema: String,
    /// A driver on it (for producing and reading back).
    pub driver: Arc<dyn Driver>,
    program: String,
    takeover_ms: u64,
    process_ms: u64,
    /// The stream's partitions (1: unpartitioned).
    pub partitions: u32,
    /// Every consumer process started, dead or alive.
    pub processes: Vec<Process>,
    /// Acknowledged sends.
    pub acks: Arc<Mutex<Vec<Ack>>>,
    /// Environment variables every process started from now on gets (see `pg-consumer`).
    pub env: Vec<(String, String)>,
}

impl Workload {
    /// Connects, migrates the schema and installs the audit trigger. `program` is the path
    /// of the `pg-consumer` test binary.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops what it connected.
    pub async fn new(program: &str, schema: &str, takeover_ms: u64, process_ms: u64) -> Self {
        let pg = crate::postgres::builder(schema)
            .connect()
            .await
            .expect("connect");
        install_audit(&pg).await;
        Workload {
            schema: schema.to_owned(),
            driver: Arc::new(pg),
            program: program.to_owned(),
            takeover_ms,
            process_ms,
            partitions: 1,
            processes: Vec::new(),
            acks: Arc::default(),
            env: Vec::new(),
        }
    }

    /// As [`Workload::new`], on a stream created with `partitions` partitions: the processes
    /// are members of a group over them, and the producer keys every message.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops what it connected.
    pub async fn partitioned(
        program: &str,
        schema: &str,
        takeover_ms: u64,
        partitions: u32,
    ) -> Self {
        let mut workload = Self::new(program, schema, takeover_ms, 0).await;
        Admin::new(workload.driver.clone())
            .create_stream(STREAM, partitions)
            .await
            .expect("create the stream");
        workload.partitions = partitions;
        workload
    }

    /// Starts one more consumer process; returns its index.
    pub fn spawn(&mut self) -> usize {
        self.spawn_processing(self.process_ms)
    }

    /// Starts one more consumer process that takes `process_ms` over each message.
    pub fn spawn_processing(&mut self, process_ms: u64) -> usize {
        let label = format!("p{}", self.processes.len());
        let mut child = Command::new(&self.program)
            .args([
                DATABASE.url(),
                self.schema.clone(),
                STREAM.to_owned(),
                GROUP.to_owned(),
                self.takeover_ms.to_string(),
                process_ms.to_string(),
            ])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // The child exits when this pipe closes: it cannot outlive the test binary.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a consumer process");
        let lines = follow(&mut child);
        self.processes.push(Process {
            label,
            child,
            lines,
            events: Vec::new(),
            alive: true,
        });
        self.processes.len() - 1
    }

    /// Collects new output, then checks `condition`, until it holds; panics after `bound`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only looks.
    pub async fn wait_until(
        &mut self,
        what: &str,
        bound: Duration,
        mut condition: impl FnMut(&Workload) -> bool,
    ) {
        let deadline = Instant::now() + bound;
        loop {
            for process in &mut self.processes {
                process.pump();
            }
            if condition(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {bound:?} waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Collects new output, and notes the processes that exited on their own since the last
    /// look; returns how many did.
    pub fn reap(&mut self) -> usize {
        let mut exited = 0;
        for process in &mut self.processes {
            process.pump();
            if process.alive && process.child.try_wait().ok().flatten().is_some() {
                // Already gone: this only collects the rest of its output.
                process.kill();
                exited += 1;
            }
        }
        exited
    }

    /// Waits until some live process has reported itself active; returns it.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only looks.
    pub async fn active(&mut self) -> usize {
        self.wait_until("a process is active", crate::BOUND, |w| {
            w.processes.iter().any(|p| p.alive && p.is_active())
        })
        .await;
        self.processes
            .iter()
            .position(|p| p.alive && p.is_active())
            .unwrap_or_default()
    }

    /// Sends `count` messages, one every `every`, recording each acknowledgement.
    pub fn produce(&self, count: usize, every: Duration) -> tokio::task::JoinHandle<()> {
        produce_to(
            self.driver.clone(),
            count,
            every,
            Arc::clone(&self.acks),
            self.partitions,
        )
    }

    /// Whether every acknowledged message was delivered by some process.
    pub fn all_acked_delivered(&self) -> bool {
        let delivered: BTreeSet<(u32, u64)> = self
            .processes
            .iter()
            .flat_map(Process::parsed)
            .filter_map(|e| match e {
                Event::Delivered {
                    offset, partition, ..
                } => Some((partition, offset)),
                _ => None,
            })
            .collect();
        let acks = self.acks.lock().expect("acks");
        acks.iter()
            .all(|ack| delivered.contains(&(log_partition(&ack.stream), ack.offset)))
    }

    /// The highest acknowledged offset so far.
    pub fn last_ack(&self) -> u64 {
        self.acks
            .lock()
            .expect("acks")
            .iter()
            .map(|a| a.offset)
            .max()
            .unwrap_or(0)
    }

    /// Whether some process delivered offset `offset` (of partition 0).
    pub fn delivered(&self, offset: u64) -> bool {
        self.processes.iter().any(|p| {
            p.parsed().any(
                |e| matches!(e, Event::Delivered { offset: o, partition: 0, .. } if o == offset),
            )
        })
    }

    /// Kills every process and assembles the history: their events, the audit of group
    /// writes, the stored stream and the acknowledgements.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the processes killed and the history unassembled.
    pub async fn finish(mut self) -> History {
        for process in &mut self.processes {
            process.kill();
        }
        // Each partition is checked as a log of its own with its own group record: the
        // guarantees hold per partition. Its group and each process's claims on it get a
        // label of their own, since generations count per partition.
        let mut history = History::default();
        for partition in 0..self.partitions {
            let log = log_of(partition);
            history.groups.insert(log.clone(), vec![group_label(&log)]);
            let stored = read_stream(self.driver.as_ref(), &log).await;
            history.stored.insert(log, stored);
        }
        history.acks = self.acks.lock().expect("acks").clone();
        let dead_letters = self
            .driver
            .read(&dead_letter_stream(STREAM, GROUP), 0, 100_000)
            .await
            .expect("read the dead letters");
        for copy in dead_letters {
            let header = |name: &str| {
                copy.headers()
                    .get(name)
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("a dead letter says where it came from")
            };
            let partition =
                u32::try_from(header(dead_letter_headers::PARTITION)).expect("a partition number");
            history
                .dead_letters
                .entry(group_label(&log_of(partition)))
                .or_default()
                .push(header(dead_letter_headers::OFFSET));
        }
        for process in &self.processes {
            let consumer = |partition: u32| {
                if partition == 0 {
                    process.label.clone()
                } else {
                    format!("{}@{partition}", process.label)
                }
            };
            for event in process.parsed() {
                match event {
                    Event::Delivered {
                        generation,
                        offset,
                        partition,
                    } => history.deliveries.push(Delivery {
                        consumer: consumer(partition),
                        group: group_label(&log_of(partition)),
                        generation,
                        offset,
                    }),
                    Event::Commit {
                        generation,
                        offset,
                        partition,
                        outcome,
                    } => history.commits.push(Commit {
                        consumer: consumer(partition),
                        group: group_label(&log_of(partition)),
                        generation,
                        offset,
                        outcome,
                    }),
                    Event::Standby | Event::Active { .. } | Event::Owns(_) => {}
                }
            }
        }
        let pg = crate::postgres::builder(&self.schema)
            .connect()
            .await
            .expect("connect");
        history.writes = read_audit(&pg).await;
        history
    }
}

/// Rounds of a fault test: a few in CI, many with `FLOWSTREAM_SOAK=1`.
pub fn rounds(ci: usize, soak: usize) -> usize {
    if std::env::var("FLOWSTREAM_SOAK").is_ok_and(|v| !v.is_empty() && v != "0") {
        soak
    } else {
        ci
    }
}

/// Sends `count` messages to [`STREAM`], one every `every`, recording each acknowledgement.
/// A send that fails with a retryable error is retried as a new message (it may or may not
/// have been stored; only acknowledged sends are promised).
pub fn produce_acked(
    driver: Arc<dyn Driver>,
    count: usize,
    every: Duration,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> tokio::task::JoinHandle<()> {
    produce_to(driver, count, every, acks, 1)
}

/// The log of a partition of [`STREAM`].
fn log_of(partition: u32) -> String {
    if partition == 0 {
        STREAM.to_owned()
    } else {
        format!("{STREAM}/{partition}")
    }
}

/// The partition a log of [`STREAM`] holds.
fn log_partition(log: &str) -> u32 {
    log.rsplit_once('/')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}

/// The history's name for the group's record of one log: [`GROUP`] for the stream's own log.
fn group_label(log: &str) -> String {
    if log == STREAM {
        GROUP.to_owned()
    } else {
        format!("{GROUP}@{log}")
    }
}

/// [`produce_acked`] to a stream of `partitions` partitions: each message keyed by its
/// payload, its acknowledgement recorded against its partition's log.
fn produce_to(
    driver: Arc<dyn Driver>,
    count: usize,
    every: Duration,
    acks: Arc<Mutex<Vec<Ack>>>,
    partitions: u32,
) -> tokio::task::JoinHandle<()> {
    let producer = Producer::new(driver);
    tokio::spawn(async move {
        let mut sent = 0;
        let mut attempt = 0;
        while sent < count {
            attempt += 1;
            let payload = format!("m{sent}-a{attempt}");
            let mut message = NewMessage::new(STREAM, payload.clone());
            let mut log = STREAM.to_owned();
            if partitions > 1 {
                message = message.with_key(payload.clone());
                log = log_of(partition_for_key(payload.as_bytes(), partitions));
            }
            match producer.send(message).await {
                Ok(offset) => {
                    acks.lock().expect("acks").push(Ack {
                        stream: log,
                        offset,
                        payload,
                    });
                    sent += 1;
                }
                Err(error) => assert!(error.is_retryable(), "send failed: {error}"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Every group-state write the audit trigger recorded, in revision order.
///
/// # Cancel safety
///
/// Cancel-safe: it only reads.
pub async fn read_audit(pg: &PgDriver) -> Vec<GroupWrite> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT key, revision, value FROM {}.audit ORDER BY revision",
        pg.schema()
    )))
    .fetch_all(pg.pool())
    .await
    .expect("read the audit");
    rows.into_iter()
        .filter_map(|row| {
            let key: String = row.get("key");
            // Group records are `group/<log>/<group>`; the roster and stream records are not
            // group states.
            let log = key
                .strip_prefix("group/")?
                .strip_suffix(&format!("/{GROUP}"))?;
            let revision: i64 = row.get("revision");
            let record = Record {
                value: row.get("value"),
                revision: Revision(u64::try_from(revision).expect("revision")),
            };
            let written = GroupState::from_record("audit", record).expect("a group state");
            Some(GroupWrite {
                group: group_label(log),
                revision: written.revision,
                owner: written.owner,
                generation: written.generation,
                active: written.active,
                committed: written.committed,
            })
        })
        .collect()
}

/// A whole stream as stored: (offset, body).
///
/// # Cancel safety
///
/// Cancel-safe: it only reads.
pub async fn read_stream(driver: &dyn Driver, stream: &str) -> Vec<(u64, String)> {
    let mut stored: Vec<(u64, String)> = Vec::new();
    loop {
        let after = stored.last().map(|(offset, _)| *offset).unwrap_or(0);
        let batch = driver.read(stream, after, 1_000).await.expect("read back");
        if batch.is_empty() {
            return stored;
        }
        stored.extend(
            batch
                .iter()
                .map(|m| (m.offset(), m.body_str().unwrap_or_default().to_owned())),
        );
    }
}

/// Follows a child process's output, line by line, on a channel that disconnects at its end.
pub fn follow(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

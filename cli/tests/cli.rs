//! The `flowstream` binary end to end, against a redb file and against PostgreSQL (the test
//! database the project's other tests use): what it prints, what it stores, and the exit
//! codes and messages of the mistakes people make.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::Duration;

use flowstream_tests::postgres::{DATABASE, drop_schema, unique_schema};
use libtest_mimic::{Arguments, Trial};
use serde_json::Value;

/// Runs `flowstream --store STORE ARGS…` with `input` on standard input.
fn flowstream(store: &Store, args: &[&str], input: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowstream"));
    command.arg("--store").arg(&store.location);
    if let Some(schema) = &store.schema {
        command.arg("--schema").arg(schema);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowstream");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("flowstream finishes")
}

struct Store {
    location: String,
    schema: Option<String>,
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed; returns its standard output.
fn ok(store: &Store, args: &[&str], input: &[u8]) -> String {
    let output = flowstream(store, args, input);
    assert!(
        output.status.success(),
        "flowstream {args:?} failed ({:?}): {}",
        output.status.code(),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs a command that must fail with `code`; returns its standard error.
fn fails(store: &Store, args: &[&str], input: &[u8], code: i32) -> String {
    let output = flowstream(store, args, input);
    assert_eq!(
        output.status.code(),
        Some(code),
        "flowstream {args:?}: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The lag of `group` on `stream`, from `groups --json`.
fn lag(store: &Store, stream: &str, group: &str) -> u64 {
    let groups = json(&ok(store, &["groups", stream, "--json"], b""));
    groups
        .as_array()
        .expect("a list")
        .iter()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("group {group} listed in {groups}"))["lag"]
        .as_u64()
        .expect("lag")
}

/// Produce 10,000 lines; `groups` shows the lag; `tail --group` drains it to 0; `reset` and
/// `trim` do what they say; `streams` shows the result.
fn the_tour(store: &Store) {
    let lines: String = (1..=10_000).map(|i| format!("line {i}\n")).collect();
    let produced = ok(store, &["produce", "orders"], lines.as_bytes());
    assert_eq!(
        produced.trim(),
        "stored 10000 messages in orders: offsets 1-10000"
    );

    let reset = ok(
        store,
        &["reset", "orders", "billing", "--to", "earliest"],
        b"",
    );
    assert!(reset.contains("committed 0, next message 1"), "{reset}");
    assert_eq!(lag(store, "orders", "billing"), 10_000);
    let table = ok(store, &["groups", "orders"], b"");
    assert!(table.starts_with("GROUP"), "{table}");
    assert!(table.contains("billing"), "{table}");

    let drained = ok(
        store,
        &["tail", "orders", "--group", "billing", "--exit-at-head"],
        b"",
    );
    let printed: Vec<&str> = drained.lines().collect();
    assert_eq!(printed.len(), 10_000);
    assert!(printed[0].starts_with("1\t"), "{}", printed[0]);
    assert!(printed[0].ends_with("\t-\tline 1"), "{}", printed[0]);
    assert!(printed[9_999].ends_with("line 10000"));
    assert_eq!(lag(store, "orders", "billing"), 0);

    ok(store, &["reset", "orders", "billing", "--to", "9001"], b"");
    assert_eq!(lag(store, "orders", "billing"), 1_000);
    let again = ok(
        store,
        &["tail", "orders", "--group", "billing", "--exit-at-head"],
        b"",
    );
    assert_eq!(again.lines().count(), 1_000);
    assert!(again.starts_with("9001\t"), "{}", &again[..40]);
    assert_eq!(lag(store, "orders", "billing"), 0);

    let trimmed = ok(store, &["trim", "orders", "--through", "5000"], b"");
    assert_eq!(
        trimmed.trim(),
        "deleted 5000 messages of orders up to offset 5000"
    );
    let streams = json(&ok(store, &["streams", "--json"], b""));
    let orders = &streams[0];
    assert_eq!(orders["stream"], "orders");
    assert_eq!(orders["messages"], 5_000);
    assert_eq!(orders["partitions"][0]["first"], 5_001);
    assert_eq!(orders["partitions"][0]["head"], 10_000);

    // Without a group: from an offset, a count, and bodies that are not text.
    let some = ok(
        store,
        &["tail", "orders", "--from", "9999", "--exit-at-head"],
        b"",
    );
    assert_eq!(some.lines().count(), 2);
    ok(store, &["produce", "bytes"], b"ok\xff\xfe\nsecond\tline\n");
    let shown = ok(store, &["tail", "bytes", "-n", "2"], b"");
    let bodies: Vec<&str> = shown
        .lines()
        .map(|l| l.rsplit('\t').next().expect("body"))
        .collect();
    assert_eq!(bodies, ["ok\\xff\\xfe", "second\\tline"]);
    let as_json = ok(store, &["tail", "bytes", "--json", "--exit-at-head"], b"");
    let first = json(as_json.lines().next().expect("a line"));
    assert_eq!(first["body_hex"], "6f6bfffe");
    let second = json(as_json.lines().nth(1).expect("two lines"));
    assert_eq!(second["body"], "second\tline");

    // JSON lines: checked before sending; what came before a bad line is stored.
    let good = ok(
        store,
        &["produce", "events", "--json"],
        b"{\"a\":1}\n\n[2]\n",
    );
    assert_eq!(good.trim(), "stored 2 messages in events: offsets 1-2");
    let bad = fails(
        store,
        &["produce", "events", "--json", "--batch", "1"],
        b"{\"a\":3}\nnot json\n{\"a\":4}\n",
        2,
    );
    assert!(bad.contains("line 2 is not JSON"), "{bad}");
    assert!(bad.contains("stored 1 message"), "{bad}");
    let events = ok(store, &["tail", "events", "--json", "--exit-at-head"], b"");
    assert_eq!(events.lines().count(), 3);
    assert_eq!(
        json(events.lines().next().expect("line"))["headers"]["content-type"],
        "application/json"
    );

    // Retention: set, show, apply, clear.
    let set = ok(
        store,
        &["retention", "orders", "--max-messages", "100", "--apply"],
        b"",
    );
    assert!(set.contains("at most 100 messages per partition"), "{set}");
    assert!(set.contains("deleted 4900 messages"), "{set}");
    let shown = json(&ok(store, &["retention", "orders", "--json"], b""));
    assert_eq!(shown["policy"]["max_messages"], 100);
    ok(store, &["retention", "orders", "--clear"], b"");
    let none = ok(store, &["retention", "orders"], b"");
    assert!(none.contains("no retention policy"), "{none}");

    // Delete, only when confirmed.
    let unconfirmed = fails(store, &["delete", "orders"], b"", 2);
    assert!(unconfirmed.contains("--yes"), "{unconfirmed}");
    let deleted = ok(store, &["delete", "orders", "--yes"], b"");
    assert!(
        deleted.starts_with("deleted orders: 1 logs, 100 messages"),
        "{deleted}"
    );
    let missing = fails(store, &["groups", "orders"], b"", 3);
    assert!(missing.contains("does not exist"), "{missing}");
}

/// Mistakes that are not about the store: each says what to fix, with its exit code.
fn bad_input(store: &Store) {
    ok(store, &["produce", "s"], b"one\ntwo\n");
    let past = fails(store, &["reset", "s", "g", "--to", "10"], b"", 2);
    assert!(past.contains("past the head"), "{past}");
    let place = fails(store, &["reset", "s", "g", "--to", "soon"], b"", 2);
    assert!(place.contains("not a place in a stream"), "{place}");
    let name = fails(store, &["produce", "bad name"], b"x\n", 2);
    assert!(name.contains("invalid stream name"), "{name}");
    let retention = fails(store, &["retention", "s", "--max-messages", "0"], b"", 2);
    assert!(retention.contains("0 messages"), "{retention}");
    let nothing = fails(store, &["delete", "never-was", "--yes"], b"", 3);
    assert!(nothing.contains("does not exist"), "{nothing}");
    let partition = fails(store, &["produce", "s", "--partition", "3"], b"x\n", 2);
    assert!(partition.contains("no partition 3"), "{partition}");
}

fn redb_store(dir: &Path) -> Store {
    Store {
        location: dir.join("streams.redb").display().to_string(),
        schema: None,
    }
}

fn redb_tour() {
    let dir = tempfile::tempdir().expect("temp dir");
    the_tour(&redb_store(dir.path()));
}

fn redb_bad_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    bad_input(&redb_store(dir.path()));
}

/// The store itself is wrong: a directory, a file that is not redb, a missing file, a file
/// another process holds, a URL with a typo, a server nobody runs, no store at all.
fn wrong_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let at = |location: &str| Store {
        location: location.to_owned(),
        schema: None,
    };
    let directory = fails(&at(&dir.path().display().to_string()), &["streams"], b"", 2);
    assert!(directory.contains("is a directory"), "{directory}");

    let junk = dir.path().join("notes.txt");
    let text = "not a database at all, just some text\n".repeat(200);
    std::fs::write(&junk, &text).expect("write");
    let not_redb = fails(&at(&junk.display().to_string()), &["streams"], b"", 1);
    assert!(
        not_redb.contains("not a flowstream redb file"),
        "{not_redb}"
    );
    assert_eq!(
        std::fs::read_to_string(&junk).expect("read"),
        text,
        "left as it was"
    );

    let missing = dir.path().join("missing.redb");
    let absent = fails(&at(&missing.display().to_string()), &["streams"], b"", 3);
    assert!(absent.contains("no such file"), "{absent}");
    assert!(!missing.exists(), "a read creates no file");

    let held = dir.path().join("held.redb");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let holder = runtime
        .block_on(flowstream_redb::RedbDriver::open(&held))
        .expect("open");
    let locked = fails(&at(&held.display().to_string()), &["streams"], b"", 1);
    assert!(locked.contains("open in a running process"), "{locked}");
    drop(holder);

    let typo = fails(
        &at("postgress://postgres@127.0.0.1/x"),
        &["streams"],
        b"",
        2,
    );
    assert!(typo.contains("not a store flowstream knows"), "{typo}");
    let unreachable = fails(
        &at("postgres://postgres:secret@127.0.0.1:1/postgres"),
        &["streams"],
        b"",
        1,
    );
    assert!(unreachable.contains("check the URL"), "{unreachable}");
    assert!(!unreachable.contains("secret"), "{unreachable}");

    let output = Command::new(env!("CARGO_BIN_EXE_flowstream"))
        .arg("streams")
        .env_remove("FLOWSTREAM_STORE")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no store given"),
        "{}",
        stderr(&output)
    );
}

fn pg_store(schema: &str) -> Store {
    Store {
        location: DATABASE.url(),
        schema: Some(schema.to_owned()),
    }
}

fn with_schema(body: fn(&Store)) {
    let schema = unique_schema();
    body(&pg_store(&schema));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(drop_schema(&schema));
}

/// A tail that follows: started before the messages exist, it prints them as they come.
fn pg_tail_follows(store: &Store) {
    ok(store, &["produce", "live"], b"first\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowstream"));
    command.arg("--store").arg(&store.location);
    if let Some(schema) = &store.schema {
        command.arg("--schema").arg(schema);
    }
    let mut follower = command
        .args(["tail", "live", "--from", "latest", "-n", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tail");
    // Whatever was produced before the tail found the head is not its to print: keep
    // producing until it has printed two messages and ended (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while follower.try_wait().expect("tail status").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = follower.kill();
            panic!("tail did not end after {sent} messages");
        }
        ok(
            store,
            &["produce", "live"],
            format!("later {sent}\n").as_bytes(),
        );
        sent += 1;
    }
    let output = follower.wait_with_output().expect("tail output");
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let bodies: Vec<&str> = printed
        .lines()
        .map(|l| l.rsplit('\t').next().expect("body"))
        .collect();
    assert_eq!(bodies.len(), 2, "{printed}");
    assert!(bodies.iter().all(|b| b.starts_with("later")), "{printed}");
}

/// `flowstream tail STREAM --group g --from earliest`, once it has printed its first line
/// (so it holds the group): the process and that line.
fn group_tail(store: &Store, stream: &str) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowstream"));
    command.arg("--store").arg(&store.location);
    if let Some(schema) = &store.schema {
        command.arg("--schema").arg(schema);
    }
    let mut follower = command
        .args(["tail", stream, "--group", "g", "--from", "earliest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tail");
    let stdout = follower.stdout.take().expect("stdout");
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if lines.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = printed.recv_timeout(Duration::from_secs(60));
    if first.is_err() {
        let _ = follower.kill();
    }
    (follower, first.expect("tail prints the first message"))
}

/// Waits (bounded) for `child` to end.
fn ended(mut child: std::process::Child, what: &str) -> (std::process::ExitStatus, Output) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, child.wait_with_output().expect("output"))
}

/// A `tail --group` running while its stream is deleted stops with exit code 3, saying so.
fn pg_tail_of_a_deleted_stream(store: &Store) {
    ok(store, &["produce", "doomed"], b"first\n");
    let (follower, first) = group_tail(store, "doomed");
    assert!(first.ends_with("first"), "{first}");
    ok(store, &["delete", "doomed", "--yes"], b"");
    let (status, output) = ended(
        follower,
        "tail --group went on after its stream was deleted",
    );
    assert_eq!(status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("deleted"), "{}", stderr(&output));
}

/// `kill` (SIGTERM) ends a `tail --group` cleanly: it hands the group over at once, so the
/// next member need not wait out a takeover.
#[cfg(unix)]
fn pg_terminated_tail_releases_its_group(store: &Store) {
    ok(store, &["produce", "work"], b"one\ntwo\n");
    let (follower, first) = group_tail(store, "work");
    assert!(first.ends_with("one"), "{first}");
    let active = |store: &Store| {
        let groups = json(&ok(store, &["groups", "work", "--json"], b""));
        groups[0]["partitions"][0]["active"].as_bool()
    };
    assert_eq!(active(store), Some(true));
    let killed = Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let (status, output) = ended(follower, "tail --group went on after SIGTERM");
    assert!(status.success(), "{}", stderr(&output));
    assert_eq!(active(store), Some(false), "the group was handed over");
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("cli::redb::the_tour", || {
            redb_tour();
            Ok(())
        }),
        Trial::test("cli::redb::bad_input", || {
            redb_bad_input();
            Ok(())
        }),
        Trial::test("cli::wrong_stores", || {
            wrong_stores();
            Ok(())
        }),
        Trial::test("cli::postgres::the_tour", || {
            with_schema(the_tour);
            Ok(())
        }),
        Trial::test("cli::postgres::bad_input", || {
            with_schema(bad_input);
            Ok(())
        }),
        Trial::test("cli::postgres::tail_follows", || {
            with_schema(pg_tail_follows);
            Ok(())
        }),
        Trial::test("cli::postgres::tail_of_a_deleted_stream", || {
            with_schema(pg_tail_of_a_deleted_stream);
            Ok(())
        }),
        #[cfg(unix)]
        Trial::test("cli::postgres::terminated_tail_releases_its_group", || {
            with_schema(pg_terminated_tail_releases_its_group);
            Ok(())
        }),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    DATABASE.stop();
    conclusion.exit_code()
}

//! The retry and dead-letter metrics: scenarios of the conformance suite run with a recorder
//! installed, and the counters they leave behind are what each scenario did.

// Test code: a failed expectation is how a test fails; the scenarios run on the test's own
// runtime, so their futures need not be `Send`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::future_not_send)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowstream_core::conformance::{DriverFactory, scenarios};
use flowstream_core::{Driver, metrics as names};
use flowstream_redb::RedbDriver;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Counters by name and sorted labels, e.g. `flowstream_retries_total{group=g,mode=parked,stream=s}`.
#[derive(Default, Clone)]
struct Counts(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

struct Cell(Arc<AtomicU64>);

// The gauges these tests read hold whole, non-negative counts (a lag).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.0.fetch_add(value as u64, Ordering::SeqCst);
    }
    fn decrement(&self, value: f64) {
        self.0.fetch_sub(value as u64, Ordering::SeqCst);
    }
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::SeqCst);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Counts {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = Arc::clone(self.0.lock().unwrap().entry(render(key)).or_default());
        Counter::from_arc(Arc::new(Cell(cell)))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = Arc::clone(self.0.lock().unwrap().entry(render(key)).or_default());
        Gauge::from_arc(Arc::new(Cell(cell)))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        // A histogram counts its records here: how many, not their values.
        let cell = Arc::clone(self.0.lock().unwrap().entry(render(key)).or_default());
        Histogram::from_arc(Arc::new(Cell(cell)))
    }
}

struct Memory(RedbDriver);

#[async_trait]
impl DriverFactory for Memory {
    async fn open(&self) -> Arc<dyn Driver> {
        Arc::new(self.0.clone())
    }
    fn durable(&self) -> bool {
        false
    }
}

async fn run(name: &str) {
    let scenario = scenarios()
        .into_iter()
        .find(|s| s.name() == name)
        .expect("scenario exists");
    let factory = Memory(RedbDriver::in_memory().expect("in-memory redb"));
    scenario.run(&factory).await;
}

/// The recorder of this test binary, installed by the first test that asks.
fn recorder() -> Counts {
    static RECORDER: std::sync::OnceLock<Counts> = std::sync::OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let counts = Counts::default();
            metrics::set_global_recorder(counts.clone()).expect("the only recorder");
            counts
        })
        .clone()
}

/// Produce, consume, commit, a takeover, a fenced commit and the lag: each counted under its
/// stream and group.
#[tokio::test(flavor = "multi_thread")]
async fn traffic_takeovers_fencing_and_lag_are_measured() {
    use flowstream_core::{Admin, Consumer, NewMessage, Producer};
    let counts = recorder();
    let driver: Arc<dyn Driver> = Arc::new(RedbDriver::in_memory().expect("redb"));
    let producer = Producer::new(driver.clone());
    let batch: Vec<NewMessage> = (0..10)
        .map(|_| NewMessage::new("measured", "12345"))
        .collect();
    producer.send_batch(batch).await.expect("send");
    assert_eq!(
        counts.get(&format!("{}{{stream=measured}}", names::MESSAGES_PRODUCED)),
        10
    );
    assert_eq!(
        counts.get(&format!("{}{{stream=measured}}", names::BYTES_PRODUCED)),
        50
    );
    assert!(counts.get(&format!("{}{{}}", names::APPEND_SECONDS)) >= 1);
    assert!(counts.get(&format!("{}{{}}", names::GROUP_COMMIT_MESSAGES)) >= 1);

    // The first consumer goes through a wrapper that can cut it off from the store.
    let wrapped = flowstream_tests::InstrumentedDriver::new(driver.clone());
    let cut_off: Arc<dyn Driver> = wrapped.clone();
    let build = |driver: Arc<dyn Driver>| {
        Consumer::builder(driver, "measured", "m")
            .takeover_after(std::time::Duration::from_millis(300))
            .heartbeat_every(std::time::Duration::from_millis(100))
            .build()
    };
    let mut first = build(cut_off).await.expect("consumer");
    let labels = "group=m,stream=measured";
    let mut last = None;
    for _ in 0..5 {
        last = first.next().await.expect("next");
    }
    let last = last.expect("five messages");
    first.commit(&last).await.expect("commit");
    assert_eq!(
        counts.get(&format!("{}{{{labels}}}", names::MESSAGES_CONSUMED)),
        5
    );
    assert_eq!(
        counts.get(&format!("{}{{{labels}}}", names::BYTES_CONSUMED)),
        25
    );
    assert_eq!(
        counts.get(&format!("{}{{{labels}}}", names::COMMIT_SECONDS)),
        1
    );

    let lag = Admin::new(driver.clone())
        .groups("measured")
        .await
        .expect("groups");
    assert_eq!(lag[0].lag(), 5);
    assert_eq!(
        counts.get(&format!(
            "{}{{group=m,partition=0,stream=measured}}",
            names::GROUP_LAG
        )),
        5
    );

    // Another consumer takes the group over from the first one, silent while cut off; the
    // first one's commit is then fenced.
    wrapped.set_partitioned(true);
    let mut second = build(driver.clone()).await.expect("standby");
    let mut taken = None;
    flowstream_tests::eventually_async(
        "the standby takes over",
        flowstream_tests::BOUND,
        async || {
            taken = second.next().await.expect("next");
            taken.is_some()
        },
    )
    .await;
    let takeovers: u64 = counts
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(key, _)| {
            key.starts_with(&format!("{}{{group=m,", names::TAKEOVERS))
                && key.ends_with("stream=measured}")
        })
        .map(|(_, count)| count.load(Ordering::SeqCst))
        .sum();
    assert_eq!(takeovers, 1, "one takeover, whatever its reason");
    wrapped.set_partitioned(false);
    flowstream_tests::eventually(
        "the first consumer learns it lost the group",
        flowstream_tests::BOUND,
        || !first.is_active(),
    )
    .await;
    let zombie = first.commit(&last).await;
    assert!(
        matches!(zombie, Err(flowstream_core::Error::Fenced { .. })),
        "{zombie:?}"
    );
    assert_eq!(counts.get(&format!("{}{{{labels}}}", names::FENCED)), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_and_dead_letters_are_counted_by_cause() {
    let counts = recorder();
    let key = |name: &str, labels: &str| format!("{name}{{{labels}}}");
    let dead = |cause: &str| {
        counts.get(&key(
            names::DEAD_LETTERS,
            &format!("cause={cause},group=g,stream=s"),
        ))
    };
    let retries = |mode: &str| {
        counts.get(&key(
            names::RETRIES,
            &format!("group=g,mode={mode},stream=s"),
        ))
    };

    run("max_deliveries_moves_a_message_to_the_dead_letters_with_its_commit").await;
    assert_eq!((retries("ordered"), dead("max_deliveries")), (2, 1));

    run("a_dead_letter_is_copied_with_its_commit_or_not_at_all").await;
    assert_eq!(
        dead("on_demand"),
        1,
        "counted once, not for the retry that found it done"
    );

    run("a_message_that_keeps_crashing_its_consumers_is_dead_lettered").await;
    assert!(dead("crash_poison") >= 1, "crash poison counted");

    run("parked_retries_count_toward_max_deliveries").await;
    assert_eq!((retries("parked"), dead("max_deliveries")), (1, 2));
}

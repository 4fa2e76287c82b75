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
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Counters by name and sorted labels, e.g. `flowstream_retries_total{group=g,mode=parked,stream=s}`.
#[derive(Default, Clone)]
struct Counts(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

struct Cell(Arc<AtomicU64>);

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
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
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

#[tokio::test(flavor = "multi_thread")]
async fn retries_and_dead_letters_are_counted_by_cause() {
    let counts = Counts::default();
    metrics::set_global_recorder(counts.clone()).expect("the only recorder of this test binary");
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

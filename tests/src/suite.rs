//! The conformance suite as tests: one libtest-mimic trial per scenario of
//! `flowstream_core::conformance`, each on a fresh store. Our drivers' test binaries call
//! [`trials`], which runs each scenario through [`Scenario::run`], the entry point a
//! third-party driver uses too.

use std::future::Future;
use std::sync::Arc;

use flowstream_core::conformance::{DriverFactory, Scenario, scenarios};
use libtest_mimic::Trial;

/// A fresh multi-threaded runtime for one test, as `#[tokio::test]` would make.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs one async test body on its own runtime.
pub fn block_on<F: Future<Output = ()>>(body: F) {
    runtime().block_on(body);
}

/// One test per scenario, named `{prefix}::conformance::{scenario}`, each on a fresh factory
/// from `make_factory`. Scenarios that need durability are left out for stores without it.
pub fn trials<F, M>(prefix: &str, make_factory: M) -> Vec<Trial>
where
    F: DriverFactory + 'static,
    M: Fn() -> F + Send + Sync + 'static,
{
    let durable = make_factory().durable();
    let make_factory = Arc::new(make_factory);
    scenarios()
        .into_iter()
        .filter(|scenario: &Scenario| durable || !scenario.durable_only())
        .map(|scenario| {
            let make_factory = Arc::clone(&make_factory);
            Trial::test(
                format!("{prefix}::conformance::{}", scenario.name()),
                move || {
                    block_on(async {
                        let factory = make_factory();
                        scenario.run(&factory).await;
                    });
                    Ok(())
                },
            )
        })
        .collect()
}

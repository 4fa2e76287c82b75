//! Parked retries: a nack copies the message to a retry stream and commits past it in one
//! transaction, later messages go on at once, the copy comes back after its delay and counts
//! toward `max_deliveries`, and another member takes the retry streams over.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::retries::{body, next, next_after_wait};
use crate::conformance::{
    BOUND, DriverFactory, InstrumentedDriver, consumer, produce, stored_group,
};
use crate::{
    Consumer, Driver, Error, Message, Nacked, PARK_DELAYS, RetryBackoff, dead_letter_headers as h,
    dead_letter_stream, retry_stream,
};

/// The shortest parking delay.
const SECOND: Duration = PARK_DELAYS[0];

/// Storage timestamps have microseconds and come from another clock than `Instant`: a copy
/// due exactly at its delay may look a hair early.
const CLOCKS: Duration = Duration::from_millis(5);

fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message.headers().get(name).map(String::as_str)
}

/// A consumer of `s` in `g` that parks its retries, the first after `delay`.
async fn parking(driver: &Arc<dyn Driver>, delay: Duration) -> Consumer {
    consumer(driver, "s", "g")
        .park_retries()
        .retry_backoff(RetryBackoff::fixed(delay).without_jitter())
        .build()
        .await
        .expect("parking consumer")
}

/// A parked message leaves its stream going: the nack commits past it, the messages after it
/// are delivered at once, and the copy comes back from its retry stream once it has waited its
/// delay (the backoff's, rounded up to a tier), as delivery 2, saying where it came from. Its
/// commit goes to the retry stream.
pub(crate) async fn a_parked_message_comes_back_after_its_delay_behind_later_ones(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 3).await;
    let mut c = parking(&driver, Duration::from_millis(300)).await;
    let first = next(&mut c).await;
    let too_long = c.nack_after(&first, PARK_DELAYS[4] + SECOND, "boom").await;
    assert!(
        matches!(too_long, Err(Error::DelayTooLong { max, .. }) if max == PARK_DELAYS[4]),
        "{too_long:?}"
    );
    let parked_at = Instant::now();
    let parked = c.nack(&first, "boom").await.expect("nack");
    assert_eq!(
        parked,
        Nacked::Parked {
            after: SECOND,
            attempt: 2
        }
    );
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 1);
    let later: Vec<String> = [next(&mut c).await, next(&mut c).await]
        .iter()
        .map(|m| body(m).to_owned())
        .collect();
    assert_eq!(later, ["m1", "m2"], "the stream goes on at once");
    if parked_at.elapsed() < SECOND {
        assert!(
            c.next().await.expect("next").is_none(),
            "delivered before its delay"
        );
    }
    let copy = next_after_wait(&mut c).await;
    assert!(
        parked_at.elapsed() + CLOCKS >= SECOND,
        "delivered before its delay"
    );
    let retries = retry_stream("s", "g", SECOND);
    assert_eq!(
        (body(&copy), copy.stream(), copy.attempt()),
        ("m0", retries.as_str(), 2)
    );
    assert_eq!(header(&copy, h::STREAM), Some("s"));
    assert_eq!(header(&copy, h::OFFSET), Some("1"));
    assert_eq!(header(&copy, h::ERROR), Some("boom"));
    c.commit(&copy).await.expect("commit the copy");
    assert_eq!(stored_group(&driver, &retries, "g").await.committed, 1);
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 1);
    c.shutdown().await.expect("shutdown");
}

/// Parked deliveries count toward `max_deliveries`: the nack of the copy that reaches it moves
/// it to the stream's dead-letter stream (not the retry stream's), with the original's
/// stream and offset, and commits past the copy.
pub(crate) async fn parked_retries_count_toward_max_deliveries(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let mut c = consumer(&driver, "s", "g")
        .park_retries()
        .max_deliveries(2)
        .build()
        .await
        .expect("build");
    let poison = next(&mut c).await;
    let parked = c.nack_after(&poison, Duration::ZERO, "bad").await;
    assert!(
        matches!(parked, Ok(Nacked::Parked { attempt: 2, .. })),
        "{parked:?}"
    );
    let after = next(&mut c).await;
    assert_eq!((body(&after), after.attempt()), ("m1", 1));
    c.commit(&after).await.expect("commit");
    let copy = next_after_wait(&mut c).await;
    assert_eq!((body(&copy), copy.attempt()), ("m0", 2));
    assert_eq!(
        c.nack(&copy, "still bad").await.expect("nack"),
        Nacked::DeadLettered
    );
    let retries = retry_stream("s", "g", SECOND);
    assert_eq!(stored_group(&driver, &retries, "g").await.committed, 1);
    let dead = driver
        .read(&dead_letter_stream("s", "g"), 0, 10)
        .await
        .expect("read dead letters");
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert_eq!(body(dead), "m0");
    assert_eq!(header(dead, h::STREAM), Some("s"));
    assert_eq!(header(dead, h::OFFSET), Some("1"));
    assert_eq!(header(dead, h::ATTEMPTS), Some("2"));
    assert_eq!(header(dead, h::ERROR), Some("still bad"));
    assert_eq!(driver.head(&retries).await.expect("head"), 1, "parked once");
    c.shutdown().await.expect("shutdown");
}

/// A park either copies with its commit or not at all: cut off from storage, nothing is
/// copied nor committed; applied with its reply lost, nacking again copies nothing more.
pub(crate) async fn a_park_is_copied_with_its_commit_or_not_at_all(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 2).await;
    let faulty = InstrumentedDriver::new(driver.clone());
    let through: Arc<dyn Driver> = faulty.clone();
    let mut c = consumer(&through, "s", "g")
        .park_retries()
        .build()
        .await
        .expect("build");
    let first = next(&mut c).await;
    let retries = retry_stream("s", "g", SECOND);

    faulty.set_partitioned(true);
    let cut = c.nack(&first, "boom").await;
    faulty.set_partitioned(false);
    assert!(cut.as_ref().is_err_and(Error::is_retryable), "{cut:?}");
    assert_eq!(driver.head(&retries).await.expect("head"), 0);
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 0);

    faulty.lose_next_write_reply();
    let lost = c.nack(&first, "boom").await;
    assert!(lost.as_ref().is_err_and(Error::is_retryable), "{lost:?}");
    assert_eq!(driver.head(&retries).await.expect("head"), 1, "applied");
    // `Parked` (the write found its commit done), or `AlreadyCommitted` if the consumer learnt
    // of that commit first (a heartbeat re-read the group record meanwhile).
    let again = c.nack(&first, "boom").await;
    assert!(
        matches!(
            again,
            Ok(Nacked::Parked { .. })
                | Err(Error::AlreadyCommitted {
                    offset: 1,
                    committed: 1
                })
        ),
        "{again:?}"
    );
    assert_eq!(driver.head(&retries).await.expect("head"), 1, "copied once");
    assert_eq!(stored_group(&driver, "s", "g").await.committed, 1);
    c.shutdown().await.expect("shutdown");
}

/// The retry streams are the group's like its stream: when the consumer that parked a message
/// leaves, another member delivers the copy after its delay.
pub(crate) async fn another_member_delivers_what_a_leaver_parked(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "s", "m", 1).await;
    let mut first = parking(&driver, SECOND).await;
    let mut second = parking(&driver, SECOND).await;
    let failed = next(&mut first).await;
    let parked_at = Instant::now();
    first.nack(&failed, "boom").await.expect("nack");
    first.shutdown().await.expect("shutdown");
    let copy = next_after_wait(&mut second).await;
    assert!(
        parked_at.elapsed() + CLOCKS >= SECOND,
        "delivered before its delay"
    );
    assert_eq!((body(&copy), copy.attempt()), ("m0", 2));
    second.commit(&copy).await.expect("commit the copy");
    let deadline = Instant::now() + BOUND;
    while !second.is_active() {
        assert!(Instant::now() < deadline, "the stream was not taken over");
        second.wait(BOUND).await.expect("wait");
    }
    assert!(
        second.next().await.expect("next").is_none(),
        "the original was committed past by the park"
    );
    second.shutdown().await.expect("shutdown");
}

//! Producing: atomic, ordered, gapless, validated (guarantees 1 and 2).

use std::collections::HashMap;

use crate::{Consumer, Error, NewMessage, Producer, Wake};

use crate::conformance::{BOUND, DriverFactory, consumer, produce};

/// Guarantee 1: one call's messages to a stream get consecutive offsets in call order, and
/// bodies and headers come back as sent.
pub(crate) async fn g1_send_assigns_consecutive_offsets_in_call_order(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let producer = Producer::new(driver.clone());
    let batch: Vec<_> = (0..5)
        .map(|i| NewMessage::new("orders", format!("m{i}")).with_header("n", i.to_string()))
        .collect();
    assert_eq!(
        producer.send_batch(batch).await.expect("send"),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        producer
            .send(NewMessage::new("orders", "m5"))
            .await
            .expect("send"),
        6
    );
    assert_eq!(driver.head("orders").await.expect("head"), 6);

    let read = driver.read("orders", 0, 100).await.expect("read");
    let offsets: Vec<u64> = read.iter().map(|m| m.offset()).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5, 6]);
    for (i, message) in read.iter().enumerate() {
        assert_eq!(message.body_str(), Some(format!("m{i}").as_str()));
        assert_eq!(message.stream(), "orders");
        if i < 5 {
            assert_eq!(message.headers().get("n"), Some(&i.to_string()));
        }
    }
    assert!(
        driver
            .read("orders", 6, 100)
            .await
            .expect("read")
            .is_empty()
    );

    // Bodies are bytes: anything goes, including what is not UTF-8.
    let binary = vec![0xff, 0xfe, 0x00, 0x80, b'\n'];
    let offset = producer
        .send(NewMessage::new("orders", binary.clone()))
        .await
        .expect("send");
    let stored = driver.read("orders", offset - 1, 1).await.expect("read");
    assert_eq!(stored[0].body(), binary.as_slice());
    assert_eq!(stored[0].body_str(), None);
    assert_eq!(driver.read("orders", 2, 2).await.expect("read").len(), 2);
}

/// Guarantee 1: a batch to several streams is stored whole, with offsets in input order; a
/// batch with one bad message is rejected whole and stores nothing.
pub(crate) async fn g1_batch_to_several_streams_is_all_or_nothing(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let producer = Producer::new(driver.clone()).with_max_body_size(16);
    let offsets = producer
        .send_batch([
            NewMessage::new("a", "a1"),
            NewMessage::new("b", "b1"),
            NewMessage::new("a", "a2"),
        ])
        .await
        .expect("send");
    assert_eq!(offsets, vec![1, 1, 2]);

    let too_large = producer
        .send_batch([
            NewMessage::new("a", "a3"),
            NewMessage::new("b", "x".repeat(17)),
        ])
        .await;
    assert!(
        matches!(
            too_large,
            Err(Error::BodyTooLarge {
                size: 17,
                limit: 16,
                ..
            })
        ),
        "{too_large:?}"
    );
    let key_too_large = producer
        .send(NewMessage::new("a", "x".repeat(10)).with_key("k".repeat(7)))
        .await;
    assert!(
        matches!(key_too_large, Err(Error::BodyTooLarge { size: 17, .. })),
        "the key counts toward the limit: {key_too_large:?}"
    );
    let bad_name = producer
        .send_batch([NewMessage::new("a", "a3"), NewMessage::new("no/slash", "x")])
        .await;
    assert!(
        matches!(bad_name, Err(Error::InvalidName { .. })),
        "{bad_name:?}"
    );
    let bad_header = producer
        .send_batch([NewMessage::new("a", "a3").with_header("", "no name")])
        .await;
    assert!(
        matches!(bad_header, Err(Error::InvalidHeader { .. })),
        "{bad_header:?}"
    );
    assert!(matches!(
        producer.send_batch([]).await,
        Err(Error::EmptyBatch)
    ));

    assert_eq!(driver.head("a").await.expect("head"), 2);
    assert_eq!(driver.head("b").await.expect("head"), 1);
    let b: Vec<_> = driver.read("b", 0, 10).await.expect("read");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].body_str(), Some("b1"));
}

/// Guarantee 1 under group commit: many tasks sending through one producer at once share
/// transactions, yet every call gets its own offsets, consecutive within the call, and each
/// offset holds exactly the body its call sent.
pub(crate) async fn g1_concurrent_sends_through_one_producer_keep_their_own_offsets(
    factory: &dyn DriverFactory,
) {
    const TASKS: usize = 32;
    const CALLS: usize = 10;
    let driver = factory.open().await;
    let producer = Producer::new(driver.clone());
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent: Vec<(u64, String)> = Vec::new();
            for call in 0..CALLS {
                // Every other call is a batch of three, to mix sizes in shared appends.
                let bodies: Vec<String> = (0..1 + 2 * (call % 2))
                    .map(|i| format!("t{task}-c{call}-{i}"))
                    .collect();
                let offsets = producer
                    .send_batch(bodies.iter().map(|b| NewMessage::new("shared", b.as_str())))
                    .await
                    .expect("send");
                assert_eq!(offsets.len(), bodies.len());
                assert!(
                    offsets.windows(2).all(|w| w[1] == w[0] + 1),
                    "one call's offsets are consecutive: {offsets:?}"
                );
                sent.extend(offsets.into_iter().zip(bodies));
            }
            sent
        }));
    }
    let mut sent: HashMap<u64, String> = HashMap::new();
    for task in tasks {
        for (offset, body) in task.await.expect("task") {
            assert!(
                sent.insert(offset, body).is_none(),
                "offset {offset} given twice"
            );
        }
    }
    let total = sent.len() as u64;
    assert_eq!(total, (TASKS * CALLS * 2) as u64);
    let stored = driver
        .read("shared", 0, usize::try_from(total).expect("fits") + 1)
        .await
        .expect("read");
    assert_eq!(
        stored.len() as u64,
        total,
        "every acknowledged message is stored once"
    );
    for message in stored {
        assert_eq!(
            Some(message.body_str().expect("utf-8")),
            sent.get(&message.offset()).map(String::as_str),
            "offset {} holds what its call sent",
            message.offset()
        );
    }
}

/// Guarantee 2: concurrent producers never make a tailing reader skip a message: it sees
/// every offset exactly once, in order, and each producer's messages in that producer's order.
pub(crate) async fn g2_concurrent_producers_leave_no_gaps(factory: &dyn DriverFactory) {
    const PRODUCERS: usize = 8;
    const EACH: usize = 150;
    let driver = factory.open().await;
    let mut reader = consumer(&driver, "tail", "g")
        .build()
        .await
        .expect("consumer");

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let driver = driver.clone();
        tasks.push(tokio::spawn(async move {
            produce(&driver, "tail", &format!("p{p}-"), EACH).await
        }));
    }

    let total = (PRODUCERS * EACH) as u64;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND * 4;
    while (seen.len() as u64) < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail stalled at {}",
            seen.len()
        );
        while let Some(message) = reader.next().await.expect("next") {
            seen.push(message);
        }
        if let Some(last) = seen.last() {
            reader.commit(last.offset()).await.expect("commit");
        }
        reader.wait(BOUND).await.expect("wait");
    }
    for task in tasks {
        task.await.expect("producer task");
    }

    let offsets: Vec<u64> = seen.iter().map(|m| m.offset()).collect();
    assert_eq!(
        offsets,
        (1..=total).collect::<Vec<_>>(),
        "dense, in order, no duplicates"
    );
    let mut next_index: HashMap<String, usize> = HashMap::new();
    for message in &seen {
        let body = message.body_str().expect("utf-8");
        let (producer, index) = body.split_once('-').expect("p{n}-{i}");
        let expected = next_index.entry(producer.to_owned()).or_default();
        assert_eq!(
            index.parse::<usize>().expect("index"),
            *expected,
            "{producer} out of order"
        );
        *expected += 1;
    }
    assert!(next_index.values().all(|&n| n == EACH));
    assert_eq!(
        reader.wait(std::time::Duration::ZERO).await.expect("wait"),
        Wake::TimedOut
    );
}

/// `trim` deletes messages up to an offset; later offsets and the head are untouched, and
/// new messages continue the sequence.
pub(crate) async fn trim_removes_messages_up_to_an_offset(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "t", "m", 5).await;
    assert_eq!(driver.trim("t", 3).await.expect("trim"), 3);
    let left: Vec<u64> = driver
        .read("t", 0, 10)
        .await
        .expect("read")
        .iter()
        .map(|m| m.offset())
        .collect();
    assert_eq!(left, vec![4, 5]);
    assert_eq!(driver.head("t").await.expect("head"), 5);
    assert_eq!(produce(&driver, "t", "n", 1).await, vec![6]);
    assert_eq!(driver.trim("t", 3).await.expect("trim again"), 0);
}

/// Bad names, bad settings and bad batches get their own typed error before storage is
/// touched; what was stored before is unchanged.
pub(crate) async fn invalid_input_is_rejected_and_stores_nothing(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    produce(&driver, "kept", "m", 3).await;
    let producer = Producer::new(driver.clone());
    let long = "s".repeat(10_000);
    for name in [
        "",
        long.as_str(),
        "tab\tname",
        "'; DROP TABLE streams; --",
        "naïve",
    ] {
        let sent = producer.send(NewMessage::new(name, "x")).await;
        assert!(
            matches!(sent, Err(Error::InvalidName { .. })),
            "{name:?}: {sent:?}"
        );
        let built = Consumer::builder(driver.clone(), "kept", name)
            .build()
            .await;
        assert!(
            matches!(built, Err(Error::InvalidName { .. })),
            "group {name:?}"
        );
        let built = Consumer::builder(driver.clone(), name, "g").build().await;
        assert!(
            matches!(built, Err(Error::InvalidName { .. })),
            "stream {name:?}"
        );
    }
    let error = producer
        .send(NewMessage::new(long.as_str(), "x"))
        .await
        .expect_err("too long");
    assert!(
        error.to_string().len() < 300,
        "error message stays readable: {error}"
    );

    let settings = [
        consumer(&driver, "kept", "g").heartbeat_every(crate::conformance::TAKEOVER),
        consumer(&driver, "kept", "g").takeover_after(std::time::Duration::ZERO),
        consumer(&driver, "kept", "g").batch_size(0),
        consumer(&driver, "kept", "g").batch_size(crate::MAX_BATCH_SIZE + 1),
    ];
    for builder in settings {
        assert!(matches!(
            builder.build().await,
            Err(Error::InvalidConfig(_))
        ));
    }
    let oversized = Producer::new(driver.clone())
        .send(NewMessage::new(
            "kept",
            vec![0u8; crate::DEFAULT_MAX_BODY_SIZE + 1],
        ))
        .await;
    assert!(matches!(oversized, Err(Error::BodyTooLarge { .. })));

    assert_eq!(driver.head("kept").await.expect("head"), 3);
    assert_eq!(driver.read("kept", 0, 10).await.expect("read").len(), 3);
    assert!(
        crate::GroupState::load(driver.as_ref(), "kept", "g")
            .await
            .expect("load")
            .is_none()
    );
}

//! Partitioned streams, the producer's side: creation, routing by key, by partition and in
//! turn, dense offsets per partition, atomic sends across partitions, keys stored faithfully,
//! and the typed errors of bad input.

use std::collections::BTreeMap;

use crate::conformance::{DriverFactory, close, produce};
use crate::{Admin, Error, MAX_PARTITIONS, Message, NewMessage, Producer, partition_for_key};

/// Every message of every partition of `stream`, by partition.
async fn read_partitions(
    driver: &std::sync::Arc<dyn crate::Driver>,
    stream: &str,
    partitions: u32,
) -> BTreeMap<u32, Vec<Message>> {
    let mut out = BTreeMap::new();
    for partition in 0..partitions {
        let log = crate::names::log_name(stream, partition);
        let messages = driver.read(&log, 0, 10_000).await.expect("read partition");
        for message in &messages {
            assert_eq!(message.stream(), stream, "stream of a message of {log}");
            assert_eq!(
                message.partition(),
                partition,
                "partition of a message of {log}"
            );
        }
        out.insert(partition, messages);
    }
    out
}

/// Keys are stored with their messages and read back byte for byte (binary and empty keys
/// included); a message sent without one reads back without one.
pub(crate) async fn keys_are_stored_faithfully(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let keys: [Option<&[u8]>; 4] = [
        None,
        Some(b""),
        Some(b"customer-42"),
        Some(&[0, 255, 10, 0]),
    ];
    let messages: Vec<NewMessage> = keys
        .iter()
        .map(|key| {
            let message = NewMessage::new("keyed", "body").with_header("h", "v");
            match key {
                Some(key) => message.with_key(*key),
                None => message,
            }
        })
        .collect();
    Producer::new(driver.clone())
        .send_batch(messages)
        .await
        .expect("send");
    let read = driver.read("keyed", 0, 10).await.expect("read");
    let stored: Vec<Option<&[u8]>> = read.iter().map(Message::key).collect();
    assert_eq!(stored, keys);
    assert!(
        read.iter()
            .all(|m| m.body() == b"body" && m.partition() == 0)
    );
}

/// A message with a key goes to the partition `partition_for_key` names, whichever producer
/// (on whichever driver instance, as another process would be) sends it; offsets are dense per
/// partition, and messages of one key keep their send order.
pub(crate) async fn keyed_messages_go_to_their_keys_partition(factory: &dyn DriverFactory) {
    const PARTITIONS: u32 = 8;
    let mut driver = factory.open().await;
    Admin::new(driver.clone())
        .create_stream("payments", PARTITIONS)
        .await
        .expect("create");
    for round in 0..2 {
        if round == 1 && factory.durable() {
            // The second round comes from another driver instance, as from another process:
            // it routes by the stored partition count and the same hash.
            close(driver).await;
            driver = factory.open().await;
        }
        let producer = Producer::new(driver.clone());
        for i in 0..100 {
            let key = format!("customer-{}", i % 25);
            producer
                .send(NewMessage::new("payments", format!("{round}:{i}")).with_key(key))
                .await
                .expect("send");
        }
    }
    let by_partition = read_partitions(&driver, "payments", PARTITIONS).await;
    let mut total = 0;
    let mut per_key: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    for (partition, messages) in &by_partition {
        let offsets: Vec<u64> = messages.iter().map(Message::offset).collect();
        assert_eq!(
            offsets,
            (1..=messages.len() as u64).collect::<Vec<_>>(),
            "offsets of partition {partition} are dense from 1"
        );
        for message in messages {
            let key = message.key().expect("sent with a key");
            assert_eq!(
                partition_for_key(key, PARTITIONS),
                *partition,
                "{message:?}"
            );
            per_key
                .entry(key.to_vec())
                .or_default()
                .push(message.body_str().expect("text").to_owned());
        }
        total += messages.len();
    }
    assert_eq!(total, 200);
    assert!(
        by_partition.values().filter(|m| !m.is_empty()).count() > 1,
        "25 keys use more than one of 8 partitions"
    );
    for (key, bodies) in per_key {
        let sent: Vec<String> = (0..2)
            .flat_map(|round| {
                (0..100)
                    .filter(|i| format!("customer-{}", i % 25).as_bytes() == key)
                    .map(move |i| format!("{round}:{i}"))
            })
            .collect();
        assert_eq!(bodies, sent, "messages of one key keep their send order");
    }
}

/// Messages with neither key nor partition go to the partitions in turn; one naming a
/// partition goes there whatever its key.
pub(crate) async fn unkeyed_messages_spread_and_named_partitions_win(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    Admin::new(driver.clone())
        .create_stream("spread", 4)
        .await
        .expect("create");
    let producer = Producer::new(driver.clone());
    for i in 0..40 {
        producer
            .send(NewMessage::new("spread", format!("m{i}")))
            .await
            .expect("send");
    }
    let key_elsewhere = (0..)
        .map(|i| format!("k{i}"))
        .find(|key| partition_for_key(key.as_bytes(), 4) != 2)
        .expect("some key is not on partition 2");
    let offset = producer
        .send(
            NewMessage::new("spread", "named")
                .with_key(key_elsewhere.clone())
                .to_partition(2),
        )
        .await
        .expect("send");
    let by_partition = read_partitions(&driver, "spread", 4).await;
    let counts: Vec<usize> = by_partition.values().map(Vec::len).collect();
    assert_eq!(counts, [10, 10, 11, 10], "40 spread evenly, one more named");
    let named = by_partition[&2].last().expect("named message");
    assert_eq!((named.offset(), named.body()), (offset, &b"named"[..]));
    assert_eq!(named.key(), Some(key_elsewhere.as_bytes()));
}

/// A send to several partitions (and streams) is stored whole or not at all: a message that
/// names a partition the stream lacks, or that the storage refuses, fails the whole send, and
/// nothing of it is stored in any partition.
pub(crate) async fn a_send_to_several_partitions_is_all_or_nothing(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    Admin::new(driver.clone())
        .create_stream("atomic", 3)
        .await
        .expect("create");
    let producer = Producer::new(driver.clone());
    let whole: Vec<NewMessage> = (0..3)
        .map(|p| NewMessage::new("atomic", format!("p{p}")).to_partition(p))
        .chain([NewMessage::new("plain", "beside")])
        .collect();
    assert_eq!(
        producer.send_batch(whole).await.expect("send"),
        [1, 1, 1, 1]
    );

    let out_of_range = producer
        .send_batch([
            NewMessage::new("atomic", "fine").to_partition(1),
            NewMessage::new("atomic", "no such").to_partition(3),
        ])
        .await;
    assert!(
        matches!(
            &out_of_range,
            Err(Error::NoSuchPartition { partition: 3, partitions: 3, stream }) if stream == "atomic"
        ),
        "{out_of_range:?}"
    );
    let refused = producer
        .send_batch([
            NewMessage::new("atomic", "fine").to_partition(0),
            NewMessage::new("atomic", "fine").to_partition(1),
            NewMessage::new("atomic", "bad")
                .to_partition(2)
                .with_header("nul\0", "x"),
        ])
        .await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    for (partition, messages) in read_partitions(&driver, "atomic", 3).await {
        let bodies: Vec<&[u8]> = messages.iter().map(Message::body).collect();
        assert_eq!(
            bodies,
            [format!("p{partition}").as_bytes()],
            "partition {partition}"
        );
    }
}

/// Creating partitioned streams: idempotent with the same count; a typed error, with nothing
/// changed, for a count out of range, a different count, a stream that already has messages
/// without partitions, or a bad name. A key on an unpartitioned stream is kept and the message
/// goes to its only partition; naming another partition is an error.
pub(crate) async fn partition_counts_are_checked_and_fixed(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let admin = Admin::new(driver.clone());
    for bad in [0, MAX_PARTITIONS + 1] {
        let created = admin.create_stream("counts", bad).await;
        assert!(
            matches!(created, Err(Error::InvalidConfig(_))),
            "{bad} partitions: {created:?}"
        );
    }
    assert_eq!(admin.partitions("counts").await.expect("partitions"), 1);
    admin.create_stream("counts", 6).await.expect("create");
    admin
        .create_stream("counts", 6)
        .await
        .expect("again, same count");
    let other = admin.create_stream("counts", 7).await;
    assert!(
        matches!(&other, Err(Error::StreamExists { partitions: 6, .. })),
        "{other:?}"
    );
    assert_eq!(admin.partitions("counts").await.expect("partitions"), 6);
    assert!(matches!(
        admin.create_stream("bad name", 2).await,
        Err(Error::InvalidName { .. })
    ));

    produce(&driver, "used", "m", 1).await;
    let used = admin.create_stream("used", 4).await;
    assert!(
        matches!(&used, Err(Error::StreamExists { partitions: 1, .. })),
        "{used:?}"
    );
    assert_eq!(admin.partitions("used").await.expect("partitions"), 1);

    let producer = Producer::new(driver.clone());
    let keyed = producer
        .send(NewMessage::new("used", "keyed").with_key("k"))
        .await
        .expect("a key on an unpartitioned stream");
    let named = producer
        .send(NewMessage::new("used", "named").to_partition(0))
        .await
        .expect("partition 0 of an unpartitioned stream");
    assert_eq!((keyed, named), (2, 3));
    let beyond = producer
        .send(NewMessage::new("used", "beyond").to_partition(1))
        .await;
    assert!(
        matches!(beyond, Err(Error::NoSuchPartition { partitions: 1, .. })),
        "{beyond:?}"
    );
    assert_eq!(driver.head("used").await.expect("head"), 3);
    assert_eq!(
        driver.read("used", 1, 1).await.expect("read")[0].key(),
        Some(&b"k"[..])
    );
}

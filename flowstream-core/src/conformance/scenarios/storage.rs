//! What a driver stores: exactly what it was given, or nothing with a clear refusal. These
//! fix the set of messages every driver accepts, so a stream can move between drivers.

use crate::conformance::{DriverFactory, produce};
use crate::driver::DriverError;
use crate::{DEFAULT_MAX_BODY_SIZE, Error, NewMessage, Producer};

/// Messages every driver must accept and read back byte for byte: empty, binary and
/// maximum-size bodies; Unicode, empty, multi-line and long header values; many headers.
pub(crate) async fn portable_messages_are_stored_faithfully(factory: &dyn DriverFactory) {
    let driver = factory.open().await;
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("h{i:03}"), i.to_string()))
        .collect();
    let mut messages = vec![
        NewMessage::new("portable", Vec::new()),
        NewMessage::new("portable", all_bytes),
        NewMessage::new("portable", vec![0u8; DEFAULT_MAX_BODY_SIZE]),
        NewMessage::new("portable", "headers")
            .with_header("ключ", "значение 🚀")
            .with_header("empty", "")
            .with_header("lines", "a\nb\r\nc\t\"quoted\" \\ back\u{7f}")
            .with_header("long", "v".repeat(64 * 1024))
            .with_header("with space", "x"),
    ];
    let mut crowded = NewMessage::new("portable", "crowded");
    for (name, value) in &many {
        crowded = crowded.with_header(name.as_str(), value.as_str());
    }
    messages.push(crowded);
    let offsets = Producer::new(driver.clone())
        .send_batch(messages.clone())
        .await
        .expect("every portable message is accepted");
    assert_eq!(offsets, (1..=5).collect::<Vec<u64>>());
    let read = driver.read("portable", 0, 10).await.expect("read");
    assert_eq!(read.len(), messages.len());
    for (sent, stored) in messages.iter().zip(&read) {
        assert_eq!(
            stored.body(),
            sent.body(),
            "body of offset {}",
            stored.offset()
        );
        assert_eq!(
            stored.headers(),
            sent.headers(),
            "headers of offset {}",
            stored.offset()
        );
    }
}

/// Messages no driver stores: header names or values with a NUL character. Every driver
/// refuses them alike ([`Error::Refused`]), before anything of the call is stored, and keeps
/// working afterwards.
pub(crate) async fn messages_no_store_can_hold_are_refused_and_store_nothing(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "kept", "m", 1).await;
    let producer = Producer::new(driver.clone());
    let refused: [(&str, &str); 2] = [("nul\0name", "value"), ("name", "nul\0value")];
    for (name, value) in refused {
        let sent = producer
            .send_batch([
                NewMessage::new("kept", "fine"),
                NewMessage::new("other", "bad").with_header(name, value),
            ])
            .await;
        assert!(
            matches!(&sent, Err(Error::Refused { reason }) if !reason.is_empty()),
            "header {name:?}: {value:?}: {sent:?}"
        );
        let direct = driver
            .append(vec![
                NewMessage::new("kept", "direct").with_header(name, value),
            ])
            .await;
        assert!(
            matches!(direct, Err(DriverError::InvalidInput(_))),
            "straight to the driver: {direct:?}"
        );
    }
    assert_eq!(driver.head("kept").await.expect("head"), 1);
    assert_eq!(driver.head("other").await.expect("head"), 0);
    assert_eq!(driver.read("kept", 0, 10).await.expect("read").len(), 1);
    assert_eq!(produce(&driver, "kept", "after", 1).await, vec![2]);
}

/// Applications call `read`, `head` and `trim` on the driver directly; a stream name the
/// engine would refuse is refused there too, and nothing is deleted or created.
pub(crate) async fn bad_stream_names_are_refused_by_direct_driver_calls(
    factory: &dyn DriverFactory,
) {
    let driver = factory.open().await;
    produce(&driver, "kept", "m", 2).await;
    let long = "s".repeat(300);
    // A partition's log name is the stream's, `/` and a partition number from 1, written
    // one way only.
    for name in [
        "",
        "no/slash",
        "kept/0",
        "kept/01",
        "kept/1024",
        "a/b/1",
        "/1",
        "with space",
        "naïve",
        long.as_str(),
    ] {
        let read = driver.read(name, 0, 10).await;
        assert!(
            matches!(read, Err(DriverError::InvalidInput(_))),
            "read {name:?}: {read:?}"
        );
        let head = driver.head(name).await;
        assert!(
            matches!(head, Err(DriverError::InvalidInput(_))),
            "head {name:?}: {head:?}"
        );
        let trim = driver.trim(name, 10).await;
        assert!(
            matches!(trim, Err(DriverError::InvalidInput(_))),
            "trim {name:?}: {trim:?}"
        );
        let append = driver.append(vec![NewMessage::new(name, "x")]).await;
        assert!(
            matches!(append, Err(DriverError::InvalidInput(_))),
            "append {name:?}: {append:?}"
        );
    }
    assert_eq!(driver.read("kept", 0, 10).await.expect("read").len(), 2);
}

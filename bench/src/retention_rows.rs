//! Retention rows: the end-to-end latency of a producer and a consumer at a steady rate on a
//! stream holding `--messages` old messages, alone and while those old messages are trimmed
//! (`Admin::trim`, in its chunks), and how fast the trim went beside them.

use std::time::{Duration, Instant};

use flowstream_core::{Admin, NewMessage, StartFrom};

use crate::BoxError;
use crate::flow::Flowstream;
use crate::report::Report;
use crate::system::System;
use crate::workload::{Sizes, body, chunks, unique};

/// The steady traffic beside the trim.
const RATE: u64 = 2_000;
/// How long each phase sends.
const PHASE: Duration = Duration::from_secs(5);

pub(crate) async fn rows(
    flow: &Flowstream,
    sizes: &Sizes,
    smoke: bool,
    report: &mut Report,
) -> bool {
    match measure(flow, sizes, smoke).await {
        Ok(figures) => {
            let name = flow.name();
            let at = format!("at {} msg/s on a stream of {}", RATE, sizes.consume);
            report.latencies(&format!("{at}, no trim"), &name, figures.alone);
            report.latencies(
                &format!("{at}, while it is trimmed"),
                &name,
                figures.trimmed,
            );
            report.rate(
                &format!(
                    "retention: trimming {} messages beside that traffic",
                    sizes.consume
                ),
                &name,
                figures.trim_rate,
            );
            true
        }
        Err(error) => {
            report.skip("retention rows", &flow.name(), error.to_string());
            false
        }
    }
}

type Summary = Option<(Duration, Duration, Duration)>;

struct Figures {
    alone: Summary,
    trimmed: Summary,
    trim_rate: f64,
}

async fn measure(flow: &Flowstream, sizes: &Sizes, smoke: bool) -> Result<Figures, BoxError> {
    let stream = unique("retained");
    let old = sizes.consume;
    for (_, count) in chunks(old, 1_000) {
        let batch: Vec<NewMessage> = (0..count)
            .map(|_| NewMessage::new(stream.as_str(), body(sizes.body)))
            .collect();
        flow.producer().send_batch(batch).await?;
    }
    let phase = if smoke {
        Duration::from_millis(200)
    } else {
        PHASE
    };
    let expected = usize::try_from(RATE * phase.as_millis() as u64 / 1000).unwrap_or(usize::MAX);

    let alone = traffic(flow, &stream, expected, phase, sizes).await?;

    let admin = Admin::new(flow.driver().clone());
    let started = Instant::now();
    let trim = {
        let (admin, stream) = (admin.clone(), stream.clone());
        tokio::spawn(async move {
            let deleted = admin.trim(&stream, old as u64).await?;
            Ok::<_, BoxError>((deleted, started.elapsed()))
        })
    };
    let trimmed = traffic(flow, &stream, expected, phase, sizes).await?;
    let (deleted, took) = trim.await??;
    if deleted != old as u64 {
        return Err(format!("the trim deleted {deleted} of {old} messages").into());
    }
    Ok(Figures {
        alone,
        trimmed,
        trim_rate: deleted as f64 / took.as_secs_f64(),
    })
}

/// Sends at `RATE` for `phase` while a new group receives from the head; their latencies.
async fn traffic(
    flow: &Flowstream,
    stream: &str,
    expected: usize,
    phase: Duration,
    sizes: &Sizes,
) -> Result<Summary, BoxError> {
    let receiver = flow
        .receive_latencies(stream, StartFrom::Latest, expected, sizes.read_batch)
        .await?;
    flow.send_paced(stream, RATE, phase, sizes.body).await?;
    Ok(receiver.await??.summary())
}

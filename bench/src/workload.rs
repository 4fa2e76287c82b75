//! What the scenarios share: message bodies, sizes, pacing and latency bookkeeping.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;

use crate::BoxError;

/// How much each scenario does.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    pub(crate) body: usize,
    /// Messages per batched-produce run.
    pub(crate) produce: usize,
    /// Messages per concurrent-singles run.
    pub(crate) singles: usize,
    /// Length of the stream the consume scenario reads.
    pub(crate) consume: usize,
    /// Messages per read (and per acknowledgement) when consuming.
    pub(crate) read_batch: usize,
}

/// A body of `size` bytes.
pub(crate) fn body(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Nanoseconds since the Unix epoch: the wall clock, so that a stamp made in one process (a
/// fleet producer) reads correctly in another on the same machine.
fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A body of `size` bytes (at least 8) starting with the moment it was made.
pub(crate) fn stamped_body(size: usize) -> Vec<u8> {
    let mut out = body(size.max(8));
    out[..8].copy_from_slice(&now_nanos().to_le_bytes());
    out
}

/// Time since the stamp at the start of `body` was made.
pub(crate) fn since_stamp(body: &[u8]) -> Option<Duration> {
    let stamp = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    Some(Duration::from_nanos(now_nanos().saturating_sub(stamp)))
}

/// Send→delivery latencies of one run.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Latencies {
            samples: Vec::with_capacity(n),
        }
    }

    pub(crate) fn record(&mut self, body: &[u8]) {
        if let Some(latency) = since_stamp(body) {
            self.samples.push(latency);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// `(p50, p99, max)`, or `None` without samples.
    pub(crate) fn summary(mut self) -> Option<(Duration, Duration, Duration)> {
        self.samples.sort_unstable();
        let n = self.samples.len();
        let at = |q: f64| self.samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        (n > 0).then(|| (at(0.50), at(0.99), self.samples[n - 1]))
    }
}

/// Starts `send` for `rate × duration` messages spread evenly over `duration`, each in its
/// own task (as independent requests of a service would), and waits for all of them.
pub(crate) async fn paced<F, Fut>(
    rate: u64,
    duration: Duration,
    mut send: F,
) -> Result<u64, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = JoinSet::new();
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            tasks.spawn(send());
            sent += 1;
        }
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(total)
}

/// `tasks` tasks at once, `total` sends in all, each task sending one at a time and waiting for
/// it: `send(i)` makes the `i`-th send (`i` is distinct across tasks).
pub(crate) async fn singles<F, Fut>(tasks: usize, total: usize, send: F) -> Result<(), BoxError>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let mut set = JoinSet::new();
    for task in 0..tasks {
        let send = send.clone();
        set.spawn(async move {
            for i in (task..total).step_by(tasks) {
                send(i).await?;
            }
            Ok::<_, BoxError>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}

/// `total` items in batches of `size`: `(first index, length)` of each.
pub(crate) fn chunks(total: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..total)
        .step_by(size.max(1))
        .map(move |first| (first, size.min(total - first)))
}

/// A name no earlier run used, so runs never read each other's data.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    format!("{prefix}-{nanos:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_total_once() {
        let all: Vec<(usize, usize)> = chunks(2_500, 1_000).collect();
        assert_eq!(all, vec![(0, 1_000), (1_000, 1_000), (2_000, 500)]);
    }

    #[test]
    fn percentiles_pick_ranked_samples() {
        let l = Latencies {
            samples: (1..=100).map(Duration::from_millis).collect(),
        };
        let (p50, p99, max) = l.summary().unwrap_or_default();
        assert_eq!(
            (p50, p99, max),
            (
                Duration::from_millis(50),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
    }
}

//! Group commit: concurrent sends share one storage transaction.
//!
//! Every send joins a queue. If no append is in flight, the send starts a flusher task; the
//! flusher takes everything queued (up to a cap), appends it in one driver call, hands each
//! sender its own offsets, and repeats until the queue is empty. Nothing waits on a timer:
//! an idle producer appends a lone send at once, and a busy one batches exactly what arrived
//! while the previous append was in flight.
//!
//! Each send stays all-or-nothing on its own: validation happened before it was queued; a
//! storage failure of the shared append fails every send in it with the same error (the
//! shared append is one transaction, so they were all stored or none was, and a retryable
//! error says which is unknown, as for a lone send); and if the driver refuses the input,
//! nothing was stored, and each send is retried alone so one bad send cannot fail its
//! neighbours.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::driver::{Driver, DriverError, GatherQueue, Gathered};
use crate::error::Error;
use crate::message::NewMessage;

/// At most this many messages go into one shared append (a single larger send is never
/// split).
const MAX_MESSAGES: usize = 4096;
/// At most this many bytes of bodies, keys and headers go into one shared append (same
/// caveat).
const MAX_BYTES: usize = 4 * 1024 * 1024;

type Reply = Result<Vec<u64>, DriverError>;

type Request = Gathered<Reply>;

/// The queue shared by a producer and its clones.
#[derive(Debug)]
pub(super) struct GroupCommit {
    queue: GatherQueue<Reply>,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            queue: GatherQueue::new(MAX_MESSAGES, MAX_BYTES),
        }
    }
}

impl GroupCommit {
    /// Appends `messages` (already validated) as one unit, possibly in a transaction shared
    /// with other sends.
    pub(super) async fn append(
        self: &Arc<Self>,
        driver: &Arc<dyn Driver>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<u64>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (replied, start_flusher) = self.queue.join(messages);
        if start_flusher {
            let span = tracing::debug_span!("flowstream.group_commit");
            runtime.spawn(flush(Arc::clone(self), Arc::downgrade(driver)).instrument(span));
        }
        match replied.await {
            Ok(result) => result.map_err(Error::from),
            // The flusher only drops a request unanswered if its task was cancelled (the
            // runtime shutting down): the append may or may not have been stored.
            Err(_) => Err(Error::Storage(DriverError::unavailable(
                "the append was interrupted; it may or may not have been stored",
            ))),
        }
    }
}

/// Holds the driver only while an append runs: once the last producer is gone, nothing here
/// keeps the storage open (a redb file can be reopened at once, say).
async fn flush(queue: Arc<GroupCommit>, driver: Weak<dyn Driver>) {
    let mut running = Running(Some(queue));
    while let Some(queue) = &running.0 {
        let group = queue.queue.next_group();
        if group.is_empty() {
            // `next_group` has cleared `flushing`: a later send starts a new flusher.
            running.0 = None;
            return;
        }
        // A queued send borrows its producer, which owns the driver, so this succeeds; if it
        // does not, dropping the group tells its senders they were interrupted.
        let Some(strong) = driver.upgrade() else {
            return;
        };
        let messages: usize = group.iter().map(|r| r.messages.len()).sum();
        let started = std::time::Instant::now();
        let answers = append_group(&*strong, group).await;
        crate::metrics::appended(started.elapsed().as_secs_f64(), messages);
        drop(strong);
        for (reply, result) in answers {
            // A sender that stopped waiting (its future was dropped) needs no answer.
            let _ = reply.send(result);
        }
        // The senders just answered are about to send again. Let them queue before looking,
        // or the next append would carry only the first of them and the rest the one after
        // (groups alternating between one send and all the others).
        tokio::task::yield_now().await;
    }
}

/// Set while a flusher runs. If the task ends abnormally (a panicking driver, the runtime
/// shutting down), dropping it lets later sends start a new flusher and answers the queued
/// sends with an error instead of leaving them waiting forever.
struct Running(Option<Arc<GroupCommit>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            queue.queue.abandon();
        }
    }
}

/// One driver call for the whole group; each request gets its own slice of the offsets.
/// Returns the answers rather than sending them, so the caller can let go of the driver first.
async fn append_group(
    driver: &dyn Driver,
    group: Vec<Request>,
) -> Vec<(oneshot::Sender<Reply>, Reply)> {
    if let [_] = group.as_slice() {
        let mut answers = Vec::with_capacity(1);
        for request in group {
            answers.push((
                request.reply,
                append_checked(driver, request.messages).await,
            ));
        }
        return answers;
    }
    let counts: Vec<usize> = group.iter().map(|r| r.messages.len()).collect();
    let all: Vec<NewMessage> = group
        .iter()
        .flat_map(|r| r.messages.iter().cloned())
        .collect();
    tracing::debug!(sends = group.len(), messages = all.len(), "shared append");
    match append_checked(driver, all).await {
        Ok(offsets) => {
            let mut offsets = offsets.into_iter();
            group
                .into_iter()
                .zip(counts)
                .map(|(request, count)| (request.reply, Ok(offsets.by_ref().take(count).collect())))
                .collect()
        }
        Err(DriverError::InvalidInput(reason)) => {
            // Nothing was stored; find out which send the driver refused by trying each alone.
            tracing::debug!(%reason, "shared append refused; appending its sends one by one");
            let mut answers = Vec::with_capacity(group.len());
            for request in group {
                answers.push((
                    request.reply,
                    append_checked(driver, request.messages).await,
                ));
            }
            answers
        }
        // One transaction: every send in it failed alike, with the same (shared) error.
        Err(error) => group
            .into_iter()
            .map(|request| (request.reply, Err(error.clone())))
            .collect(),
    }
}

/// The driver's append, with its answer checked: one offset per message.
async fn append_checked(driver: &dyn Driver, messages: Vec<NewMessage>) -> Reply {
    let count = messages.len();
    let offsets = driver.append(messages).await?;
    if offsets.len() != count {
        return Err(DriverError::failed(format!(
            "driver returned {} offsets for {count} messages",
            offsets.len()
        )));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;
    use crate::driver::ChangeHub;
    use crate::driver::{Expected, Record, Revision};
    use crate::message::Message;
    use crate::producer::Producer;

    /// An append-only driver for one stream whose appends can be held at a gate, refused or
    /// failed on demand, so the tests decide exactly what is in flight.
    #[derive(Default)]
    struct Scripted {
        state: Mutex<ScriptState>,
        gate_open: Notify,
        hub: ChangeHub,
    }

    #[derive(Default)]
    struct ScriptState {
        head: u64,
        /// Message count of each append call, in call order.
        calls: Vec<usize>,
        gated: bool,
        /// Bodies the driver refuses (as a driver refuses what it cannot store).
        refuse: Option<Vec<u8>>,
        /// The append call (counted from 0) that loses its connection.
        fail_call: Option<usize>,
        panic_next: bool,
    }

    impl std::fmt::Debug for Scripted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Scripted")
        }
    }

    impl Scripted {
        fn state(&self) -> MutexGuard<'_, ScriptState> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn calls(&self) -> Vec<usize> {
            self.state().calls.clone()
        }
    }

    #[async_trait::async_trait]
    impl Driver for Scripted {
        async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<u64>, DriverError> {
            let gated = {
                let mut state = self.state();
                state.calls.push(messages.len());
                if std::mem::take(&mut state.panic_next) {
                    panic!("scripted driver panic");
                }
                state.gated
            };
            if gated {
                self.gate_open.notified().await;
            }
            let mut state = self.state();
            if state.fail_call == Some(state.calls.len() - 1) {
                return Err(DriverError::unavailable("scripted connection loss"));
            }
            if let Some(refused) = &state.refuse
                && messages.iter().any(|m| m.body() == refused.as_slice())
            {
                return Err(DriverError::InvalidInput("scripted refusal".to_owned()));
            }
            let first = state.head + 1;
            state.head += messages.len() as u64;
            Ok((first..=state.head).collect())
        }

        async fn read(&self, _: &str, _: u64, _: usize) -> Result<Vec<Message>, DriverError> {
            Ok(Vec::new())
        }

        async fn head(&self, _: &str) -> Result<u64, DriverError> {
            Ok(self.state().head)
        }

        async fn trim(&self, _: &str, _: u64) -> Result<u64, DriverError> {
            Ok(0)
        }

        async fn get_record(&self, _: &str) -> Result<Option<Record>, DriverError> {
            Ok(None)
        }

        async fn put_record(
            &self,
            key: &str,
            _: serde_json::Value,
            _: Expected,
            _: bool,
        ) -> Result<Revision, DriverError> {
            Err(DriverError::NotFound(key.to_owned()))
        }

        async fn apply(
            &self,
            _: crate::driver::Batch,
        ) -> Result<crate::driver::Applied, DriverError> {
            Err(DriverError::NotFound("batches".to_owned()))
        }

        async fn delete_log(&self, log: &str) -> Result<bool, DriverError> {
            Err(DriverError::NotFound(log.to_owned()))
        }

        async fn logs(&self) -> Result<Vec<(String, u64)>, DriverError> {
            Ok(Vec::new())
        }

        async fn delete_record(&self, key: &str, _: Revision, _: bool) -> Result<(), DriverError> {
            Err(DriverError::NotFound(key.to_owned()))
        }

        async fn records(&self, _: &str) -> Result<Vec<(String, Record)>, DriverError> {
            Ok(Vec::new())
        }

        fn changes(&self) -> &ChangeHub {
            &self.hub
        }
    }

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn queued(producer: &Producer) -> usize {
        producer.group_commit.queue.waiting()
    }

    fn message(body: &str) -> NewMessage {
        NewMessage::new("s", body)
    }

    /// Holds the first append at the gate, queues `batches` behind it, and opens the gate.
    async fn queue_behind_a_held_append(
        driver: &Arc<Scripted>,
        producer: &Producer,
        batches: Vec<Vec<NewMessage>>,
    ) -> (
        tokio::task::JoinHandle<Result<Vec<u64>, Error>>,
        Vec<tokio::task::JoinHandle<Result<Vec<u64>, Error>>>,
    ) {
        driver.state().gated = true;
        let first = tokio::spawn({
            let producer = producer.clone();
            async move { producer.send_batch([message("first")]).await }
        });
        until("the first append", || driver.calls().len() == 1).await;
        let count = batches.len();
        let mut waiting = Vec::new();
        for batch in batches {
            let producer = producer.clone();
            waiting.push(tokio::spawn(
                async move { producer.send_batch(batch).await },
            ));
        }
        until("the sends to queue", || queued(producer) == count).await;
        driver.state().gated = false;
        driver.gate_open.notify_one();
        (first, waiting)
    }

    #[tokio::test]
    async fn sends_that_arrive_during_an_append_share_the_next_one() {
        let driver = Arc::new(Scripted::default());
        let producer = Producer::new(driver.clone());
        let batches = vec![
            vec![message("a")],
            vec![message("b1"), message("b2"), message("b3")],
            vec![message("c")],
        ];
        let (first, waiting) = queue_behind_a_held_append(&driver, &producer, batches).await;
        assert_eq!(first.await.ok().and_then(Result::ok), Some(vec![1]));
        let mut results = Vec::new();
        for task in waiting {
            results.push(task.await.ok().and_then(Result::ok));
        }
        assert_eq!(
            results,
            vec![Some(vec![2]), Some(vec![3, 4, 5]), Some(vec![6])],
            "each send gets its own offsets, in queue order"
        );
        assert_eq!(
            driver.calls(),
            vec![1, 5],
            "the three queued sends shared one append"
        );
    }

    #[tokio::test]
    async fn a_refused_send_does_not_fail_the_sends_it_was_grouped_with() {
        let driver = Arc::new(Scripted::default());
        driver.state().refuse = Some(b"bad".to_vec());
        let producer = Producer::new(driver.clone());
        let batches = vec![
            vec![message("a")],
            vec![message("ok"), message("bad")],
            vec![message("c")],
        ];
        let (first, waiting) = queue_behind_a_held_append(&driver, &producer, batches).await;
        assert!(matches!(first.await, Ok(Ok(_))));
        let mut results = Vec::new();
        for task in waiting {
            results.push(task.await.expect("send task"));
        }
        assert!(matches!(&results[0], Ok(offsets) if offsets.len() == 1));
        assert!(
            matches!(&results[1], Err(Error::Refused { .. })),
            "{:?}",
            results[1]
        );
        assert!(matches!(&results[2], Ok(offsets) if offsets.len() == 1));
        assert_eq!(
            driver.calls(),
            vec![1, 4, 1, 2, 1],
            "the shared append was refused, then each send went alone"
        );
        assert_eq!(
            driver.state().head,
            3,
            "only the accepted sends were stored"
        );
    }

    #[tokio::test]
    async fn a_lost_connection_fails_every_send_of_the_shared_append_as_retryable() {
        let driver = Arc::new(Scripted::default());
        driver.state().fail_call = Some(1);
        let producer = Producer::new(driver.clone());
        let batches = vec![vec![message("a")], vec![message("b"), message("c")]];
        let (first, waiting) = queue_behind_a_held_append(&driver, &producer, batches).await;
        assert!(matches!(first.await, Ok(Ok(_))));
        for task in waiting {
            let result = task.await.expect("send task");
            assert!(matches!(&result, Err(e) if e.is_retryable()), "{result:?}");
        }
        assert_eq!(
            driver.calls(),
            vec![1, 3],
            "an ambiguous failure is not retried: the append may have been stored"
        );
        assert_eq!(producer.send(message("d")).await.ok(), Some(2));
    }

    #[tokio::test]
    async fn once_a_send_returns_only_the_producer_holds_the_driver() {
        let driver = Arc::new(Scripted::default());
        let producer = Producer::new(driver.clone());
        assert_eq!(producer.send(message("a")).await.ok(), Some(1));
        drop(producer);
        // A redb file, say, can be reopened right away.
        assert_eq!(Arc::strong_count(&driver), 1);
    }

    #[tokio::test]
    async fn a_panicking_driver_fails_the_waiting_sends_and_later_sends_still_work() {
        let driver = Arc::new(Scripted::default());
        let producer = Producer::new(driver.clone());
        driver.state().panic_next = true;
        let lost = producer.send(message("lost")).await;
        assert!(matches!(&lost, Err(e) if e.is_retryable()), "{lost:?}");
        let next = producer.send(message("next")).await;
        assert!(matches!(next, Ok(1)), "{next:?}");
    }
}

//! In-process fan-out of change notifications.
//!
//! A driver owns one [`ChangeHub`] and calls [`ChangeHub::notify`] when a stream's head moves or
//! a record changes (redb right after its commit; PostgreSQL from its single LISTEN connection).
//! Every consumer subscribes to the topics it cares about. Waiting costs no storage reads and no
//! timers: a thousand idle consumers are a thousand parked futures (guarantee 8).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// New messages were appended to this stream.
    Stream(String),
    /// The record with this key was written.
    Record(String),
}

type Topics = HashMap<Topic, watch::Sender<u64>>;

/// Fans change notifications out to any number of in-process subscribers.
///
/// Cloning gives another handle to the same hub.
#[derive(Debug, Clone)]
pub struct ChangeHub {
    topics: Arc<Mutex<Topics>>,
    /// Bumped by [`notify_all`](ChangeHub::notify_all): one send that every subscription sees
    /// at once, so a waiter holding several subscriptions can take a wake-all as one event.
    everything: Arc<watch::Sender<u64>>,
    /// Becomes true with the first subscription, so a driver can defer the cost of receiving
    /// changes (a LISTEN connection, say) until somebody waits for them.
    wanted: Arc<watch::Sender<bool>>,
}

impl Default for ChangeHub {
    fn default() -> Self {
        ChangeHub {
            topics: Arc::default(),
            everything: Arc::new(watch::channel(0).0),
            wanted: Arc::new(watch::channel(false).0),
        }
    }
}

impl ChangeHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to one topic. Only changes notified after this call wake the subscription.
    pub fn subscribe(&self, topic: Topic) -> Subscription {
        self.wanted
            .send_if_modified(|wanted| !std::mem::replace(wanted, true));
        let mut topics = self.lock();
        let rx = topics
            .entry(topic.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            hub: self.clone(),
            topic,
            rx: Some(rx),
            everything: self.everything.subscribe(),
        }
    }

    /// Wakes every subscriber of `topic`. Cheap when nobody listens.
    pub fn notify(&self, topic: &Topic) {
        let topics = self.lock();
        if let Some(tx) = topics.get(topic) {
            tx.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Wakes every subscriber of every topic, e.g. after notifications may have been lost.
    /// Costs one send whatever the number of topics.
    pub fn notify_all(&self) {
        self.everything
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Resolves once anybody has subscribed to this hub (at once if somebody already did).
    /// A driver that receives changes from elsewhere can start doing so then, instead of at
    /// connect: a process that only produces never pays for it. It must then call
    /// [`notify_all`](ChangeHub::notify_all) once it receives changes, since subscribers that
    /// came earlier may have missed some.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn wanted(&self) {
        let mut wanted = self.wanted.subscribe();
        // The sender lives in this hub, so the wait ends only when the flag is set.
        let _ = wanted.wait_for(|wanted| *wanted).await;
    }

    /// Number of topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Topics> {
        // The map stays consistent even if a holder panicked: every update is a single call.
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A subscription to one topic of a [`ChangeHub`]; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: ChangeHub,
    topic: Topic,
    // Always `Some` until drop, which takes it so the receiver is gone before the count check.
    rx: Option<watch::Receiver<u64>>,
    everything: watch::Receiver<u64>,
}

impl Subscription {
    /// Waits until the topic is notified. A notification that arrived since the subscription
    /// was made (or since the last `changed` returned) completes it at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future loses no notification.
    pub async fn changed(&mut self) {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        let changed = tokio::select! {
            changed = rx.changed() => changed,
            changed = self.everything.changed() => changed,
        };
        if changed.is_err() {
            // Both senders live in the hub, which this subscription holds, so this cannot
            // happen; never spin if it ever does.
            std::future::pending::<()>().await;
        }
    }

    /// Whether a notification arrived that [`mark_seen`](Subscription::mark_seen) has not
    /// covered yet (then [`changed`](Subscription::changed) would return at once).
    pub fn has_changed(&self) -> bool {
        self.rx
            .as_ref()
            .is_some_and(|rx| rx.has_changed().unwrap_or(false))
            || self.everything.has_changed().unwrap_or(false)
    }

    /// Treats every notification so far as seen: the next [`changed`](Subscription::changed)
    /// waits for a new one. For a waiter that is about to re-read everything anyway.
    pub fn mark_seen(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
        self.everything.borrow_and_update();
    }

    /// The topic this subscription listens to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.hub.lock();
        drop(self.rx.take());
        if topics
            .get(&self.topic)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            topics.remove(&self.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    #[tokio::test]
    async fn notification_after_subscribe_wakes_and_before_does_not() {
        let hub = ChangeHub::new();
        let topic = Topic::Stream("s".into());
        hub.notify(&topic);
        let mut sub = hub.subscribe(topic.clone());
        assert!(
            timeout(Duration::from_millis(20), sub.changed())
                .await
                .is_err()
        );
        hub.notify(&topic);
        timeout(Duration::from_secs(5), sub.changed())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn topics_are_independent_and_cleaned_up() {
        let hub = ChangeHub::new();
        let mut a = hub.subscribe(Topic::Stream("a".into()));
        let b = hub.subscribe(Topic::Record("a".into()));
        assert_eq!(hub.topic_count(), 2);
        hub.notify(&Topic::Record("a".into()));
        assert!(
            timeout(Duration::from_millis(20), a.changed())
                .await
                .is_err()
        );
        drop(b);
        assert_eq!(hub.topic_count(), 1);
        hub.notify_all();
        timeout(Duration::from_secs(5), a.changed())
            .await
            .expect("woken by notify_all");
        drop(a);
        assert_eq!(hub.topic_count(), 0);
    }

    #[tokio::test]
    async fn a_wake_all_is_one_event_for_a_holder_of_several_subscriptions() {
        let hub = ChangeHub::new();
        let mut record = hub.subscribe(Topic::Record("k".into()));
        let mut stream = hub.subscribe(Topic::Stream("s".into()));
        hub.notify_all();
        timeout(Duration::from_secs(5), record.changed())
            .await
            .expect("woken by notify_all");
        // A waiter that answers the wake-all with one look marks both seen...
        record.mark_seen();
        stream.mark_seen();
        // ...and neither fires again for it.
        assert!(
            timeout(Duration::from_millis(20), stream.changed())
                .await
                .is_err()
        );
        assert!(
            timeout(Duration::from_millis(20), record.changed())
                .await
                .is_err()
        );
        hub.notify(&Topic::Stream("s".into()));
        timeout(Duration::from_secs(5), stream.changed())
            .await
            .expect("a later notification still wakes");
    }
}

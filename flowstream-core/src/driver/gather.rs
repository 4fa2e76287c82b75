//! Gathering concurrent calls into groups, one storage write per group, with no timer.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::message::NewMessage;

/// A queue that gathers concurrent calls, each a list of messages, into groups that one
/// storage write serves: the producer's group commit, and the PostgreSQL driver's staged
/// sends, are built on it.
///
/// A call [`join`](Self::join)s the queue. If no flusher is running, the caller starts one; the
/// flusher takes groups with [`next_group`](Self::next_group), writes each, answers every
/// call in it, and stops once `next_group` finds the queue empty (which also marks it gone,
/// so that the next call starts another). Nothing waits on a timer: a lone call is written at
/// once, and a busy queue writes what arrived while the previous write was in flight. A
/// flusher that ends abnormally (its task cancelled) must call [`abandon`](Self::abandon).
pub struct GatherQueue<R> {
    state: Mutex<State<R>>,
    max_messages: usize,
    max_bytes: usize,
}

impl<R> std::fmt::Debug for GatherQueue<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatherQueue")
            .field("waiting", &self.waiting())
            .field("max_messages", &self.max_messages)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// One call waiting in a [`GatherQueue`]: its messages, and where its answer goes.
#[derive(Debug)]
pub struct Gathered<R> {
    /// The call's messages, in order.
    pub messages: Vec<NewMessage>,
    /// Where the call's answer goes; the call learns it was interrupted if this is dropped.
    pub reply: oneshot::Sender<R>,
}

struct State<R> {
    waiting: Vec<Gathered<R>>,
    /// A flusher runs and will see anything pushed to `waiting`.
    flushing: bool,
}

impl<R> GatherQueue<R> {
    /// A queue whose groups hold at most `max_messages` messages and `max_bytes` of bodies,
    /// keys and headers, unless a single call is larger (a call is never split).
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        GatherQueue {
            state: Mutex::new(State {
                waiting: Vec::new(),
                flushing: false,
            }),
            max_messages,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // Never held across anything that can panic; a poisoned queue is intact.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a call. Returns where its answer will come, and whether the caller must start a
    /// flusher (none was running).
    pub fn join(&self, messages: Vec<NewMessage>) -> (oneshot::Receiver<R>, bool) {
        let (reply, replied) = oneshot::channel();
        let mut state = self.lock();
        state.waiting.push(Gathered { messages, reply });
        let start = !std::mem::replace(&mut state.flushing, true);
        (replied, start)
    }

    /// Takes the next group of calls, oldest first, within the caps (at least one call); or,
    /// when none is waiting, returns nothing and marks the flusher gone.
    pub fn next_group(&self) -> Vec<Gathered<R>> {
        let mut state = self.lock();
        if state.waiting.is_empty() {
            state.flushing = false;
            return Vec::new();
        }
        let (mut messages, mut bytes, mut take) = (0, 0, 0);
        for call in &state.waiting {
            let size: usize = call.messages.iter().map(weight).sum();
            if take > 0
                && (messages + call.messages.len() > self.max_messages
                    || bytes + size > self.max_bytes)
            {
                break;
            }
            messages += call.messages.len();
            bytes += size;
            take += 1;
        }
        state.waiting.drain(..take).collect()
    }

    /// How many calls are queued, not yet taken by a flusher.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// For a flusher that ends abnormally: marks it gone, so that the next call starts
    /// another, and drops the calls waiting, which tells each it was interrupted.
    pub fn abandon(&self) {
        let abandoned = {
            let mut state = self.lock();
            state.flushing = false;
            std::mem::take(&mut state.waiting)
        };
        drop(abandoned);
    }
}

/// What a message weighs in a group: its body, key and headers.
fn weight(message: &NewMessage) -> usize {
    let headers: usize = message
        .headers()
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    message.body().len() + message.key().map_or(0, <[u8]>::len) + headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(queue: &GatherQueue<()>, bodies: &[usize]) -> bool {
        let messages = bodies
            .iter()
            .map(|&n| NewMessage::new("s", vec![0; n]))
            .collect();
        let (_replied, start) = queue.join(messages);
        start
    }

    /// The first call starts the flusher, the others join it; groups stop at the caps but
    /// always take one call, and an empty queue lets the next call start a new flusher.
    #[test]
    fn groups_respect_the_caps_and_the_flusher_hands_over() {
        let queue = GatherQueue::new(3, 100);
        assert!(call(&queue, &[10]));
        assert!(!call(&queue, &[10, 10]));
        assert!(!call(&queue, &[10]));
        assert!(!call(&queue, &[500]));
        assert!(!call(&queue, &[60]));
        assert!(!call(&queue, &[60]));
        let sizes = |group: Vec<Gathered<()>>| -> Vec<usize> {
            group.iter().map(|c| c.messages.len()).collect()
        };
        assert_eq!(sizes(queue.next_group()), [1, 2], "three messages at most");
        assert_eq!(
            sizes(queue.next_group()),
            [1],
            "the call after it would pass 100 bytes"
        );
        assert_eq!(
            sizes(queue.next_group()),
            [1],
            "a call over the cap goes alone"
        );
        assert_eq!(sizes(queue.next_group()), [1], "60 + 60 is over 100 bytes");
        assert_eq!(sizes(queue.next_group()), [1]);
        assert!(queue.next_group().is_empty());
        assert!(
            call(&queue, &[1]),
            "an emptied queue lets the next call start one"
        );
        queue.abandon();
        assert!(queue.next_group().is_empty());
        assert!(
            call(&queue, &[1]),
            "an abandoned flusher lets the next call start one"
        );
    }
}

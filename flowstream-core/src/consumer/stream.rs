//! An owned `futures::Stream` view of a [`Consumer`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::Notify;

use super::Consumer;
use crate::driver::Backoff;
use crate::error::Error;
use crate::message::Message;

type Fill = Pin<Box<dyn Future<Output = (Consumer, Result<bool, Error>)> + Send>>;

/// A [`Consumer`] as a [`Stream`] of messages; made by [`Consumer::into_stream`].
///
/// The stream never ends on its own: at the head or while standby it waits for notifications.
/// It yields `Err` for storage errors and keeps going afterwards. Commit what you processed
/// with [`commit`](ConsumerStream::commit) between items:
///
/// ```no_run
/// # async fn demo(consumer: flowstream_core::Consumer) -> Result<(), flowstream_core::Error> {
/// use futures_util::StreamExt;
/// let mut messages = consumer.into_stream();
/// while let Some(msg) = messages.next().await {
///     let msg = msg?;
///     println!("{}", msg.offset());
///     messages.commit(msg.offset()).await?;
/// }
/// # Ok(()) }
/// ```
pub struct ConsumerStream {
    /// Present while no fetch is in flight.
    consumer: Option<Consumer>,
    /// A fetch in flight owns the consumer until it completes or is recalled.
    in_flight: Option<(Fill, Arc<Notify>)>,
    /// After storage errors in a row, the next fetch waits a little longer each time.
    backoff: Backoff,
    /// How long the next fetch waits first: zero unless the last one failed.
    pause: Duration,
}

impl std::fmt::Debug for ConsumerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerStream")
            .field("consumer", &self.consumer)
            .field("fetch_in_flight", &self.in_flight.is_some())
            .finish()
    }
}

impl ConsumerStream {
    pub(super) fn new(consumer: Consumer) -> Self {
        ConsumerStream {
            consumer: Some(consumer),
            in_flight: None,
            backoff: Backoff::new(Duration::from_millis(40), Duration::from_secs(5)),
            pause: Duration::ZERO,
        }
    }

    /// Commits `position` (a message, or an offset of an unpartitioned stream); see
    /// [`Consumer::commit`]. If the stream is waiting for messages, the
    /// wait is interrupted (no message is lost) so the commit can go ahead.
    ///
    /// # Cancel safety
    ///
    /// As [`Consumer::commit`]: a dropped commit may or may not have been stored. A fetch it
    /// interrupted stays with the stream.
    pub async fn commit(&mut self, position: impl Into<super::Position>) -> Result<(), Error> {
        let position = position.into();
        self.consumer().await.commit(position).await
    }

    /// Nacks `message`; see [`Consumer::nack`]. A wait in progress is interrupted first, as
    /// for [`commit`](ConsumerStream::commit).
    ///
    /// # Cancel safety
    ///
    /// As [`Consumer::nack`].
    pub async fn nack(
        &mut self,
        message: &Message,
        error: impl std::fmt::Display + Send,
    ) -> Result<super::Nacked, Error> {
        let error = error.to_string();
        self.consumer().await.nack(message, error).await
    }

    /// Dead-letters `message`; see [`Consumer::dead_letter`].
    ///
    /// # Cancel safety
    ///
    /// As [`Consumer::dead_letter`].
    pub async fn dead_letter(
        &mut self,
        message: &Message,
        reason: impl std::fmt::Display + Send,
    ) -> Result<(), Error> {
        let reason = reason.to_string();
        self.consumer().await.dead_letter(message, reason).await
    }

    /// Whether the consumer is active right now.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only takes the consumer back from a fetch in flight, which stays with
    /// the stream if this future is dropped.
    pub async fn is_active(&mut self) -> bool {
        self.consumer().await.is_active()
    }

    /// Hands the group over gracefully; see [`Consumer::shutdown`].
    ///
    /// # Cancel safety
    ///
    /// Dropped while it takes the consumer back from a fetch, the stream and its consumer are
    /// dropped like a crash; once the handover has started, it completes as with
    /// [`Consumer::shutdown`].
    pub async fn shutdown(self) -> Result<(), Error> {
        self.into_consumer().await.shutdown().await
    }

    /// Gives the consumer back.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the stream, and with it the consumer (like a crash).
    pub async fn into_consumer(mut self) -> Consumer {
        self.recall().await;
        match self.consumer.take() {
            Some(consumer) => consumer,
            // `recall` always leaves the consumer in place.
            None => unreachable_consumer(),
        }
    }

    async fn consumer(&mut self) -> &mut Consumer {
        self.recall().await;
        match self.consumer.as_mut() {
            Some(consumer) => consumer,
            None => unreachable_consumer(),
        }
    }

    /// Takes the consumer back from a fetch in flight. A fetch stuck in `wait` returns at
    /// once; one in a storage read finishes it, and the messages stay buffered in the consumer.
    async fn recall(&mut self) {
        if let Some((fill, recall)) = self.in_flight.as_mut() {
            recall.notify_one();
            // Awaited in place: if this future is dropped, the fetch (and the consumer it
            // owns) stays in the stream for the next call.
            let (consumer, result) = fill.as_mut().await;
            self.in_flight = None;
            if let Err(error) = result {
                // The next poll fetches again and reports a persisting error itself.
                tracing::debug!(error = %crate::error::Chain(&error), "fetch interrupted by a commit failed");
            }
            self.consumer = Some(consumer);
        }
    }
}

/// The stream keeps the invariant that exactly one of `consumer` and `in_flight` is set; this
/// marks the impossible other case without a panic in library code.
fn unreachable_consumer() -> ! {
    // Reaching this would be a bug in this module, not a user or storage error.
    unreachable!("ConsumerStream lost its consumer")
}

impl Stream for ConsumerStream {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some((fill, _)) = this.in_flight.as_mut() {
                let (consumer, result) = match fill.as_mut().poll(cx) {
                    Poll::Ready(done) => done,
                    Poll::Pending => return Poll::Pending,
                };
                this.in_flight = None;
                this.consumer = Some(consumer);
                match result {
                    Err(error) => {
                        this.pause = this.backoff.failed();
                        return Poll::Ready(Some(Err(error)));
                    }
                    Ok(true) => {
                        this.backoff.succeeded();
                        this.pause = Duration::ZERO;
                    }
                    Ok(false) => {}
                }
            }
            let Some(mut consumer) = this.consumer.take() else {
                return Poll::Ready(None);
            };
            if let Some(message) = consumer.pop() {
                this.consumer = Some(consumer);
                return Poll::Ready(Some(Ok(message)));
            }
            let recall = Arc::new(Notify::new());
            let signal = Arc::clone(&recall);
            // A caller that keeps polling after errors must not spin against a broken store.
            let backoff = this.pause;
            let fill: Fill = Box::pin(async move {
                if !backoff.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = signal.notified() => return (consumer, Ok(false)),
                    }
                }
                let result = consumer.fill_or_wait(&signal).await;
                (consumer, result)
            });
            this.in_flight = Some((fill, recall));
        }
    }
}

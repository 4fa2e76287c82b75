//! NATS JetStream as a peer: publish with ack to a file-backed stream, a durable pull
//! consumer with explicit acknowledgements, through the `async-nats` crate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;
use futures_util::future::try_join_all;

use crate::BoxError;
use crate::system::System;
use crate::workload::{Latencies, Sizes, body, chunks, paced, singles, stamped_body, unique};

pub(crate) struct NatsPeer {
    js: Context,
}

/// A file-backed stream of its own for one scenario, deleted when the scenario ends.
struct Scratch {
    js: Context,
    name: String,
}

impl Scratch {
    async fn create(js: &Context, prefix: &str) -> Result<Self, BoxError> {
        let name = unique(prefix);
        js.create_stream(Config {
            name: name.clone(),
            subjects: vec![name.clone()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await?;
        Ok(Scratch {
            js: js.clone(),
            name,
        })
    }

    async fn consumer(&self) -> Result<jetstream::consumer::Consumer<pull::Config>, BoxError> {
        let stream = self.js.get_stream(&self.name).await?;
        Ok(stream
            .create_consumer(pull::Config {
                durable_name: Some("bench".to_owned()),
                ack_policy: AckPolicy::All,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await?)
    }

    /// Publishes `count` copies of `body`, `batch` at a time, each batch's acks awaited
    /// together.
    async fn publish(&self, count: usize, batch: usize, body: &[u8]) -> Result<(), BoxError> {
        for (_, n) in chunks(count, batch) {
            let mut acks = Vec::with_capacity(n);
            for _ in 0..n {
                acks.push(
                    self.js
                        .publish(self.name.clone(), body.to_vec().into())
                        .await?,
                );
            }
            try_join_all(acks.into_iter().map(|ack| ack.into_future())).await?;
        }
        Ok(())
    }

    async fn delete(self) -> Result<(), BoxError> {
        self.js.delete_stream(&self.name).await?;
        Ok(())
    }
}

impl NatsPeer {
    pub(crate) async fn connect(url: &str) -> Result<Self, BoxError> {
        let client = async_nats::connect(url).await?;
        Ok(NatsPeer {
            js: jetstream::new(client),
        })
    }
}

#[async_trait::async_trait]
impl System for NatsPeer {
    fn name(&self) -> String {
        "NATS JetStream (file)".to_owned()
    }

    async fn produce_batches(
        &self,
        batch: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let scratch = Scratch::create(&self.js, "batches").await?;
        let start = Instant::now();
        scratch
            .publish(sizes.produce, batch, &body(sizes.body))
            .await?;
        let elapsed = start.elapsed();
        scratch.delete().await?;
        Ok(Some(elapsed))
    }

    async fn produce_singles(
        &self,
        tasks: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let scratch = Scratch::create(&self.js, "singles").await?;
        let subject: Arc<str> = scratch.name.clone().into();
        let body = body(sizes.body);
        let start = Instant::now();
        let js = self.js.clone();
        singles(tasks, sizes.singles, move |_| {
            let (js, subject, body) = (js.clone(), Arc::clone(&subject), body.clone());
            async move {
                js.publish(subject.to_string(), body.into()).await?.await?;
                Ok(())
            }
        })
        .await?;
        let elapsed = start.elapsed();
        scratch.delete().await?;
        Ok(Some(elapsed))
    }

    /// Fetches of `read_batch` messages, the last of each acknowledged (and that
    /// acknowledgement confirmed by the server) for the whole batch.
    async fn consume(&self, sizes: &Sizes) -> Result<Option<Duration>, BoxError> {
        let scratch = Scratch::create(&self.js, "consume").await?;
        scratch
            .publish(sizes.consume, 1000, &body(sizes.body))
            .await?;
        let consumer = scratch.consumer().await?;
        let start = Instant::now();
        let mut seen = 0;
        while seen < sizes.consume {
            let mut batch = consumer
                .batch()
                .max_messages(sizes.read_batch)
                .expires(Duration::from_secs(5))
                .messages()
                .await?;
            let mut last = None;
            while let Some(message) = batch.next().await {
                last = Some(message?);
                seen += 1;
            }
            match last {
                Some(message) => message.double_ack().await?,
                None => return Err(format!("NATS stream ended after {seen}").into()),
            }
        }
        let elapsed = start.elapsed();
        scratch.delete().await?;
        Ok(Some(elapsed))
    }

    async fn latency(
        &self,
        rate: u64,
        duration: Duration,
        sizes: &Sizes,
    ) -> Result<Option<Latencies>, BoxError> {
        let scratch = Scratch::create(&self.js, "latency").await?;
        let consumer = scratch.consumer().await?;
        let expected = (rate as f64 * duration.as_secs_f64()) as usize;
        let receiver = tokio::spawn(async move {
            let mut messages = consumer.messages().await?;
            let mut latencies = Latencies::with_capacity(expected);
            while latencies.len() < expected {
                let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
                let Ok(Some(message)) = next else {
                    return Err(
                        format!("{} of {expected} messages arrived", latencies.len()).into(),
                    );
                };
                let message = message?;
                latencies.record(&message.payload);
                message.ack().await?;
            }
            Ok::<_, BoxError>(latencies)
        });
        let subject: Arc<str> = scratch.name.clone().into();
        let size = sizes.body;
        paced(rate, duration, || {
            let js = self.js.clone();
            let subject = Arc::clone(&subject);
            async move {
                js.publish(subject.to_string(), stamped_body(size).into())
                    .await?
                    .await?;
                Ok(())
            }
        })
        .await?;
        let latencies = receiver.await??;
        scratch.delete().await?;
        Ok(Some(latencies))
    }
}

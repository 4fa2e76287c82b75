//! The producer's side of partitions: each message goes to the log of one partition, chosen
//! by [`to_partition`](crate::NewMessage::to_partition), else by its key, else in turn.
//!
//! A producer learns a stream's partition count from its record once and keeps it: the count
//! never changes. Looking it up costs one record read the first time a producer sends to a
//! stream. If a stream is made partitioned after a producer looked it up (creation refuses a
//! stream that has messages, so only a send racing the creation can do this), that producer
//! keeps sending to partition 0, the stream's own log: its messages are delivered, only not
//! by key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{load_partitions, partition_for_key};
use crate::driver::Driver;
use crate::error::Error;
use crate::message::NewMessage;
use crate::names::log_name;

/// How many streams' counts a producer keeps; past it the cache starts again (a producer
/// writing to that many streams pays one record read per stream and round).
const MAX_CACHED_STREAMS: usize = 10_000;

/// What a producer knows of one stream.
#[derive(Debug)]
struct Route {
    partitions: u32,
    /// The next partition for a message with neither key nor partition.
    next: AtomicU32,
}

/// The partition counts a producer has looked up, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: Mutex<HashMap<String, Arc<Route>>>,
}

impl Router {
    /// Points every message at the log of its partition. Fails, with nothing sent, on a
    /// partition the stream does not have.
    pub(crate) async fn route(
        &self,
        driver: &dyn Driver,
        messages: &mut [NewMessage],
    ) -> Result<(), Error> {
        // Batches usually go to one stream: look a run of messages to one stream up once.
        let mut current: Option<(String, Arc<Route>)> = None;
        for message in messages.iter_mut() {
            let route = match &current {
                Some((stream, route)) if stream == message.stream() => Arc::clone(route),
                _ => {
                    let route = self.lookup(driver, message.stream()).await?;
                    current = Some((message.stream().to_owned(), Arc::clone(&route)));
                    route
                }
            };
            let partition = match (message.partition(), message.key()) {
                (Some(partition), _) if partition < route.partitions => partition,
                (Some(partition), _) => {
                    return Err(Error::NoSuchPartition {
                        stream: message.stream().to_owned(),
                        partition,
                        partitions: route.partitions,
                    });
                }
                _ if route.partitions == 1 => 0,
                (None, Some(key)) => partition_for_key(key, route.partitions),
                (None, None) => route.next.fetch_add(1, Ordering::Relaxed) % route.partitions,
            };
            if partition != 0 {
                let log = log_name(message.stream(), partition);
                message.route_to(log);
            }
        }
        Ok(())
    }

    async fn lookup(&self, driver: &dyn Driver, stream: &str) -> Result<Arc<Route>, Error> {
        if let Some(route) = self.lock().get(stream) {
            return Ok(Arc::clone(route));
        }
        let partitions = load_partitions(driver, stream).await?;
        let mut routes = self.lock();
        if routes.len() >= MAX_CACHED_STREAMS {
            routes.clear();
        }
        let route = routes.entry(stream.to_owned()).or_insert_with(|| {
            Arc::new(Route {
                partitions,
                next: AtomicU32::new(0),
            })
        });
        Ok(Arc::clone(route))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Route>>> {
        // Never held across anything that can panic; a poisoned map is intact.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

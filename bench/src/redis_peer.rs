//! Redis Streams as a peer: XADD to produce, XREADGROUP + XACK to consume, through the
//! `redis` crate's multiplexed async connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, Value};

use crate::BoxError;
use crate::system::System;
use crate::workload::{Latencies, Sizes, body, chunks, paced, singles, stamped_body, unique};

/// How Redis keeps what it acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Memory only: an acknowledged XADD is lost with the server.
    None,
    /// `appendonly yes` with `appendfsync always`: written to the append-only file and
    /// fsynced before the reply (once per event-loop turn, so a pipeline shares one fsync).
    FsyncAlways,
}

pub(crate) struct RedisPeer {
    client: Client,
    persistence: Persistence,
}

/// The persistence settings found at start, put back by [`Saved::restore`].
pub(crate) struct Saved {
    client: Client,
    appendonly: String,
    appendfsync: String,
}

impl Saved {
    pub(crate) async fn restore(self) -> Result<(), BoxError> {
        let mut con = connect(&self.client).await?;
        set_config(&mut con, "appendfsync", &self.appendfsync).await?;
        set_config(&mut con, "appendonly", &self.appendonly).await?;
        Ok(())
    }
}

async fn connect(client: &Client) -> Result<MultiplexedConnection, BoxError> {
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

async fn get_config(con: &mut MultiplexedConnection, name: &str) -> Result<String, BoxError> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(con)
        .await?;
    pair.get(1)
        .cloned()
        .ok_or_else(|| format!("Redis has no setting {name}").into())
}

async fn set_config(
    con: &mut MultiplexedConnection,
    name: &str,
    value: &str,
) -> Result<(), BoxError> {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(con)
        .await?;
    Ok(())
}

impl RedisPeer {
    /// Connects and records the server's persistence settings so they can be put back.
    pub(crate) async fn connect(url: &str) -> Result<(Self, Self, Saved), BoxError> {
        let client = Client::open(url)?;
        let mut con = connect(&client).await?;
        let saved = Saved {
            client: client.clone(),
            appendonly: get_config(&mut con, "appendonly").await?,
            appendfsync: get_config(&mut con, "appendfsync").await?,
        };
        let peer = |persistence| RedisPeer {
            client: client.clone(),
            persistence,
        };
        Ok((
            peer(Persistence::None),
            peer(Persistence::FsyncAlways),
            saved,
        ))
    }

    /// Puts the server in this peer's persistence mode and returns a connection.
    async fn prepare(&self) -> Result<MultiplexedConnection, BoxError> {
        let mut con = connect(&self.client).await?;
        let (appendonly, appendfsync) = match self.persistence {
            Persistence::None => ("no", "everysec"),
            Persistence::FsyncAlways => ("yes", "always"),
        };
        set_config(&mut con, "appendfsync", appendfsync).await?;
        if get_config(&mut con, "appendonly").await? != appendonly {
            set_config(&mut con, "appendonly", appendonly).await?;
            // Turning the AOF on starts a rewrite; measure once it has finished.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut con)
                    .await?;
                let busy = info.lines().any(|l| {
                    l.trim() == "aof_rewrite_in_progress:1" || l.trim() == "aof_rewrite_scheduled:1"
                });
                if !busy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err("Redis AOF rewrite did not finish within 60 s".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(con)
    }

    /// Appends `count` copies of `body` to `key`, one pipeline of `batch` XADDs at a time.
    async fn fill(
        con: &mut MultiplexedConnection,
        key: &str,
        count: usize,
        batch: usize,
        body: &[u8],
    ) -> Result<(), BoxError> {
        for (_, n) in chunks(count, batch) {
            let mut pipe = redis::pipe();
            for _ in 0..n {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("b")
                    .arg(body)
                    .ignore();
            }
            let () = pipe.query_async(con).await?;
        }
        Ok(())
    }

    async fn drop_key(con: &mut MultiplexedConnection, key: &str) -> Result<(), BoxError> {
        let _: i64 = redis::cmd("DEL").arg(key).query_async(con).await?;
        Ok(())
    }
}

/// Reads one batch for `group` (waiting up to `block` for something new) and acknowledges
/// it; hands each body to `seen`.
async fn read_and_ack(
    con: &mut MultiplexedConnection,
    key: &str,
    count: usize,
    block: Option<Duration>,
    mut seen: impl FnMut(&[u8]),
) -> Result<usize, BoxError> {
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg("bench")
        .arg("c1")
        .arg("COUNT")
        .arg(count);
    if let Some(block) = block {
        read.arg("BLOCK").arg(block.as_millis() as u64);
    }
    read.arg("STREAMS").arg(key).arg(">");
    let reply: Option<StreamReadReply> = read.query_async(con).await?;
    let Some(reply) = reply else { return Ok(0) };
    let mut ack = redis::cmd("XACK");
    ack.arg(key).arg("bench");
    let mut n = 0;
    for entry in reply.keys.iter().flat_map(|k| &k.ids) {
        if let Some(Value::BulkString(body)) = entry.map.get("b") {
            seen(body);
        }
        ack.arg(&entry.id);
        n += 1;
    }
    if n > 0 {
        let _: i64 = ack.query_async(con).await?;
    }
    Ok(n)
}

async fn create_group(
    con: &mut MultiplexedConnection,
    key: &str,
    from: &str,
) -> Result<(), BoxError> {
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("bench")
        .arg(from)
        .arg("MKSTREAM")
        .query_async(con)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl System for RedisPeer {
    fn name(&self) -> String {
        match self.persistence {
            Persistence::None => "Redis Streams (in memory)",
            Persistence::FsyncAlways => "Redis Streams (appendfsync always)",
        }
        .to_owned()
    }

    async fn produce_batches(
        &self,
        batch: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let mut con = self.prepare().await?;
        let key = unique("batches");
        let body = body(sizes.body);
        let start = Instant::now();
        Self::fill(&mut con, &key, sizes.produce, batch, &body).await?;
        let elapsed = start.elapsed();
        Self::drop_key(&mut con, &key).await?;
        Ok(Some(elapsed))
    }

    async fn produce_singles(
        &self,
        tasks: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let mut con = self.prepare().await?;
        let key: Arc<str> = unique("singles").into();
        let body = body(sizes.body);
        let start = Instant::now();
        let sender = con.clone();
        let sent_key = Arc::clone(&key);
        singles(tasks, sizes.singles, move |_| {
            let (mut con, key, body) = (sender.clone(), Arc::clone(&sent_key), body.clone());
            async move {
                let _: String = redis::cmd("XADD")
                    .arg(&*key)
                    .arg("*")
                    .arg("b")
                    .arg(&body)
                    .query_async(&mut con)
                    .await?;
                Ok(())
            }
        })
        .await?;
        let elapsed = start.elapsed();
        Self::drop_key(&mut con, &key).await?;
        Ok(Some(elapsed))
    }

    async fn consume(&self, sizes: &Sizes) -> Result<Option<Duration>, BoxError> {
        let mut con = self.prepare().await?;
        let key = unique("consume");
        Self::fill(&mut con, &key, sizes.consume, 1000, &body(sizes.body)).await?;
        create_group(&mut con, &key, "0").await?;
        let start = Instant::now();
        let mut seen = 0;
        while seen < sizes.consume {
            let n = read_and_ack(&mut con, &key, sizes.read_batch, None, |_| {}).await?;
            if n == 0 {
                return Err(format!("Redis stream ended after {seen}").into());
            }
            seen += n;
        }
        let elapsed = start.elapsed();
        Self::drop_key(&mut con, &key).await?;
        Ok(Some(elapsed))
    }

    async fn latency(
        &self,
        rate: u64,
        duration: Duration,
        sizes: &Sizes,
    ) -> Result<Option<Latencies>, BoxError> {
        let mut con = self.prepare().await?;
        let key: Arc<str> = unique("latency").into();
        create_group(&mut con, &key, "$").await?;
        let expected = (rate as f64 * duration.as_secs_f64()) as usize;
        // Blocking reads get a connection of their own, so they never hold up the sends.
        let mut reader = connect(&self.client).await?;
        let read_key = Arc::clone(&key);
        let read_batch = sizes.read_batch;
        let receiver = tokio::spawn(async move {
            let mut latencies = Latencies::with_capacity(expected);
            let mut idle = 0;
            while latencies.len() < expected {
                let block = Some(Duration::from_millis(1000));
                let n = read_and_ack(&mut reader, &read_key, read_batch, block, |b| {
                    latencies.record(b)
                })
                .await?;
                idle = if n == 0 { idle + 1 } else { 0 };
                if idle > 10 {
                    return Err(
                        format!("{} of {expected} messages arrived", latencies.len()).into(),
                    );
                }
            }
            Ok::<_, BoxError>(latencies)
        });
        let size = sizes.body;
        paced(rate, duration, || {
            let mut con = con.clone();
            let key = Arc::clone(&key);
            async move {
                let _: String = redis::cmd("XADD")
                    .arg(&*key)
                    .arg("*")
                    .arg("b")
                    .arg(stamped_body(size))
                    .query_async(&mut con)
                    .await?;
                Ok(())
            }
        })
        .await?;
        let latencies = receiver.await??;
        Self::drop_key(&mut con, &key).await?;
        Ok(Some(latencies))
    }
}

//! PostgreSQL ceilings: the same rows written and read with plain SQL, no flowstream in
//! between, into a table shaped like flowstream's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool};

use crate::BoxError;
use crate::system::System;
use crate::workload::{Sizes, body, chunks, singles, unique};

pub(crate) const SCHEMA: &str = "flowstream_bench_raw";

/// How a raw producer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// One transaction per batch: advance the stream's head row (the lock that keeps offsets
    /// in commit order, as flowstream does), then one multi-row INSERT.
    LockedInsert,
    /// One multi-row INSERT per batch with offsets from the client: no ordering guarantee.
    Insert,
    /// `COPY … FROM STDIN` per batch, offsets from the client.
    Copy,
}

pub(crate) struct RawPg {
    pool: PgPool,
    write: Write,
}

impl RawPg {
    pub(crate) async fn connect(url: &str, write: Write) -> Result<Self, BoxError> {
        let url = match write {
            Write::Copy => over_unix_socket(url),
            _ => url.to_owned(),
        };
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        Ok(RawPg { pool, write })
    }

    /// Recreates the raw tables (dropping an earlier run's data).
    pub(crate) async fn reset(url: &str) -> Result<(), BoxError> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        pool.execute(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
                 CREATE TABLE {SCHEMA}.streams (name text PRIMARY KEY, head bigint NOT NULL)
                   WITH (fillfactor = 50);
                 CREATE TABLE {SCHEMA}.messages (
                   stream text NOT NULL, \"offset\" bigint NOT NULL, body bytea NOT NULL,
                   headers jsonb NOT NULL DEFAULT '{{}}',
                   produced_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (stream, \"offset\"));"
        )))
        .await?;
        pool.close().await;
        Ok(())
    }

    pub(crate) async fn create_stream(&self, stream: &str) -> Result<(), BoxError> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {SCHEMA}.streams VALUES ($1, 0)"
        )))
        .bind(stream)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Appends `count` copies of `body` to `stream`, whose head is `head` before the call
    /// (ignored by `LockedInsert`, which takes it from the head row).
    pub(crate) async fn write_batch(
        &self,
        stream: &str,
        head: i64,
        count: usize,
        body: &[u8],
    ) -> Result<(), BoxError> {
        let bodies = vec![body.to_vec(); count];
        match self.write {
            Write::LockedInsert => {
                let mut tx = self.pool.begin().await?;
                let (new_head,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
                    "UPDATE {SCHEMA}.streams SET head = head + $2 WHERE name = $1 RETURNING head"
                )))
                .bind(stream)
                .bind(count as i64)
                .fetch_one(&mut *tx)
                .await?;
                insert(&mut *tx, stream, new_head - count as i64, &bodies).await?;
                tx.commit().await?;
            }
            Write::Insert => insert(&self.pool, stream, head, &bodies).await?,
            Write::Copy => {
                let mut conn = self.pool.acquire().await?;
                let mut copy = conn
                    .copy_in_raw(&format!(
                        "COPY {SCHEMA}.messages (stream, \"offset\", body) FROM STDIN"
                    ))
                    .await?;
                let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
                let mut data = String::with_capacity(count * (stream.len() + hex.len() + 32));
                for i in 1..=count as i64 {
                    data.push_str(&format!("{stream}\t{}\t\\\\x{hex}\n", head + i));
                }
                copy.send(data.as_bytes()).await?;
                copy.finish().await?;
            }
        }
        Ok(())
    }
}

/// Where the server's Unix socket is on Debian.
const SOCKET_DIR: &str = "/var/run/postgresql";

/// `url` through the local Unix socket when the server is local and the socket is there.
///
/// sqlx sends a COPY's data and its end marker as two writes and does not set TCP_NODELAY, so
/// over TCP the second write waits for the server's delayed ACK (40 ms on Linux) at every
/// COPY; a Unix socket has no such wait. flowstream's own statements are single writes and
/// never hit it.
fn over_unix_socket(url: &str) -> String {
    let local = url.contains("@127.0.0.1") || url.contains("@localhost");
    if !local || !std::path::Path::new(SOCKET_DIR).exists() {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}host={SOCKET_DIR}")
}

async fn insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    stream: &str,
    after: i64,
    bodies: &[Vec<u8>],
) -> Result<(), BoxError> {
    let offsets: Vec<i64> = (1..=bodies.len() as i64).map(|i| after + i).collect();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {SCHEMA}.messages (stream, \"offset\", body) \
         SELECT $1, * FROM unnest($2::int8[], $3::bytea[])"
    )))
    .bind(stream)
    .bind(&offsets)
    .bind(bodies)
    .execute(executor)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl System for RawPg {
    fn name(&self) -> String {
        match self.write {
            Write::LockedInsert => "raw pg: head-locked INSERT",
            Write::Insert => "raw pg: multi-row INSERT",
            Write::Copy => "raw pg: COPY (Unix socket)",
        }
        .to_owned()
    }

    fn consume_name(&self) -> String {
        "raw pg: flowstream's SELECT on the same table shape, 1,000 rows a read, no commits"
            .to_owned()
    }

    async fn produce_batches(
        &self,
        batch: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        let stream = unique("batches");
        self.create_stream(&stream).await?;
        let body = body(sizes.body);
        let start = Instant::now();
        for (head, n) in chunks(sizes.produce, batch) {
            self.write_batch(&stream, head as i64, n, &body).await?;
        }
        Ok(Some(start.elapsed()))
    }

    /// The naive way: one transaction per message, each locking the head row.
    async fn produce_singles(
        &self,
        tasks: usize,
        sizes: &Sizes,
    ) -> Result<Option<Duration>, BoxError> {
        if self.write != Write::LockedInsert {
            return Ok(None);
        }
        let stream: Arc<str> = unique("singles").into();
        self.create_stream(&stream).await?;
        let body = body(sizes.body);
        // A connection per task, closed afterwards: idle connections kept open would count
        // against the server's connection limit in the fleet rows.
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(tasks)?)
            .connect_with(self.pool.connect_options().as_ref().clone())
            .await?;
        let shared = pool.clone();
        let start = Instant::now();
        singles(tasks, sizes.singles, move |_| {
            let raw = RawPg {
                pool: shared.clone(),
                write: Write::LockedInsert,
            };
            let (stream, body) = (Arc::clone(&stream), body.clone());
            async move { raw.write_batch(&stream, 0, 1, &body).await }
        })
        .await?;
        let elapsed = start.elapsed();
        pool.close().await;
        Ok(Some(elapsed))
    }

    /// Keyset reads of `read_batch` rows per query.
    async fn consume(&self, sizes: &Sizes) -> Result<Option<Duration>, BoxError> {
        if self.write != Write::Copy {
            return Ok(None);
        }
        let stream = unique("consume");
        let body = body(sizes.body);
        for (head, n) in chunks(sizes.consume, 10_000) {
            self.write_batch(&stream, head as i64, n, &body).await?;
        }
        let start = Instant::now();
        let mut position = 0_i64;
        let mut seen = 0;
        let sql = format!(
            "SELECT \"offset\", body, headers, \
             (extract(epoch FROM produced_at) * 1000000)::int8 AS produced_micros \
             FROM {SCHEMA}.messages \
             WHERE stream = $1 AND \"offset\" > $2 ORDER BY \"offset\" LIMIT $3"
        );
        while seen < sizes.consume {
            let rows: Vec<(i64, Vec<u8>, serde_json::Value, i64)> =
                sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(&stream)
                    .bind(position)
                    .bind(sizes.read_batch as i64)
                    .fetch_all(&self.pool)
                    .await?;
            let Some(last) = rows.last() else {
                return Err("raw stream ended early".into());
            };
            position = last.0;
            seen += rows.len();
        }
        Ok(Some(start.elapsed()))
    }
}

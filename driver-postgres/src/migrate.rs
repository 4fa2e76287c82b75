//! Applying the embedded migrations on connect.
//!
//! Every pending migration runs in one transaction, so a failure leaves the schema exactly as
//! it was (PostgreSQL's DDL is transactional): no half-migrated schema, no empty migrations
//! table. A transaction-scoped advisory lock serialises processes that connect at once; the
//! second sees the first one's work once the lock is its own, and applies nothing.
//!
//! The migrations table keeps the layout of sqlx's (`version`, `description`, `installed_on`,
//! `success`, `checksum`, `execution_time`), so schemas migrated by earlier versions of this
//! driver carry on. Versions this binary does not know (applied by a newer one) are left
//! alone: migrations are additive, so an older binary keeps working during a rolling upgrade.

use flowstream_core::Error;
use flowstream_core::driver::DriverError;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use crate::errors::cause;
use crate::schema::MIGRATIONS;

/// Applies the migrations `schema` lacks, up to `target` (all of them when `None`).
pub(crate) async fn migrate(pool: &PgPool, schema: &str, target: Option<i64>) -> Result<(), Error> {
    let failed = |doing: String| {
        move |e: sqlx::Error| {
            Error::Storage(
                DriverError::failed(format!(
                    "migrating schema {schema}: {doing}; nothing was changed"
                ))
                .with_cause(cause(e)),
            )
        }
    };
    let mut tx = pool
        .begin()
        .await
        .map_err(failed("starting a transaction".into()))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("flowstream migrations of {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(failed("waiting for other processes' migrations".into()))?;
    let table = format!("{schema}._flowstream_migrations");
    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (version bigint PRIMARY KEY, \
             description text NOT NULL, installed_on timestamptz NOT NULL DEFAULT now(), \
             success boolean NOT NULL, checksum bytea NOT NULL, execution_time bigint NOT NULL)"
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(failed("creating the migrations table".into()))?;
    }
    let applied: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(failed("reading the migrations table".into()))?;
    for &(version, description, sql) in MIGRATIONS {
        if target.is_some_and(|t| version > t) || applied.contains(&version) {
            continue;
        }
        apply(&mut tx, &table, schema, version, description, sql)
            .await
            .map_err(failed(format!(
                "migration {version} ({description}) failed"
            )))?;
        tracing::info!(%schema, version, description, "applied migration");
    }
    tx.commit()
        .await
        .map_err(failed("committing the migrations".into()))
}

async fn apply(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    schema: &str,
    version: i64,
    description: &str,
    sql: &str,
) -> Result<(), sqlx::Error> {
    let sql = sql.replace("{schema}", schema);
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(&mut **tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, true, sha384(convert_to($3, 'UTF8')), 0)"
    )))
    .bind(version)
    .bind(description)
    .bind(sql)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// With migrations off, checks that they were applied: a schema without flowstream's tables
/// is an error at connect, not at every later call.
pub(crate) async fn check_migrated(pool: &PgPool, schema: &str) -> Result<(), Error> {
    let present: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I.streams', $1::text)) IS NOT NULL \
            AND to_regclass(format('%I.messages', $1::text)) IS NOT NULL \
            AND to_regclass(format('%I.records', $1::text)) IS NOT NULL",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .map_err(|e| {
        Error::Storage(
            DriverError::failed(format!("checking the tables of schema {schema}"))
                .with_cause(cause(e)),
        )
    })?;
    if present {
        return Ok(());
    }
    Err(Error::Storage(DriverError::NotFound(format!(
        "schema {schema} does not hold flowstream's tables and run_migrations is off: apply \
         the migrations (connect once with run_migrations(true)) or name the right schema"
    ))))
}

//! Postgres through sqlx: the per-run schema, its migrations, and the business transaction.
//!
//! Every run gets a schema of its own (`search_path` is set on each pooled connection), so runs
//! never see each other's rows and the audit reads exactly one run. The schema is dropped after
//! the audit unless `--keep-state` asks to keep it for inspection.

pub mod business;
pub mod memory;
pub mod observed;

pub use memory::MemoryEffects;
pub use observed::{Observed, TradeCounts, observe};

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};

use crate::redact::redact_url;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to Postgres at {address}: {cause}")]
    Connect { address: String, cause: String },
    #[error("migrating schema {schema} failed: {cause}")]
    Migrate { schema: String, cause: String },
    #[error("the database broke an invariant: {0}")]
    Invariant(&'static str),
    #[error("Postgres {what} failed: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl DbError {
    pub fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
        move |source| DbError::Query { what, source }
    }
}

#[derive(Clone, Debug)]
pub struct DbSettings {
    pub url: String,
    pub connections: u32,
    pub connect_timeout: Duration,
}

/// A pool whose connections all work in one run's schema.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    schema: String,
}

impl Db {
    /// Connects, failing within `connect_timeout` if Postgres does not answer or refuses us.
    pub async fn connect(settings: &DbSettings, schema: &str) -> Result<Db, DbError> {
        let connect_error = |cause: String| DbError::Connect {
            address: redact_url(&settings.url),
            cause,
        };
        assert!(
            is_identifier(schema),
            "schema names are generated, never user input: {schema}"
        );
        let options: PgConnectOptions = settings
            .url
            .parse()
            .map_err(|e: sqlx::Error| connect_error(e.to_string()))?;
        let options = options
            .application_name("idembench")
            .options([("search_path", schema)])
            .log_statements(tracing::log::LevelFilter::Trace)
            // Slow statements are measured (the stage histograms); injected slowness and lock
            // waits behind it are expected, so they are not warnings.
            .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(settings.connections.max(1))
            .acquire_timeout(settings.connect_timeout)
            // sqlx pings every connection it hands out: one more round trip per transaction
            // (seven for db-only's six). A connection that broke meanwhile fails its first
            // statement instead, and the strategies' retry takes another; the Postgres outage
            // tests cut every connection and still count exactly once.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(Db {
            pool,
            schema: schema.to_string(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Creates the run's schema and applies the migrations in it; drops the trade id's unique
    /// constraint when the run asks for that.
    pub async fn prepare(&self, unique_constraint: bool) -> Result<(), DbError> {
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.schema);
        sqlx::query(AssertSqlSafe(create))
            .execute(&self.pool)
            .await
            .map_err(DbError::query("CREATE SCHEMA"))?;
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| DbError::Migrate {
                schema: self.schema.clone(),
                cause: e.to_string(),
            })?;
        if !unique_constraint {
            sqlx::query("ALTER TABLE trades DROP CONSTRAINT IF EXISTS trades_trade_id_key")
                .execute(&self.pool)
                .await
                .map_err(DbError::query("dropping the unique constraint"))?;
        }
        Ok(())
    }

    pub async fn server_version(&self) -> Result<String, DbError> {
        sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(&self.pool)
            .await
            .map_err(DbError::query("SHOW server_version"))
    }

    pub async fn drop_schema(&self) -> Result<(), DbError> {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        sqlx::query(AssertSqlSafe(drop))
            .execute(&self.pool)
            .await
            .map_err(DbError::query("DROP SCHEMA"))?;
        Ok(())
    }

    /// Each table of the run's schema: (table, rows, bytes), migrations' bookkeeping left out.
    /// Bytes are the main forks of the heap, its indexes and its TOAST table — what grows with
    /// rows; the free-space and visibility maps that vacuum adds are left out.
    pub async fn table_sizes(&self) -> Result<Vec<(String, u64, u64)>, DbError> {
        let tables: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.relname::text, (pg_relation_size(c.oid) \
               + COALESCE((SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_index i WHERE i.indrelid = c.oid), 0) \
               + CASE WHEN c.reltoastrelid = 0 THEN 0 ELSE pg_relation_size(c.reltoastrelid) END)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname NOT LIKE '\\_sqlx%' \
             ORDER BY c.relname",
        )
        .bind(&self.schema)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query("pg_relation_size"))?;
        let mut sizes = Vec::new();
        for (table, bytes) in tables {
            let count = format!("SELECT count(*) FROM \"{}\".\"{table}\"", self.schema);
            let rows: i64 = sqlx::query_scalar(AssertSqlSafe(count))
                .fetch_one(&self.pool)
                .await
                .map_err(DbError::query("counting a table's rows"))?;
            sizes.push((table, rows.max(0) as u64, bytes.max(0) as u64));
        }
        Ok(sizes)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

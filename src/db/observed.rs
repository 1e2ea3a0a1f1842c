//! What the business tables hold, counted per trade id: what the audit reads (from Postgres, or
//! from the in-memory record of `--no-business-write`) before it meets the ledger.

use std::collections::HashMap;

use super::{Db, DbError};

/// The counts the audit reads from Postgres, before they meet the ledger.
#[derive(Debug, Default)]
pub struct Observed {
    pub trade_rows: HashMap<u64, u64>,
    pub outbox_rows: HashMap<u64, u64>,
    pub positions: HashMap<(u32, u32), i64>,
    /// Position per (account, instrument) implied by the trade rows present.
    pub positions_from_trade_rows: HashMap<(u32, u32), i64>,
}

/// Reads the counts from the run's schema.
pub async fn observe(db: &Db) -> Result<Observed, DbError> {
    let pool = db.pool();
    let trade_rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT trade_id, count(*) FROM trades GROUP BY trade_id")
            .fetch_all(pool)
            .await
            .map_err(DbError::query("counting trade rows"))?;
    let outbox_rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT trade_id, count(*) FROM outbox GROUP BY trade_id")
            .fetch_all(pool)
            .await
            .map_err(DbError::query("counting outbox rows"))?;
    let positions: Vec<(i32, i32, i64)> =
        sqlx::query_as("SELECT account, instrument, quantity FROM positions")
            .fetch_all(pool)
            .await
            .map_err(DbError::query("reading positions"))?;
    let implied: Vec<(i32, i32, i64)> = sqlx::query_as(
        "SELECT account, instrument, sum(CASE side WHEN 0 THEN quantity ELSE -quantity END)::bigint \
         FROM trades GROUP BY account, instrument",
    )
    .fetch_all(pool)
    .await
    .map_err(DbError::query("summing trade rows"))?;
    let counts = |rows: Vec<(i64, i64)>| -> HashMap<u64, u64> {
        rows.into_iter()
            .map(|(id, n)| (id as u64, n as u64))
            .collect()
    };
    let by_key = |rows: Vec<(i32, i32, i64)>| -> HashMap<(u32, u32), i64> {
        rows.into_iter()
            .map(|(a, i, q)| ((a as u32, i as u32), q))
            .collect()
    };
    Ok(Observed {
        trade_rows: counts(trade_rows),
        outbox_rows: counts(outbox_rows),
        positions: by_key(positions),
        positions_from_trade_rows: by_key(implied),
    })
}

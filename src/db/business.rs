//! The business transaction every strategy ends in: the trade row, an outbox row, and the
//! position update, committed together or not at all.

use idembench_loadgen::{Side, Trade};
use sqlx::{Postgres, Transaction};

use super::DbError;

/// What the business write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusinessOutcome {
    /// Committed: the trade now has one more effect.
    Applied,
    /// The trade id's unique constraint rejected the insert; the transaction rolled back.
    CaughtByConstraint,
}

const UNIQUE_VIOLATION: &str = "23505";

/// Inserts the inbox row of `trade_id`; `false` when it was already there (the trade is done).
pub async fn insert_inbox(
    tx: &mut Transaction<'_, Postgres>,
    trade_id: u64,
) -> Result<bool, DbError> {
    let inserted = sqlx::query("INSERT INTO inbox (trade_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(db_id(trade_id))
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("INSERT INTO inbox"))?;
    Ok(inserted.rows_affected() == 1)
}

/// The partition's next offset as the database has it (db-offsets), locked for this transaction.
pub async fn stored_offset(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, DbError> {
    sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE",
    )
    .bind(topic)
    .bind(partition)
    .fetch_optional(&mut **tx)
    .await
    .map_err(DbError::query("reading the stored offset"))
}

/// Every stored next offset of `topic` among `partitions`, outside any transaction.
pub async fn stored_offsets(
    db: &super::Db,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, DbError> {
    sqlx::query_as("SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1 AND partition = ANY($2)")
        .bind(topic)
        .bind(partitions)
        .fetch_all(db.pool())
        .await
        .map_err(DbError::query("reading stored offsets"))
}

/// Moves the partition's stored next offset forward (never back).
pub async fn store_offset(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, $2, $3) \
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset)",
    )
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("storing the offset"))?;
    Ok(())
}

/// The three writes, inside a transaction the caller owns (so a strategy can add its own rows,
/// such as an inbox row, to the same transaction).
pub async fn write_effects(
    tx: &mut Transaction<'_, Postgres>,
    trade: &Trade,
) -> Result<BusinessOutcome, DbError> {
    let side: i16 = match trade.side {
        Side::Buy => 0,
        Side::Sell => 1,
    };
    let inserted = sqlx::query(
        "INSERT INTO trades (trade_id, account, instrument, side, quantity, price) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(db_id(trade.trade_id))
    .bind(i64::from(trade.account))
    .bind(i64::from(trade.instrument))
    .bind(side)
    .bind(i64::from(trade.quantity))
    .bind(trade.price)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            return Ok(BusinessOutcome::CaughtByConstraint);
        }
        Err(source) => {
            return Err(DbError::Query {
                what: "INSERT INTO trades",
                source,
            });
        }
    }
    let mut event = trade.clone();
    event.copy = 0;
    sqlx::query("INSERT INTO outbox (trade_id, payload) VALUES ($1, $2)")
        .bind(db_id(trade.trade_id))
        .bind(event.encode(0))
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("INSERT INTO outbox"))?;
    sqlx::query(
        "INSERT INTO positions (account, instrument, quantity) VALUES ($1, $2, $3) \
         ON CONFLICT (account, instrument) DO UPDATE SET quantity = positions.quantity + EXCLUDED.quantity",
    )
    .bind(i64::from(trade.account))
    .bind(i64::from(trade.instrument))
    .bind(trade.signed_quantity())
    .execute(&mut **tx)
    .await
    .map_err(DbError::query("upserting the position"))?;
    Ok(BusinessOutcome::Applied)
}

/// Trade ids are generated from 1 upwards and stay far below `i64::MAX`.
pub fn db_id(trade_id: u64) -> i64 {
    i64::try_from(trade_id).expect("trade ids fit in BIGINT")
}

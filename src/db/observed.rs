//! What the business tables hold, counted per trade id: what the audit reads (from Postgres, or
//! from the in-memory record of `--no-business-write`) before it meets the ledger.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;

use super::{Db, DbError};

/// The counts the audit reads from Postgres, before they meet the ledger.
#[derive(Debug, Default)]
pub struct Observed {
    pub trade_rows: TradeCounts,
    pub outbox_rows: TradeCounts,
    pub positions: HashMap<(u32, u32), i64>,
    /// Position per (account, instrument) implied by the trade rows present.
    pub positions_from_trade_rows: HashMap<(u32, u32), i64>,
}

/// A count per trade id in one byte per planned trade: ids 1 to `trades` sit in a dense array
/// (a 20-million-trade run's count is 20 MB, where a hash map took about 27 bytes an entry),
/// and the rare count of 255 or more, or an id the plan never held, in a map beside it.
#[derive(Clone, Debug, Default)]
pub struct TradeCounts {
    /// Indexed by `trade_id - 1`; [`SPILLED`] means the count is in `others`.
    dense: Vec<u8>,
    /// Counts of [`SPILLED`] or more, and counts of ids beyond `dense`.
    others: HashMap<u64, u64>,
}

/// The dense value that sends a lookup to the map: counts from 255 up.
pub const SPILLED: u8 = u8::MAX;

impl TradeCounts {
    /// Counts for the ids 1 to `trades`, all 0 (other ids are counted too, in the map).
    pub fn with_trades(trades: u64) -> TradeCounts {
        TradeCounts {
            dense: vec![0; usize::try_from(trades).expect("trades fit in memory")],
            others: HashMap::new(),
        }
    }

    /// From dense counts (where [`SPILLED`] defers to `others`) and the map beside them.
    pub fn from_parts(dense: Vec<u8>, others: HashMap<u64, u64>) -> TradeCounts {
        TradeCounts { dense, others }
    }

    fn slot(&self, trade_id: u64) -> Option<usize> {
        let index = usize::try_from(trade_id.checked_sub(1)?).ok()?;
        (index < self.dense.len()).then_some(index)
    }

    pub fn get(&self, trade_id: u64) -> u64 {
        match self.slot(trade_id) {
            Some(i) if self.dense[i] != SPILLED => u64::from(self.dense[i]),
            _ => self.others.get(&trade_id).copied().unwrap_or(0),
        }
    }

    pub fn add(&mut self, trade_id: u64, n: u64) {
        if n == 0 {
            return;
        }
        match self.slot(trade_id) {
            Some(i) if self.dense[i] != SPILLED => {
                let total = u64::from(self.dense[i]) + n;
                match u8::try_from(total) {
                    Ok(small) if small != SPILLED => self.dense[i] = small,
                    _ => {
                        self.dense[i] = SPILLED;
                        self.others.insert(trade_id, total);
                    }
                }
            }
            _ => *self.others.entry(trade_id).or_insert(0) += n,
        }
    }

    /// Every id with a count above 0, and its count (dense ids first, in id order).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != 0 && **n != SPILLED)
            .map(|(i, n)| (i as u64 + 1, u64::from(*n)))
            .chain(self.others.iter().map(|(id, n)| (*id, *n)))
    }

    /// Bytes held, for `resources.state_bytes_per_trade`.
    pub fn heap_bytes(&self) -> usize {
        self.dense.capacity() + self.others.capacity() * (std::mem::size_of::<(u64, u64)>() + 1)
    }
}

/// Equal when every id has the same count, however the two hold them.
impl PartialEq for TradeCounts {
    fn eq(&self, other: &TradeCounts) -> bool {
        let sorted = |c: &TradeCounts| c.iter().collect::<BTreeMap<u64, u64>>();
        sorted(self) == sorted(other)
    }
}

impl Eq for TradeCounts {}

impl FromIterator<(u64, u64)> for TradeCounts {
    /// Counts with no dense part (every id in the map): for tests and small reads.
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> TradeCounts {
        let mut counts = TradeCounts::default();
        for (id, n) in iter {
            counts.add(id, n);
        }
        counts
    }
}

/// Reads the counts from the run's schema, for a plan of `trades` trades. Rows are streamed,
/// so the read holds the counts and not the result set.
pub async fn observe(db: &Db, trades: u64) -> Result<Observed, DbError> {
    let pool = db.pool();
    let counts = |sql: &'static str, what: &'static str| async move {
        let mut counts = TradeCounts::with_trades(trades);
        let mut rows = sqlx::query_as::<_, (i64, i64)>(sql).fetch(pool);
        while let Some((id, n)) = rows.try_next().await.map_err(DbError::query(what))? {
            counts.add(id as u64, n as u64);
        }
        Ok::<_, DbError>(counts)
    };
    let trade_rows = counts(
        "SELECT trade_id, count(*) FROM trades GROUP BY trade_id",
        "counting trade rows",
    )
    .await?;
    let outbox_rows = counts(
        "SELECT trade_id, count(*) FROM outbox GROUP BY trade_id",
        "counting outbox rows",
    )
    .await?;
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
    let by_key = |rows: Vec<(i32, i32, i64)>| -> HashMap<(u32, u32), i64> {
        rows.into_iter()
            .map(|(a, i, q)| ((a as u32, i as u32), q))
            .collect()
    };
    Ok(Observed {
        trade_rows,
        outbox_rows,
        positions: by_key(positions),
        positions_from_trade_rows: by_key(implied),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_past_a_byte_and_beyond_the_plan_are_exact() {
        let mut counts = TradeCounts::with_trades(3);
        counts.add(1, 1);
        counts.add(2, 200);
        counts.add(2, 54);
        assert_eq!(counts.get(2), 254);
        counts.add(2, 1);
        counts.add(2, 300);
        counts.add(7, 2);
        counts.add(0, 1);
        assert_eq!(
            (
                counts.get(1),
                counts.get(2),
                counts.get(3),
                counts.get(7),
                counts.get(0)
            ),
            (1, 555, 0, 2, 1)
        );
        let mut all: Vec<_> = counts.iter().collect();
        all.sort_unstable();
        assert_eq!(all, [(0, 1), (1, 1), (2, 555), (7, 2)]);
        let same: TradeCounts = all.iter().copied().collect();
        assert_eq!(same, counts);
        assert_ne!(same, TradeCounts::default());
    }
}

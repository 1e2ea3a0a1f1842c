//! The in-memory business store of `--no-business-write`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::observed::{SPILLED, TradeCounts};

/// `--no-business-write`: the business transaction replaced by an exact in-memory record of
/// each trade's effects (the trade row, its outbox row, the position), so a run measures the
/// idempotency cost alone while the audit still counts every application.
///
/// One byte per planned trade: applications are counted in an atomic per trade id (no lock on
/// the hot path), and a count that reaches 255, or an id beyond the plan, moves to a locked map.
/// Positions are sharded by partition: one worker owns a partition, so a message takes an
/// uncontended lock.
#[derive(Debug)]
pub struct MemoryEffects {
    applied: Vec<AtomicU8>,
    /// Counts of [`SPILLED`] applications or more, and of ids beyond `applied`.
    spilled: Mutex<HashMap<u64, u64>>,
    positions: Vec<Mutex<HashMap<(u32, u32), i64>>>,
}

impl MemoryEffects {
    /// A store for the trade ids 1 to `trades`.
    pub fn new(trades: u64) -> MemoryEffects {
        let trades = usize::try_from(trades).expect("trades fit in memory");
        MemoryEffects {
            applied: (0..trades).map(|_| AtomicU8::new(0)).collect(),
            spilled: Mutex::default(),
            positions: (0..64).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn apply(&self, partition: i32, trade: &idembench_loadgen::Trade) {
        self.count(trade.trade_id);
        let shard = &self.positions[partition.unsigned_abs() as usize % self.positions.len()];
        *shard
            .lock()
            .expect("effects lock")
            .entry((trade.account, trade.instrument))
            .or_insert(0) += trade.signed_quantity();
    }

    fn count(&self, trade_id: u64) {
        let slot = trade_id
            .checked_sub(1)
            .and_then(|i| self.applied.get(usize::try_from(i).ok()?));
        let spill = |n: u64| {
            *self
                .spilled
                .lock()
                .expect("effects lock")
                .entry(trade_id)
                .or_insert(0) += n;
        };
        let Some(slot) = slot else {
            return spill(1);
        };
        // Below 254, one more fits; at 254 the count becomes 255 and moves to the map; at 255
        // it is already there.
        match slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1)) {
            Ok(n) if n + 1 == SPILLED => spill(u64::from(SPILLED)),
            Ok(_) => {}
            Err(_) => spill(1),
        }
    }

    /// Bytes the per-trade counts allocated (positions are per account and instrument).
    pub fn heap_bytes(&self) -> usize {
        let spilled = self.spilled.lock().expect("effects lock").capacity();
        self.applied.capacity() + spilled * (std::mem::size_of::<(u64, u64)>() + 1)
    }

    /// What the audit would read from Postgres had the effects been written there (a trade's
    /// copies may sit in two partitions' shards, so the position shards are summed). Read it
    /// once the processors stopped: a count moving to the map while it reads could be missed.
    pub fn observed(&self) -> super::Observed {
        let dense: Vec<u8> = self
            .applied
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let spilled = self.spilled.lock().expect("effects lock").clone();
        let applied = TradeCounts::from_parts(dense, spilled);
        let mut positions = HashMap::new();
        for shard in &self.positions {
            for (key, quantity) in shard.lock().expect("effects lock").iter() {
                *positions.entry(*key).or_insert(0) += quantity;
            }
        }
        super::Observed {
            trade_rows: applied.clone(),
            outbox_rows: applied,
            positions: positions.clone(),
            positions_from_trade_rows: positions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(trade_id: u64) -> idembench_loadgen::Trade {
        idembench_loadgen::Trade {
            trade_id,
            account: 3,
            instrument: 1,
            side: idembench_loadgen::Side::Buy,
            copy: 0,
            quantity: 2,
            price: 1,
            intended_send_us: 0,
            sent_us: 0,
        }
    }

    #[test]
    fn every_application_counts_past_a_byte_and_beyond_the_plan() {
        let memory = MemoryEffects::new(2);
        for _ in 0..300 {
            memory.apply(0, &trade(1));
        }
        memory.apply(1, &trade(2));
        memory.apply(5, &trade(9));
        let observed = memory.observed();
        assert_eq!(
            (
                observed.trade_rows.get(1),
                observed.trade_rows.get(2),
                observed.outbox_rows.get(9)
            ),
            (300, 1, 1)
        );
        assert_eq!(observed.positions[&(3, 1)], 2 * 302);
        assert_eq!(observed.positions, observed.positions_from_trade_rows);
    }
}

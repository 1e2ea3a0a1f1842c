//! The in-memory business store of `--no-business-write`.

/// `--no-business-write`: the business transaction replaced by an exact in-memory record of
/// each trade's effects (the trade row, its outbox row, the position), so a run measures the
/// idempotency cost alone while the audit still counts every application. Sharded by
/// partition: one worker owns a partition, so a message takes an uncontended lock (no shared
/// lock on the hot path).
#[derive(Debug)]
pub struct MemoryEffects {
    shards: Vec<std::sync::Mutex<EffectShard>>,
}

#[derive(Debug, Default)]
struct EffectShard {
    applied: std::collections::HashMap<u64, u64>,
    positions: std::collections::HashMap<(u32, u32), i64>,
}

impl Default for MemoryEffects {
    fn default() -> MemoryEffects {
        MemoryEffects {
            shards: (0..64).map(|_| Default::default()).collect(),
        }
    }
}

impl MemoryEffects {
    pub fn apply(&self, partition: i32, trade: &idembench_loadgen::Trade) {
        let shard = &self.shards[partition.unsigned_abs() as usize % self.shards.len()];
        let mut shard = shard.lock().expect("effects lock");
        *shard.applied.entry(trade.trade_id).or_insert(0) += 1;
        *shard
            .positions
            .entry((trade.account, trade.instrument))
            .or_insert(0) += trade.signed_quantity();
    }

    /// What the audit would read from Postgres had the effects been written there (a trade's
    /// copies may sit in two partitions' shards, so the shards are summed).
    pub fn observed(&self) -> super::Observed {
        let mut applied = std::collections::HashMap::new();
        let mut positions = std::collections::HashMap::new();
        for shard in &self.shards {
            let shard = shard.lock().expect("effects lock");
            for (id, n) in &shard.applied {
                *applied.entry(*id).or_insert(0) += n;
            }
            for (key, quantity) in &shard.positions {
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

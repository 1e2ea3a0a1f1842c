//! `storage` in result.json: what the run's idempotency state occupies at its end, measured
//! before the run's keys and schema are removed — the figures an ADR's memory projection
//! scales up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The run's Redis keys and Postgres tables when the run ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Storage {
    /// The run's keys (DONE marks, claims, cache entries), where the strategy uses Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStorage>,
    /// Each table of the run's schema that holds rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postgres: Vec<TableStorage>,
    /// Why a part has no figure (`redis`, `postgres`): the error that stopped the measurement.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unmeasured: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RedisStorage {
    /// Keys under the run's prefix, on every primary.
    pub keys: u64,
    /// Keys whose `MEMORY USAGE` was asked (the first ones `SCAN` returned, on each primary).
    pub sampled_keys: u64,
    /// Mean `MEMORY USAGE` of the sampled keys: key, value and the key's dictionary entry —
    /// not its entry in the expiry table, so a key with a TTL costs somewhat more.
    pub bytes_per_key: f64,
    /// `used_memory` (summed over the primaries) at the end minus at the start of the run, per
    /// key: the whole cost of a key with its TTL, allocator included. `None` when either
    /// sample failed; on a Redis other clients use at the same time it is noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_bytes_per_key: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TableStorage {
    pub table: String,
    pub rows: u64,
    /// Main forks of the heap, its indexes and TOAST (`pg_relation_size` of each).
    pub bytes: u64,
    /// What the table grew by (`bytes` less the empty table's) per logical trade of the run
    /// (the stream's unique trade ids).
    pub bytes_per_trade: f64,
}

impl Storage {
    /// The table's figures, if the run's schema had rows in it.
    pub fn table(&self, name: &str) -> Option<&TableStorage> {
        self.postgres.iter().find(|t| t.table == name)
    }

    /// What one Redis key costs: the `used_memory` difference where it was had and is
    /// plausible (at least `MEMORY USAGE`'s figure), else `MEMORY USAGE`'s.
    pub fn redis_bytes_per_key(&self) -> Option<f64> {
        let redis = self.redis.as_ref().filter(|r| r.keys > 0)?;
        Some(match redis.used_memory_bytes_per_key {
            Some(whole) if whole >= redis.bytes_per_key => whole,
            _ => redis.bytes_per_key,
        })
    }
}

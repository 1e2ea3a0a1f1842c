//! Step 5's first part: what the run's idempotency state occupies, measured after the audit
//! and before the clean-up removes it (`storage` in result.json). A failure costs only its
//! figure: the reason goes to `storage.unmeasured`, the run goes on.

use std::collections::BTreeMap;

use super::prepare::Reached;
use crate::config::{RunConfig, RunNames};
use crate::results::storage::{RedisStorage, Storage, TableStorage};

/// Keys per primary whose `MEMORY USAGE` is asked.
const SAMPLE: usize = 200;

/// What the empty state occupied, before the run wrote anything: the baseline the figures at
/// the end are taken from, so an empty table's pages and an empty Redis's memory are not
/// charged to the trades.
pub(super) struct AtStart {
    redis_used_memory: Option<u64>,
    table_bytes: BTreeMap<String, u64>,
}

pub(super) async fn at_start(config: &RunConfig, reached: &Reached) -> AtStart {
    let redis_used_memory = match config.strategy.capabilities().uses_redis {
        true => crate::redis::admin::used_memory(
            &config.connections.redis_url,
            config.connect_timeout(),
        )
        .await
        .ok(),
        false => None,
    };
    let table_bytes = reached
        .db
        .table_sizes()
        .await
        .map(|tables| tables.into_iter().map(|(t, _, b)| (t, b)).collect())
        .unwrap_or_default();
    AtStart {
        redis_used_memory,
        table_bytes,
    }
}

pub(super) async fn measure(
    config: &RunConfig,
    names: &RunNames,
    reached: &Reached,
    start: &AtStart,
) -> Storage {
    let mut storage = Storage::default();
    let trades = config.stream.trades.max(1) as f64;
    match reached.db.table_sizes().await {
        Ok(tables) => {
            storage.postgres = tables
                .into_iter()
                .filter(|(_, rows, _)| *rows > 0)
                .map(|(table, rows, bytes)| {
                    let empty = start.table_bytes.get(&table).copied().unwrap_or(0);
                    TableStorage {
                        bytes_per_trade: round(bytes.saturating_sub(empty) as f64 / trades),
                        table,
                        rows,
                        bytes,
                    }
                })
                .collect();
        }
        Err(error) => {
            storage
                .unmeasured
                .insert("postgres".into(), error.to_string());
        }
    }
    if config.strategy.capabilities().uses_redis {
        let (url, timeout) = (&config.connections.redis_url, config.connect_timeout());
        match crate::redis::admin::memory_sample(url, &names.key_prefix, SAMPLE, timeout).await {
            Ok((keys, sampled, bytes)) => {
                let used_at_end = crate::redis::admin::used_memory(url, timeout).await.ok();
                storage.redis = Some(RedisStorage {
                    keys,
                    sampled_keys: sampled,
                    bytes_per_key: round(bytes as f64 / sampled.max(1) as f64),
                    used_memory_bytes_per_key: start
                        .redis_used_memory
                        .zip(used_at_end)
                        .filter(|_| keys > 0)
                        .map(|(start, end)| round((end as f64 - start as f64) / keys as f64)),
                });
            }
            Err(error) => {
                storage.unmeasured.insert("redis".into(), error.to_string());
            }
        }
    }
    storage
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

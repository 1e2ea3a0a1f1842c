//! `redis-only-atomic` — redis-only with check and claim in one round trip:
//! `SET key PROCESSING NX PX processing_ttl GET` answers nil (claimed) or the state the key
//! held (DONE: skip; PROCESSING: skip or wait), then business tx → `SET PX DONE` as redis-only.
//!
//! Guarantee and failure modes: exactly those of [`redis-only`](super::redis_only) — the
//! ordering of the Redis and database steps is the same; only the GET round trip is gone,
//! which is what this strategy exists to measure. Needs Redis ≥ 7.0 (`SET ... NX GET`).

use super::parts::{ClaimStyle, ClaimedTransaction, DbTx, DoneMark, RedisKeys};

pub fn new(tx: DbTx, keys: RedisKeys) -> ClaimedTransaction {
    ClaimedTransaction::new(tx, keys, ClaimStyle::Atomic, false, DoneMark::AfterCommit)
}

//! `redis-only` — the design note's flow, Redis as the only idempotency authority:
//!
//! 1. `GET key` — DONE: skip (duplicate). PROCESSING: skip (another attempt holds it).
//! 2. `SET key PROCESSING NX PX processing_ttl` — not set: skip (lost the race to claim).
//! 3. the business transaction (trade, outbox, position) in Postgres.
//! 4. `SET key DONE PX done_ttl`.
//! 5. the processor commits the Kafka offset.
//!
//! With `--on-in-progress wait`, a copy that finds PROCESSING polls until DONE (skip) or until
//! the key expires (claim and process), instead of skipping at once.
//!
//! Guarantee: with no crash, no Redis data loss and every attempt finishing within
//! `processing_ttl`, each trade applies exactly once. Where it can fail:
//! - a crash between the DB commit (3) and SET DONE (4) leaves PROCESSING until its TTL
//!   expires; a redelivery inside that window is skipped as in progress, one after it applies
//!   the trade again (only the unique constraint, if on, catches it);
//! - a crash after the claim (2) and before the DB commit skips redeliveries until the TTL
//!   expires — with the offset committed past them, the trade is lost;
//! - Redis losing its keys (restart without persistence, failover) turns every later copy
//!   into a fresh trade;
//! - a DONE mark older than `done_ttl` no longer stops a late duplicate;
//! - an attempt slower than `processing_ttl` loses its claim while it still works, so a
//!   concurrent copy may apply too.

use super::parts::{ClaimStyle, ClaimedTransaction, DbTx, DoneMark, RedisKeys};

pub fn new(tx: DbTx, keys: RedisKeys) -> ClaimedTransaction {
    ClaimedTransaction::new(tx, keys, ClaimStyle::TwoStep, false, DoneMark::AfterCommit)
}

//! `dual-redis-first` — the design note's inconsistency example, built as it describes: Redis
//! claim (GET, SET NX PX PROCESSING), business transaction with an inbox row, `SET PX DONE`,
//! and only then the database COMMIT. A copy is skipped if either store says done.
//!
//! Guarantee: without faults, exactly once. Where it fails: a crash after SET DONE and before
//! COMMIT leaves Redis saying DONE and the database holding nothing — every redelivery skips,
//! and the trade is lost for good (the note's "silent data loss"). A COMMIT that fails after
//! SET DONE does the same unless retried to success. The other windows are redis-only's.

use super::parts::{ClaimStyle, ClaimedTransaction, DbTx, DoneMark, RedisKeys};

pub fn new(tx: DbTx, keys: RedisKeys) -> ClaimedTransaction {
    ClaimedTransaction::new(tx, keys, ClaimStyle::TwoStep, true, DoneMark::BeforeCommit)
}

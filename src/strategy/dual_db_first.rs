//! `dual-db-first` — Redis claim (GET, SET NX PX PROCESSING), business transaction with an
//! inbox row and COMMIT, then `SET PX DONE`. A copy is skipped if either store says done: Redis
//! answers most duplicates without a database round trip, and the inbox catches the rest.
//!
//! Guarantee: the inbox makes it at most once, and committing the offset after it makes it at
//! least once — as long as a PROCESSING claim cannot strand a trade. Where it fails: a crash
//! after the claim and before COMMIT leaves PROCESSING until `processing_ttl`; a redelivery
//! inside that window is skipped as in progress and, with the offset committed past it, the
//! trade is lost (with `--on-in-progress wait` the redelivery waits out the TTL instead). A
//! crash after COMMIT and before SET DONE is harmless: the inbox catches the redelivery.

use super::parts::{ClaimStyle, ClaimedTransaction, DbTx, DoneMark, RedisKeys};

pub fn new(tx: DbTx, keys: RedisKeys) -> ClaimedTransaction {
    ClaimedTransaction::new(tx, keys, ClaimStyle::TwoStep, true, DoneMark::AfterCommit)
}

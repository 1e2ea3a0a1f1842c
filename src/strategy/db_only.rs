//! `db-only` — the database is the only idempotency authority: an inbox row keyed by the trade
//! id is inserted in the same transaction as the business effects
//! (`INSERT ... ON CONFLICT DO NOTHING`; nothing inserted → already done → roll back, skip).
//!
//! Guarantee: each trade's effects commit at most once, and — since the offset is committed
//! only after the transaction — at least once. A crash anywhere leaves either nothing (the
//! redelivery applies it) or inbox and effects together (the redelivery skips it). No TTL, no
//! second store, no window. Where it can fail: only if the inbox is pruned while copies of a
//! trade can still arrive, or if the business write goes to another database than the inbox.
//! Its price is one more row per trade and a database round trip for every duplicate.

use super::parts::{DbTx, SingleTransaction, TxShape};

pub fn new(tx: DbTx) -> SingleTransaction {
    SingleTransaction::new(tx, TxShape::INBOX)
}

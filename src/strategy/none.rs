//! `none` — apply every copy.
//!
//! Guarantee: none. Every delivered copy runs the business transaction, so a trade with `k`
//! copies lands `k` times unless the trade id's unique constraint rejects the extra ones (then
//! they count as `caught_by_constraint`). It never loses a trade: the baseline that shows what
//! duplicates cost and how much of the work the unique constraint alone does.

use super::parts::{DbTx, SingleTransaction, TxShape};

pub fn new(tx: DbTx) -> SingleTransaction {
    SingleTransaction::new(tx, TxShape::EFFECTS_ONLY)
}

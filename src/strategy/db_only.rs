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

use futures::FutureExt;
use futures::future::BoxFuture;
use idembench_loadgen::Trade;

use super::parts::{TxShape, transact};
use super::{Outcome, RetryPolicy, StageTimes, Strategy, StrategyError};
use crate::db::Db;

pub struct DbOnly {
    db: Db,
    retry: RetryPolicy,
}

impl DbOnly {
    pub fn new(db: Db, retry: RetryPolicy) -> Self {
        DbOnly { db, retry }
    }
}

impl Strategy for DbOnly {
    fn process<'a>(
        &'a self,
        trade: &'a Trade,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let shape = TxShape {
                inbox: true,
                mark_done_before_commit: None,
            };
            Ok(transact(&self.db, &self.retry, trade, shape, stages)
                .await?
                .outcome())
        }
        .boxed()
    }
}

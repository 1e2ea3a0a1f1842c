//! `db-authority-redis-cache` — the database inbox is the only authority; Redis is a cache of
//! DONE marks and never a lock. `GET key`: DONE → skip without touching the database.
//! Otherwise the business transaction with an inbox row (conflict → already done), and after
//! COMMIT `SET PX DONE` so later copies skip early.
//!
//! Guarantee: exactly once, like db-only, whatever Redis does: a lost, flushed, expired or
//! stale cache only costs a database round trip, and no PROCESSING key exists to strand a
//! trade. Where it can fail: only where db-only can (an inbox pruned too early). Concurrent
//! copies of one trade both reach the database, where the inbox's primary key serialises them.

use futures::FutureExt;
use futures::future::BoxFuture;
use idembench_loadgen::Trade;

use super::parts::{RedisKeys, TxShape, transact};
use super::{Outcome, RetryPolicy, StageTimes, Strategy, StrategyError};
use crate::db::Db;

pub struct DbAuthorityRedisCache {
    db: Db,
    keys: RedisKeys,
    retry: RetryPolicy,
}

impl DbAuthorityRedisCache {
    pub fn new(db: Db, keys: RedisKeys, retry: RetryPolicy) -> Self {
        DbAuthorityRedisCache { db, keys, retry }
    }
}

impl Strategy for DbAuthorityRedisCache {
    fn process<'a>(
        &'a self,
        trade: &'a Trade,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let key = self.keys.key(trade.trade_id);
            if self.keys.is_done(&key, stages).await? {
                return Ok(Outcome::SkippedDone);
            }
            let shape = TxShape {
                inbox: true,
                mark_done_before_commit: None,
            };
            let effect = transact(&self.db, &self.retry, trade, shape, stages).await?;
            self.keys.mark_done(&key, stages).await?;
            Ok(effect.outcome())
        }
        .boxed()
    }
}

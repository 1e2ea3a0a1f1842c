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

use super::parts::{DbTx, Effect, RedisKeys, TxShape};
use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

pub struct DbAuthorityRedisCache {
    tx: DbTx,
    keys: RedisKeys,
}

impl DbAuthorityRedisCache {
    pub fn new(tx: DbTx, keys: RedisKeys) -> Self {
        DbAuthorityRedisCache { tx, keys }
    }
}

impl Strategy for DbAuthorityRedisCache {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let trade = message.trade;
            let key = self.keys.key(trade.trade_id);
            if self.keys.is_done(&key, stages).await? {
                return Ok(Outcome::SkippedDone);
            }
            let shape = TxShape::INBOX;
            let effect = self.tx.run(message, shape, stages).await?;
            self.keys.mark_done(&key, stages).await?;
            Ok(effect.outcome())
        }
        .boxed()
    }

    /// Cache reads per message, then one transaction for every miss, then DONE marks.
    fn process_batch<'a>(
        &'a self,
        batch: &'a [Incoming<'a>],
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StrategyError>> {
        async move {
            let mut outcomes = vec![Outcome::SkippedDone; batch.len()];
            let mut misses = Vec::with_capacity(batch.len());
            for (index, message) in batch.iter().enumerate() {
                if !self
                    .keys
                    .is_done(&self.keys.key(message.trade.trade_id), stages)
                    .await?
                {
                    misses.push(index);
                }
            }
            let to_apply: Vec<Incoming<'a>> = misses.iter().map(|i| batch[*i]).collect();
            if !to_apply.is_empty() {
                let effects = self.tx.run_batch(&to_apply, TxShape::INBOX, stages).await?;
                for (index, effect) in misses.into_iter().zip(effects) {
                    outcomes[index] = effect.outcome();
                    if effect == Effect::Applied || effect == Effect::AlreadyDone {
                        self.keys
                            .mark_done(&self.keys.key(batch[index].trade.trade_id), stages)
                            .await?;
                    }
                }
            }
            Ok(outcomes)
        }
        .boxed()
    }
}

//! `redis-only` — the design note's flow, Redis as the only idempotency authority:
//!
//! 1. `GET key` — DONE: skip (duplicate). PROCESSING: skip (another attempt holds it).
//! 2. `SET key PROCESSING NX PX processing_ttl` — not set: skip (lost the race to claim).
//! 3. the business transaction (trade, outbox, position) in Postgres.
//! 4. `SET key DONE PX done_ttl`.
//! 5. the processor commits the Kafka offset.
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

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use idembench_loadgen::Trade;

use super::{
    Outcome, StageTimes, Strategy, StrategyError, StrategySettings, apply_with_retry, timed,
};
use crate::db::Db;
use crate::db::business::BusinessOutcome;
use crate::redis::{KeyState, RedisOps};

pub struct RedisOnly {
    db: Db,
    redis: Arc<dyn RedisOps>,
    settings: StrategySettings,
}

impl RedisOnly {
    pub fn new(db: Db, redis: Arc<dyn RedisOps>, settings: StrategySettings) -> Self {
        RedisOnly {
            db,
            redis,
            settings,
        }
    }

    /// Steps 1 and 2: `None` when this attempt now holds the claim, else why it must skip.
    async fn claim(&self, key: &str) -> Result<Option<Outcome>, StrategyError> {
        let retry = &self.settings.retry;
        let redis_error = |(e, n)| StrategyError::Redis(e, n);
        match retry
            .run(|| self.redis.get(key))
            .await
            .map_err(redis_error)?
        {
            Some(KeyState::Done) => return Ok(Some(Outcome::SkippedDone)),
            Some(KeyState::Processing) => return Ok(Some(Outcome::SkippedInProgress)),
            None => {}
        }
        let ttl = self.settings.processing_ttl;
        let claimed = retry
            .run(|| self.redis.set_nx_px(key, KeyState::Processing, ttl))
            .await
            .map_err(redis_error)?;
        Ok((!claimed).then_some(Outcome::SkippedInProgress))
    }
}

impl Strategy for RedisOnly {
    fn process<'a>(
        &'a self,
        trade: &'a Trade,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let key = self.settings.key(trade.trade_id);
            if let Some(skip) = timed(&mut stages.claim, self.claim(&key)).await? {
                return Ok(skip);
            }
            let outcome =
                match apply_with_retry(&self.db, &self.settings.retry, trade, stages).await? {
                    BusinessOutcome::Applied => Outcome::Applied,
                    // The effect is already there: mark DONE all the same, so later copies skip early.
                    BusinessOutcome::CaughtByConstraint => Outcome::CaughtByConstraint,
                };
            let done_ttl = self.settings.done_ttl;
            timed(
                &mut stages.mark_done,
                self.settings
                    .retry
                    .run(|| self.redis.set_px(&key, KeyState::Done, done_ttl)),
            )
            .await
            .map_err(|(e, n)| StrategyError::Redis(e, n))?;
            Ok(outcome)
        }
        .boxed()
    }
}

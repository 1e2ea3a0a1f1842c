//! `dual-redis-first` — the design note's inconsistency example, built as it describes: Redis
//! claim (GET, SET NX PX PROCESSING), business transaction with an inbox row, `SET PX DONE`,
//! and only then the database COMMIT. A copy is skipped if either store says done.
//!
//! Guarantee: without faults, exactly once. Where it fails: a crash after SET DONE and before
//! COMMIT leaves Redis saying DONE and the database holding nothing — every redelivery skips,
//! and the trade is lost for good (the note's "silent data loss"). A COMMIT that fails after
//! SET DONE does the same unless retried to success. The other windows are redis-only's.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::parts::{Claim, ClaimStyle, DbTx, Effect, RedisKeys, TxShape};
use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

pub struct DualRedisFirst {
    tx: DbTx,
    keys: RedisKeys,
}

impl DualRedisFirst {
    pub fn new(tx: DbTx, keys: RedisKeys) -> Self {
        DualRedisFirst { tx, keys }
    }
}

impl Strategy for DualRedisFirst {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let trade = message.trade;
            let key = self.keys.key(trade.trade_id);
            if let Claim::Skip(outcome) = self.keys.claim(&key, ClaimStyle::TwoStep, stages).await?
            {
                return Ok(outcome);
            }
            self.tx.claimed(trade.trade_id)?;
            let shape = TxShape {
                mark_done_before_commit: Some((&self.keys, &key)),
                ..TxShape::INBOX
            };
            let effect = self.tx.run(message, shape, stages).await?;
            if effect != Effect::Applied {
                // The database said done before the Redis step ran: bring Redis in line.
                self.keys.mark_done(&key, stages).await?;
            }
            Ok(effect.outcome())
        }
        .boxed()
    }
}

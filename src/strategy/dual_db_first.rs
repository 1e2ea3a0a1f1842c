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

use futures::FutureExt;
use futures::future::BoxFuture;

use super::parts::{Claim, ClaimStyle, DbTx, RedisKeys, TxShape};
use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

pub struct DualDbFirst {
    tx: DbTx,
    keys: RedisKeys,
}

impl DualDbFirst {
    pub fn new(tx: DbTx, keys: RedisKeys) -> Self {
        DualDbFirst { tx, keys }
    }
}

impl Strategy for DualDbFirst {
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
            let shape = TxShape::INBOX;
            let effect = self.tx.run(message, shape, stages).await?;
            self.keys.mark_done(&key, stages).await?;
            Ok(effect.outcome())
        }
        .boxed()
    }
}

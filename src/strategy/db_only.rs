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

use super::parts::{DbTx, TxShape};
use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

pub struct DbOnly {
    tx: DbTx,
}

impl DbOnly {
    pub fn new(tx: DbTx) -> Self {
        DbOnly { tx }
    }
}

impl Strategy for DbOnly {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let shape = TxShape::INBOX;
            Ok(self.tx.run(message, shape, stages).await?.outcome())
        }
        .boxed()
    }

    fn process_batch<'a>(
        &'a self,
        batch: &'a [Incoming<'a>],
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StrategyError>> {
        async move {
            let effects = self.tx.run_batch(batch, TxShape::INBOX, stages).await?;
            Ok(effects.into_iter().map(|effect| effect.outcome()).collect())
        }
        .boxed()
    }
}

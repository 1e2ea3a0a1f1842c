//! `none` — apply every copy.
//!
//! Guarantee: none. Every delivered copy runs the business transaction, so a trade with `k`
//! copies lands `k` times unless the trade id's unique constraint rejects the extra ones (then
//! they count as `caught_by_constraint`). It never loses a trade: the baseline that shows what
//! duplicates cost and how much of the work the unique constraint alone does.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::parts::{DbTx, TxShape};
use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

pub struct ApplyEveryCopy {
    tx: DbTx,
}

impl ApplyEveryCopy {
    pub fn new(tx: DbTx) -> Self {
        ApplyEveryCopy { tx }
    }
}

impl Strategy for ApplyEveryCopy {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            let shape = TxShape::EFFECTS_ONLY;
            Ok(self.tx.run(message, shape, stages).await?.outcome())
        }
        .boxed()
    }
}

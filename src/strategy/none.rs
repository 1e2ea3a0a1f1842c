//! `none` — apply every copy.
//!
//! Guarantee: none. Every delivered copy runs the business transaction, so a trade with `k`
//! copies lands `k` times unless the trade id's unique constraint rejects the extra ones (then
//! they count as `caught_by_constraint`). It never loses a trade: the baseline that shows what
//! duplicates cost and how much of the work the unique constraint alone does.

use futures::FutureExt;
use futures::future::BoxFuture;
use idembench_loadgen::Trade;

use super::{Outcome, RetryPolicy, StageTimes, Strategy, StrategyError, apply_with_retry};
use crate::db::Db;
use crate::db::business::BusinessOutcome;

pub struct ApplyEveryCopy {
    db: Db,
    retry: RetryPolicy,
}

impl ApplyEveryCopy {
    pub fn new(db: Db, retry: RetryPolicy) -> Self {
        ApplyEveryCopy { db, retry }
    }
}

impl Strategy for ApplyEveryCopy {
    fn process<'a>(
        &'a self,
        trade: &'a Trade,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            Ok(
                match apply_with_retry(&self.db, &self.retry, trade, stages).await? {
                    BusinessOutcome::Applied => Outcome::Applied,
                    BusinessOutcome::CaughtByConstraint => Outcome::CaughtByConstraint,
                },
            )
        }
        .boxed()
    }
}

//! `db-offsets` — what Kafka's documentation advises for sinks outside Kafka, and the design
//! note never considered: no inbox and no Redis. The business transaction also moves the
//! partition's next offset, kept in Postgres (`consumer_offsets`); a message whose offset is
//! below the stored one is a redelivery and is skipped (the row is read `FOR UPDATE`, so two
//! consumers of one partition during a rebalance serialise). On every partition assignment the
//! processor seeks to the offsets stored here, so redeliveries are not even fetched; Kafka's
//! committed offsets are advisory only.
//!
//! Guarantee: every Kafka *message* is applied exactly once — a crash anywhere leaves the
//! effects and the offset committed together or not at all. Where it fails: it knows messages,
//! not trades. A trade *published twice* (two offsets) is two messages; only the trade id's
//! unique constraint stops the second one (`caught_by_constraint`; the offset still moves,
//! inside a savepoint), and with `--no-unique-constraint` it is applied twice. It also needs
//! the business data and the offsets in one database.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::parts::{DbTx, TxShape};
use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

pub struct DbOffsets {
    tx: DbTx,
}

impl DbOffsets {
    pub fn new(tx: DbTx) -> Self {
        DbOffsets { tx }
    }
}

impl Strategy for DbOffsets {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        async move {
            Ok(self
                .tx
                .run(message, TxShape::OFFSETS, stages)
                .await?
                .outcome())
        }
        .boxed()
    }

    fn keeps_offsets(&self) -> bool {
        true
    }

    fn resume_offsets<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<Vec<(i32, i64)>, StrategyError>> {
        async move {
            crate::db::business::stored_offsets(self.tx.db(), topic, partitions)
                .await
                .map_err(|error| StrategyError::Db(error, 1))
        }
        .boxed()
    }

    fn process_batch<'a>(
        &'a self,
        batch: &'a [Incoming<'a>],
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StrategyError>> {
        async move {
            let effects = self.tx.run_batch(batch, TxShape::OFFSETS, stages).await?;
            Ok(effects.into_iter().map(|effect| effect.outcome()).collect())
        }
        .boxed()
    }
}

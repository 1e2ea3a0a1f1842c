//! `kafka-transactions` — the option the design note dismissed as "operationally complex":
//! Kafka's own exactly-once. Stage one consumes the input topic and, per unit of work (a
//! message, or a polled batch with `--batch-size`), runs one Kafka transaction on its worker's
//! transactional producer: the effect records (each trade's outbox event) to the run's effects
//! topic, the unit's next offsets with the consumer's group metadata (`send_offsets`), commit.
//! Stage two, the sink, reads the effects topic at `read_committed` and writes the business
//! transaction with its own offsets in it (db-offsets on the effects topic). The pair is what a
//! team would deploy instead of Redis; the audit reads Postgres as for every other strategy.
//!
//! Guarantee: exactly once per *message*, whatever the crash — an aborted or abandoned
//! transaction's effects are never read at `read_committed`, and its offsets never commit.
//! Where it fails: like db-offsets it knows messages, not trades, so a trade published twice is
//! caught only by the unique constraint.
//!
//! The transactions run in the processor (`processor::transactional`), which owns the
//! consumer whose group metadata fences a zombie; this strategy is only the seam's name for
//! stage one, and is never asked to process a message.

use futures::future::BoxFuture;

use super::{Incoming, Outcome, StageTimes, Strategy, StrategyError};

/// Stage one's strategy: its units go to the processor's transactional lanes, not here.
pub struct Transform;

impl Strategy for Transform {
    fn process<'a>(
        &'a self,
        _message: &'a Incoming<'a>,
        _stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>> {
        Box::pin(async {
            Err(StrategyError::Transaction(
                "kafka-transactions runs its units in the processor's transactional lanes; this processor was started without them (ProcessorSettings.transactions is unset)".into(),
            ))
        })
    }
}

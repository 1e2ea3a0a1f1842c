//! kafka-transactions' second stage: a processor on the effects topic (`read_committed`, as
//! every processor consumer reads) whose strategy is db-offsets, in this process beside stage
//! one. It drains on the offsets of the records a read_committed reader sees, not on the high
//! watermark: each transaction's commit marker takes an offset of the effects topic that no
//! record carries, so the sink's next offset after the last record stops short of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::RunError;
use crate::check::kafka::{Isolation, read_effects_apart};
use crate::config::{RunConfig, RunNames};
use crate::db::Db;
use crate::faults::Faults;
use crate::processor::member::MemberSpec;
use crate::processor::{Processor, ProcessorError, ProcessorReport, ProcessorSettings, Progress};
use crate::strategy::{self, StrategyKind};

pub(super) struct Sink {
    processor: Processor,
    pub progress: Arc<Progress>,
    pub effects_topic: String,
    brokers: String,
}

impl Sink {
    /// Starts the sink and waits until its group assigned it the effects topic's partitions.
    /// No crash point fires in it (they are stage one's), slow trades do (the business
    /// transaction is the sink's); `db` is the processor's Postgres link, so an outage the run
    /// injects cuts it.
    pub async fn start(
        config: &RunConfig,
        names: &RunNames,
        spec: &MemberSpec,
        db: Db,
    ) -> Result<Sink, RunError> {
        let settings = ProcessorSettings {
            topic: names.effects_topic(),
            group_id: names.sink_group(),
            transactions: None,
            ..spec.processor.clone()
        };
        // Slow trades are slow in the business transaction, which is the sink's.
        let faults = Arc::new(Faults::new(crate::faults::FaultPlan {
            slow_trades: config.crash_plan.slow_trades.clone(),
            slow_ms: config.crash_plan.slow_ms,
            ..Default::default()
        }));
        let strategy = strategy::build(
            StrategyKind::DbOffsets,
            spec.strategy_settings(faults.clone()),
            db,
            None,
            None,
        );
        let progress = Arc::new(Progress::new(config.partitions));
        let processor = Processor::start(&settings, strategy, progress.clone(), faults)?;
        if !processor.wait_for_assignment(Duration::from_secs(30)).await {
            let _ = processor.stop_keeping_report().await;
            return Err(RunError::Service {
                error: format!(
                    "the sink's consumer group {} got no partitions of {} within 30 s",
                    settings.group_id, settings.topic
                ),
                hint: "check the broker's log; a group coordinator must be available".into(),
            });
        }
        Ok(Sink {
            processor,
            progress,
            effects_topic: settings.topic,
            brokers: settings.brokers,
        })
    }

    /// Per partition, the offset after the last record of a committed transaction on the
    /// effects topic: where the sink must have committed once stage one has drained (every
    /// transaction then has ended).
    pub async fn committed_ends(&self, timeout: Duration) -> Result<BTreeMap<i32, i64>, String> {
        read_effects_apart(
            &self.brokers,
            &self.effects_topic,
            Isolation::ReadCommitted,
            timeout,
            None,
        )
        .await
        .map(|read| read.ends)
    }

    /// Whether the sink committed every partition up to `ends`: offsets, not a count of
    /// messages, so a redelivery inside the sink cannot stand in for a record never processed.
    pub fn reached(&self, ends: &BTreeMap<i32, i64>) -> bool {
        self.lag(ends) == 0
    }

    /// Offsets of the effects topic before `ends` the sink has not committed (an upper bound
    /// of the records: a commit marker between two records takes an offset too).
    pub fn lag(&self, ends: &BTreeMap<i32, i64>) -> u64 {
        ends.iter()
            .map(|(partition, end)| (end - self.progress.committed(*partition)).max(0) as u64)
            .sum()
    }

    /// The sink gave up (a store stayed unreachable through every retry).
    pub fn failed(&self) -> bool {
        self.processor.failed().is_cancelled()
    }

    pub async fn stop(self) -> (ProcessorReport, Option<ProcessorError>) {
        self.processor.stop_keeping_report().await
    }
}

//! Kafka transactions (#16, slice 1): a transactional processor driven directly on the real
//! Kafka of `scripts/services up`. Each unit's effects and its input offsets go into one
//! transaction; the effects topic is read back at both isolation levels and counted against
//! the ledger, and the group's committed offsets are read from the coordinator.

use std::sync::Arc;
use std::time::Duration;

use idembench::check::kafka::{Isolation, KafkaCorrectness, read_effects, reconcile};
use idembench::faults::{CrashPoint, FaultPlan, Faults};
use idembench::processor::transactional::TxnSettings;
use idembench::processor::{CommitMode, Processor, ProcessorSettings, Progress};
use idembench::strategy::StrategyKind;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common::Direct;

/// A processor whose workers write through Kafka transactions into `{topic}.effects`.
async fn transactional(direct: &Direct, partitions: usize, batch: usize) -> ProcessorSettings {
    let effects_topic = format!("{}.effects", direct.topic);
    direct
        .admin
        .create_topic(&effects_topic, partitions, 1, 1)
        .await
        .unwrap();
    let mut settings = direct.processor_settings(partitions, CommitMode::Interval);
    settings.batch_size = batch;
    settings.transactions = Some(TxnSettings {
        effects_topic,
        transactional_id: format!("{}.tx", direct.topic),
        transaction_timeout: Duration::from_secs(10),
    });
    settings
}

/// Runs one incarnation until the input is committed or `crashed` fires; true if it crashed.
async fn run_once(
    direct: &Direct,
    settings: &ProcessorSettings,
    progress: &Arc<Progress>,
    faults: &Arc<Faults>,
) -> bool {
    let strategy = direct.strategy(StrategyKind::None, faults.clone());
    let processor = Processor::start(settings, strategy, progress.clone(), faults.clone())
        .unwrap_or_else(|e| panic!("{e} (is `scripts/services up` running?)"));
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    // A guard against a hang, not a timing: one transaction per message takes tens of ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let crashed = loop {
        if processor.crashed().is_cancelled() {
            break true;
        }
        if progress.caught_up(&direct.produced.end_offsets) {
            break false;
        }
        assert!(
            !processor.failed().is_cancelled(),
            "the transactional processor gave up"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transactional processor did not commit the input within 180 s: {} messages completed, {} committed of {:?}",
            progress.completed(),
            progress.committed_total(),
            direct.produced.end_offsets
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (report, error) = processor.stop_keeping_report().await;
    if !crashed {
        assert!(error.is_none(), "{error:?}");
    }
    let transactions = &report.metrics.business_us;
    eprintln!(
        "{} transactions of batch ≤ {}: p50 {} µs, p99 {} µs (begin to commit)",
        transactions.len(),
        settings.batch_size,
        transactions.value_at_quantile(0.5),
        transactions.value_at_quantile(0.99)
    );
    crashed
}

/// The effects topic at both isolation levels, against the ledger.
async fn audit(direct: &Direct, settings: &ProcessorSettings) -> KafkaCorrectness {
    let topic = settings
        .transactions
        .as_ref()
        .unwrap()
        .effects_topic
        .clone();
    let brokers = direct.brokers.clone();
    let (committed, uncommitted) = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            let timeout = Duration::from_secs(30);
            (
                read_effects(&brokers, &topic, Isolation::ReadCommitted, timeout).unwrap(),
                read_effects(&brokers, &topic, Isolation::ReadUncommitted, timeout).unwrap(),
            )
        }
    })
    .await
    .unwrap();
    reconcile(&topic, &direct.produced.ledger, &committed, &uncommitted)
}

/// The input offsets the group coordinator holds: what the transactions committed.
async fn group_offsets(direct: &Direct, settings: &ProcessorSettings) -> Vec<(i32, i64)> {
    let (brokers, group, topic) = (
        direct.brokers.clone(),
        settings.group_id.clone(),
        direct.topic.clone(),
    );
    let partitions = settings.partitions;
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut wanted = rdkafka::TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition(&topic, partition as i32);
        }
        consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect()
    })
    .await
    .unwrap()
}

fn end_offsets(direct: &Direct) -> Vec<(i32, i64)> {
    direct
        .produced
        .end_offsets
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_leaves_one_committed_effect_and_its_offset_commits_with_it() {
    for (partitions, batch) in [(1, 1), (3, 10)] {
        let direct = Direct::new("txn", partitions, 300).await;
        let settings = transactional(&direct, partitions, batch).await;
        let progress = Arc::new(Progress::new(partitions));
        let faults = Arc::new(Faults::none());
        assert!(!run_once(&direct, &settings, &progress, &faults).await);
        let kafka = audit(&direct, &settings).await;
        let offsets = group_offsets(&direct, &settings).await;
        let _ = direct
            .admin
            .delete_topic(&settings.transactions.as_ref().unwrap().effects_topic)
            .await;
        direct.clean_up().await;
        assert!(kafka.identity_holds, "{kafka:?}");
        assert_eq!(kafka.committed.exactly_once, 300, "{kafka:?}");
        assert_eq!(kafka.committed.records, 300, "{kafka:?}");
        assert_eq!(
            kafka.aborted_records, 0,
            "no transaction aborted: {kafka:?}"
        );
        assert_eq!(offsets, end_offsets(&direct), "the group's offsets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_point_of_a_transaction_loses_and_doubles_nothing() {
    for point in [
        CrashPoint::AfterProduce,
        CrashPoint::AfterSendOffsets,
        CrashPoint::InCommit,
    ] {
        let direct = Direct::new("txncrash", 1, 200).await;
        let settings = transactional(&direct, 1, 1).await;
        let progress = Arc::new(Progress::new(1));
        let faults = Arc::new(Faults::new(FaultPlan {
            points: vec![point],
            trade_ids: vec![50],
            max_crashes: Some(1),
            ..Default::default()
        }));
        assert!(
            run_once(&direct, &settings, &progress, &faults).await,
            "{}: the crash never fired",
            point.name()
        );
        // The next incarnation's lane has the same transactional id: its init_transactions
        // aborts the transaction the dead one left open.
        assert!(!run_once(&direct, &settings, &progress, &faults).await);
        let kafka = audit(&direct, &settings).await;
        let offsets = group_offsets(&direct, &settings).await;
        let _ = direct
            .admin
            .delete_topic(&settings.transactions.as_ref().unwrap().effects_topic)
            .await;
        direct.clean_up().await;
        let name = point.name();
        assert_eq!(faults.crashes(), 1, "{name}");
        assert!(kafka.identity_holds, "{name}: {kafka:?}");
        assert_eq!(kafka.committed.exactly_once, 200, "{name}: {kafka:?}");
        assert_eq!(offsets, end_offsets(&direct), "{name}: the group's offsets");
        if point == CrashPoint::InCommit {
            // It committed before dying: nothing to abort, nothing delivered again.
            assert_eq!(kafka.aborted_records, 0, "{name}: {kafka:?}");
        } else {
            // Trade 50's effect was written in the transaction the crash left open; the
            // restart aborted it and wrote the effect again, committed.
            assert_eq!(kafka.aborted_records, 1, "{name}: {kafka:?}");
            assert_eq!(kafka.uncommitted.doubled, 1, "{name}: {kafka:?}");
        }
    }
}

//! An offset counts as committed only once the broker has answered the commit: the run drains
//! on committed offsets, so a commit merely queued (asynchronous, and not yet acknowledged)
//! must not count. Sampled while a processor commits asynchronously after every message: what
//! the processor calls committed is never ahead of what the group coordinator holds.

use std::sync::Arc;
use std::time::Duration;

use idembench::faults::Faults;
use idembench::processor::{CommitMode, Processor, Progress};
use idembench::strategy::StrategyKind;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::Direct;

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_commit_counts_only_once_the_broker_answers() {
    let direct = Direct::new("commits", PARTITIONS as usize, 3_000).await;
    let faults = Arc::new(Faults::none());
    let strategy = direct.strategy(StrategyKind::None, faults.clone());
    let settings = direct.processor_settings(PARTITIONS as usize, CommitMode::Async);
    let progress = Arc::new(Progress::new(PARTITIONS as usize));
    let processor = Processor::start(&settings, strategy, progress.clone(), faults).unwrap();
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    // Reads the group's committed offsets from the coordinator, without joining the group.
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &direct.brokers)
        .set("group.id", &direct.topic)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut samples = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !progress.caught_up(&direct.produced.end_offsets) {
        assert!(std::time::Instant::now() < deadline, "did not drain");
        // What the processor calls committed first, then what the broker holds: an
        // acknowledged commit is on the broker by the time it counts.
        let claimed: Vec<i64> = (0..PARTITIONS).map(|p| progress.committed(p)).collect();
        let mut wanted = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            wanted.add_partition(&direct.topic, partition);
        }
        let reader = &reader;
        let held = tokio::task::block_in_place(|| {
            reader.committed_offsets(wanted, Duration::from_secs(5))
        })
        .unwrap();
        for element in held.elements() {
            let on_broker = match element.offset() {
                Offset::Offset(next) => next,
                _ => 0,
            };
            let partition = element.partition() as usize;
            assert!(
                on_broker >= claimed[partition],
                "partition {partition}: counted {} committed while the broker holds {on_broker}",
                claimed[partition]
            );
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = processor.stop().await.unwrap();
    direct.clean_up().await;
    assert!(
        samples > 3,
        "only {samples} samples while the processor ran"
    );
    // Every message once — unless the group rebalanced (on a starved machine a member can
    // miss its session), which redelivers what was not committed yet: never fewer.
    // A commit sent by a generation the group has ended is refused by the broker and counted;
    // without a rebalance, none is.
    if report.rebalances <= 1 {
        assert_eq!(report.metrics.counts.messages, 3_000, "{report:?}");
        assert_eq!(report.commit_errors, 0, "{report:?}");
    } else {
        assert!(report.metrics.counts.messages >= 3_000, "{report:?}");
    }
}

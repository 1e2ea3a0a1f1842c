//! An offset counts as committed only once the broker has answered the commit: the run drains
//! on committed offsets, so a commit merely queued (asynchronous, and not yet acknowledged)
//! must not count. Sampled while a processor commits asynchronously after every message: what
//! the processor calls committed is never ahead of what the group coordinator holds.

use std::sync::Arc;
use std::time::Duration;

use idembench::db::{Db, DbSettings};
use idembench::faults::Faults;
use idembench::kafka::{self, Admin};
use idembench::processor::{CommitMode, Processor, ProcessorSettings, Progress};
use idembench::strategy::parts::OnInProgress;
use idembench::strategy::{self, RetryPolicy, StrategyKind, StrategySettings};
use idembench_loadgen::{SendSettings, StreamSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_commit_counts_only_once_the_broker_answers() {
    let brokers =
        std::env::var("IDEMBENCH_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let postgres = std::env::var("IDEMBENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://idembench:idembench@127.0.0.1:5432/idembench".into());
    let timeout = Duration::from_secs(5);
    let id: u32 = rand::random();
    let topic = format!("idembench.test-commits-{id:08x}");
    let hint = "(is `scripts/services up` running?)";
    let (admin, _) = Admin::connect(&brokers, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e} {hint}"));
    admin
        .create_topic(&topic, PARTITIONS as usize, 1)
        .await
        .unwrap();
    let db = Db::connect(
        &DbSettings {
            url: postgres,
            connections: 4,
            connect_timeout: timeout,
        },
        &format!("test_commits_{id:08x}"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e} {hint}"));
    db.prepare(true).await.unwrap();
    let spec = StreamSpec {
        trades: 3_000,
        duplicate_rate: 0.0,
        ..StreamSpec::default()
    };
    let producer = kafka::producer(&brokers, 1, timeout).unwrap();
    let send = SendSettings {
        topic: topic.clone(),
        rate: 0.0,
        copies: Default::default(),
        acked: None,
        unkeyed: false,
    };
    let produced = idembench_loadgen::produce(
        &producer.producer,
        &send,
        &spec,
        &spec.plan().unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();

    let faults = Arc::new(Faults::none());
    let strategy = strategy::build(
        StrategyKind::None,
        StrategySettings {
            faults: faults.clone(),
            processing_ttl: Duration::from_secs(300),
            done_ttl: Duration::from_secs(600),
            key_prefix: String::new(),
            on_in_progress: OnInProgress::Skip,
            redis_pipeline: false,
            retry: RetryPolicy {
                attempts: 3,
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
            },
        },
        db.clone(),
        None,
        None,
    );
    let settings = ProcessorSettings {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group_id: topic.clone(),
        partitions: PARTITIONS as usize,
        workers: PARTITIONS as usize,
        commit_mode: CommitMode::Async,
        commit_interval: Duration::from_millis(100),
        batch_size: 1,
        in_flight: 1,
        queue_depth: 64,
        close_timeout: Duration::from_secs(10),
        session_timeout: Duration::from_secs(10),
    };
    let progress = Arc::new(Progress::new(PARTITIONS as usize));
    let processor = Processor::start(&settings, strategy, progress.clone(), faults).unwrap();
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    // Reads the group's committed offsets from the coordinator, without joining the group.
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &topic)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut samples = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !progress.caught_up(&produced.end_offsets) {
        assert!(std::time::Instant::now() < deadline, "did not drain");
        // What the processor calls committed first, then what the broker holds: an
        // acknowledged commit is on the broker by the time it counts.
        let claimed: Vec<i64> = (0..PARTITIONS).map(|p| progress.committed(p)).collect();
        let mut wanted = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            wanted.add_partition(&topic, partition);
        }
        let reader = &reader;
        let held =
            tokio::task::block_in_place(|| reader.committed_offsets(wanted, timeout)).unwrap();
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
    let _ = admin.delete_topic(&topic).await;
    db.drop_schema().await.unwrap();
    assert!(
        samples > 3,
        "only {samples} samples while the processor ran"
    );
    assert_eq!(report.metrics.counts.messages, 3_000);
    assert_eq!(report.commit_errors, 0);
}

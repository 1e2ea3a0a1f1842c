//! db-offsets resumes each assigned partition at the offset Postgres holds, so messages below
//! it are never even fetched (without the seek they would arrive and be skipped one by one).

use std::sync::Arc;
use std::time::Duration;

use idembench::db::{Db, DbSettings};
use idembench::faults::Faults;
use idembench::kafka::{self, Admin};
use idembench::processor::{CommitMode, Processor, ProcessorSettings, Progress};
use idembench::strategy::parts::OnInProgress;
use idembench::strategy::{self, RetryPolicy, StrategyKind, StrategySettings};
use idembench_loadgen::{SendSettings, StreamSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_offsets_seeks_to_the_stored_offset_on_assignment() {
    let brokers =
        std::env::var("IDEMBENCH_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let postgres = std::env::var("IDEMBENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://idembench:idembench@127.0.0.1:5432/idembench".into());
    let timeout = Duration::from_secs(5);
    let id: u32 = rand::random();
    let topic = format!("idembench.test-seek-{id:08x}");
    let hint = "(is `scripts/services up` running?)";

    let (admin, _) = Admin::connect(&brokers, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e} {hint}"));
    admin.create_topic(&topic, 1, 1).await.unwrap();
    let settings = DbSettings {
        url: postgres,
        connections: 4,
        connect_timeout: timeout,
    };
    let db = Db::connect(&settings, &format!("test_seek_{id:08x}"))
        .await
        .unwrap_or_else(|e| panic!("{e} {hint}"));
    db.prepare(true).await.unwrap();

    // 100 trades, once each, into the single partition: offsets 0..=99.
    let spec = StreamSpec {
        trades: 100,
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
    assert_eq!(produced.end_offsets.get(&0), Some(&100));

    // Postgres says the first 60 are done.
    sqlx::query("INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, 0, 60)")
        .bind(&topic)
        .execute(db.pool())
        .await
        .unwrap();

    let faults = Arc::new(Faults::none());
    let strategy_settings = StrategySettings {
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
    };
    let strategy = strategy::build(
        StrategyKind::DbOffsets,
        strategy_settings,
        db.clone(),
        None,
        None,
    );
    let processor_settings = ProcessorSettings {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group_id: topic.clone(),
        partitions: 1,
        workers: 1,
        commit_mode: CommitMode::Interval,
        commit_interval: Duration::from_millis(100),
        batch_size: 1,
        in_flight: 1,
        queue_depth: 64,
        close_timeout: Duration::from_secs(10),
        session_timeout: Duration::from_secs(10),
    };
    let progress = Arc::new(Progress::new(1));
    let processor =
        Processor::start(&processor_settings, Arc::clone(&strategy), progress, faults).unwrap();
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    let progress = processor.progress().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !progress.caught_up(&produced.end_offsets) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the processor did not reach offset 100"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = processor.stop().await.unwrap();
    let counts = report.metrics.counts;

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM trades")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let next: i64 = sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = 0",
    )
    .bind(&topic)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let _ = admin.delete_topic(&topic).await;
    db.drop_schema().await.unwrap();

    assert_eq!(
        counts.messages, 40,
        "only offsets 60..=99 may be fetched: {counts:?}"
    );
    assert_eq!((counts.applied, counts.skipped_done), (40, 0), "{counts:?}");
    assert_eq!(applied, 40);
    assert_eq!(next, 100);
}

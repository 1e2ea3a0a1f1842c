//! db-offsets resumes each assigned partition at the offset Postgres holds, so messages below
//! it are never even fetched (without the seek they would arrive and be skipped one by one).

use std::sync::Arc;
use std::time::Duration;

use idembench::faults::Faults;
use idembench::processor::{CommitMode, Processor, Progress};
use idembench::strategy::StrategyKind;

use crate::common::Direct;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_offsets_seeks_to_the_stored_offset_on_assignment() {
    // 100 trades, once each, into the single partition: offsets 0..=99.
    let direct = Direct::new("seek", 1, 100).await;
    assert_eq!(direct.produced.end_offsets.get(&0), Some(&100));
    let db = &direct.db;

    // Postgres says the first 60 are done.
    sqlx::query("INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, 0, 60)")
        .bind(&direct.topic)
        .execute(db.pool())
        .await
        .unwrap();

    let faults = Arc::new(Faults::none());
    let strategy = direct.strategy(StrategyKind::DbOffsets, faults.clone());
    let processor_settings = direct.processor_settings(1, CommitMode::Interval);
    let progress = Arc::new(Progress::new(1));
    let processor =
        Processor::start(&processor_settings, Arc::clone(&strategy), progress, faults).unwrap();
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    let progress = processor.progress().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !progress.caught_up(&direct.produced.end_offsets) {
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
    .bind(&direct.topic)
    .fetch_one(db.pool())
    .await
    .unwrap();
    direct.clean_up().await;

    assert_eq!(
        counts.messages, 40,
        "only offsets 60..=99 may be fetched: {counts:?}"
    );
    assert_eq!((counts.applied, counts.skipped_done), (40, 0), "{counts:?}");
    assert_eq!(applied, 40);
    assert_eq!(next, 100);
}

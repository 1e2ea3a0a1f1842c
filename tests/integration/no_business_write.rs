//! `--no-business-write`: the business transaction becomes an in-memory record that the audit
//! reads in place of Postgres, so the counts stay exact while only the idempotency cost runs.

use crate::common;

use crate::common::planned_duplicates;

/// Without a strategy every extra copy applies again: the in-memory record must count each,
/// also when a copy lands in another partition (another shard of the record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_record_counts_every_application() {
    let args = [
        "--strategy",
        "none",
        "--no-business-write",
        "--duplicate-partition",
        "next",
        "--trades",
        "1000",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.25",
        "--seed",
        "31",
    ];
    let (outcome, _dir) = common::run(&args).await;
    let c = &outcome.result.correctness;
    let duplicated = planned_duplicates(1000, 0.25, 31);
    assert!(duplicated > 150, "the plan must exercise duplicates");
    assert_eq!(c.double_applied, duplicated, "{c:?}");
    assert_eq!(c.exactly_once, 1000 - duplicated, "{c:?}");
    assert_eq!(c.caught_by_constraint, 0, "memory has no constraint: {c:?}");
    assert!(c.positions_mismatched > 0, "doubled trades move positions");
    assert!(c.identity_holds);
    assert!(!outcome.result.config.unique_constraint);
    assert!(outcome.result.config.no_business_write);
}

/// redis-only stops every duplicate with the business write off, as with it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_without_the_business_write_is_exactly_once() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "redis-only",
        "--no-business-write",
        "--trades",
        "1000",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.25",
        "--seed",
        "32",
    ])
    .await;
    let c = &outcome.result.correctness;
    assert_eq!(c.exactly_once, 1000, "{c:?}");
    assert_eq!(c.duplicates_suppressed, planned_duplicates(1000, 0.25, 32));
    assert_eq!((c.lost, c.double_applied), (0, 0));
    assert_eq!(c.positions_mismatched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_whose_idempotency_is_the_database_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = common::try_run(
        &[
            "--strategy",
            "db-only",
            "--no-business-write",
            "--trades",
            "10",
        ],
        dir.path(),
    )
    .await
    .err()
    .expect("db-only --no-business-write must be refused");
    assert_eq!(error.exit_code(), 2);
    assert!(
        error.to_string().contains("--strategy redis-only"),
        "{error}"
    );
}

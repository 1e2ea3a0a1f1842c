//! Process kills: the processor runs as several OS processes in one consumer group; the run
//! SIGKILLs one mid-stream and starts a replacement, and the broker moves the partitions.
//! Needs the real services (`scripts/services up`).

use crate::common;

/// Three processes ran (two, then a replacement), one was killed, and the survivors' rebalance
/// moved its partitions: every trade applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_only_survives_a_sigkill_and_a_real_rebalance() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "db-only",
        "--processes",
        "2",
        "--trades",
        "2400",
        "--rate",
        "300",
        "--kill-at-ms",
        "3000",
        "--restart-delay-ms",
        "200",
        "--session-timeout-ms",
        "6000",
        "--seed",
        "11",
    ])
    .await;
    let r = &outcome.result;
    let c = &r.correctness;
    assert_eq!(r.processor.process_kills, 1, "{:?}", r.faults);
    assert_eq!(
        r.processor.processes, 3,
        "two processes and one replacement"
    );
    assert_eq!(r.processor.restarts, 1);
    assert!(
        r.processor.rebalances >= 3,
        "a survivor saw its first assignment, a revocation and a new assignment: {}",
        r.processor.rebalances
    );
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied),
        (2400, 0, 0),
        "{c:?}"
    );
    assert!(c.identity_holds);
    assert_eq!(
        c.copies_sent,
        2400 + common::planned_duplicates(2400, 0.1, 11)
    );
}

/// redis-only under kills: whatever a kill strands, the oracle's bound (one claim per worker
/// per kill) holds, and nothing applies twice while the claims outlive the rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_only_loses_at_most_one_claim_per_worker_per_kill() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "redis-only",
        "--redis-client",
        "fred",
        "--processes",
        "2",
        "--workers",
        "2",
        "--trades",
        "2400",
        "--rate",
        "300",
        "--kill-at-ms",
        "2500,5000",
        "--restart-delay-ms",
        "200",
        "--session-timeout-ms",
        "6000",
        "--seed",
        "12",
    ])
    .await;
    let r = &outcome.result;
    let c = &r.correctness;
    assert_eq!(r.processor.process_kills, 2);
    assert_eq!(r.processor.processes, 4);
    assert!(c.lost <= 2 * 2, "{c:?}");
    assert_eq!(c.double_applied, 0, "{c:?}");
    assert_eq!(c.exactly_once + c.lost, 2400);
    assert!(c.identity_holds);
}

//! Crashes at named points, on real services, against the exact numbers each strategy's own
//! rule predicts. One partition and one worker where the rule is exact: a process crash also
//! cuts other workers' in-flight messages, whose fate the rule cannot count in advance.

use crate::common;

use idembench::results::Status;

const CRASHED: [u64; 5] = [10, 60, 110, 160, 210];

async fn crash_run(strategy: &str, point: &str, extra: &[&str]) -> idembench::results::RunResult {
    let trades = CRASHED.map(|id| id.to_string()).join(",");
    let mut args = vec![
        "--strategy",
        strategy,
        "--crash-at",
        point,
        "--crash-trades",
        &trades,
        "--partitions",
        "1",
        "--trades",
        "300",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.1",
        "--seed",
        "13",
    ];
    args.extend_from_slice(extra);
    let (outcome, _dir) = common::run(&args).await;
    let result = outcome.result;
    assert_eq!(
        result.status,
        Status::Complete,
        "{:?}",
        result.partial_reason
    );
    assert_eq!(
        result.faults.crashes,
        CRASHED.len() as u64,
        "{:?}",
        result.faults
    );
    assert_eq!(result.processor.restarts, CRASHED.len() as u64);
    assert!(result.correctness.identity_holds);
    result
}

/// The design note's inconsistency example: DONE in Redis, no commit in Postgres, every
/// redelivery skips — each crashed trade is lost for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_redis_first_loses_every_trade_crashed_after_redis_done() {
    let result = crash_run("dual-redis-first", "after-redis-done", &[]).await;
    let c = &result.correctness;
    assert_eq!(
        (c.lost, c.double_applied),
        (CRASHED.len() as u64, 0),
        "{c:?}"
    );
}

/// A crash after the PROCESSING claim leaves the key until its TTL (5 min); the redelivery is
/// skipped as in progress and its offset committed: lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_loses_every_trade_crashed_after_claim() {
    let result = crash_run("redis-only", "after-claim", &[]).await;
    let c = &result.correctness;
    assert_eq!(
        (c.lost, c.double_applied),
        (CRASHED.len() as u64, 0),
        "{c:?}"
    );
}

/// The same rule with the claim's two commands pipelined: the decision, and so every count,
/// is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_pipelined_loses_every_trade_crashed_after_claim() {
    let result = crash_run("redis-only", "after-claim", &["--redis-pipeline"]).await;
    assert!(result.config.redis_pipeline);
    let c = &result.correctness;
    assert_eq!(
        (c.lost, c.double_applied, c.exactly_once),
        (CRASHED.len() as u64, 0, 300 - CRASHED.len() as u64),
        "{c:?}"
    );
}

/// Crashes restart a processor placed on threads of its own (`--processor-threads`) on the
/// same threads and connections, and the rule's counts are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_on_processor_threads_loses_every_trade_crashed_after_claim() {
    let result = crash_run("redis-only", "after-claim", &["--processor-threads", "1"]).await;
    assert_eq!(result.config.processor_threads, 1);
    let c = &result.correctness;
    assert_eq!(
        (c.lost, c.double_applied, c.exactly_once),
        (CRASHED.len() as u64, 0, 300 - CRASHED.len() as u64),
        "{c:?}"
    );
}

/// A crash between the DB commit and SET DONE, redelivered while PROCESSING still holds: the
/// redelivery is skipped, and the effect that committed is the only one. Nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_crashed_after_commit_within_the_ttl_applies_once() {
    let result = crash_run("redis-only", "after-db-commit", &["--no-unique-constraint"]).await;
    let c = &result.correctness;
    assert_eq!(
        (c.lost, c.double_applied, c.exactly_once),
        (0, 0, 300),
        "{c:?}"
    );
}

/// The note's "App crashes before DONE → TTL expires → retry": once the claim expired, the
/// redelivery applies the trade again; without the unique constraint, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_crashed_after_commit_past_the_ttl_applies_twice() {
    let extra = [
        "--no-unique-constraint",
        "--processing-ttl-ms",
        "300",
        "--restart-delay-ms",
        "1000",
    ];
    let result = crash_run("redis-only", "after-db-commit", &extra).await;
    let c = &result.correctness;
    assert_eq!(
        (c.lost, c.double_applied),
        (0, CRASHED.len() as u64),
        "{c:?}"
    );
}

/// db-only loses and doubles nothing under crashes at every point it has, with four
/// partitions and workers (in-flight work of other workers cut by each crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_only_survives_crashes_at_every_point() {
    let args = [
        "--strategy",
        "db-only",
        "--crash-at",
        "after-receive,after-db-commit,before-offset-commit",
        "--crash-rate",
        "0.01",
        "--trades",
        "800",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.2",
        "--restart-delay-ms",
        "100",
        "--seed",
        "17",
    ];
    let (outcome, _dir) = common::run(&args).await;
    let result = &outcome.result;
    let c = &result.correctness;
    assert!(
        result.faults.crashes >= 5,
        "the plan must crash: {:?}",
        result.faults.by_point
    );
    assert_eq!(result.processor.restarts, result.faults.crashes);
    assert!(
        result.processor.redeliveries > 0,
        "a crash must replay uncommitted messages"
    );
    assert_eq!(
        (c.lost, c.double_applied, c.exactly_once),
        (0, 0, 800),
        "{c:?}"
    );
    assert!(c.identity_holds);
}

/// Late duplicates after `done_ttl`: the design note counts on duplicates being short-lived.
/// Every copy arrives after its DONE mark expired, so redis-only (no constraint) applies each
/// duplicated trade twice; the strategies whose authority is the database apply it once.
///
/// A copy is sent `delay` after its original's intended send time, and the original's DONE
/// mark is set when it is processed, so a copy finds DONE gone only if end-to-end latency stays
/// below `delay - done_ttl`. With eight of these runs in parallel on two cores, on a broker CI
/// has just started, the latency's maximum reached 0.88 s here and passed 1 s in CI; the margin
/// of 4.75 s keeps this test about the rule, not about the machine.
async fn late_duplicates_after_done_ttl(strategy: &str, doubled: bool) {
    let args = [
        "--strategy",
        strategy,
        "--no-unique-constraint",
        "--trades",
        "400",
        "--rate",
        "400",
        "--duplicate-rate",
        "0.2",
        "--late-duplicate-share",
        "1",
        "--late-duplicate-delay-ms",
        "5000",
        "--done-ttl-ms",
        "250",
        "--seed",
        "23",
    ];
    let (outcome, _dir) = common::run(&args).await;
    let c = &outcome.result.correctness;
    // The plan of this exact spec: the late share changes which draws the seed makes.
    let spec = idembench_loadgen::StreamSpec {
        trades: 400,
        duplicate_rate: 0.2,
        late_duplicate_share: 1.0,
        seed: 23,
        ..Default::default()
    };
    let plan = spec.plan().unwrap();
    let duplicates = plan.immediate_copies() + plan.late_copies();
    let expected = if doubled { duplicates } else { 0 };
    assert_eq!(
        (c.lost, c.double_applied),
        (0, expected),
        "{strategy}: {c:?}"
    );
    assert!(c.identity_holds);
}

common::cases!(threads 2, late_duplicates_after_done_ttl {
    late_duplicates_after_done_ttl_double_redis_only: ("redis-only", true);
    late_duplicates_after_done_ttl_do_not_double_db_only: ("db-only", false);
    late_duplicates_after_done_ttl_do_not_double_db_authority_redis_cache: ("db-authority-redis-cache", false);
});

/// "Redis restart → Kafka replays safely": wipe the run's keys mid-stream, with late copies
/// of already-processed trades still to come. redis-only (no constraint) applies some of them
/// again; the database-authority strategies apply none twice.
///
/// Originals are sent over 1.5 s and their copies 3 s later, after the wipe at 2.5 s. redis-only
/// doubles a copy whose original was processed before the wipe: an original sent at t is, if its
/// end-to-end latency is below 2.5 s - t. Latency passed 1 s in CI once; 2.5 s would break this.
async fn a_redis_wipe(strategy: &str, may_double: bool) {
    let args = [
        "--strategy",
        strategy,
        "--no-unique-constraint",
        "--trades",
        "600",
        "--rate",
        "400",
        "--duplicate-rate",
        "0.3",
        "--late-duplicate-share",
        "1",
        "--late-duplicate-delay-ms",
        "3000",
        "--redis-wipe-at-ms",
        "2500",
        "--seed",
        "29",
    ];
    let (outcome, _dir) = common::run(&args).await;
    let result = &outcome.result;
    let c = &result.correctness;
    assert_eq!(
        result.faults.by_point.get("redis-wipe"),
        Some(&1),
        "{:?}",
        result.faults
    );
    assert_eq!(c.lost, 0, "{strategy}: {c:?}");
    if may_double {
        assert!(
            c.double_applied > 0,
            "{strategy}: late copies after the wipe must apply again: {c:?}"
        );
    } else {
        assert_eq!(c.double_applied, 0, "{strategy}: {c:?}");
    }
}

common::cases!(threads 2, a_redis_wipe {
    a_redis_wipe_doubles_redis_only: ("redis-only", true);
    a_redis_wipe_does_not_double_db_authority_redis_cache: ("db-authority-redis-cache", false);
    a_redis_wipe_does_not_double_dual_db_first: ("dual-db-first", false);
});

/// A Postgres outage (every processor connection cut, new ones refused for 2 s) in the middle
/// of the stream: each transaction is retried in place and nothing is lost or doubled by the
/// strategies whose transaction checks for itself; the run's fault log records the outage.
async fn a_postgres_outage_is_retried_through(strategy: &str) {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        strategy,
        "--trades",
        "2000",
        "--rate",
        "500",
        "--db-outage-at-ms",
        "1500",
        "--db-outage-ms",
        "2000",
        "--seed",
        "31",
    ])
    .await;
    let r = &outcome.result;
    let c = &r.correctness;
    assert_eq!(
        r.faults
            .log
            .iter()
            .filter(|e| e.kind == idembench::faults::FaultKind::DbOutage)
            .count(),
        1
    );
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied),
        (2000, 0, 0),
        "{strategy}: {c:?}"
    );
    assert!(
        r.latency_us.stages.business.max >= 1_000_000,
        "{strategy}: some transaction waited out the outage: {:?}",
        r.latency_us.stages.business
    );
}

common::cases!(threads 4, a_postgres_outage_is_retried_through {
    a_postgres_outage_is_retried_through_by_db_only: ("db-only");
    a_postgres_outage_is_retried_through_by_redis_only: ("redis-only");
    a_postgres_outage_is_retried_through_by_dual_db_first: ("dual-db-first");
});

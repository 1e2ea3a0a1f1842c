//! The same known-answer test for every strategy × Redis client, on real services: with
//! immediate and late duplicates and no faults, every idempotent strategy applies each trade
//! exactly once and suppresses every extra copy; `none` lets the unique constraint catch
//! exactly the copies the ledger predicts.

use crate::common;

use idembench::results::Status;

const TRADES: u64 = 1000;
const DUPLICATE_RATE: f64 = 0.2;
const SEED: u64 = 21;

async fn known_answer(strategy: &str, client: &str, extra: &[&str]) {
    let mut args = vec![
        "--strategy",
        strategy,
        "--redis-client",
        client,
        "--trades",
        "1000",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.2",
        "--late-duplicate-share",
        "0.3",
        "--late-duplicate-delay-ms",
        "200",
        "--seed",
        "21",
    ];
    args.extend_from_slice(extra);
    let (outcome, _dir) = common::run(&args).await;
    let result = &outcome.result;
    let c = &result.correctness;
    let duplicates = common::planned_duplicates(TRADES, DUPLICATE_RATE, SEED);
    assert_eq!(
        result.status,
        Status::Complete,
        "{:?}",
        result.partial_reason
    );
    assert_eq!(result.strategy, strategy);
    let uses_redis = !matches!(strategy, "none" | "db-only" | "db-offsets");
    assert_eq!(
        result.redis_client,
        if uses_redis { client } else { "none" }
    );
    assert_eq!(
        result.clients.redis.as_ref().map(|r| r.name.as_str()),
        uses_redis.then_some(client)
    );
    assert_eq!(
        (c.produced_unique, c.copies_sent),
        (TRADES, TRADES + duplicates),
        "every planned copy acknowledged"
    );
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied, c.extra_effects),
        (TRADES, 0, 0, 0),
        "{c:?}"
    );
    if matches!(strategy, "none" | "db-offsets") {
        // Neither knows trade ids: a trade published twice is two messages, and only the
        // unique constraint stops the second.
        assert_eq!(
            (c.caught_by_constraint, c.duplicates_suppressed),
            (duplicates, 0),
            "{c:?}"
        );
    } else {
        assert_eq!(
            (c.caught_by_constraint, c.duplicates_suppressed),
            (0, duplicates),
            "{c:?}"
        );
    }
    assert_eq!(c.positions_mismatched, 0);
    assert!(c.identity_holds);
    assert_eq!(result.processor.redis_errors, 0);
}

macro_rules! known_answers {
    ($($name:ident: $strategy:literal on $client:literal $(with $($extra:literal)+)?;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                known_answer($strategy, $client, &[$($($extra),+)?]).await;
            }
        )+
    };
}

known_answers! {
    none_lets_the_constraint_catch_every_copy: "none" on "redis-rs";
    redis_only_on_redis_rs: "redis-only" on "redis-rs";
    redis_only_on_fred: "redis-only" on "fred";
    redis_only_waiting_on_redis_rs: "redis-only" on "redis-rs" with "--on-in-progress" "wait";
    redis_only_waiting_on_fred: "redis-only" on "fred" with "--on-in-progress" "wait";
    redis_only_pipelined_on_redis_rs: "redis-only" on "redis-rs" with "--redis-pipeline";
    redis_only_pipelined_on_fred: "redis-only" on "fred" with "--redis-pipeline";
    dual_db_first_pipelined_on_fred: "dual-db-first" on "fred" with "--redis-pipeline";
    redis_only_atomic_on_redis_rs: "redis-only-atomic" on "redis-rs";
    redis_only_atomic_on_fred: "redis-only-atomic" on "fred";
    db_only: "db-only" on "redis-rs";
    dual_redis_first_on_redis_rs: "dual-redis-first" on "redis-rs";
    dual_redis_first_on_fred: "dual-redis-first" on "fred";
    dual_db_first_on_redis_rs: "dual-db-first" on "redis-rs";
    dual_db_first_on_fred: "dual-db-first" on "fred";
    db_authority_redis_cache_on_redis_rs: "db-authority-redis-cache" on "redis-rs";
    db_authority_redis_cache_on_fred: "db-authority-redis-cache" on "fred";
    db_offsets: "db-offsets" on "redis-rs";
    db_only_batched: "db-only" on "redis-rs" with "--batch-size" "64";
    db_authority_redis_cache_batched: "db-authority-redis-cache" on "fred" with "--batch-size" "64";
    db_offsets_batched: "db-offsets" on "redis-rs" with "--batch-size" "64";
    redis_only_eight_in_flight: "redis-only" on "redis-rs" with "--in-flight" "8";
    redis_only_pipelined_eight_in_flight_on_fred: "redis-only" on "fred" with "--in-flight" "8" "--redis-pipeline";
    db_only_eight_in_flight: "db-only" on "redis-rs" with "--in-flight" "8";
    db_only_batched_four_in_flight: "db-only" on "redis-rs" with "--in-flight" "4" "--batch-size" "16";
    dual_db_first_eight_in_flight: "dual-db-first" on "redis-rs" with "--in-flight" "8";
    redis_only_on_two_processor_threads: "redis-only" on "redis-rs" with "--processor-threads" "2";
    dual_db_first_on_processor_threads_on_fred: "dual-db-first" on "fred" with "--processor-threads" "3" "--in-flight" "4";
}

/// Batching changes the cost model, never the answer: the same seed gives the same counts.
async fn batched_and_unbatched_runs_count_the_same(strategy: &str) {
    let args = [
        "--strategy",
        strategy,
        "--trades",
        "800",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.3",
        "--seed",
        "9",
    ];
    let (single, _a) = common::run(&args).await;
    let batched_args: Vec<&str> = args.iter().copied().chain(["--batch-size", "32"]).collect();
    let (batched, _b) = common::run(&batched_args).await;
    assert_eq!(
        single.result.correctness, batched.result.correctness,
        "{strategy}"
    );
    let calls = batched.result.latency_us.stages.business.count;
    assert!(
        calls < batched.result.processor.counts.messages,
        "{strategy}: {calls} transactions for {} messages — the batch size was never used",
        batched.result.processor.counts.messages
    );
}

common::cases!(threads 2, batched_and_unbatched_runs_count_the_same {
    batched_and_unbatched_db_only_count_the_same: ("db-only");
    batched_and_unbatched_db_authority_redis_cache_count_the_same: ("db-authority-redis-cache");
    batched_and_unbatched_db_offsets_count_the_same: ("db-offsets");
});

/// db-offsets without the unique constraint applies a trade published twice twice: it
/// deduplicates redeliveries of a message, not copies of a trade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_offsets_does_not_deduplicate_published_copies() {
    let args = [
        "--strategy",
        "db-offsets",
        "--no-unique-constraint",
        "--trades",
        "600",
        "--rate",
        "0",
        "--seed",
        "4",
    ];
    let (outcome, _dir) = common::run(&args).await;
    let c = &outcome.result.correctness;
    let duplicates = common::planned_duplicates(600, 0.1, 4);
    assert_eq!(
        (c.double_applied, c.lost, c.caught_by_constraint),
        (duplicates, 0, 0),
        "{c:?}"
    );
}

/// `idembench run ARGS` is refused as a usage error (exit 2) whose message contains `expected`.
async fn refused(args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let error = common::try_run(args, dir.path())
        .await
        .err()
        .unwrap_or_else(|| panic!("idembench run {} must be refused", args.join(" ")));
    assert!(error.to_string().contains(expected), "{error}");
    assert_eq!(error.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_is_refused_where_it_means_nothing() {
    refused(
        &["--strategy", "redis-only", "--batch-size", "8"],
        "--batch-size 8 does not apply to redis-only",
    )
    .await;
}

async fn redis_pipeline_is_refused(strategy: &str) {
    refused(
        &["--strategy", strategy, "--redis-pipeline"],
        "use it with --strategy redis-only, dual-db-first or dual-redis-first",
    )
    .await;
}

common::cases!(threads 2, redis_pipeline_is_refused {
    redis_pipeline_is_refused_for_redis_only_atomic: ("redis-only-atomic");
    redis_pipeline_is_refused_for_db_only: ("db-only");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_is_refused_for_db_offsets() {
    refused(
        &["--strategy", "db-offsets", "--in-flight", "4"],
        "--in-flight above 1 does not apply to db-offsets",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_threads_are_refused_where_a_rebalance_blocks() {
    refused(
        &["--strategy", "db-offsets", "--processor-threads", "2"],
        "--processor-threads does not apply to db-offsets",
    )
    .await;
}

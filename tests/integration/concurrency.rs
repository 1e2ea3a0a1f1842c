//! Copies of one trade on two consumers at once: `--duplicate-partition next` sends each extra
//! copy to the partition after its original's, so another worker (or another process) holds
//! it. Needs the real services (`scripts/services up`).

use crate::common;

/// The stream of the slow-processing cases: every trade has a copy, sent 1.5 s after it on the
/// next partition; trades 50 and 350 spend 3.5 s in their business transaction, far apart
/// enough (6 s at 50 trades/s) that neither delays the other. The copy must reach its worker
/// after the claim expired and before the owner finished: that holds while the copy's latency
/// is within -1.2 s .. +2 s of its original's, wide margins on a noisy two-core box.
const SLOW: &[&str] = &[
    "--trades",
    "600",
    "--rate",
    "50",
    "--partitions",
    "2",
    "--duplicate-rate",
    "1.0",
    "--late-duplicate-share",
    "1.0",
    "--late-duplicate-delay-ms",
    "1500",
    "--duplicate-partition",
    "next",
    "--slow-trades",
    "50,350",
    "--slow-ms",
    "3500",
    "--processing-ttl-ms",
    "300",
    "--no-unique-constraint",
    "--seed",
    "21",
];

fn with(strategy: &str, rest: &[&'static str]) -> Vec<String> {
    let mut args = vec!["--strategy".to_string(), strategy.to_string()];
    args.extend(rest.iter().map(|a| a.to_string()));
    args
}

/// The claim expires 300 ms in, the owner works 3.5 s, the copy arrives at 1.5 s on the other
/// worker: it claims too, and both apply. Exactly the two slow trades double.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_only_doubles_each_slow_trade_whose_claim_expired_under_its_owner() {
    let args = with("redis-only", SLOW);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (outcome, _dir) = common::run(&args).await;
    let c = &outcome.result.correctness;
    assert_eq!((c.double_applied, c.lost), (2, 0), "{c:?}");
    assert_eq!(outcome.result.faults.log.len(), 2, "two slow trades logged");
}

/// The same race against the database's inbox: the second transaction waits on the first's
/// row lock and then finds the inbox row. Nothing doubles.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_only_holds_when_the_business_step_is_slow() {
    let args = with("db-only", SLOW);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (outcome, _dir) = common::run(&args).await;
    let c = &outcome.result.correctness;
    assert_eq!(
        (c.exactly_once, c.double_applied, c.lost),
        (600, 0, 0),
        "{c:?}"
    );
    assert_eq!(
        c.duplicates_suppressed, 600,
        "every copy found the inbox row"
    );
}

/// Two processor processes, copies on the other partition right after their originals:
/// the copies really meet different consumers (`none` applies every one of them twice), and
/// redis-only's SET NX lets exactly one of each pair through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_of_two_consumer_processes_acquires_the_claim() {
    let stream = [
        "--processes",
        "2",
        "--partitions",
        "2",
        "--trades",
        "1500",
        "--rate",
        "400",
        "--duplicate-rate",
        "0.3",
        "--duplicate-partition",
        "next",
        "--no-unique-constraint",
        "--seed",
        "22",
    ];
    let duplicates = common::planned_duplicates(1500, 0.3, 22);
    let args = with("none", &stream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (none, _none_dir) = common::run(&args).await;
    assert_eq!(none.result.correctness.double_applied, duplicates);
    assert_eq!(none.result.processor.processes, 2);

    let args = with("redis-only", &stream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (redis_only, _dir) = common::run(&args).await;
    let c = &redis_only.result.correctness;
    assert_eq!(
        (c.exactly_once, c.double_applied, c.lost),
        (1500, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.duplicates_suppressed, duplicates);
}

/// `--in-flight`: a slow message holds back only its own key. One partition, one worker; trade
/// 50 spends 4 s in its transaction. One at a time, every later trade waits behind it (each of
/// the 250 waits at least 1.5 s, so the median does); four in flight, they pass it. The two runs
/// differ by seconds, not by the machine's milliseconds of noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_messages_pass_a_slow_one_of_another_key() {
    let mut medians = Vec::new();
    for in_flight in ["1", "4"] {
        let args = [
            "--strategy",
            "db-only",
            "--partitions",
            "1",
            "--in-flight",
            in_flight,
            "--trades",
            "300",
            "--rate",
            "100",
            "--duplicate-rate",
            "0",
            "--accounts",
            "100000",
            "--slow-trades",
            "50",
            "--slow-ms",
            "4000",
            "--seed",
            "31",
        ];
        let (outcome, _dir) = common::run(&args).await;
        let result = &outcome.result;
        let c = &result.correctness;
        assert_eq!(
            (c.exactly_once, c.lost, c.double_applied),
            (300, 0, 0),
            "{c:?}"
        );
        assert_eq!(result.config.in_flight, in_flight.parse::<usize>().unwrap());
        medians.push(result.latency_us.end_to_end_from_sent.p50);
    }
    assert!(
        medians[0] > 1_200_000 && medians[1] < 1_200_000,
        "median end-to-end µs with 1 and 4 in flight: {medians:?}"
    );
}

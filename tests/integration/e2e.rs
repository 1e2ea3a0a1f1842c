//! End-to-end known answers on real Kafka, Redis and Postgres: loadgen → processor → audit.

use crate::common;

use crate::common::planned_duplicates;
use idembench::results::Status;
use idembench_loadgen::StreamSpec;

/// No strategy and no unique constraint: every logical trade that had an extra copy lands
/// twice, exactly as the ledger predicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_without_constraint_doubles_exactly_the_duplicated_trades() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "none",
        "--no-unique-constraint",
        "--trades",
        "1200",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.25",
        "--seed",
        "11",
    ])
    .await;
    let c = &outcome.result.correctness;
    let duplicated = planned_duplicates(1200, 0.25, 11);
    assert!(
        duplicated > 200,
        "the plan must exercise duplicates: {duplicated}"
    );
    assert_eq!(c.copies_sent, 1200 + duplicated);
    assert_eq!(c.double_applied, duplicated, "{c:?}");
    assert_eq!(c.extra_effects, duplicated);
    assert_eq!(c.exactly_once, 1200 - duplicated);
    assert_eq!(
        (c.lost, c.caught_by_constraint, c.duplicates_suppressed),
        (0, 0, 0)
    );
    assert!(
        c.positions_mismatched > 0,
        "doubled trades must show in positions"
    );
    assert!(c.identity_holds);
}

/// No strategy but the unique constraint on: the constraint catches every extra copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_with_constraint_is_caught_by_the_constraint() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "none",
        "--trades",
        "800",
        "--rate",
        "0",
        "--duplicate-rate",
        "0.25",
        "--seed",
        "3",
    ])
    .await;
    let c = &outcome.result.correctness;
    let duplicated = planned_duplicates(800, 0.25, 3);
    assert_eq!(c.caught_by_constraint, duplicated, "{c:?}");
    assert_eq!((c.lost, c.double_applied, c.exactly_once), (0, 0, 800));
    assert!(c.identity_holds);
}

/// The written result.json carries the names users script against, and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_json_has_the_contracted_fields_and_no_password() {
    let (outcome, _dir) = common::run(&["--trades", "300", "--rate", "0"]).await;
    let text = std::fs::read_to_string(outcome.dir.join("result.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["strategy"], "redis-only");
    assert_eq!(json["redis_client"], "redis-rs");
    assert_eq!(json["schema_version"], 1);
    for field in [
        "produced_unique",
        "copies_sent",
        "exactly_once",
        "lost",
        "double_applied",
        "extra_effects",
        "caught_by_constraint",
        "duplicates_suppressed",
    ] {
        assert!(
            json["correctness"][field].is_u64(),
            "correctness.{field} missing in {text}"
        );
    }
    for field in ["p50", "p99", "p999", "max"] {
        assert!(
            json["latency_us"]["end_to_end_from_intended"][field].is_u64(),
            "latency field {field}"
        );
    }
    let encoded = json["latency_us"]["histograms"]["end_to_end_from_intended"]
        .as_str()
        .unwrap();
    let histogram = idembench::hgrm::decode(encoded).unwrap();
    assert_eq!(
        histogram.len(),
        json["latency_us"]["end_to_end_from_intended"]["count"]
            .as_u64()
            .unwrap()
    );
    let hgrm = std::fs::read_to_string(outcome.dir.join("end_to_end_from_intended.hgrm")).unwrap();
    assert!(
        hgrm.starts_with("       Value     Percentile TotalCount") && hgrm.contains("#[Max"),
        "{hgrm}"
    );
    assert!(json["throughput"]["processed_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(json["config"]["stream"]["trades"], 300);
    assert!(
        json["services"]["postgres"]["version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert!(
        json["services"]["redis"]["version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    let postgres_url = std::env::var("IDEMBENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://idembench:idembench@127.0.0.1:5432/idembench".into());
    let password = url::Url::parse(&postgres_url)
        .unwrap()
        .password()
        .map(str::to_string);
    if let Some(password) = password {
        assert!(
            !text.contains(&format!(":{password}@")),
            "a password leaked into result.json"
        );
        assert!(
            json["services"]["postgres"]["url"]
                .as_str()
                .unwrap()
                .contains("***")
        );
    }
}

/// Without a stack that knows the services' processes (servers given as addresses), Redis
/// still reports its own CPU (`INFO cpu`); Postgres and Kafka are named as not measured, with
/// why, rather than left out or shown as free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_known_processes_report_what_they_can_and_say_what_they_cannot() {
    let (outcome, _dir) = common::run(&["--trades", "300"]).await;
    let resources = &outcome.result.resources;
    let redis = &resources.services["redis"];
    assert_eq!(redis.source, "redis INFO cpu", "{resources:?}");
    assert!(
        redis.processes >= 1 && redis.cpu_seconds() > 0.0,
        "{resources:?}"
    );
    assert!(resources.cpu_us_per_message["redis"] > 0.0, "{resources:?}");
    assert!(
        resources.cpu_us_per_message["idembench"] > 0.0,
        "{resources:?}"
    );
    for service in ["postgres", "kafka"] {
        assert!(!resources.services.contains_key(service), "{resources:?}");
        assert!(
            resources.services_unmeasured[service].contains("external server"),
            "{resources:?}"
        );
    }
    assert!(
        outcome
            .result
            .summary()
            .contains("(not measured: kafka, postgres)")
    );
}

/// A second run never overwrites the first one's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_result_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    common::try_run(&["--trades", "50", "--rate", "0"], dir.path())
        .await
        .unwrap();
    let error = common::try_run(&["--trades", "50", "--rate", "0"], dir.path())
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("already holds a result.json"),
        "{error}"
    );
    assert_eq!(error.exit_code(), 2);
}

/// Poison pills on the topic are counted and committed past; no trade suffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_skipped() {
    let (outcome, _dir) = common::run(&[
        "--trades",
        "1000",
        "--rate",
        "0",
        "--malformed-rate",
        "0.05",
        "--seed",
        "5",
    ])
    .await;
    let result = &outcome.result;
    let c = &result.correctness;
    let planned = StreamSpec {
        trades: 1000,
        malformed_rate: 0.05,
        seed: 5,
        ..StreamSpec::default()
    }
    .plan()
    .unwrap()
    .malformed();
    assert!(planned > 20, "the plan must hold poison pills: {planned}");
    assert_eq!(c.malformed_sent, planned);
    assert_eq!(result.processor.counts.malformed, planned);
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied),
        (1000, 0, 0),
        "{c:?}"
    );
    assert_eq!(result.status, Status::Complete);
}

/// `idembench matrix` runs the chosen pairs on one stream and writes matrix.json with each
/// run's strategy, client and correctness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_writes_one_row_per_pair() {
    use clap::Parser;
    use idembench::cli::{Cli, Command};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("matrix");
    let argv = [
        "idembench",
        "matrix",
        "--strategies",
        "db-only,redis-only-atomic",
        "--redis-clients",
        "redis-rs,fred",
        "--trades",
        "300",
        "--rate",
        "0",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    let Command::Matrix(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("parsed as matrix")
    };
    let outcome = idembench::sweep::matrix::run_matrix(
        args.resolve("test".into()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("matrix.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap(),
                r["redis_client"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("db-only", "none"),
            ("redis-only-atomic", "redis-rs"),
            ("redis-only-atomic", "fred")
        ]
    );
    for run in runs {
        assert_eq!(run["correctness"]["lost"], 0, "{run}");
        assert_eq!(run["correctness"]["double_applied"], 0, "{run}");
        assert_eq!(run["correctness"]["produced_unique"], 300, "{run}");
        let result_dir = std::path::Path::new(run["result_dir"].as_str().unwrap());
        assert!(
            result_dir.join("result.json").exists(),
            "each run keeps its own result.json"
        );
    }
    let table = idembench::sweep::matrix::table(&outcome.matrix);
    assert_eq!(table.lines().count(), 4, "{table}");
}

/// `matrix --scenario` runs each scenario with its strategies and says per strategy whether
/// the scenario's claim held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_matrix_says_which_claims_held() {
    use clap::Parser;
    use idembench::cli::{Cli, Command};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("claims.toml");
    std::fs::write(
        &file,
        "[defaults]\ntrades = 200\nrate = 0\npartitions = 1\n\n[[scenario]]\nname = \"inconsistency\"\n\
         claim = \"Redis DONE without a commit loses the trade\"\nstrategies = [\"dual-redis-first\", \"db-only\"]\n\
         crash_at = [\"after-redis-done\"]\ncrash_trades = [20, 120]\nrestart_delay_ms = 100\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let argv = [
        "idembench",
        "matrix",
        "--scenario",
        file.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    let Command::Matrix(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("parsed as matrix")
    };
    let outcome = idembench::sweep::matrix::run_matrix(
        args.resolve("test".into()).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let held: Vec<(&str, Option<bool>, Option<u64>)> = outcome
        .matrix
        .runs
        .iter()
        .map(|r| {
            (
                r.strategy.as_str(),
                r.claim_held,
                r.correctness.as_ref().map(|c| c.lost),
            )
        })
        .collect();
    assert_eq!(
        held,
        [
            ("dual-redis-first", Some(false), Some(2)),
            ("db-only", Some(true), Some(0))
        ]
    );
    assert!(
        outcome
            .matrix
            .runs
            .iter()
            .all(|r| r.oracle_mismatches == Some(0))
    );
    let table = idembench::sweep::matrix::table(&outcome.matrix);
    assert_eq!(
        table.lines().nth(1),
        Some("== inconsistency: Redis DONE without a commit loses the trade"),
        "{table}"
    );
    assert!(
        table.contains("REFUTED") && table.contains("HELD"),
        "{table}"
    );
}

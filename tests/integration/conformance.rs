//! The Kafka conformance suite against the real Apache Kafka broker (which must pass every
//! check: the suite itself is then sound) and against librdkafka's mock cluster, whose one
//! failure is the finding recorded in reports/conformance.

use idembench::conformance::{CHECKS, run_suite};

fn brokers() -> String {
    std::env::var("IDEMBENCH_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The candidate production runs: a 3-broker cluster the stack starts, topics replicated 3
/// times, through `idembench conformance` itself.
#[test]
fn a_three_broker_apache_kafka_cluster_passes_every_check() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_idembench"))
        .args([
            "conformance",
            "--candidates",
            "apache-cluster",
            "--records",
            "5000",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("the idembench binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("conformance.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0]["candidate"]
            .as_str()
            .is_some_and(|name| name.contains("3 brokers, RF 3")),
        "{}",
        reports[0]
    );
    let checks = reports[0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), CHECKS.len());
    assert!(
        stdout.contains("| **passes everything** | **yes** |"),
        "{stdout}"
    );
}

#[test]
fn apache_kafka_passes_every_check() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_idembench"));
    let report = run_suite("Apache Kafka", &brokers(), 5_000, exe, None);
    let table = idembench::conformance::table(std::slice::from_ref(&report));
    assert_eq!(report.checks.len(), CHECKS.len());
    assert!(
        report.passed(),
        "Apache Kafka at {} (is `scripts/services up` running?) fails a check:\n{table}",
        brokers()
    );
    assert!(report.produce_per_second.is_some_and(|r| r > 0.0));
}

#[test]
fn the_mock_cluster_fails_only_create_topics() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_idembench"));
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("librdkafka's mock cluster");
    let create = |topic: &str, partitions: i32| {
        cluster
            .create_topic(topic, partitions, 1)
            .map_err(|e| e.to_string())
    };
    let report = run_suite(
        "MockCluster",
        &cluster.bootstrap_servers(),
        5_000,
        exe,
        Some(&create),
    );
    let table = idembench::conformance::table(std::slice::from_ref(&report));
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, [CHECKS[0]], "{table}");
    assert!(
        report.checks[0].detail.contains("CreateTopics failed"),
        "{table}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "tansu"),
    ignore = "needs the embedded tansu broker, which is off by default: cargo test --features tansu --test integration conformance"
)]
fn the_embedded_tansu_broker_passes_every_check() {
    #[cfg(feature = "tansu")]
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let broker = runtime
            .block_on(idembench::stack::tansu::Tansu::start())
            .expect("the embedded tansu broker starts");
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_idembench"));
        let report = run_suite("tansu", &broker.bootstrap_servers(), 5_000, exe, None);
        let table = idembench::conformance::table(std::slice::from_ref(&report));
        assert!(report.passed(), "tansu fails a check:\n{table}");
    }
}

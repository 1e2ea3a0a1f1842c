//! Where trade systems run: the stack starts a 3-broker Apache Kafka cluster (a 3-voter KRaft
//! quorum, every node also a broker) and the run's topic is replicated 3 times with
//! `min.insync.replicas` 2, written with `acks=all`. Every strategy family, on both clients,
//! keeps its exact known answer there, and the topic's leaders really are spread over the
//! brokers.

use std::process::Command;

#[test]
fn a_matrix_on_a_three_broker_cluster_keeps_every_known_answer() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("matrix");
    let output = Command::new(env!("CARGO_BIN_EXE_idembench"))
        .args(["matrix", "--stack", "embedded", "--kafka-nodes", "3"])
        .args(["--replication-factor", "3"])
        .args([
            "--strategies",
            "redis-only,db-only,db-authority-redis-cache",
        ])
        .args(["--redis-clients", "redis-rs,fred"])
        .args(["--trades", "400", "--rate", "0", "--seed", "11", "--quiet"])
        .arg("--out")
        .arg(&dir)
        .env_remove("IDEMBENCH_KAFKA_BROKERS")
        .env_remove("IDEMBENCH_REDIS_URL")
        .env_remove("IDEMBENCH_POSTGRES_URL")
        .env_remove("IDEMBENCH_STACK")
        .output()
        .expect("the idembench binary starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the cluster matrix failed ({}):\n{}\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    let results = idembench::results::load(&dir).unwrap();
    assert_eq!(results.len(), 5, "2 + 1 + 2 pairs");
    let duplicates = crate::common::planned_duplicates(400, 0.1, 11);
    for (file, result) in &results {
        let kafka = &result.services.kafka;
        assert_eq!(
            (
                kafka.broker_count,
                kafka.replication_factor,
                kafka.min_insync_replicas
            ),
            (3, 3, 2),
            "{}",
            file.display()
        );
        let leaders: std::collections::BTreeSet<i32> =
            kafka.leaders.iter().map(|l| l.leader).collect();
        assert!(
            leaders.len() > 1 && kafka.leaders.iter().all(|l| l.replicas.len() == 3),
            "{}: leaders {:?}",
            file.display(),
            kafka.leaders
        );
        let c = &result.correctness;
        assert_eq!(
            (c.exactly_once, c.lost, c.double_applied),
            (400, 0, 0),
            "{}: {c:?}",
            file.display()
        );
        assert_eq!(
            c.duplicates_suppressed + c.caught_by_constraint,
            duplicates,
            "{}: {c:?}",
            file.display()
        );
        assert_eq!(result.oracle.mismatches, 0, "{}", file.display());
    }
}

/// A stack that always starts its own Kafka cannot give a topic more replicas than brokers:
/// refused before anything is started, with the flag that fixes it.
#[test]
fn more_replicas_than_brokers_is_refused_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_idembench"))
        .args(["run", "--stack", "embedded", "--replication-factor", "3"])
        .output()
        .expect("the idembench binary starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--replication-factor 3 needs at least that many brokers: add --kafka-nodes 3"
        ) && !stderr.contains("started"),
        "{stderr}"
    );
}

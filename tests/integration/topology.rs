//! Where trade systems run: the stack starts a 3-broker Apache Kafka cluster (a 3-voter KRaft
//! quorum, every node also a broker; the run's topic replicated 3 times with
//! `min.insync.replicas` 2, written with `acks=all`) and a Redis Cluster (three primaries, a
//! replica each), or a primary and replica behind three Sentinels. Every strategy, on both
//! clients, keeps its exact known answer there; the topic's leaders and the run's keys really
//! are spread over the nodes.

use std::process::Command;

/// Runs every strategy × client pair, 400 trades with seed `seed`, on a stack `idembench
/// matrix` starts itself with `topology` flags; checks each pair's exact known answer and
/// returns the results for the topology's own checks.
fn known_answers_on_own_stack(
    topology: &[&str],
    seed: u64,
) -> Vec<(std::path::PathBuf, idembench::results::RunResult)> {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("matrix");
    let output = Command::new(env!("CARGO_BIN_EXE_idembench"))
        .args(["matrix", "--stack", "embedded"])
        .args(topology)
        .args(["--trades", "400", "--rate", "0", "--quiet", "--seed"])
        .arg(seed.to_string())
        .arg("--out")
        .arg(&dir)
        .env_remove("IDEMBENCH_KAFKA_BROKERS")
        .env_remove("IDEMBENCH_REDIS_URL")
        .env_remove("IDEMBENCH_POSTGRES_URL")
        .env_remove("IDEMBENCH_STACK")
        .output()
        .expect("the idembench binary starts");
    assert!(
        output.status.success(),
        "the matrix on {topology:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let results = idembench::results::load(&dir).unwrap();
    assert_eq!(
        results.len(),
        14,
        "4 strategies without Redis + 5 × 2 clients"
    );
    let duplicates = crate::common::planned_duplicates(400, 0.1, seed);
    for (file, result) in &results {
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
        if result.services.redis.is_some() {
            assert_eq!(result.processor.redis_errors, 0, "{}", file.display());
        }
    }
    results
}

#[test]
fn every_strategy_and_client_keeps_its_known_answer_on_the_clustered_topology() {
    let results = known_answers_on_own_stack(
        &[
            "--kafka-nodes",
            "3",
            "--replication-factor",
            "3",
            "--redis-topology",
            "cluster",
        ],
        11,
    );
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
        if let Some(redis) = &result.services.redis {
            assert_eq!(
                (redis.topology, redis.nodes.len()),
                (idembench::redis::RedisTopology::Cluster, 3),
                "{}: {redis:?}",
                file.display()
            );
        }
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

/// A primary with a replica behind three Sentinels that the stack starts: every strategy, the
/// Redis ones on both clients, keeps its exact known answer; the run records the primary the
/// Sentinels named.
#[test]
fn every_strategy_and_client_keeps_its_known_answer_behind_sentinels() {
    let results = known_answers_on_own_stack(&["--redis-topology", "sentinel"], 17);
    for (file, result) in &results {
        if let Some(redis) = &result.services.redis {
            assert!(redis.url.starts_with("redis-sentinel://"), "{redis:?}");
            assert_eq!(
                (redis.topology, redis.nodes.len()),
                (idembench::redis::RedisTopology::Sentinel, 1),
                "{}: {redis:?}",
                file.display()
            );
        }
    }
}

/// On a Redis Cluster the run's keys land on more than one primary, and removing them (the
/// cleanup, and the injected wipe) reaches every primary. Kafka and Postgres are the long-lived
/// services; the stack starts only the Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_keys_spread_over_the_primaries_and_their_removal_reaches_them_all() {
    use idembench::config::StackMode;
    use idembench::stack::{Explicit, Topology};
    let connections = crate::common::config(&[], std::path::Path::new("/nonexistent")).connections;
    let stack = idembench::stack::provision(
        StackMode::Auto,
        connections,
        Explicit {
            kafka: true,
            redis: false,
            postgres: true,
        },
        Topology {
            kafka_nodes: 1,
            redis: idembench::redis::RedisTopology::Cluster,
            ..Topology::default()
        },
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e} (is `scripts/services up` running?)"));
    let url = stack.connections.redis_url.clone();
    assert!(url.starts_with("redis-cluster://"), "{url}");
    let out = tempfile::tempdir().unwrap();
    let mut config = crate::common::config(
        &[
            "--strategy",
            "redis-only",
            "--redis-client",
            "fred",
            "--redis-topology",
            "cluster",
            "--trades",
            "600",
            "--duplicate-rate",
            "0",
            "--rate",
            "0",
        ],
        &out.path().join("run"),
    );
    config.connections = stack.connections.clone();
    config.stack = Some(stack.info.clone());
    config.keep_state = true;
    let outcome = idembench::run::execute(config.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(outcome.result.correctness.exactly_once, 600);
    let names = idembench::config::RunNames {
        run_id: outcome.result.run_id.clone(),
        ..idembench::config::RunNames::new(&config)
    };
    let prefix = format!("idembench:{}:trade:", names.run_id);
    let timeout = std::time::Duration::from_secs(5);
    let counts = idembench::redis::admin::keys_per_primary(&url, &prefix, timeout)
        .await
        .unwrap();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.iter().all(|(_, n)| *n > 0),
        "every primary holds some of the run's DONE marks: {counts:?}"
    );
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<u64>(),
        600,
        "{counts:?}"
    );
    let deleted = idembench::redis::admin::delete_keys(&url, &prefix, timeout)
        .await
        .unwrap();
    assert_eq!(deleted, 600);
    let after = idembench::redis::admin::keys_per_primary(&url, &prefix, timeout)
        .await
        .unwrap();
    assert!(after.iter().all(|(_, n)| *n == 0), "{after:?}");
    // The run kept its topic and schema for this look; remove them.
    let (admin, _) = idembench::kafka::Admin::connect(&config.connections.kafka_brokers, timeout)
        .await
        .unwrap();
    let _ = admin
        .delete_topic(&outcome.result.services.kafka.topic)
        .await;
    let schema = format!("run_{}", names.run_id.replace('-', "_"));
    let db = idembench::db::Db::connect(
        &idembench::db::DbSettings {
            url: config.connections.postgres_url.clone(),
            connections: 1,
            connect_timeout: timeout,
        },
        &schema,
    )
    .await
    .unwrap();
    db.drop_schema().await.unwrap();
}

/// A topology the servers do not have fails fast, naming the URL (redacted) and the problem.
#[test]
fn a_wrong_redis_topology_is_named() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_idembench"))
            .args(["run", "--stack", "external", "--connect-timeout-ms", "2000"])
            .args(["--trades", "10"])
            .args(args)
            .output()
            .expect("the idembench binary starts")
    };
    // A cluster URL at a standalone server (the long-lived Redis on 6379).
    let output = run(&[
        "--redis-topology",
        "cluster",
        "--redis-url",
        "redis-cluster://:hunter2@127.0.0.1:6379",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("redis-cluster://:***@127.0.0.1:6379") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    // A Sentinel service that does not exist (the long-lived Redis is no Sentinel either).
    let output = run(&[
        "--redis-topology",
        "sentinel",
        "--redis-url",
        "redis-sentinel://127.0.0.1:6379/nosuchservice",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("redis-sentinel://127.0.0.1:6379/nosuchservice"),
        "{stderr}"
    );
    // A cluster asked for, a standalone URL given.
    let output = run(&[
        "--redis-topology",
        "cluster",
        "--redis-url",
        "redis://127.0.0.1:6379",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--redis-topology cluster, but --redis-url names a standalone Redis"),
        "{stderr}"
    );
}

//! docker-compose.yml starts what the tool's defaults expect. This machine kind has no Docker
//! engine, so the file is parsed and checked against the defaults here; nothing is started.

use clap::Parser;
use idembench::cli::{Cli, Command};

fn compose() -> serde_yaml::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("docker-compose.yml"))
        .expect("docker-compose.yml is YAML")
}

fn default_connections() -> idembench::config::Connections {
    match Cli::try_parse_from(["idembench", "run"]).unwrap().command {
        Command::Run(run) => run.common.connections(),
        _ => unreachable!(),
    }
}

fn text(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
    }
}

#[test]
fn the_compose_file_matches_the_tools_defaults_and_binds_only_loopback() {
    let file = compose();
    let services = &file["services"];
    let connections = default_connections();
    let defaults = [
        (
            "kafka",
            url::Url::parse(&format!("kafka://{}", connections.kafka_brokers)).unwrap(),
        ),
        ("redis", url::Url::parse(&connections.redis_url).unwrap()),
        (
            "postgres",
            url::Url::parse(&connections.postgres_url).unwrap(),
        ),
    ];
    for (name, url) in &defaults {
        let service = &services[*name];
        assert!(service.is_mapping(), "service {name} is missing");
        let ports: Vec<String> = service["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} publishes no port"))
            .iter()
            .map(text)
            .collect();
        let port = url.port().expect("the defaults name their ports");
        let expected = format!("{}:{port}:{port}", url.host_str().unwrap());
        assert!(
            ports.contains(&expected),
            "{name}: the tool's default is {expected}, the file publishes {ports:?}"
        );
        for published in &ports {
            assert!(
                published.starts_with("127.0.0.1:"),
                "{name} binds beyond loopback: {published}"
            );
        }
    }
    let kafka = &services["kafka"]["environment"];
    assert_eq!(
        text(&kafka["KAFKA_ADVERTISED_LISTENERS"]),
        format!("PLAINTEXT://{}", connections.kafka_brokers),
        "clients are sent to the advertised listener"
    );
    let postgres_url = &defaults[2].1;
    let postgres = &services["postgres"]["environment"];
    assert_eq!(text(&postgres["POSTGRES_USER"]), postgres_url.username());
    assert_eq!(
        Some(text(&postgres["POSTGRES_PASSWORD"]).as_str()),
        postgres_url.password()
    );
    assert_eq!(
        format!("/{}", text(&postgres["POSTGRES_DB"])),
        postgres_url.path()
    );
}

#[test]
fn the_compose_file_runs_the_versions_the_scripts_run() {
    let file = compose();
    let pom = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka/pom.xml"),
    )
    .unwrap();
    let kafka_version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("scripts/kafka/pom.xml names kafka.version");
    // One place for the images: `--stack docker` starts the ones docker-compose.yml names.
    use idembench::stack::{KAFKA_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE};
    assert_eq!(
        KAFKA_IMAGE.1, kafka_version,
        "the broker scripts/services fetches"
    );
    for (service, (image, tag)) in [
        ("kafka", KAFKA_IMAGE),
        ("redis", REDIS_IMAGE),
        ("postgres", POSTGRES_IMAGE),
    ] {
        assert_eq!(
            text(&file["services"][service]["image"]),
            format!("{image}:{tag}"),
            "{service}: docker-compose.yml and --stack docker must run the same image"
        );
    }
    // Debian 12's packages, which scripts/services installs.
    assert_eq!(REDIS_IMAGE.1, "7.0");
    assert_eq!(POSTGRES_IMAGE.1, "15");
    let redis_command: Vec<String> = file["services"]["redis"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert!(
        redis_command
            .windows(2)
            .any(|w| w == ["--appendonly", "no"]),
        "no persistence, as scripts/services: a Redis restart loses the keys"
    );
}

/// `docker compose --profile cluster up -d` is the topology `--kafka-nodes 3 --redis-topology
/// cluster` starts: three brokers voting in one KRaft quorum with internal topics replicated
/// three times, and six Redis nodes in cluster mode with a job that joins them — every
/// listener on the host's loopback, the same images as the default services.
#[test]
fn the_cluster_profile_is_the_clustered_topology_on_loopback() {
    let file = compose();
    let services = file["services"].as_mapping().unwrap();
    let in_profile = |name: &str| {
        let service = &file["services"][name];
        service["profiles"]
            .as_sequence()
            .is_some_and(|p| p.iter().any(|v| text(v) == "cluster"))
    };
    let kafka: Vec<String> = services
        .keys()
        .map(text)
        .filter(|name| name.starts_with("kafka-"))
        .collect();
    assert_eq!(kafka, ["kafka-1", "kafka-2", "kafka-3"]);
    let mut voters = Vec::new();
    for name in &kafka {
        assert!(in_profile(name), "{name} is in the cluster profile");
        let service = &file["services"][name.as_str()];
        assert_eq!(
            text(&service["image"]),
            text(&file["services"]["kafka"]["image"])
        );
        assert_eq!(text(&service["network_mode"]), "host");
        let env = &service["environment"];
        for listener in text(&env["KAFKA_LISTENERS"]).split(',') {
            assert!(listener.contains("://127.0.0.1:"), "{name}: {listener}");
        }
        assert_eq!(text(&env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]), "3");
        assert_eq!(text(&env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]), "2");
        voters.push(text(&env["KAFKA_CONTROLLER_QUORUM_VOTERS"]));
    }
    assert!(
        voters.windows(2).all(|w| w[0] == w[1]),
        "one quorum: {voters:?}"
    );
    assert_eq!(voters[0].split(',').count(), 3);
    let ids: std::collections::BTreeSet<String> = kafka
        .iter()
        .map(|name| text(&file["services"][name.as_str()]["environment"]["CLUSTER_ID"]))
        .collect();
    assert_eq!(ids.len(), 1, "every broker formats the same cluster id");
    let redis: Vec<String> = services
        .keys()
        .map(text)
        .filter(|name| name.starts_with("redis-") && name[6..].parse::<u32>().is_ok())
        .collect();
    assert_eq!(redis.len(), 6, "three primaries and three replicas");
    for name in &redis {
        assert!(in_profile(name), "{name} is in the cluster profile");
        let command: Vec<String> = file["services"][name.as_str()]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert!(
            command.windows(2).any(|w| w == ["--bind", "127.0.0.1"]),
            "{name}"
        );
        assert!(
            command
                .windows(2)
                .any(|w| w == ["--cluster-enabled", "yes"]),
            "{name}"
        );
        assert!(
            command.windows(2).any(|w| w == ["--appendonly", "no"]),
            "{name}"
        );
    }
    let create = text(&file["services"]["redis-cluster-create"]["command"]);
    assert!(
        in_profile("redis-cluster-create")
            && create.contains("--cluster create")
            && create.contains("--cluster-replicas 1"),
        "{create}"
    );
}

/// `docker compose --profile faults up -d` starts the Toxiproxy the network faults can use
/// instead of their own: the release `scripts/services install` builds, on loopback only.
#[test]
fn the_faults_profile_runs_the_toxiproxy_release_the_scripts_build_on_loopback() {
    let file = compose();
    let toxiproxy = &file["services"]["toxiproxy"];
    assert_eq!(text(&toxiproxy["profiles"][0]), "faults");
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services")).unwrap();
    let version = script
        .lines()
        .find_map(|l| l.strip_prefix("toxiproxy_version=v"))
        .expect("scripts/services names the Toxiproxy release");
    assert_eq!(
        text(&toxiproxy["image"]),
        format!("ghcr.io/shopify/toxiproxy:{version}")
    );
    let command: Vec<String> = toxiproxy["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(command[..2], ["-host".to_string(), "127.0.0.1".to_string()]);
}

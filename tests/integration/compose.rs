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

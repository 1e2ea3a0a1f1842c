//! `--stack`: the real binary starts its own services as child processes (or containers), runs
//! a correct measurement on them and stops them; an address the user gave is never replaced.

use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

fn idembench(args: &[&str], out: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idembench"))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("IDEMBENCH_KAFKA_BROKERS")
        .env_remove("IDEMBENCH_REDIS_URL")
        .env_remove("IDEMBENCH_POSTGRES_URL")
        .env_remove("IDEMBENCH_STACK")
        .output()
        .expect("the idembench binary starts")
}

fn port_of(address: &str) -> u16 {
    let rest = address.rsplit('@').next().unwrap();
    let rest = rest.split("://").last().unwrap();
    rest.split(['/', ','])
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Runs one small measurement on a stack the run starts itself and checks the run, then that
/// every service it started is gone.
fn run_on_own_stack(mode: &str, origin: &str) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let output = idembench(
        &[
            "--stack", mode, "--trades", "400", "--rate", "200", "--seed", "7",
        ],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "idembench run --stack {mode} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    let stack = &result["environment"]["stack"];
    assert_eq!(stack["mode"], mode, "{stack}");
    for service in ["kafka", "redis", "postgres"] {
        assert_eq!(stack[service], origin, "{service}: {stack}");
    }
    let pom = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/kafka/pom.xml"
    ))
    .unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert_eq!(result["environment"]["kafka_version"], version);
    let correctness = &result["correctness"];
    assert_eq!(correctness["exactly_once"], 400, "{correctness}");
    assert_eq!(correctness["lost"], 0, "{correctness}");
    assert_eq!(correctness["double_applied"], 0, "{correctness}");
    assert_eq!(result["status"], "complete");
    // Its own services, on ports other than the defaults, and stopped by the time it exits.
    let services = &result["services"];
    let ports = [
        port_of(services["kafka"]["brokers"].as_str().unwrap()),
        port_of(services["redis"]["url"].as_str().unwrap()),
        port_of(services["postgres"]["url"].as_str().unwrap()),
    ];
    assert!(
        !ports.iter().any(|p| [9092, 6379, 5432].contains(p)),
        "{ports:?}: {services}"
    );
    for port in ports {
        assert!(!listening(port), "port {port} still answers after the run");
    }
    assert!(
        !stderr.contains("password") && !stdout.contains(":idembench@"),
        "a password reached the output:\n{stdout}\n{stderr}"
    );
    if mode == "embedded" {
        // The stack knows its children, so each service's CPU is read from /proc: a Postgres
        // postmaster with its backends, a Redis, a broker that did work.
        let resources = &result["resources"];
        for service in ["kafka", "redis", "postgres"] {
            let used = &resources["services"][service];
            assert_eq!(used["source"], "proc", "{service}: {resources}");
            assert!(
                used["processes"].as_u64().unwrap() >= 1,
                "{service}: {resources}"
            );
            assert!(
                used["pss_mib"].as_f64().unwrap() > 1.0,
                "{service}: {resources}"
            );
        }
        assert!(
            resources["services"]["postgres"]["processes"]
                .as_u64()
                .unwrap()
                > 1,
            "a postmaster has backends and helpers: {resources}"
        );
        for part in ["idembench", "kafka"] {
            let us = resources["cpu_us_per_message"][part].as_f64().unwrap();
            assert!(us > 0.0, "{part}: {resources}");
        }
        assert!(stdout.contains("cpu / msg    idembench"), "{stdout}");
        let removed = stderr
            .lines()
            .find_map(|l| l.split(" and removed ").nth(1))
            .unwrap_or_else(|| panic!("the stack does not say it stopped:\n{stderr}"));
        assert!(
            !std::path::Path::new(removed.trim()).exists(),
            "{removed} is left behind"
        );
    }
}

#[test]
fn embedded_starts_its_own_services_measures_correctly_and_stops_them() {
    run_on_own_stack("embedded", "child");
}

#[test]
#[cfg_attr(
    not(docker_available),
    ignore = "no Docker daemon answered when this was built (/var/run/docker.sock or DOCKER_HOST); it runs where one does"
)]
fn docker_starts_containers_measures_correctly_and_removes_them() {
    run_on_own_stack("docker", "docker");
}

#[test]
fn auto_never_replaces_an_address_the_user_gave() {
    let out = tempfile::tempdir().unwrap();
    let output = idembench(
        &[
            "--stack",
            "auto",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--trades",
            "10",
            "--connect-timeout-ms",
            "2000",
        ],
        &out.path().join("run"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("redis://127.0.0.1:1 does not answer; it was given explicitly"),
        "{stderr}"
    );
    assert!(!stderr.contains("started as a child process"), "{stderr}");
    assert!(
        stderr.contains("Redis") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
}

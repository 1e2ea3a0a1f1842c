//! Records the versions of the client libraries this build links, from Cargo.lock, so
//! `result.json` can say exactly what was measured.
use std::fs;

fn main() {
    println!("cargo::rerun-if-changed=Cargo.lock");
    // The commit the binary is built from: rebuilt when HEAD moves (a commit or a checkout).
    let head = fs::read_to_string(".git/HEAD").unwrap_or_default();
    // Only paths that exist: cargo reruns a build script on every build for a missing one.
    let reference = head
        .trim()
        .strip_prefix("ref: ")
        .map(|r| format!(".git/{r}"));
    for path in [".git/HEAD", ".git/packed-refs"]
        .into_iter()
        .chain(reference.as_deref())
    {
        if std::path::Path::new(path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=IDEMBENCH_GIT_COMMIT={commit}");
    docker_cfg();
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (package, variable) in [
        ("redis", "IDEMBENCH_REDIS_RS_VERSION"),
        ("fred", "IDEMBENCH_FRED_VERSION"),
        ("rdkafka", "IDEMBENCH_RDKAFKA_VERSION"),
        ("sqlx", "IDEMBENCH_SQLX_VERSION"),
        ("hdrhistogram", "IDEMBENCH_HDRHISTOGRAM_VERSION"),
        ("tansu-broker", "IDEMBENCH_TANSU_VERSION"),
    ] {
        println!(
            "cargo::rustc-env={variable}={}",
            locked_version(&lock, package)
        );
    }
}

fn locked_version(lock: &str, package: &str) -> String {
    let needle = format!("name = \"{package}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|at| lock[at + needle.len()..].split('"').next())
        .unwrap_or("unknown")
        .to_string()
}

/// `cfg(docker_available)` when a Docker daemon's socket accepts a connection at build time: the
/// testcontainers test runs there and is reported ignored, with its reason, everywhere else.
fn docker_cfg() {
    println!("cargo::rustc-check-cfg=cfg(docker_available)");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = host
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock")
        .to_string();
    if std::path::Path::new(&socket).exists() {
        println!("cargo::rerun-if-changed={socket}");
    }
    let answers =
        host.starts_with("tcp://") || std::os::unix::net::UnixStream::connect(&socket).is_ok();
    if answers {
        println!("cargo::rustc-cfg=docker_available");
    }
}

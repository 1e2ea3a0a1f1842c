//! Records the versions of the client libraries this build links, from Cargo.lock, so
//! `result.json` can say exactly what was measured.
use std::fs;

fn main() {
    println!("cargo::rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (package, variable) in [
        ("redis", "IDEMBENCH_REDIS_RS_VERSION"),
        ("fred", "IDEMBENCH_FRED_VERSION"),
        ("rdkafka", "IDEMBENCH_RDKAFKA_VERSION"),
        ("sqlx", "IDEMBENCH_SQLX_VERSION"),
        ("hdrhistogram", "IDEMBENCH_HDRHISTOGRAM_VERSION"),
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

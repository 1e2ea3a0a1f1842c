//! A service that does not answer gives a clear error that names it and its address within
//! seconds — never a hang. Port 1 on loopback refuses connections.

use crate::common;

use std::time::Duration;

async fn expect_error(args: &[&str], service: &str, address: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--trades", "10", "--connect-timeout-ms", "2000"];
    all.extend_from_slice(args);
    // Generous bound: this guards against a hang, it is not a speed target.
    let result = tokio::time::timeout(Duration::from_secs(60), common::try_run(&all, dir.path()))
        .await
        .unwrap_or_else(|_| panic!("no answer within 60 s for an unreachable {service}"));
    let error = result
        .err()
        .unwrap_or_else(|| panic!("an unreachable {service} must fail the run"));
    let message = error.to_string();
    assert!(
        message.contains(service),
        "error does not name {service}: {message}"
    );
    assert!(
        message.contains(address),
        "error does not name {address}: {message}"
    );
    assert!(
        message.contains("scripts/services up"),
        "error says nothing of how to start it: {message}"
    );
    assert_eq!(error.exit_code(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_is_named() {
    expect_error(&["--kafka-brokers", "127.0.0.1:1"], "Kafka", "127.0.0.1:1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_named() {
    expect_error(
        &["--redis-url", "redis://127.0.0.1:1"],
        "Redis",
        "127.0.0.1:1",
    )
    .await;
    expect_error(
        &[
            "--redis-url",
            "redis://127.0.0.1:1",
            "--redis-client",
            "fred",
        ],
        "Redis",
        "127.0.0.1:1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://idembench:sup3rsecret@127.0.0.1:1/idembench";
    let args = [
        "--trades",
        "10",
        "--connect-timeout-ms",
        "2000",
        "--postgres-url",
        url,
    ];
    let error = tokio::time::timeout(Duration::from_secs(60), common::try_run(&args, dir.path()))
        .await
        .expect("no hang")
        .err()
        .expect("an unreachable Postgres must fail the run");
    let message = error.to_string();
    assert!(
        message.contains("Postgres") && message.contains("127.0.0.1:1"),
        "{message}"
    );
    assert!(
        !message.contains("sup3rsecret"),
        "password leaked: {message}"
    );
}

//! An Apache Kafka child process in KRaft mode (one node, broker and controller), from the
//! jars `scripts/services install` fetched, on loopback ports.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Service, Stack, StackError, log_tail, spawn};

/// Formats the KRaft log and starts the broker on `port`, its files under `root/kafka`.
pub(super) async fn start(
    stack: &mut Stack,
    java: &Path,
    libs: &Path,
    version: String,
    root: &Path,
    (port, controller): (u16, u16),
) -> Result<(), StackError> {
    let dir = root.join("kafka");
    std::fs::create_dir_all(dir.join("logs"))?;
    let properties = dir.join("server.properties");
    std::fs::write(
        &properties,
        kafka_properties(port, controller, &dir.join("data")),
    )?;
    let log4j = dir.join("log4j2.properties");
    std::fs::write(
        &log4j,
        include_str!("../../scripts/kafka/log4j2.properties"),
    )?;
    let java_command = |heap: &str| {
        let mut command = Command::new(java);
        command
            .arg(heap)
            .arg("-cp")
            .arg(libs.join("*"))
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg(format!("-Dkafka.logs.dir={}", dir.join("logs").display()));
        command
    };
    let format_log = dir.join("logs/format.log");
    // A long-lived broker's log is formatted once; its next start finds it.
    if !dir.join("data/meta.properties").exists() {
        format(stack, java_command("-Xmx256m"), &properties, &format_log)?;
    }
    let log = dir.join("logs/stdout.log");
    stack.start_process(
        java_command("-Xmx1g")
            .args(["-Xms512m", "-XX:+UseG1GC", "kafka.Kafka"])
            .arg(&properties),
        &log,
        None,
        Service::Kafka,
        libc::SIGTERM,
    )?;
    let brokers = format!("127.0.0.1:{port}");
    stack
        .wait_ready(
            Service::Kafka,
            &dir.join("logs/server.log"),
            Duration::from_secs(120),
            || {
                let brokers = brokers.clone();
                async move { kafka_answers(&brokers).await }
            },
        )
        .await?;
    stack.connections.kafka_brokers = brokers;
    stack.info.kafka_version = Some(version);
    Ok(())
}

/// Formats the KRaft log (`StorageTool format --standalone`) for a new cluster id.
fn format(
    stack: &mut Stack,
    mut java: Command,
    properties: &Path,
    log: &Path,
) -> Result<(), StackError> {
    let status = spawn(
        java.args(["kafka.tools.StorageTool", "format", "--standalone"])
            .arg(format!("--cluster-id={}", kafka_cluster_id()))
            .arg("-c")
            .arg(properties),
        log,
        None,
        false,
    )?
    .wait()?;
    if !status.success() {
        let cause = format!(
            "formatting its KRaft log failed ({status}); {}",
            log_tail(log)
        );
        return Err(stack.fail(Service::Kafka, cause));
    }
    Ok(())
}

/// A Kafka-protocol broker at `brokers` returns metadata naming at least one broker.
pub async fn kafka_answers(brokers: &str) -> bool {
    crate::kafka::Admin::connect(brokers, Duration::from_secs(2))
        .await
        .is_ok_and(|(_, cluster)| cluster.brokers > 0)
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka's own
/// `random-uuid` prints (saves starting a JVM for it). Like Kafka's, it never starts with `-`,
/// which the storage tool's argument parser would read as an option (1 id in 64).
pub(super) fn kafka_cluster_id() -> String {
    use base64::Engine;
    loop {
        let bytes: [u8; 16] = rand::random();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// The same single-node KRaft settings as `scripts/services`, on the given loopback ports.
pub(super) fn kafka_properties(port: u16, controller: u16, data: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={}
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
",
        data.display()
    )
}

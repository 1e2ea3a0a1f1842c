//! Apache Kafka child processes in KRaft mode, from the jars `scripts/services install`
//! fetched, on loopback ports: one node (broker and controller, a dynamic quorum formatted
//! `--standalone`), or a cluster of N nodes (`--kafka-nodes N`) whose first three — or the
//! first one, below three — are the controller quorum (static voters), every node a broker,
//! with small heaps and thread pools so three fit a 2-core machine beside the run.

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
    let java_command = node_java(java, libs, &dir)?;
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
        "kafka",
        port,
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

/// Writes a node's log4j settings into `dir` and returns how to start a JVM for it: the heap
/// flag given, Kafka's jars on the class path, its logs under `dir/logs`.
fn node_java<'a>(
    java: &'a Path,
    libs: &'a Path,
    dir: &Path,
) -> std::io::Result<impl Fn(&str) -> Command + 'a> {
    let log4j = dir.join("log4j2.properties");
    std::fs::write(
        &log4j,
        include_str!("../../scripts/kafka/log4j2.properties"),
    )?;
    let logs = dir.join("logs");
    Ok(move |heap: &str| {
        let mut command = Command::new(java);
        command
            .arg(heap)
            .arg("-cp")
            .arg(libs.join("*"))
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg(format!("-Dkafka.logs.dir={}", logs.display()));
        command
    })
}

/// One node of a cluster: its id, its broker port, and its controller port if it votes.
struct Node {
    id: usize,
    port: u16,
    controller: Option<u16>,
}

/// Starts `nodes` brokers (the first three, or one below three, also the KRaft controller
/// quorum) under `root/kafka-N`, and waits until the cluster's metadata names all of them.
pub(super) async fn start_cluster(
    stack: &mut Stack,
    java: &Path,
    libs: &Path,
    version: String,
    root: &Path,
    nodes: usize,
) -> Result<(), StackError> {
    let voters = if nodes >= 3 { 3 } else { 1 };
    let mut cluster = Vec::new();
    for id in 1..=nodes {
        cluster.push(Node {
            id,
            port: super::free_port()?,
            controller: (id <= voters).then(super::free_port).transpose()?,
        });
    }
    let quorum: Vec<String> = cluster
        .iter()
        .filter_map(|n| n.controller.map(|c| format!("{}@127.0.0.1:{c}", n.id)))
        .collect();
    let cluster_id = kafka_cluster_id();
    for node in &cluster {
        let dir = root.join(format!("kafka-{}", node.id));
        std::fs::create_dir_all(dir.join("logs"))?;
        let properties = dir.join("server.properties");
        std::fs::write(
            &properties,
            node_properties(node, &quorum.join(","), nodes, &dir.join("data")),
        )?;
        let java_command = node_java(java, libs, &dir)?;
        let format_log = dir.join("logs/format.log");
        let status = spawn(
            java_command("-Xmx256m")
                .args(["kafka.tools.StorageTool", "format"])
                .arg(format!("--cluster-id={cluster_id}"))
                .arg("-c")
                .arg(&properties),
            &format_log,
            None,
            false,
        )?
        .wait()?;
        if !status.success() {
            let cause = format!(
                "formatting node {}'s KRaft log failed ({status}); {}",
                node.id,
                log_tail(&format_log)
            );
            return Err(stack.fail(Service::Kafka, cause));
        }
        stack.start_process(
            java_command("-Xmx512m")
                .args(["-Xms256m", "-XX:+UseG1GC", "-XX:ParallelGCThreads=1"])
                .args(["-XX:ConcGCThreads=1", "kafka.Kafka"])
                .arg(&properties),
            &dir.join("logs/stdout.log"),
            None,
            Service::Kafka,
            "kafka",
            node.port,
            libc::SIGTERM,
        )?;
    }
    let brokers: Vec<String> = cluster
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let brokers = brokers.join(",");
    stack
        .wait_ready(
            Service::Kafka,
            &root.join("kafka-1/logs/server.log"),
            Duration::from_secs(180),
            || {
                let brokers = brokers.clone();
                async move { brokers_answer(&brokers, nodes).await }
            },
        )
        .await?;
    stack.connections.kafka_brokers = brokers;
    stack.info.kafka_version = Some(version);
    Ok(())
}

/// The cluster's metadata names `nodes` brokers.
async fn brokers_answer(brokers: &str, nodes: usize) -> bool {
    crate::kafka::Admin::connect(brokers, Duration::from_secs(2))
        .await
        .is_ok_and(|(_, cluster)| cluster.brokers >= nodes)
}

/// One cluster node's settings: the internal topics replicated as widely as the cluster
/// allows, and small thread pools (three brokers share two cores with the run).
fn node_properties(node: &Node, quorum: &str, nodes: usize, data: &Path) -> String {
    let replicas = nodes.min(3);
    let min_isr = nodes.min(2);
    let (roles, listeners) = match node.controller {
        Some(controller) => (
            "broker,controller",
            format!(
                "PLAINTEXT:\u{2f}/127.0.0.1:{},CONTROLLER:\u{2f}/127.0.0.1:{controller}",
                node.port
            ),
        ),
        None => (
            "broker",
            format!("PLAINTEXT:\u{2f}/127.0.0.1:{}", node.port),
        ),
    };
    format!(
        "process.roles={roles}
node.id={id}
controller.quorum.voters={quorum}
listeners={listeners}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=4
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
log.cleaner.threads=1
num.recovery.threads.per.data.dir=1
",
        id = node.id,
        port = node.port,
        data = data.display()
    )
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

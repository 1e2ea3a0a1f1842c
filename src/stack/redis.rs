//! Redis child processes: no persistence, loopback only. One server, or a Redis Cluster of
//! three primaries and three replicas made with `redis-cli --cluster create`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Service, Stack, StackError, free_port, log_tail, spawn};

/// Starts six `redis-server`s in cluster mode under `root/redis-N`, joins them into three
/// primaries with a replica each, and waits until every node says `cluster_state:ok`.
pub(super) async fn start_cluster(
    stack: &mut Stack,
    server: &Path,
    root: &Path,
) -> Result<(), StackError> {
    let cli = super::which("redis-cli").ok_or_else(|| StackError::Missing {
        what: "redis-cli (it joins the nodes into a cluster) is missing".into(),
        commands: "    sudo apt-get install -y redis-tools".into(),
    })?;
    let mut ports = Vec::new();
    for node in 1..=6 {
        let port = free_port()?;
        let dir = root.join(format!("redis-{node}"));
        std::fs::create_dir_all(&dir)?;
        stack.start_process(
            Command::new(server)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "3000"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&dir),
            &dir.join("redis.log"),
            None,
            Service::Redis,
            libc::SIGTERM,
        )?;
        ports.push(port);
    }
    for port in &ports {
        let port = *port;
        stack
            .wait_ready(
                Service::Redis,
                &root.join("redis-1/redis.log"),
                Duration::from_secs(20),
                || async move { redis_pings(port) },
            )
            .await?;
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let create_log = root.join("redis-1/cluster-create.log");
    let status = spawn(
        Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"]),
        &create_log,
        None,
        false,
    )?
    .wait()?;
    if !status.success() {
        let cause = format!(
            "redis-cli --cluster create failed ({status}); {}",
            log_tail(&create_log)
        );
        return Err(stack.fail(Service::Redis, cause));
    }
    let ready_ports = ports.clone();
    stack
        .wait_ready(Service::Redis, &create_log, Duration::from_secs(30), || {
            let ports = ready_ports.clone();
            async move { ports.iter().all(|port| cluster_ok(*port)) }
        })
        .await?;
    stack.connections.redis_url = format!("redis-cluster://{}", nodes.join(","));
    Ok(())
}

/// `CLUSTER INFO` on the node at `port` says the cluster serves every slot.
fn cluster_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = vec![0u8; 4096];
    if stream.write_all(b"CLUSTER INFO\r\n").is_err() {
        return false;
    }
    let Ok(n) = stream.read(&mut reply) else {
        return false;
    };
    String::from_utf8_lossy(&reply[..n]).contains("cluster_state:ok")
}

/// Starts `redis-server` on `port` with its files under `root/redis`.
pub(super) async fn start(
    stack: &mut Stack,
    server: &Path,
    root: &Path,
    port: u16,
) -> Result<(), StackError> {
    let dir = root.join("redis");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("redis.log");
    // No persistence: the run's Redis holds idempotency keys only (as scripts/services).
    stack.start_process(
        Command::new(server)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir),
        &log,
        None,
        Service::Redis,
        libc::SIGTERM,
    )?;
    stack
        .wait_ready(
            Service::Redis,
            &log,
            Duration::from_secs(20),
            || async move { redis_pings(port) },
        )
        .await?;
    stack.connections.redis_url = format!("redis://127.0.0.1:{port}");
    Ok(())
}

fn redis_pings(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

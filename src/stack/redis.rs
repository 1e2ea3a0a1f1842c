//! Redis child processes: no persistence, loopback only. One server, or a Redis Cluster of
//! three primaries and three replicas made with `redis-cli --cluster create`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Service, Stack, StackError, free_port, log_tail, spawn};
use crate::redis::topology::{REDIS, REDIS_CLUSTER, REDIS_SENTINEL};

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
        // The node's cluster bus listens on port + 10000.
        let port = crate::spawn::free_port_with(10_000)?;
        let dir = root.join(format!("redis-{node}"));
        std::fs::create_dir_all(&dir)?;
        stack.start_process(
            server_command(server, port, &dir, &stack.topology)
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "3000"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf")),
            &dir.join("redis.log"),
            None,
            Service::Redis,
            "redis",
            port,
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
    stack.connections.redis_url = format!("{REDIS_CLUSTER}{}", nodes.join(","));
    Ok(())
}

/// The service name the Sentinels of a `--redis-topology sentinel` stack watch.
pub const SENTINEL_SERVICE: &str = "idembench";

/// Starts a primary, one replica of it, and three Sentinels watching it (`redis-server
/// --sentinel`, what Debian's `redis-sentinel` runs) under `root/redis-*`, and waits until the
/// replica is in sync and every Sentinel knows the replica and the other two.
pub(super) async fn start_sentinel(
    stack: &mut Stack,
    server: &Path,
    root: &Path,
) -> Result<(), StackError> {
    let (primary, replica) = (free_port()?, free_port()?);
    // With a replication lag, the replica replicates through a proxy the stack owns.
    let link = match stack.topology.redis_replication_lag_ms {
        Some(lag) => Some(
            ReplicationLink::start(primary, lag)
                .await
                .map_err(|cause| {
                    stack.fail(
                        Service::Redis,
                        format!("the replication link's proxy: {cause}"),
                    )
                })?,
        ),
        None => None,
    };
    let upstream = link.as_ref().map_or(primary, |link| link.listen.port());
    for (name, port, replica_of) in [
        ("primary", primary, None),
        ("replica", replica, Some(upstream)),
    ] {
        let dir = root.join(format!("redis-{name}"));
        std::fs::create_dir_all(&dir)?;
        let mut command = server_command(server, port, &dir, &stack.topology);
        if let Some(primary) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        stack.start_process(
            &mut command,
            &dir.join("redis.log"),
            None,
            Service::Redis,
            "redis",
            port,
            libc::SIGTERM,
        )?;
    }
    // A Sentinel points a replica that replicates from another address than the primary's
    // straight at the primary (`+fix-slave-config`) once `failover-timeout` passed since it
    // last changed; behind the lagging proxy that would end the lag after 10 s, so it waits
    // 10 min instead (it also bounds a failover that cannot finish, which one replica and
    // no others to reconfigure never reach).
    let failover_timeout = if link.is_some() { 600_000 } else { 10_000 };
    let mut sentinels = Vec::new();
    for n in 1..=3 {
        let port = free_port()?;
        let dir = root.join(format!("redis-sentinel-{n}"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {}\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} {failover_timeout}\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                dir.display()
            ),
        )?;
        stack.start_process(
            Command::new(server).arg(&config).arg("--sentinel"),
            &dir.join("sentinel.log"),
            None,
            Service::Redis,
            "redis-sentinel",
            port,
            libc::SIGTERM,
        )?;
        sentinels.push(port);
    }
    let watched = sentinels.clone();
    stack
        .wait_ready(
            Service::Redis,
            &root.join("redis-sentinel-1/sentinel.log"),
            Duration::from_secs(60),
            || {
                let sentinels = watched.clone();
                async move {
                    reply(replica, "INFO replication").contains("master_link_status:up")
                        && sentinels.iter().all(|port| {
                            let master =
                                reply(*port, &format!("SENTINEL master {SENTINEL_SERVICE}"));
                            master.contains("num-slaves\r\n$1\r\n1")
                                && master.contains("num-other-sentinels\r\n$1\r\n2")
                        })
                }
            },
        )
        .await?;
    if let Some(link) = link {
        // Lagging only once the replica is in sync: its first full copy goes at full speed.
        link.lag().await.map_err(|cause| {
            stack.fail(
                Service::Redis,
                format!("the replication link's latency: {cause}"),
            )
        })?;
        stack.replication = Some(std::sync::Arc::new(link));
    }
    let hosts: Vec<String> = sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    stack.connections.redis_url = format!("{REDIS_SENTINEL}{}/{SENTINEL_SERVICE}", hosts.join(","));
    Ok(())
}

/// The replica's link to its primary through Toxiproxy (`--redis-replication-lag-ms`): the
/// replication stream, and the `REPLCONF GETACK` a `WAIT` sends, reach the replica `lag_ms`
/// late. A failover [cuts](ReplicationLink::cut) it as it kills the primary, dropping what
/// was still on the way: writes the primary acknowledged that no replica will ever have.
pub struct ReplicationLink {
    toxiproxy: crate::faults::toxiproxy::Toxiproxy,
    listen: SocketAddr,
    lag_ms: u64,
    /// The primary it forwards to, `127.0.0.1:PORT`.
    primary: std::sync::Mutex<String>,
}

const LINK: &str = "redis-replication";

impl ReplicationLink {
    async fn start(primary: u16, lag_ms: u64) -> Result<ReplicationLink, String> {
        let toxiproxy = crate::faults::toxiproxy::Toxiproxy::start(Duration::from_secs(10)).await?;
        let primary = format!("127.0.0.1:{primary}");
        let listen = toxiproxy.proxy(LINK, &primary).await?;
        Ok(ReplicationLink {
            toxiproxy,
            listen,
            lag_ms,
            primary: std::sync::Mutex::new(primary),
        })
    }

    async fn lag(&self) -> Result<(), String> {
        self.toxiproxy
            .add_toxic(
                LINK,
                serde_json::json!({
                    "name": "replication-lag",
                    "type": "latency",
                    "stream": "downstream",
                    "attributes": { "latency": self.lag_ms },
                }),
            )
            .await
    }

    /// Closes the link and every connection on it, with what it still held.
    pub async fn cut(&self) -> Result<(), String> {
        self.toxiproxy.set_enabled(LINK, false).await
    }

    pub fn lag_ms(&self) -> u64 {
        self.lag_ms
    }

    /// The primary the link forwards to now.
    pub fn primary(&self) -> String {
        self.primary.lock().expect("not poisoned").clone()
    }

    /// After a failover: the link forwards to the new `primary`, and `replica` (the old
    /// primary, rejoined straight to it) replicates through it again — so the next failover,
    /// in this run or the next run of a matrix, meets a lagging replica too. (Its Sentinels
    /// leave the detour alone for `failover-timeout`, see [`start_sentinel`].)
    pub async fn relink(&self, primary: &str, replica: &str) -> Result<(), String> {
        self.toxiproxy
            .update(
                LINK,
                serde_json::json!({ "upstream": primary, "enabled": true }),
            )
            .await?;
        *self.primary.lock().expect("not poisoned") = primary.to_string();
        let port: u16 = replica
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .ok_or_else(|| format!("not host:port: {replica}"))?;
        let answer = reply(port, &format!("REPLICAOF 127.0.0.1 {}", self.listen.port()));
        if !answer.starts_with("+OK") {
            return Err(format!("REPLICAOF on {replica} answered {answer:?}"));
        }
        Ok(())
    }
}

/// A `redis-server` on `port` with its files in `dir`, loopback only. By default without
/// persistence (the run's Redis holds idempotency keys only; a restart loses them, as the
/// design note's "Redis restart" case does); with `--redis-persistence aof-everysec`, an
/// append-only file fsynced every second, which a restart reloads.
/// With `--redis-maxmemory`, it holds at most that much and does what the policy says when
/// full.
fn server_command(server: &Path, port: u16, dir: &Path, topology: &super::Topology) -> Command {
    let mut command = Command::new(server);
    if let Some((size, policy)) = &topology.redis_maxmemory {
        let policy: &str = (*policy).into();
        command.args(["--maxmemory", size, "--maxmemory-policy", policy]);
    }
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--protected-mode", "yes"]);
    match topology.redis_persistence {
        crate::redis::RedisPersistence::None => command.args(["--appendonly", "no"]),
        crate::redis::RedisPersistence::AofEverysec => {
            command.args(["--appendonly", "yes", "--appendfsync", "everysec"])
        }
    };
    command.arg("--dir").arg(dir);
    command
}

/// The raw reply to an inline command on the server at `port` (empty if it does not answer).
fn reply(port: u16, command: &str) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(format!("{command}\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut reply = vec![0u8; 8192];
    match stream.read(&mut reply) {
        Ok(n) => String::from_utf8_lossy(&reply[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

/// `CLUSTER INFO` on the node at `port` says the cluster serves every slot.
fn cluster_ok(port: u16) -> bool {
    reply(port, "CLUSTER INFO").contains("cluster_state:ok")
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
    stack.start_process(
        &mut server_command(server, port, &dir, &stack.topology),
        &log,
        None,
        Service::Redis,
        "redis",
        port,
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
    stack.connections.redis_url = format!("{REDIS}127.0.0.1:{port}");
    Ok(())
}

fn redis_pings(port: u16) -> bool {
    reply(port, "PING") == "+PONG\r\n"
}

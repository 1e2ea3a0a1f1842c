//! Where the services come from (`--stack`): ones already answering, child processes this run
//! starts and stops on free loopback ports in a temporary directory, or Docker containers.
//!
//! `auto` (the default) decides per service: an address that answers is used as it is; a
//! service left at its default address that does not answer is started as a child process
//! (`redis-server`, a throwaway PostgreSQL cluster from `initdb` + `postgres`, Apache Kafka in
//! KRaft mode from the jars `scripts/services install` fetches), or as a container where the
//! programs are missing and a Docker daemon answers; otherwise the run fails with the commands
//! that install what is missing. An address the user gave (flag or environment) is never
//! replaced: pointing at a cluster that is down is an error, not a cue to measure something
//! else.

use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod control;
mod docker;
mod kafka;
mod postgres;
mod redis;
pub mod services;
#[cfg(feature = "tansu")]
pub mod tansu;
pub mod usage;

use crate::config::{Connections, Origin, StackInfo, StackMode};
use crate::faults::control::ServiceNode;

use crate::redact::redact_url;
pub use control::StackControl;

pub use docker::{KAFKA_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE};
pub use kafka::kafka_answers;

/// How many nodes of each service a stack starts where it starts one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Apache Kafka brokers (3 or more: a 3-voter KRaft quorum, every node also a broker).
    pub kafka_nodes: usize,
    /// One Redis server, or a Redis Cluster.
    pub redis: crate::redis::RedisTopology,
    /// `maxmemory` and its policy for every Redis data node it starts.
    pub redis_maxmemory: Option<(String, crate::redis::MaxmemoryPolicy)>,
    /// What every Redis data node it starts keeps on disk.
    pub redis_persistence: crate::redis::RedisPersistence,
    /// Behind Sentinels: the replica replicates through a Toxiproxy proxy whose replies are
    /// late by this much, and a failover cuts that link as it kills the primary, so writes of
    /// the last moments exist only on the dead primary.
    pub redis_replication_lag_ms: Option<u64>,
}

impl Default for Topology {
    fn default() -> Topology {
        Topology {
            kafka_nodes: 1,
            redis: crate::redis::RedisTopology::Standalone,
            redis_maxmemory: None,
            redis_persistence: crate::redis::RedisPersistence::None,
            redis_replication_lag_ms: None,
        }
    }
}

/// Which connection settings the user gave (flag or environment) rather than left at default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Explicit {
    pub kafka: bool,
    pub redis: bool,
    pub postgres: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}\n  to install it:\n{commands}")]
    Missing { what: String, commands: String },
    #[error("{service} did not start: {cause}\n  its files are kept in {dir}")]
    Start {
        service: &'static str,
        cause: String,
        dir: String,
    },
    #[error("cannot prepare the stack: {0}")]
    Io(#[from] std::io::Error),
    #[error("Docker: {0}")]
    Docker(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Kafka,
    Redis,
    Postgres,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Redis => "redis",
            Service::Postgres => "postgres",
        }
    }
}

/// The services of one command (`run`, `matrix`, `capacity`). Dropping it stops what it started
/// and removes its temporary directory. For `idembench services up` it starts long-lived
/// services instead ([`services`]): in fixed directories, at the default addresses, left
/// running when it is dropped.
pub struct Stack {
    pub connections: Connections,
    pub info: StackInfo,
    children: control::Children,
    /// Long-lived services a run measures but never kills (`--stack auto`).
    adopted: Vec<ServiceNode>,
    dir: Option<tempfile::TempDir>,
    /// Long-lived services' directories (`idembench services up`); `None` for a command's own.
    home: Option<services::Home>,
    /// How many of each service to start.
    topology: Topology,
    /// Behind Sentinels with `--redis-replication-lag-ms`: the replica's lagging link.
    replication: Option<std::sync::Arc<redis::ReplicationLink>>,
    #[cfg(feature = "docker")]
    containers: Vec<Box<dyn std::any::Any + Send>>,
    #[cfg(feature = "tansu")]
    tansu: Option<tansu::Tansu>,
    quiet: bool,
}

fn say(quiet: bool, line: &str) {
    if !quiet {
        eprintln!("[idembench] stack: {line}");
    }
}

/// Decides, starts what is needed and returns the addresses to use.
pub async fn provision(
    mode: StackMode,
    connections: Connections,
    explicit: Explicit,
    topology: Topology,
    quiet: bool,
) -> Result<Stack, StackError> {
    let mut stack = Stack {
        info: StackInfo {
            mode,
            kafka: Origin::External,
            redis: Origin::External,
            postgres: Origin::External,
            kafka_version: None,
        },
        connections,
        children: control::Children::default(),
        replication: None,
        adopted: Vec::new(),
        dir: None,
        home: None,
        topology,
        #[cfg(feature = "docker")]
        containers: Vec::new(),
        #[cfg(feature = "tansu")]
        tansu: None,
        quiet,
    };
    if mode == StackMode::External {
        return Ok(stack);
    }
    let mut plan = Vec::new();
    let mut missing = Vec::new();
    for service in [Service::Redis, Service::Postgres, Service::Kafka] {
        let (address, given) = match service {
            Service::Kafka => (stack.connections.kafka_brokers.clone(), explicit.kafka),
            Service::Redis => (stack.connections.redis_url.clone(), explicit.redis),
            Service::Postgres => (stack.connections.postgres_url.clone(), explicit.postgres),
        };
        // An answering server of another topology than the one asked for is not it: the stack
        // starts the asked-for one in place of an address left at its default.
        let wrong_topology = service == Service::Redis
            && !given
            && crate::redis::topology::Address::parse(&address)
                .is_ok_and(|a| a.topology() != stack.topology.redis);
        let answering = mode == StackMode::Auto && !wrong_topology && answers(service, &address);
        let available = programs(service);
        let decided = decide(
            mode,
            answering,
            given,
            available.is_ok(),
            mode == StackMode::Auto && available.is_err() && docker_answers(),
        );
        let (origin, programs) = match (decided, available) {
            (Some(origin), available) => (origin, available.ok()),
            (None, available) => {
                missing.push((service, available.expect_err("decide needs the programs")));
                continue;
            }
        };
        if mode == StackMode::Auto && origin == Origin::External {
            let why = if answering {
                "answers; using it"
            } else {
                "does not answer; it was given explicitly, so nothing is started in its place"
            };
            say(
                quiet,
                &format!("{:<8} {} {why}", service.name(), redact_url(&address)),
            );
        }
        plan.push((service, origin, programs));
    }
    if !missing.is_empty() {
        return Err(missing_error(mode, &missing));
    }
    for (service, origin, programs) in plan {
        let origin = match (origin, programs) {
            (Origin::Child, Some(programs)) => stack.start_child(service, programs).await?,
            (Origin::Child, None) => {
                unreachable!("decide() picks a child only where its programs exist")
            }
            (Origin::Docker, _) => docker::start(&mut stack, service).await?,
            (origin @ (Origin::External | Origin::InProcess), _) => origin,
        };
        match service {
            Service::Kafka => stack.info.kafka = origin,
            Service::Redis => stack.info.redis = origin,
            Service::Postgres => stack.info.postgres = origin,
        }
    }
    stack.adopted = stack.adopted(mode, &explicit);
    Ok(stack)
}

/// Apache Kafka alone, `nodes` brokers as child processes (the conformance suite's cluster
/// candidate). Dropping the stack stops them.
pub async fn kafka_cluster(nodes: usize) -> Result<Stack, StackError> {
    let mut stack = provision(
        StackMode::External,
        Connections::default(),
        Explicit::default(),
        Topology {
            kafka_nodes: nodes,
            ..Topology::default()
        },
        false,
    )
    .await?;
    let programs = programs(Service::Kafka)
        .map_err(|commands| missing_error(StackMode::Embedded, &[(Service::Kafka, commands)]))?;
    stack.info.kafka = stack.start_child(Service::Kafka, programs).await?;
    Ok(stack)
}

/// Where one service comes from, or `None` when it must be started as a child and cannot.
fn decide(
    mode: StackMode,
    answering: bool,
    given: bool,
    programs: bool,
    docker: bool,
) -> Option<Origin> {
    match mode {
        StackMode::External => Some(Origin::External),
        StackMode::Docker => Some(Origin::Docker),
        StackMode::Embedded => programs.then_some(Origin::Child),
        StackMode::Auto if answering || given => Some(Origin::External),
        StackMode::Auto if programs => Some(Origin::Child),
        StackMode::Auto => docker.then_some(Origin::Docker),
    }
}

/// Something accepts TCP connections at the service's address.
fn answers(service: Service, address: &str) -> bool {
    let hosts: Vec<String> = match service {
        Service::Kafka => address.split(',').map(|b| b.trim().to_string()).collect(),
        Service::Redis | Service::Postgres => match url::Url::parse(address) {
            Ok(url) => {
                let default = if service == Service::Redis {
                    6379
                } else {
                    5432
                };
                vec![format!(
                    "{}:{}",
                    url.host_str().unwrap_or("127.0.0.1"),
                    url.port().unwrap_or(default)
                )]
            }
            // Not a URL we can probe: the run's own connect reports what is wrong with it.
            Err(_) => return true,
        },
    };
    hosts.iter().any(|host| {
        host.to_socket_addrs().is_ok_and(|mut addrs| {
            addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
        })
    })
}

/// The programs a child of this service needs, or what to install.
#[derive(Debug)]
enum Programs {
    Redis(PathBuf),
    Postgres {
        bin: PathBuf,
        user: Option<User>,
    },
    Kafka {
        java: PathBuf,
        libs: PathBuf,
        version: String,
    },
    /// The embedded tansu broker (cargo feature `tansu`) instead of Apache Kafka.
    #[cfg_attr(not(feature = "tansu"), allow(dead_code))]
    Tansu,
}

#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
}

pub(super) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn programs(service: Service) -> Result<Programs, Vec<String>> {
    match service {
        Service::Redis => which("redis-server")
            .map(Programs::Redis)
            .ok_or_else(|| vec!["sudo apt-get install -y redis-server".to_string()]),
        Service::Postgres => {
            let bin = postgres_bin()
                .ok_or_else(|| vec!["sudo apt-get install -y postgresql".to_string()])?;
            // PostgreSQL refuses to run as root: as root, run it as the `postgres` OS user.
            // SAFETY: geteuid has no preconditions.
            let user = if unsafe { libc::geteuid() } == 0 {
                Some(os_user("postgres").ok_or_else(|| {
                    vec!["sudo apt-get install -y postgresql   # creates the 'postgres' OS user; PostgreSQL will not run as root".to_string()]
                })?)
            } else {
                None
            };
            Ok(Programs::Postgres { bin, user })
        }
        Service::Kafka if cfg!(feature = "tansu") => Ok(Programs::Tansu),
        Service::Kafka => {
            let java = which("java");
            let libs = kafka_libs();
            match (java, libs) {
                (Some(java), Some((libs, version))) => Ok(Programs::Kafka {
                    java,
                    libs,
                    version,
                }),
                (java, libs) => {
                    let mut commands = Vec::new();
                    if java.is_none() {
                        commands.push("sudo apt-get install -y openjdk-17-jre-headless".into());
                    }
                    if libs.is_none() {
                        commands.push(
                            "scripts/services install   # fetches Apache Kafka's jars from Maven Central (needs mvn: sudo apt-get install -y maven)"
                                .into(),
                        );
                    }
                    Err(commands)
                }
            }
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian), or the directory of `initdb` on PATH.
fn postgres_bin() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has(dir))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .or_else(|| which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
        .filter(|dir| has(dir))
}

fn os_user(name: &str) -> Option<User> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out of it at once,
    // before any other call could overwrite it.
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        (!entry.is_null()).then(|| User {
            uid: (*entry).pw_uid,
            gid: (*entry).pw_gid,
        })
    }
}

/// Apache Kafka's jars: `IDEMBENCH_KAFKA_LIBS`, or the newest that `scripts/services install`
/// fetched under `$IDEMBENCH_HOME/kafka` (default `~/.cache/idembench`). Returns the directory and
/// the release.
fn kafka_libs() -> Option<(PathBuf, String)> {
    let version_in = |dir: &Path| -> Option<String> {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("kafka_2.13-")?
                .strip_suffix(".jar")
                .filter(|v| !v.contains('-'))
                .map(str::to_string)
        })
    };
    if let Some(dir) = std::env::var_os("IDEMBENCH_KAFKA_LIBS").map(PathBuf::from) {
        return version_in(&dir).map(|v| (dir, v));
    }
    let home = std::env::var_os("IDEMBENCH_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/idembench")))?;
    let mut found: Vec<(Vec<u32>, PathBuf, String)> = std::fs::read_dir(home.join("kafka"))
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let libs = entry.path().join("libs");
            let version = version_in(&libs)?;
            let key = version.split('.').filter_map(|p| p.parse().ok()).collect();
            Some((key, libs, version))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, libs, version)| (libs, version))
}

fn docker_answers() -> bool {
    #[cfg(feature = "docker")]
    {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix:\u{2f}/").map(str::to_string))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        if std::env::var("DOCKER_HOST").is_ok_and(|h| h.starts_with("tcp:\u{2f}/")) {
            return true;
        }
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    }
    #[cfg(not(feature = "docker"))]
    false
}

fn missing_error(mode: StackMode, missing: &[(Service, Vec<String>)]) -> StackError {
    let names: Vec<&str> = missing.iter().map(|(s, _)| s.name()).collect();
    let mut commands: Vec<String> = missing.iter().flat_map(|(_, c)| c.clone()).collect();
    commands.dedup();
    let mut lines: Vec<String> = commands.iter().map(|c| format!("    {c}")).collect();
    lines.push("  or all of it at once: scripts/services install".into());
    lines.push(
        "  or start the services yourself (scripts/services up, or docker compose up -d) or point --kafka-brokers, --redis-url and --postgres-url at running ones".into(),
    );
    let why = match mode {
        StackMode::Auto => "nothing answers at the default address and the programs to start",
        _ => "the programs to start",
    };
    StackError::Missing {
        what: format!(
            "{} ({why} it here are missing{})",
            names.join(", "),
            if cfg!(feature = "docker") {
                "; no Docker daemon answers either"
            } else {
                "; this build has no Docker support (cargo feature `docker`)"
            }
        ),
        commands: lines.join("\n"),
    }
}

pub(crate) use crate::spawn::free_port;

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(2_000)));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!(
        "last lines of {}:\n      {}",
        path.display(),
        tail.join("\n      ")
    )
}

/// Starts `command` in its own process group (a Ctrl-C meant for the run must not stop the
/// services it still drains against), output to `log`, killed if this process dies — unless
/// `detached` (a long-lived service of `idembench services up`), which outlives it.
fn spawn(
    command: &mut Command,
    log: &Path,
    user: Option<User>,
    detached: bool,
) -> std::io::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    if detached {
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    } else {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    command.spawn()
}

impl Stack {
    /// Under `--stack auto`, the services `idembench services up` left running at the default
    /// addresses (by their pid files): measured, never killed.
    fn adopted(&self, mode: StackMode, explicit: &Explicit) -> Vec<ServiceNode> {
        if mode != StackMode::Auto {
            return Vec::new();
        }
        let home = services::Home::from_environment();
        let mut adopted = Vec::new();
        for (service, origin, given) in [
            (Service::Redis, self.info.redis, explicit.redis),
            (Service::Postgres, self.info.postgres, explicit.postgres),
            (Service::Kafka, self.info.kafka, explicit.kafka),
        ] {
            if origin == Origin::External
                && !given
                && let Some(pid) = services::running_pid(&home, service)
            {
                adopted.push(ServiceNode {
                    service: service.name(),
                    role: service.name(),
                    address: format!(
                        "127.0.0.1:{}",
                        services::default_port(service, &self.connections)
                    ),
                    pid: Some(pid),
                    owned: false,
                });
            }
        }
        adopted
    }

    /// The processes of this stack, for a run's faults and its cost figures.
    pub fn control(&self) -> StackControl {
        StackControl::new(
            self.children.clone(),
            self.adopted.clone(),
            self.replication.clone(),
        )
    }

    /// Whether what this stack starts outlives it.
    fn detached(&self) -> bool {
        self.home.is_some()
    }

    /// Where `service`'s files go: its long-lived home, or this command's temporary directory.
    fn root(&mut self, service: Service) -> Result<PathBuf, StackError> {
        match &self.home {
            Some(home) => Ok(home.root(service)),
            None => self.dir(),
        }
    }

    fn dir(&mut self) -> Result<PathBuf, StackError> {
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("idembench-stack-")
                .tempdir()?;
            // The postgres OS user must reach its own subdirectory.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            self.dir = Some(dir);
        }
        Ok(self.dir.as_ref().expect("just set").path().to_path_buf())
    }

    /// Keeps the temporary directory (logs) for a failure report.
    fn fail(&mut self, service: Service, cause: String) -> StackError {
        let dir = match &self.home {
            Some(home) => home
                .root(service)
                .join(service.name())
                .display()
                .to_string(),
            None => self
                .dir
                .take()
                .map(|d| d.keep().display().to_string())
                .unwrap_or_default(),
        };
        StackError::Start {
            service: service.name(),
            cause,
            dir,
        }
    }

    /// Starts one service's program, serving `port`, and keeps it, to stop with
    /// `stop_signal` (and for a fault to kill and restart).
    #[allow(clippy::too_many_arguments)]
    fn start_process(
        &mut self,
        command: &mut Command,
        log: &Path,
        user: Option<User>,
        service: Service,
        role: &'static str,
        port: u16,
        stop_signal: libc::c_int,
    ) -> Result<(), StackError> {
        let detached = self.detached();
        let pid = self.children.start(
            command,
            log,
            user,
            detached,
            service,
            role,
            port,
            stop_signal,
        )?;
        if let Some(home) = &self.home {
            std::fs::write(home.pid_file(service), pid.to_string())?;
        }
        Ok(())
    }

    /// Polls `ready` until it holds, the child exits, or `limit` passes.
    async fn wait_ready<F, Fut>(
        &mut self,
        service: Service,
        log: &Path,
        limit: Duration,
        mut ready: F,
    ) -> Result<(), StackError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if ready().await {
                return Ok(());
            }
            if let Some(status) = self.children.exited(service) {
                let cause = format!("it exited ({status}); {}", log_tail(log));
                return Err(self.fail(service, cause));
            }
            if Instant::now() > deadline {
                let cause = format!(
                    "it did not answer within {} s; {}",
                    limit.as_secs(),
                    log_tail(log)
                );
                return Err(self.fail(service, cause));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts `service` from `programs`; returns where it runs (a child process, or this
    /// process for the embedded tansu broker).
    async fn start_child(
        &mut self,
        service: Service,
        programs: Programs,
    ) -> Result<Origin, StackError> {
        let in_process = matches!(programs, Programs::Tansu);
        let started = Instant::now();
        let root = self.root(service)?;
        // Long-lived services keep the default addresses (and Kafka's controller the next
        // port, as its KRaft log records it); a command's own take free ports.
        let (port, controller) = match &self.home {
            Some(_) => {
                let port = services::default_port(service, &self.connections);
                (port, port + 1)
            }
            None => (free_port()?, free_port()?),
        };
        match programs {
            Programs::Redis(server)
                if self.topology.redis == crate::redis::RedisTopology::Cluster
                    && self.home.is_none() =>
            {
                redis::start_cluster(self, &server, &root).await?
            }
            Programs::Redis(server)
                if self.topology.redis == crate::redis::RedisTopology::Sentinel
                    && self.home.is_none() =>
            {
                redis::start_sentinel(self, &server, &root).await?
            }
            Programs::Redis(server) => redis::start(self, &server, &root, port).await?,
            Programs::Postgres { bin, user } => {
                postgres::start(self, &bin, user, &root, port).await?
            }
            #[cfg(feature = "tansu")]
            Programs::Tansu => tansu::start(self).await?,
            #[cfg(not(feature = "tansu"))]
            Programs::Tansu => unreachable!("programs() offers tansu only with the feature"),
            Programs::Kafka {
                java,
                libs,
                version,
            } if self.topology.kafka_nodes > 1 && self.home.is_none() => {
                let nodes = self.topology.kafka_nodes;
                kafka::start_cluster(self, &java, &libs, version, &root, nodes).await?
            }
            Programs::Kafka {
                java,
                libs,
                version,
            } => kafka::start(self, &java, &libs, version, &root, (port, controller)).await?,
        }
        let address = match service {
            Service::Kafka => self.connections.kafka_brokers.clone(),
            Service::Redis => self.connections.redis_url.clone(),
            Service::Postgres => redact_url(&self.connections.postgres_url),
        };
        let how = if in_process {
            "started in this process"
        } else if self.detached() {
            "started, left running (idembench services down stops it),"
        } else {
            "started as a child process"
        };
        say(
            self.quiet,
            &format!(
                "{:<8} {how} at {address} in {:.1} s{}",
                service.name(),
                started.elapsed().as_secs_f64(),
                match (&self.info.kafka_version, service) {
                    (Some(v), Service::Kafka) if !in_process && self.topology.kafka_nodes > 1 => {
                        format!(
                            " (Apache Kafka {v}, KRaft, {} nodes)",
                            self.topology.kafka_nodes
                        )
                    }
                    (Some(v), Service::Kafka) if !in_process => {
                        format!(" (Apache Kafka {v}, KRaft)")
                    }
                    _ => String::new(),
                }
            ),
        );
        Ok(if in_process {
            Origin::InProcess
        } else {
            Origin::Child
        })
    }

    /// Stops the children (newest first: Kafka, then Postgres, then Redis), each with its quick
    /// shutdown signal and SIGKILL after 15 s, then removes the temporary directory.
    pub fn stop(&mut self) {
        if self.detached() {
            // Long-lived: `idembench services down` stops them by their pid files.
            self.children.clear();
            return;
        }
        if self.children.is_empty() && self.dir.is_none() {
            return;
        }
        let names = self.children.names().join(", ");
        self.children.stop_all();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            drop(dir);
            say(self.quiet, &format!("stopped {names} and removed {path}"));
        }
        #[cfg(feature = "docker")]
        self.containers.clear();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::kafka::kafka_cluster_id;
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn auto_uses_what_answers_and_starts_only_what_was_left_at_its_default() {
        use Origin as O;
        use StackMode as M;
        // (mode, answering, given, programs, docker) -> origin
        let cases = [
            ((M::Auto, true, false, true, true), Some(O::External)),
            ((M::Auto, true, true, false, false), Some(O::External)),
            ((M::Auto, false, true, true, true), Some(O::External)),
            ((M::Auto, false, false, true, true), Some(O::Child)),
            ((M::Auto, false, false, false, true), Some(O::Docker)),
            ((M::Auto, false, false, false, false), None),
            ((M::External, false, false, true, true), Some(O::External)),
            ((M::Embedded, true, true, true, false), Some(O::Child)),
            ((M::Embedded, false, false, false, true), None),
            ((M::Docker, true, false, true, false), Some(O::Docker)),
        ];
        for ((mode, answering, given, programs, docker), expected) in cases {
            assert_eq!(
                decide(mode, answering, given, programs, docker),
                expected,
                "{mode:?} answering={answering} given={given} programs={programs} docker={docker}"
            );
        }
    }

    #[test]
    fn a_kafka_cluster_id_is_22_url_safe_characters_never_led_by_a_dash() {
        // 1 random id in 64 would start with '-': 2 000 draws miss that with odds of 1e-14.
        assert!((0..2_000).all(|_| !kafka_cluster_id().starts_with('-')));
        let id = kafka_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{id}"
        );
        assert_ne!(id, kafka_cluster_id());
    }

    #[test]
    fn the_missing_error_names_each_service_and_its_install_command() {
        let error = missing_error(
            StackMode::Auto,
            &[
                (
                    Service::Redis,
                    vec!["sudo apt-get install -y redis-server".into()],
                ),
                (Service::Kafka, vec!["scripts/services install".into()]),
            ],
        )
        .to_string();
        assert!(error.starts_with("redis, kafka ("), "{error}");
        assert!(
            error.contains("    sudo apt-get install -y redis-server"),
            "{error}"
        );
        assert!(error.contains("scripts/services install"), "{error}");
        assert!(error.contains("--kafka-brokers"), "{error}");
    }

    #[test]
    fn nothing_listens_on_a_fresh_free_port() {
        let port = free_port().unwrap();
        assert!(!answers(Service::Kafka, &format!("127.0.0.1:{port}")));
        assert!(!answers(
            Service::Redis,
            &format!("redis://127.0.0.1:{port}")
        ));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(answers(
            Service::Postgres,
            &format!("postgres://u:p@127.0.0.1:{port}/d")
        ));
        assert!(answers(
            Service::Kafka,
            &format!("127.0.0.1:1, 127.0.0.1:{port}")
        ));
    }
}

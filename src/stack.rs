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
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;
use crate::run::Connections;

/// The images `--stack docker` starts, as `docker-compose.yml` names them (a test holds the two
/// together): Apache Kafka as `scripts/kafka/pom.xml` fetches it, Redis and PostgreSQL as
/// Debian 12 packages them.
pub const KAFKA_IMAGE: (&str, &str) = ("apache/kafka", "4.1.1");
pub const REDIS_IMAGE: (&str, &str) = ("redis", "7.0");
pub const POSTGRES_IMAGE: (&str, &str) = ("postgres", "15");

/// How `--stack` finds the services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackMode {
    /// Use what answers; start what does not (and was not named by the user).
    Auto,
    /// Only the configured addresses; never start anything.
    External,
    /// Start all three as child processes, even where something answers.
    Embedded,
    /// Start all three as Docker containers (testcontainers).
    Docker,
}

/// Where one service of a run came from, recorded in `result.json` (`environment.stack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Already answering at the configured address (or `--stack external`).
    External,
    /// A child process this run started and stopped.
    Child,
    /// A Docker container this run started and removed.
    Docker,
    /// A broker embedded in this process (the tansu broker, cargo feature `tansu`).
    InProcess,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    pub mode: StackMode,
    pub kafka: Origin,
    pub redis: Origin,
    pub postgres: Origin,
    /// The Apache Kafka release of a broker this run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_version: Option<String>,
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

struct Running {
    service: Service,
    child: Child,
    /// The signal that shuts the program down quickly (Postgres: SIGINT, a fast shutdown).
    stop_signal: libc::c_int,
}

/// The services of one command (`run`, `matrix`, `capacity`). Dropping it stops what it started
/// and removes its temporary directory.
pub struct Stack {
    pub connections: Connections,
    pub info: StackInfo,
    children: Vec<Running>,
    dir: Option<tempfile::TempDir>,
    #[cfg(feature = "docker")]
    containers: Vec<Box<dyn std::any::Any + Send>>,
    #[cfg(feature = "tansu")]
    tansu: Option<crate::embedded::Tansu>,
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
        children: Vec::new(),
        dir: None,
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
        let answering = mode == StackMode::Auto && answers(service, &address);
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
            (Origin::Docker, _) => stack.start_container(service).await?,
            (origin @ (Origin::External | Origin::InProcess), _) => origin,
        };
        match service {
            Service::Kafka => stack.info.kafka = origin,
            Service::Redis => stack.info.redis = origin,
            Service::Postgres => stack.info.postgres = origin,
        }
    }
    Ok(stack)
}

/// Which connection settings of the command the user gave (flag or environment variable).
pub fn explicit(matches: &clap::ArgMatches) -> Explicit {
    let Some((_, sub)) = matches.subcommand() else {
        return Explicit::default();
    };
    let given = |id: &str| {
        sub.try_get_raw(id).is_ok_and(|v| v.is_some())
            && !matches!(
                sub.value_source(id),
                Some(clap::parser::ValueSource::DefaultValue) | None
            )
    };
    Explicit {
        kafka: given("kafka_brokers"),
        redis: given("redis_url"),
        postgres: given("postgres_url"),
    }
}

/// Provisions the services for a command's settings and points the settings at them.
pub async fn provision_for(
    common: &mut crate::cli::CommonArgs,
    explicit: Explicit,
) -> Result<Stack, StackError> {
    let connections = Connections {
        kafka_brokers: common.kafka_brokers.clone(),
        redis_url: common.redis_url.clone(),
        postgres_url: common.postgres_url.clone(),
    };
    let stack = provision(common.stack, connections, explicit, common.quiet).await?;
    common.kafka_brokers = stack.connections.kafka_brokers.clone();
    common.redis_url = stack.connections.redis_url.clone();
    common.postgres_url = stack.connections.postgres_url.clone();
    common.stack_info = Some(stack.info.clone());
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

fn which(program: &str) -> Option<PathBuf> {
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
            .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        if std::env::var("DOCKER_HOST").is_ok_and(|h| h.starts_with("tcp://")) {
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

/// A port nothing listens on now, on 127.0.0.1.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

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
/// services it still drains against), output to `log`, killed if this process dies.
fn spawn(command: &mut Command, log: &Path, user: Option<User>) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn()
}

impl Stack {
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
        let dir = self
            .dir
            .take()
            .map(|d| d.keep().display().to_string())
            .unwrap_or_default();
        StackError::Start {
            service: service.name(),
            cause,
            dir,
        }
    }

    /// Starts one service's program and keeps it, to stop with `stop_signal`.
    fn start_process(
        &mut self,
        command: &mut Command,
        log: &Path,
        user: Option<User>,
        service: Service,
        stop_signal: libc::c_int,
    ) -> Result<(), StackError> {
        let child = spawn(command, log, user)?;
        self.children.push(Running {
            service,
            child,
            stop_signal,
        });
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
            let running = self
                .children
                .iter_mut()
                .find(|r| r.service == service)
                .expect("started");
            if let Ok(Some(status)) = running.child.try_wait() {
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
        let root = self.dir()?;
        let port = free_port()?;
        match programs {
            Programs::Redis(server) => {
                let dir = root.join("redis");
                std::fs::create_dir_all(&dir)?;
                let log = dir.join("redis.log");
                // No persistence: the run's Redis holds idempotency keys only (as scripts/services).
                self.start_process(
                    Command::new(&server)
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
                    service,
                    libc::SIGTERM,
                )?;
                self.wait_ready(service, &log, Duration::from_secs(20), || async move {
                    redis_pings(port)
                })
                .await?;
                self.connections.redis_url = format!("redis://127.0.0.1:{port}");
            }
            Programs::Postgres { bin, user } => {
                let dir = root.join("postgres");
                std::fs::create_dir_all(&dir)?;
                if let Some(user) = user {
                    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
                }
                let mut url = url::Url::parse(&self.connections.postgres_url).map_err(|e| {
                    self.fail(service, format!("the Postgres URL does not parse: {e}"))
                })?;
                let role = match url.username() {
                    "" => "postgres".to_string(),
                    name => name.to_string(),
                };
                let password = url.password().unwrap_or("").to_string();
                let database = url.path().trim_start_matches('/').to_string();
                let password_file = dir.join("password");
                std::fs::write(&password_file, &password)?;
                if let Some(user) = user {
                    std::os::unix::fs::chown(&password_file, Some(user.uid), Some(user.gid))?;
                }
                let data = dir.join("data");
                let init_log = dir.join("initdb.log");
                let status = spawn(
                    Command::new(bin.join("initdb"))
                        .arg("-D")
                        .arg(&data)
                        .args([
                            "-U",
                            &role,
                            "--auth=scram-sha-256",
                            "--no-sync",
                            "-E",
                            "UTF8",
                        ])
                        .arg(format!("--pwfile={}", password_file.display())),
                    &init_log,
                    user,
                )?
                .wait()?;
                let _ = std::fs::remove_file(&password_file);
                if !status.success() {
                    let cause = format!("initdb failed ({status}); {}", log_tail(&init_log));
                    return Err(self.fail(service, cause));
                }
                let log = dir.join("postgres.log");
                self.start_process(
                    Command::new(bin.join("postgres"))
                        .arg("-D")
                        .arg(&data)
                        .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
                        .arg("-c")
                        .arg(format!("unix_socket_directories={}", dir.display()))
                        .args(["-c", "max_connections=200"]),
                    &log,
                    user,
                    service,
                    libc::SIGINT,
                )?;
                url.set_port(Some(port)).expect("a postgres URL has a host");
                url.set_host(Some("127.0.0.1")).expect("valid host");
                let mut admin = url.clone();
                admin.set_path("/postgres");
                let admin = admin.to_string();
                self.wait_ready(service, &log, Duration::from_secs(60), || {
                    let admin = admin.clone();
                    async move {
                        use sqlx::Connection;
                        sqlx::PgConnection::connect(&admin).await.is_ok()
                    }
                })
                .await?;
                if !database.is_empty() && database != "postgres" {
                    use sqlx::{Connection, Executor};
                    let created = async {
                        let mut conn = sqlx::PgConnection::connect(&admin).await?;
                        let sql = format!("create database \"{}\"", database.replace('"', ""));
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                        conn.close().await
                    }
                    .await;
                    if let Err(error) = created {
                        return Err(self.fail(
                            service,
                            format!("cannot create database {database}: {error}"),
                        ));
                    }
                }
                self.connections.postgres_url = url.to_string();
            }
            #[cfg(feature = "tansu")]
            Programs::Tansu => {
                let tansu = crate::embedded::Tansu::start()
                    .await
                    .map_err(|cause| self.fail(service, cause))?;
                self.connections.kafka_brokers = tansu.bootstrap_servers();
                self.info.kafka_version = Some(format!("tansu {}", crate::embedded::TANSU_VERSION));
                self.tansu = Some(tansu);
                say(
                    self.quiet,
                    "kafka    is the tansu broker embedded in this process (cargo feature tansu): fine for trying idembench out; results for an ADR should be taken against Apache Kafka",
                );
            }
            #[cfg(not(feature = "tansu"))]
            Programs::Tansu => unreachable!("programs() offers tansu only with the feature"),
            Programs::Kafka {
                java,
                libs,
                version,
            } => {
                let dir = root.join("kafka");
                std::fs::create_dir_all(dir.join("logs"))?;
                let controller = free_port()?;
                let properties = dir.join("server.properties");
                std::fs::write(
                    &properties,
                    kafka_properties(port, controller, &dir.join("data")),
                )?;
                let log4j = dir.join("log4j2.properties");
                std::fs::write(&log4j, include_str!("../scripts/kafka/log4j2.properties"))?;
                let java_command = |heap: &str| {
                    let mut command = Command::new(&java);
                    command
                        .arg(heap)
                        .arg("-cp")
                        .arg(libs.join("*"))
                        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                        .arg(format!("-Dkafka.logs.dir={}", dir.join("logs").display()));
                    command
                };
                let format_log = dir.join("logs/format.log");
                let status = spawn(
                    java_command("-Xmx256m")
                        .args(["kafka.tools.StorageTool", "format", "--standalone"])
                        .arg(format!("--cluster-id={}", kafka_cluster_id()))
                        .arg("-c")
                        .arg(&properties),
                    &format_log,
                    None,
                )?
                .wait()?;
                if !status.success() {
                    let cause = format!(
                        "formatting its KRaft log failed ({status}); {}",
                        log_tail(&format_log)
                    );
                    return Err(self.fail(service, cause));
                }
                let log = dir.join("logs/stdout.log");
                self.start_process(
                    java_command("-Xmx1g")
                        .args(["-Xms512m", "-XX:+UseG1GC", "kafka.Kafka"])
                        .arg(&properties),
                    &log,
                    None,
                    service,
                    libc::SIGTERM,
                )?;
                let brokers = format!("127.0.0.1:{port}");
                self.wait_ready(
                    service,
                    &dir.join("logs/server.log"),
                    Duration::from_secs(120),
                    || {
                        let brokers = brokers.clone();
                        async move { kafka_answers(&brokers).await }
                    },
                )
                .await?;
                self.connections.kafka_brokers = brokers;
                self.info.kafka_version = Some(version);
            }
        }
        let address = match service {
            Service::Kafka => self.connections.kafka_brokers.clone(),
            Service::Redis => self.connections.redis_url.clone(),
            Service::Postgres => redact_url(&self.connections.postgres_url),
        };
        let how = if in_process {
            "started in this process"
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

    #[cfg(not(feature = "docker"))]
    async fn start_container(&mut self, service: Service) -> Result<Origin, StackError> {
        Err(StackError::Docker(format!(
            "cannot start {}: this build has no Docker support; build with the cargo feature `docker` (on by default)",
            service.name()
        )))
    }

    #[cfg(feature = "docker")]
    async fn start_container(&mut self, service: Service) -> Result<Origin, StackError> {
        use testcontainers_modules::testcontainers::ImageExt;
        use testcontainers_modules::testcontainers::runners::AsyncRunner;
        use testcontainers_modules::{kafka, postgres, redis};
        let started = Instant::now();
        let docker = |e: testcontainers_modules::testcontainers::TestcontainersError| {
            StackError::Docker(format!("cannot start {}: {e}", service.name()))
        };
        let host_port = |e: testcontainers_modules::testcontainers::TestcontainersError| {
            StackError::Docker(format!("{}: no mapped port: {e}", service.name()))
        };
        match service {
            Service::Redis => {
                let container = redis::Redis::default()
                    .with_tag(REDIS_IMAGE.1)
                    .start()
                    .await
                    .map_err(docker)?;
                let port = container
                    .get_host_port_ipv4(redis::REDIS_PORT)
                    .await
                    .map_err(host_port)?;
                self.connections.redis_url = format!("redis://127.0.0.1:{port}");
                self.containers.push(Box::new(container));
            }
            Service::Postgres => {
                let mut url = url::Url::parse(&self.connections.postgres_url).map_err(|e| {
                    StackError::Docker(format!("the Postgres URL does not parse: {e}"))
                })?;
                let container = postgres::Postgres::default()
                    .with_user(url.username())
                    .with_password(url.password().unwrap_or(""))
                    .with_db_name(url.path().trim_start_matches('/'))
                    .with_tag(POSTGRES_IMAGE.1)
                    .start()
                    .await
                    .map_err(docker)?;
                let port = container
                    .get_host_port_ipv4(5432)
                    .await
                    .map_err(host_port)?;
                url.set_host(Some("127.0.0.1")).expect("valid host");
                url.set_port(Some(port)).expect("a postgres URL has a host");
                self.connections.postgres_url = url.to_string();
                self.containers.push(Box::new(container));
            }
            Service::Kafka => {
                let container = kafka::apache::Kafka::default()
                    .with_jvm_image()
                    .with_tag(KAFKA_IMAGE.1)
                    .start()
                    .await
                    .map_err(docker)?;
                let port = container
                    .get_host_port_ipv4(kafka::apache::KAFKA_PORT)
                    .await
                    .map_err(host_port)?;
                self.connections.kafka_brokers = format!("127.0.0.1:{port}");
                self.info.kafka_version = Some(KAFKA_IMAGE.1.to_string());
                self.containers.push(Box::new(container));
            }
        }
        say(
            self.quiet,
            &format!(
                "{:<8} started as a Docker container in {:.1} s",
                service.name(),
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(Origin::Docker)
    }

    /// Stops the children (newest first: Kafka, then Postgres, then Redis), each with its quick
    /// shutdown signal and SIGKILL after 15 s, then removes the temporary directory.
    pub fn stop(&mut self) {
        if self.children.is_empty() && self.dir.is_none() {
            return;
        }
        let names: Vec<&str> = self
            .children
            .iter()
            .rev()
            .map(|r| r.service.name())
            .collect();
        let names = names.join(", ");
        while let Some(mut running) = self.children.pop() {
            let pid = running.child.id() as libc::pid_t;
            // SAFETY: kill on the pid of a child we have not yet reaped.
            unsafe { libc::kill(pid, running.stop_signal) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(running.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(running.child.try_wait(), Ok(None)) {
                let _ = running.child.kill();
            }
            let _ = running.child.wait();
        }
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

fn redis_pings(port: u16) -> bool {
    use std::io::Write;
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

/// A Kafka-protocol broker at `brokers` returns metadata naming at least one broker.
pub async fn kafka_answers(brokers: &str) -> bool {
    crate::kafka::Admin::connect(brokers, Duration::from_secs(2))
        .await
        .is_ok_and(|(_, cluster)| cluster.brokers > 0)
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka's own
/// `random-uuid` prints (saves starting a JVM for it). Like Kafka's, it never starts with `-`,
/// which the storage tool's argument parser would read as an option (1 id in 64).
fn kafka_cluster_id() -> String {
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
fn kafka_properties(port: u16, controller: u16, data: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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

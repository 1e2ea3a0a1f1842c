//! `idembench services up|down|status`: the long-lived Redis, PostgreSQL and Kafka that the
//! tool's default addresses name (127.0.0.1:6379, :5432, :9092), started by the same code a
//! run's own stack uses — each service's configuration exists once — but in fixed directories
//! and left running, with pid files, until `down`. `scripts/services` only installs (apt-get,
//! Kafka's jars from Maven Central) and calls this.
//!
//! - Redis and Kafka keep their files under `$IDEMBENCH_HOME/services` (default
//!   `~/.cache/idembench/services`); PostgreSQL under `$IDEMBENCH_PG_DIR` (default
//!   `/var/lib/idembench`), since the `postgres` OS user cannot enter `/root`.
//! - A service that already answers at its address is used as it is and never stopped by
//!   `down`; `down` stops only what `up` started (by its pid file).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Service, Stack, StackError, answers, programs};
use crate::config::{Connections, Origin, StackInfo, StackMode};
use crate::redact::redact_url;

/// Where long-lived services keep their files.
#[derive(Clone, Debug)]
pub struct Home {
    /// Redis and Kafka: `redis/` and `kafka/` beneath it.
    pub services: PathBuf,
    /// PostgreSQL: `postgres/` beneath it.
    pub postgres: PathBuf,
}

impl Home {
    /// `$IDEMBENCH_HOME/services` and `$IDEMBENCH_PG_DIR` (or their defaults).
    pub fn from_environment() -> Home {
        let home = std::env::var_os("IDEMBENCH_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/idembench")))
            .unwrap_or_else(|| PathBuf::from("/tmp/idembench"));
        let postgres = std::env::var_os("IDEMBENCH_PG_DIR")
            .map(|dir| {
                // The variable names the postgres directory itself (as scripts/services did).
                let dir = PathBuf::from(dir);
                dir.parent().map(PathBuf::from).unwrap_or(dir)
            })
            .unwrap_or_else(|| PathBuf::from("/var/lib/idembench"));
        Home {
            services: home.join("services"),
            postgres,
        }
    }

    /// The directory a service's own directory is made in.
    pub(super) fn root(&self, service: Service) -> PathBuf {
        match service {
            Service::Postgres => self.postgres.clone(),
            Service::Redis | Service::Kafka => self.services.clone(),
        }
    }

    pub(super) fn pid_file(&self, service: Service) -> PathBuf {
        self.root(service)
            .join(service.name())
            .join(format!("{}.pid", service.name()))
    }
}

/// The port of a service's default address.
pub(super) fn default_port(service: Service, connections: &Connections) -> u16 {
    let fallback = match service {
        Service::Kafka => 9092,
        Service::Redis => 6379,
        Service::Postgres => 5432,
    };
    match service {
        Service::Kafka => connections
            .kafka_brokers
            .split(',')
            .next()
            .and_then(|broker| broker.rsplit_once(':'))
            .and_then(|(_, port)| port.trim().parse().ok())
            .unwrap_or(fallback),
        Service::Redis => url_port(&connections.redis_url).unwrap_or(fallback),
        Service::Postgres => url_port(&connections.postgres_url).unwrap_or(fallback),
    }
}

fn url_port(url: &str) -> Option<u16> {
    url::Url::parse(url).ok()?.port()
}

const SERVICES: [Service; 3] = [Service::Redis, Service::Postgres, Service::Kafka];

fn address(service: Service, connections: &Connections) -> String {
    match service {
        Service::Kafka => connections.kafka_brokers.clone(),
        Service::Redis => connections.redis_url.clone(),
        Service::Postgres => connections.postgres_url.clone(),
    }
}

fn say(line: &str) {
    eprintln!("[services] {line}");
}

/// Starts every service that does not answer at its address; leaves them running.
pub async fn up(connections: Connections, home: Home) -> Result<(), StackError> {
    let mut stack = Stack {
        replication: None,
        info: StackInfo {
            mode: StackMode::Embedded,
            kafka: Origin::External,
            redis: Origin::External,
            postgres: Origin::External,
            kafka_version: None,
        },
        connections,
        children: super::control::Children::default(),
        adopted: Vec::new(),
        dir: None,
        home: Some(home),
        topology: super::Topology::default(),
        #[cfg(feature = "docker")]
        containers: Vec::new(),
        #[cfg(feature = "tansu")]
        tansu: None,
        quiet: false,
    };
    for service in SERVICES {
        let at = address(service, &stack.connections);
        if answers(service, &at) {
            say(&format!(
                "{:<8} already answers at {}; using it",
                service.name(),
                redact_url(&at)
            ));
            continue;
        }
        let programs = programs(service).map_err(|commands| {
            super::missing_error(StackMode::Embedded, &[(service, commands)])
        })?;
        stack.start_child(service, programs).await?;
    }
    let connections = &stack.connections;
    say(&format!(
        "all up: kafka {}, redis {}, postgres {}",
        connections.kafka_brokers,
        connections.redis_url,
        redact_url(&connections.postgres_url)
    ));
    Ok(())
}

/// The pid in `service`'s pid file, if that process is alive and runs the service's program
/// (a stale file whose pid was reused names something else).
pub(super) fn running_pid(home: &Home, service: Service) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(home.pid_file(service))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let program = match service {
        Service::Redis => "redis-server",
        Service::Postgres => "postgres",
        Service::Kafka => "java",
    };
    super::usage::runs(pid, program).then_some(pid)
}

/// Stops what `up` started (newest first), each with its quick shutdown signal, then SIGKILL
/// after 30 s.
pub fn down(home: &Home) -> Result<(), StackError> {
    for service in SERVICES.iter().rev() {
        let file = home.pid_file(*service);
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let _ = std::fs::remove_file(&file);
        let Ok(pid) = text.trim().parse::<libc::pid_t>() else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        say(&format!("stopping {}", service.name()));
        let signal = match service {
            // A fast shutdown: roll back open transactions, no wait for clients.
            Service::Postgres => libc::SIGINT,
            Service::Redis | Service::Kafka => libc::SIGTERM,
        };
        // SAFETY: kill with a pid read from our own pid file; at worst it names no process.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            say(&format!(
                "{} ignored its stop signal for 30 s; SIGKILL",
                service.name()
            ));
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    Ok(())
}

/// Says which services answer; true when all do.
pub fn status(connections: &Connections) -> bool {
    let mut all = true;
    for service in SERVICES {
        let at = address(service, connections);
        let up = answers(service, &at);
        all &= up;
        say(&format!(
            "{:<8} {:<5} {}",
            service.name(),
            if up { "up" } else { "down" },
            redact_url(&at)
        ));
    }
    all
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists. A zombie (our own exited child)
    // still "exists"; `up`'s children are reparented away once it exits.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// What `idembench services` does.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Action {
    /// Start every service that does not answer at its address, and leave it running.
    Up,
    /// Stop the services `up` started.
    Down,
    /// Say which services answer (exit 1 unless all do).
    Status,
}

//! Plain configuration: what a run is asked to do, where the services are, and the names a
//! run gives what it creates. Nothing here parses flags (that is `cli`) or touches a service;
//! `cli` resolves flags and scenario files into a [`RunConfig`], [`RunConfig::validate`] checks
//! it before anything is probed or started, and `run` carries it out.

pub mod names;
pub mod scenario;
pub mod stack;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use idembench_loadgen::StreamSpec;
use serde::{Deserialize, Serialize};

use crate::faults::FaultPlan;
use crate::processor::CommitMode;
use crate::redact::redact_url;
use crate::redis::RedisClientKind;
use crate::strategy::StrategyKind;
use crate::strategy::parts::OnInProgress;

pub use names::{RunNames, stamp};
pub use stack::{Origin, StackInfo, StackMode};
pub use validate::ConfigError;

/// Where the services are. Never serialized as is: URLs may hold passwords.
#[derive(Clone, Default)]
pub struct Connections {
    pub kafka_brokers: String,
    pub redis_url: String,
    pub postgres_url: String,
}

impl std::fmt::Debug for Connections {
    // Written by hand so a password in a URL cannot reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("kafka_brokers", &redact_url(&self.kafka_brokers))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("postgres_url", &redact_url(&self.postgres_url))
            .finish()
    }
}

/// What Ctrl-C does once production has stopped (`--on-interrupt`).
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
    Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum OnInterrupt {
    /// Wait (up to --drain-timeout-ms) until what was produced is processed; a second Ctrl-C
    /// abandons.
    Drain,
    /// Stop at once; unprocessed messages count as lost in the (partial) report.
    Abandon,
}

/// Which partition a trade's extra copy goes to (`--duplicate-partition`).
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
    Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePartition {
    /// The original's key and partition: one consumer sees both copies, in order.
    Same,
    /// The next partition: two consumers may hold copies of one trade at the same time.
    Next,
}

/// Everything a run needs. Serialized (with redacted URLs) as `config` in `result.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// The scenario this run belongs to, when it came from a scenario file, and its claim.
    pub scenario: Option<String>,
    pub claim: Option<String>,
    pub strategy: StrategyKind,
    pub redis_client: RedisClientKind,
    pub stream: StreamSpec,
    pub duplicate_partition: DuplicatePartition,
    /// Offered messages per second; 0 = as fast as the producer goes.
    pub rate: f64,
    /// Messages intended in the first this-many ms are warm-up: measured apart.
    pub warm_up_ms: u64,
    pub partitions: usize,
    pub replication_factor: i32,
    /// `min.insync.replicas` of the run's topic: replicas that must hold a write before the
    /// broker acknowledges it (the producer sends with `acks=all`).
    #[serde(default = "one_i32")]
    pub min_insync_replicas: i32,
    /// Kafka brokers the stack starts when it starts Kafka (`--kafka-nodes`; 3 or more form a
    /// 3-voter KRaft quorum). Addresses given by the user name their own cluster.
    #[serde(default = "one")]
    pub kafka_nodes: usize,
    /// What Redis the run expects (`--redis-topology`): the URL's scheme must say the same.
    #[serde(default)]
    pub redis_topology: crate::redis::RedisTopology,
    /// `--redis-maxmemory`: the memory limit of the Redis the stack starts (`64mb`, bytes
    /// without a unit), and what it does when full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_maxmemory: Option<String>,
    #[serde(default)]
    pub redis_maxmemory_policy: crate::redis::MaxmemoryPolicy,
    /// `--redis-persistence`: what the Redis the stack starts keeps on disk.
    #[serde(default)]
    pub redis_persistence: crate::redis::RedisPersistence,
    /// `--redis-replication-lag-ms`: behind Sentinels, the replica's link runs this late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_replication_lag_ms: Option<u64>,
    pub workers: usize,
    pub commit_mode: CommitMode,
    pub commit_interval_ms: u64,
    pub on_in_progress: OnInProgress,
    pub batch_size: usize,
    /// Units a worker runs at once, one per Kafka key (`--in-flight`; results written before
    /// it existed ran 1).
    #[serde(default = "one")]
    pub in_flight: usize,
    /// `--processor-threads`: the in-process processor's own current-thread runtimes (0, and
    /// in results written before it existed: the process's shared runtime).
    #[serde(default)]
    pub processor_threads: usize,
    /// kafka-transactions: how long a transaction stays open gathering messages
    /// (`--transaction-interval-ms`; 0, and in results written before it existed: never waits).
    #[serde(default)]
    pub transaction_interval_ms: u64,
    /// Processor OS processes in the group (0: one processor inside this process).
    pub processes: usize,
    /// How long the group waits for a silent member (a killed process) before rebalancing.
    pub session_timeout_ms: u64,
    /// Crashes to inject (`faults.plan` in result.json).
    pub crash_plan: FaultPlan,
    pub processing_ttl_ms: u64,
    pub done_ttl_ms: u64,
    /// `--no-business-write`: the business transaction is an in-memory record (see
    /// [`crate::db::memory::MemoryEffects`]).
    #[serde(default)]
    pub no_business_write: bool,
    /// `--redis-pipeline`: a two-step claim's GET and SET NX PX went in one round trip.
    #[serde(default)]
    pub redis_pipeline: bool,
    /// `--redis-wait-replicas`: `WAIT` for this many replicas after every Redis write (0: no
    /// `WAIT`), each waiting at most `redis_wait_timeout_ms`.
    #[serde(default)]
    pub redis_wait_replicas: u32,
    #[serde(default = "wait_timeout")]
    pub redis_wait_timeout_ms: u64,
    pub unique_constraint: bool,
    pub redis_connections: usize,
    pub postgres_connections: u32,
    pub linger_ms: u32,
    pub connect_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub on_interrupt: OnInterrupt,
    pub keep_state: bool,
    pub quiet: bool,
    #[serde(skip)]
    pub connections: Connections,
    /// Where result.json goes; `None` means `reports/runs/<run id>`.
    #[serde(skip)]
    pub out: Option<PathBuf>,
    /// The command line, recorded so the report can say how to reproduce it.
    #[serde(skip)]
    pub command: String,
    /// The `idembench` binary that `--processes` starts; `None` means this executable.
    #[serde(skip)]
    pub processor_exe: Option<PathBuf>,
    /// Where the services came from (`--stack`), when the command provisioned them; reported
    /// in `environment.stack`.
    #[serde(skip)]
    pub stack: Option<StackInfo>,
    /// The processes of the stack that started the services (absent for servers the run did
    /// not start): what the service faults kill and restart, and what the run's cost figures
    /// read from /proc.
    #[serde(skip)]
    pub services: Option<std::sync::Arc<dyn crate::faults::control::ServiceControl>>,
}

fn one() -> usize {
    1
}

fn one_i32() -> i32 {
    1
}

impl RunConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

fn wait_timeout() -> u64 {
    1000
}

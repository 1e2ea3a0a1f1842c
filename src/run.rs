//! One run, start to finish:
//!
//! 1. reach Kafka, Redis (if the strategy uses it) and Postgres, each within the connect timeout;
//! 2. create the run's own topic, Postgres schema (migrated) and Redis key prefix;
//! 3. start the processor and wait until the group has assigned it its partitions;
//! 4. produce the seeded stream open-loop, recording the ledger;
//! 5. wait until the processor has done every produced offset (or the drain timeout, or Ctrl-C);
//! 6. stop the processor, audit the ledger against Postgres, build the [`RunResult`];
//! 7. remove the run's topic, schema and keys unless asked to keep them.
//!
//! An interrupted or undrained run still audits and reports what it measured, marked partial.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idembench_loadgen::{CopyRouting, SendSettings, StreamSpec};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, ProcessorCounts};
use crate::db::{Db, DbError, DbSettings};
use crate::faults::{CrashPlan, Faults};
use crate::fleet::Fleet;
use crate::kafka::{self, Admin, KafkaSetupError};
use crate::member::MemberSpec;
use crate::oracle::{self, OracleReport, RunShape};
use crate::processor::{
    CommitMode, Processor, ProcessorError, ProcessorReport, ProcessorSettings, Progress,
};
use crate::redact::redact_url;
use crate::redis::{self as redis_seam, RedisClientKind, RedisError, RedisSettings};
use crate::result::{
    Clients, FaultsReport, KafkaService, Latencies, Percentiles, ProcessorStats, Resources,
    RunResult, SCHEMA_VERSION, SeriesPoint, ServiceVersion, Services, Stages, Status, Throughput,
};
use crate::strategy::parts::OnInProgress;
use crate::strategy::{self, StrategyKind};

/// Where the services are. Never serialized as is: URLs may hold passwords.
#[derive(Clone)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInterrupt {
    /// Wait (up to --drain-timeout-ms) until what was produced is processed; a second Ctrl-C
    /// abandons.
    Drain,
    /// Stop at once; unprocessed messages count as lost in the (partial) report.
    Abandon,
}

/// Cancelled by a second Ctrl-C: abandon even a draining run. Process-wide, like the signal.
pub fn abandon_token() -> &'static CancellationToken {
    static ABANDON: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    ABANDON.get_or_init(CancellationToken::new)
}

/// Which partition a trade's extra copy goes to (`--duplicate-partition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePartition {
    /// The original's key and partition: one consumer sees both copies, in order.
    Same,
    /// The next partition: two consumers may hold copies of one trade at the same time.
    Next,
}

/// Everything a run needs. Serialized (with redacted URLs) as `config` in `result.json`.
#[derive(Clone, Debug, Serialize)]
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
    pub workers: usize,
    pub commit_mode: CommitMode,
    pub commit_interval_ms: u64,
    pub on_in_progress: OnInProgress,
    pub batch_size: usize,
    /// Units a worker runs at once, one per Kafka key (`--in-flight`).
    pub in_flight: usize,
    /// Processor OS processes in the group (0: one processor inside this process).
    pub processes: usize,
    /// How long the group waits for a silent member (a killed process) before rebalancing.
    pub session_timeout_ms: u64,
    /// Crashes to inject (`faults.plan` in result.json).
    pub crash_plan: CrashPlan,
    pub processing_ttl_ms: u64,
    pub done_ttl_ms: u64,
    /// `--no-business-write`: the business transaction is an in-memory record (see
    /// [`crate::strategy::parts::MemoryEffects`]).
    #[serde(default)]
    pub no_business_write: bool,
    /// `--redis-pipeline`: a two-step claim's GET and SET NX PX went in one round trip.
    pub redis_pipeline: bool,
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
    pub stack: Option<crate::stack::StackInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("{error}\n  hint: {hint}")]
    Service { error: String, hint: String },
    #[error("the processor failed: {0}")]
    Processor(#[from] ProcessorError),
    #[error("{0}")]
    Processes(String),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("cannot write the report: {0}")]
    Report(#[from] std::io::Error),
}

impl RunError {
    /// The process exit code for this error (see the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => 2,
            _ => 3,
        }
    }
}

/// A UTC time as run ids and default output directories name it: `20261128t165232z`.
pub fn stamp(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
        .to_lowercase()
}

const SERVICES_HINT: &str = "start the local services with `scripts/services up` (or leave the address at its default: `--stack auto` then starts its own)";

fn kafka_error(error: KafkaSetupError) -> RunError {
    RunError::Service {
        error: error.to_string(),
        hint: format!(
            "{SERVICES_HINT}, or point --kafka-brokers (IDEMBENCH_KAFKA_BROKERS) at a reachable cluster"
        ),
    }
}

fn redis_error(error: RedisError) -> RunError {
    RunError::Service {
        error: error.to_string(),
        hint: format!(
            "{SERVICES_HINT}, or point --redis-url (IDEMBENCH_REDIS_URL) at a reachable Redis"
        ),
    }
}

fn db_error(error: DbError) -> RunError {
    RunError::Service {
        error: error.to_string(),
        hint: format!(
            "{SERVICES_HINT}, or point --postgres-url (IDEMBENCH_POSTGRES_URL) at a reachable Postgres"
        ),
    }
}

/// A finished run: its result and where it was written.
pub struct RunOutcome {
    pub result: RunResult,
    pub dir: PathBuf,
}

impl RunConfig {
    fn validate(&self) -> Result<(), RunError> {
        self.stream
            .validate()
            .map_err(|e| RunError::Config(e.to_string()))?;
        let fail = |message: &str| Err(RunError::Config(message.to_string()));
        if self.no_business_write {
            if !matches!(
                self.strategy,
                StrategyKind::RedisOnly | StrategyKind::RedisOnlyAtomic | StrategyKind::None
            ) {
                return fail(
                    "--no-business-write isolates Redis's idempotency cost: use it with --strategy redis-only, redis-only-atomic or none (the other strategies' idempotency is the database write)",
                );
            }
            if self.processes > 0 {
                return fail(
                    "--no-business-write keeps the effects in this process's memory: it cannot be combined with --processes",
                );
            }
            if self.crash_plan.db_outage_at_ms.is_some() || !self.crash_plan.slow_trades.is_empty()
            {
                return fail(
                    "--no-business-write has no database transaction to cut or slow: drop --db-outage-at-ms / --slow-trades",
                );
            }
        }
        if self.redis_pipeline && !self.strategy.claims_in_two_steps() {
            return fail(
                "--redis-pipeline pipelines the GET and SET NX PX of a two-step claim: use it with --strategy redis-only, dual-db-first or dual-redis-first (redis-only-atomic already claims in one command)",
            );
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return fail(
                "--rate must be 0 (unthrottled) or a positive number of messages per second",
            );
        }
        if self.warm_up_ms > 0 && self.rate == 0.0 {
            return fail(
                "--warm-up-ms needs an offered --rate: without a schedule there is no intended send time to cut at",
            );
        }
        if self.partitions == 0 || self.partitions > 10_000 {
            return fail("--partitions must be between 1 and 10000");
        }
        if self.workers == 0 {
            return fail("--workers must be at least 1");
        }
        if self.processing_ttl_ms == 0 || self.done_ttl_ms == 0 {
            return fail("--processing-ttl-ms and --done-ttl-ms must be positive");
        }
        let crashes = &self.crash_plan;
        if !(0.0..=1.0).contains(&crashes.rate) {
            return fail("--crash-rate must be between 0.0 and 1.0");
        }
        if crashes.points.is_empty() && (crashes.rate > 0.0 || !crashes.trade_ids.is_empty()) {
            return fail(
                "--crash-rate and --crash-trades need --crash-at POINT[,POINT] (after-receive, after-claim, after-db-commit, after-redis-done, before-offset-commit)",
            );
        }
        let kills = !crashes.kill_at_ms.is_empty() || crashes.kill_every_ms.is_some();
        if self.processes == 0 && kills {
            return fail(
                "--kill-at-ms and --kill-every-ms kill processor processes: add --processes N (N ≥ 1; 2 or more for a rebalance onto survivors)",
            );
        }
        if self.processes > 0 && !crashes.points.is_empty() {
            return fail(
                "--crash-at crashes a processor inside this process; with --processes use --kill-at-ms or --kill-every-ms (SIGKILL)",
            );
        }
        if crashes.slow_trades.is_empty() != (crashes.slow_ms == 0) {
            return fail(
                "--slow-trades and --slow-ms go together: which trades, and how much slower (ms)",
            );
        }
        if crashes.kill_every_ms == Some(0) {
            return fail("--kill-every-ms must be positive");
        }
        if self.session_timeout_ms < 1_000 {
            return fail(
                "--session-timeout-ms must be at least 1000 (brokers refuse less than group.min.session.timeout.ms, 6000 by default)",
            );
        }
        if self.batch_size == 0 {
            return fail("--batch-size must be at least 1");
        }
        if self.batch_size > 1 && !self.strategy.batches() {
            return Err(RunError::Config(format!(
                "--batch-size {} does not apply to {}: only db-only, db-authority-redis-cache and db-offsets batch their transactions",
                self.batch_size,
                self.strategy.name()
            )));
        }
        if self.in_flight == 0 {
            return fail("--in-flight must be at least 1");
        }
        if self.in_flight > 1 && self.strategy == StrategyKind::DbOffsets {
            return fail(
                "--in-flight above 1 does not apply to db-offsets: it stores each partition's next offset in the business transaction, so its messages must finish in offset order",
            );
        }
        if self.redis_connections == 0 || self.postgres_connections == 0 {
            return fail("--redis-connections and --postgres-connections must be at least 1");
        }
        if let Some(out) = &self.out
            && out.join("result.json").exists()
        {
            return Err(RunError::Config(format!(
                "{} already holds a result.json; runs never overwrite each other — pass another --out",
                out.display()
            )));
        }
        Ok(())
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Names derived from the run id, unique per run on shared services.
struct RunNames {
    run_id: String,
    topic: String,
    group: String,
    schema: String,
    key_prefix: String,
}

impl RunNames {
    fn new(config: &RunConfig) -> RunNames {
        let stamp = stamp(std::time::SystemTime::now());
        let suffix: u16 = rand::random();
        // The Redis client is part of the name only where the strategy uses Redis.
        let run_id = if config.strategy.uses_redis() {
            format!(
                "{stamp}-{}-{}-{suffix:04x}",
                config.strategy.name(),
                config.redis_client.name()
            )
        } else {
            format!("{stamp}-{}-{suffix:04x}", config.strategy.name())
        };
        let snake = run_id.replace('-', "_");
        RunNames {
            topic: format!("idembench.{run_id}"),
            group: format!("idembench.{run_id}"),
            schema: format!("run_{snake}"),
            key_prefix: format!("idembench:{run_id}:trade:"),
            run_id,
        }
    }
}

/// Runs one benchmark. `cancel` (Ctrl-C) ends it early with a partial report.
pub async fn execute(config: RunConfig, cancel: CancellationToken) -> Result<RunOutcome, RunError> {
    config.validate()?;
    let usage_at_start = (
        crate::environment::Usage::this_process(),
        crate::environment::Usage::children(),
    );
    let names = RunNames::new(&config);
    let timeout = config.connect_timeout();
    let connections = &config.connections;
    let say = |line: String| {
        if !config.quiet {
            eprintln!("[idembench] {line}");
        }
    };

    // 1. Reach every service first, concurrently, so a missing one fails fast and by name.
    let db_settings = DbSettings {
        url: connections.postgres_url.clone(),
        connections: config.postgres_connections,
        connect_timeout: timeout,
    };
    let redis_settings = RedisSettings {
        url: connections.redis_url.clone(),
        connections: config.redis_connections,
        connect_timeout: timeout,
        command_timeout: Duration::from_secs(2),
    };
    let uses_redis = config.strategy.uses_redis();
    let (kafka, db, redis) = tokio::join!(
        Admin::connect(&connections.kafka_brokers, timeout),
        Db::connect(&db_settings, &names.schema),
        async {
            if uses_redis {
                redis_seam::connect(config.redis_client, &redis_settings)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        },
    );
    let (admin, cluster) = kafka.map_err(kafka_error)?;
    let db = db.map_err(db_error)?;
    let redis = redis.map_err(redis_error)?;
    let postgres_version = db.server_version().await.map_err(db_error)?;
    let redis_version = match &redis {
        Some(_) => Some(
            redis_server_version(&connections.redis_url, timeout)
                .await
                .map_err(redis_error)?,
        ),
        None => None,
    };
    say(format!(
        "run {} — kafka {} ({} broker(s)), postgres {}, redis {}",
        names.run_id,
        redact_url(&connections.kafka_brokers),
        cluster.brokers,
        postgres_version,
        redis_version.as_deref().unwrap_or("unused")
    ));

    // 2. The run's own topic, schema and keys.
    admin
        .create_topic(&names.topic, config.partitions, config.replication_factor)
        .await
        .map_err(kafka_error)?;
    db.prepare(config.unique_constraint).await?;

    let outcome = measure(&config, &names, &db, redis.clone(), cancel, usage_at_start).await;

    // 7. Clean up whatever happened above.
    if !config.keep_state {
        if let Err(error) = admin.delete_topic(&names.topic).await {
            tracing::warn!(%error, "could not delete the run's topic");
        }
        if let Err(error) = db.drop_schema().await {
            tracing::warn!(%error, "could not drop the run's schema");
        }
        if redis.is_some()
            && let Err(error) =
                delete_keys(&connections.redis_url, &names.key_prefix, timeout).await
        {
            tracing::warn!(%error, "could not delete the run's Redis keys");
        }
    } else {
        say(format!(
            "kept topic {}, schema {} and keys {}*",
            names.topic, names.schema, names.key_prefix
        ));
    }
    db.close().await;

    let mut measured = outcome?;
    measured.result.services = Services {
        kafka: KafkaService {
            brokers: redact_url(&connections.kafka_brokers),
            broker_count: cluster.brokers,
            topic: names.topic.clone(),
            partitions: config.partitions,
        },
        redis: redis_version.map(|version| ServiceVersion {
            url: redact_url(&connections.redis_url),
            version,
        }),
        postgres: ServiceVersion {
            url: redact_url(&connections.postgres_url),
            version: postgres_version,
        },
    };
    measured.result.clients.librdkafka = cluster.librdkafka_version;

    let dir = match &config.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from("reports/runs").join(&names.run_id),
    };
    std::fs::create_dir_all(&dir)?;
    measured.result.write(&dir)?;
    // One percentile distribution per histogram that saw values, in ms as HdrHistogram expects.
    for (name, histogram) in measured.histograms.iter().filter(|(_, h)| !h.is_empty()) {
        std::fs::write(
            dir.join(format!("{name}.hgrm")),
            crate::hgrm::percentile_distribution(histogram, 1000.0),
        )?;
    }
    // The reports render from the result.json just written, as `idembench report` would.
    let views = crate::report::load(&dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    let views: Vec<_> = views.into_iter().map(|(_, view)| view).collect();
    crate::report::write(&dir, &views, None)?;
    Ok(RunOutcome {
        result: measured.result,
        dir,
    })
}

struct Measured {
    result: RunResult,
    histograms: Vec<(&'static str, hdrhistogram::Histogram<u64>)>,
}

/// Steps 3–6: everything between a prepared environment and an audited result.
async fn measure(
    config: &RunConfig,
    names: &RunNames,
    db: &Db,
    redis: Option<Arc<dyn redis_seam::RedisOps>>,
    cancel: CancellationToken,
    usage_at_start: (crate::environment::Usage, crate::environment::Usage),
) -> Result<Measured, RunError> {
    let timeout = config.connect_timeout();
    let faults = Arc::new(Faults::new(config.crash_plan.clone()));
    let mut spec = MemberSpec {
        strategy: config.strategy,
        redis_client: config.redis_client,
        processor: ProcessorSettings {
            brokers: config.connections.kafka_brokers.clone(),
            topic: names.topic.clone(),
            group_id: names.group.clone(),
            partitions: config.partitions,
            workers: config.workers,
            commit_mode: config.commit_mode,
            commit_interval: Duration::from_millis(config.commit_interval_ms.max(1)),
            batch_size: config.batch_size,
            in_flight: config.in_flight,
            queue_depth: 1024,
            close_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_millis(config.session_timeout_ms),
        },
        processing_ttl_ms: config.processing_ttl_ms,
        done_ttl_ms: config.done_ttl_ms,
        key_prefix: names.key_prefix.clone(),
        on_in_progress: config.on_in_progress,
        redis_pipeline: config.redis_pipeline,
        schema: names.schema.clone(),
        redis_url: config.connections.redis_url.clone(),
        postgres_url: config.connections.postgres_url.clone(),
        redis_connections: config.redis_connections,
        postgres_connections: config.postgres_connections,
        connect_timeout_ms: config.connect_timeout_ms,
        slow_trades: config.crash_plan.slow_trades.clone(),
        slow_ms: config.crash_plan.slow_ms,
    };
    // A Postgres outage needs the processor's connections to run through a relay it can cut;
    // the audit keeps its direct connection.
    let relay = match config.crash_plan.db_outage_at_ms {
        None => None,
        Some(_) => {
            let upstream = crate::outage::address_of(&config.connections.postgres_url)
                .map_err(RunError::Config)?;
            let relay = crate::outage::Relay::start(upstream)
                .await
                .map_err(|e| RunError::Processes(format!("cannot start the outage relay: {e}")))?;
            spec.postgres_url =
                crate::outage::reroute(&config.connections.postgres_url, relay.local_addr())
                    .map_err(RunError::Config)?;
            Some(Arc::new(relay))
        }
    };
    let processor_db = match relay {
        Some(_) => Db::connect(&spec.db_settings(), &names.schema)
            .await
            .map_err(db_error)?,
        None => db.clone(),
    };
    let memory = config
        .no_business_write
        .then(|| Arc::new(strategy::parts::MemoryEffects::default()));
    let strategy = strategy::build(
        config.strategy,
        spec.strategy_settings(faults.clone()),
        processor_db.clone(),
        redis.clone(),
        memory.clone(),
    );

    // 3. The producer connects (and, being idempotent, obtains its producer id) and the
    // processor joins its group before the first message is sent, so neither start-up cost is
    // charged to the first messages' latency.
    let producer = kafka::producer(&config.connections.kafka_brokers, config.linger_ms, timeout)
        .map_err(kafka_error)?;
    let warm_up = kafka::warm_up(&producer, &names.topic, timeout);
    let progress = Arc::new(Progress::new(config.partitions));
    let mut consumers = if config.processes == 0 {
        Consumers::InProcess(Processor::start(
            &spec.processor,
            strategy.clone(),
            progress.clone(),
            faults.clone(),
        )?)
    } else {
        let exe = match &config.processor_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().map_err(|e| {
                RunError::Processes(format!("cannot find the idembench executable: {e}"))
            })?,
        };
        Consumers::Processes(Box::new(
            Fleet::start(exe, &spec, config.processes)
                .await
                .map_err(RunError::Processes)?,
        ))
    };
    warm_up.await.map_err(kafka_error)?;
    let assigned = match &mut consumers {
        Consumers::InProcess(processor) => {
            processor.wait_for_assignment(Duration::from_secs(30)).await
        }
        Consumers::Processes(fleet) => fleet
            .wait_for_assignment(Duration::from_secs(30))
            .await
            .map_err(RunError::Processes)?,
    };
    if !assigned {
        consumers.stop().await;
        return Err(RunError::Service {
            error: format!(
                "the consumer group {} got no partitions within 30 s",
                names.group
            ),
            hint: "check the broker's log; a group coordinator must be available".into(),
        });
    }

    // 4. Produce in the background, while processors consume.
    let plan = config
        .stream
        .plan()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let planned = plan.planned_messages();
    let late_duplicated = plan
        .extra
        .iter()
        .filter(|c| **c == idembench_loadgen::ExtraCopy::Late)
        .count() as u64;
    // Slow trades with a late / an immediate extra copy.
    let slow_copies = config
        .crash_plan
        .slow_trades
        .iter()
        .filter_map(|id| plan.extra.get(usize::try_from(*id).ok()?.checked_sub(1)?))
        .fold((0, 0), |(late, immediate), copy| match copy {
            idembench_loadgen::ExtraCopy::Late => (late + 1, immediate),
            idembench_loadgen::ExtraCopy::Immediate => (late, immediate + 1),
            idembench_loadgen::ExtraCopy::None => (late, immediate),
        });
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let send = SendSettings {
        topic: names.topic.clone(),
        rate: config.rate,
        acked: Some(acked.clone()),
        unkeyed: false,
        copies: match config.duplicate_partition {
            DuplicatePartition::Same => CopyRouting::SameKey,
            DuplicatePartition::Next => CopyRouting::NextPartition {
                partitions: config.partitions as i32,
            },
        },
    };
    let produce_cancel = cancel.child_token();
    let run_started = Instant::now();
    let series = Arc::new(std::sync::Mutex::new(Vec::new()));
    let p99_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = Ticker {
        quiet: config.quiet,
        progress: progress.clone(),
        acked: acked.clone(),
        series: series.clone(),
        faults: faults.clone(),
        p99_us: p99_us.clone(),
        planned,
        rate: config.rate,
    }
    .spawn();
    let mut p99_read = Instant::now();
    let wipe = config
        .crash_plan
        .redis_wipe_at_ms
        .filter(|_| redis.is_some())
        .map(|at_ms| {
            let (url, prefix, faults) = (
                config.connections.redis_url.clone(),
                names.key_prefix.clone(),
                faults.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(at_ms)).await;
                faults.record("redis-wipe");
                match delete_keys(&url, &prefix, timeout).await {
                    Ok(deleted) => tracing::info!(deleted, "injected Redis wipe"),
                    Err(error) => tracing::warn!(%error, "the injected Redis wipe failed"),
                }
            })
        });
    let outage = relay
        .clone()
        .zip(config.crash_plan.db_outage_at_ms)
        .map(|(relay, at_ms)| {
            let (faults, lasting) = (
                faults.clone(),
                Duration::from_millis(config.crash_plan.db_outage_ms),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(at_ms)).await;
                faults.record("db-outage");
                relay.cut();
                tokio::time::sleep(lasting).await;
                relay.restore();
            })
        });
    if config.warm_up_ms > 0 {
        let until = idembench_loadgen::producer::now_us() + config.warm_up_ms * 1000;
        progress.set_warm_up_until(until);
        if let Consumers::Processes(fleet) = &mut consumers {
            fleet.set_warm_up_until(until).await;
        }
    }
    let mut production = Some(tokio::spawn({
        let (spec, cancel) = (config.stream.clone(), produce_cancel.clone());
        async move { idembench_loadgen::produce(&producer.producer, &send, &spec, &plan, &cancel).await }
    }));

    // 5. Supervise: replace a crashed processor (or a killed process) after the restart delay;
    // stop when every produced offset is processed and committed (a crash replays what was
    // not), or on Ctrl-C, or when the drain times out.
    let mut produced = None;
    let mut partial_reason = None;
    let mut drain_deadline = None;
    let mut earlier = ProcessorReport::default();
    let restart_delay = faults.plan().restart_delay();
    let mut kills = KillSchedule::new(faults.plan(), run_started);
    let mut respawns: Vec<Instant> = Vec::new();
    let mut offsets_read = Instant::now();
    loop {
        if production.as_ref().is_some_and(|task| task.is_finished()) {
            let report = production
                .take()
                .expect("checked above")
                .await
                .expect("producer task panicked");
            let report = report.map_err(|e| RunError::Config(e.to_string()))?;
            if report.cancelled {
                partial_reason = Some(match config.on_interrupt {
                    OnInterrupt::Drain => {
                        "interrupted while producing (Ctrl-C): production stopped early; what was produced was drained".to_string()
                    }
                    OnInterrupt::Abandon => "interrupted while producing (Ctrl-C)".to_string(),
                });
            }
            drain_deadline = Some(Instant::now() + Duration::from_millis(config.drain_timeout_ms));
            produced = Some(report);
        }
        match &mut consumers {
            Consumers::InProcess(processor) => {
                // Only the progress line reads it: no snapshot for a quiet run.
                if !config.quiet && p99_read.elapsed() >= Duration::from_secs(1) {
                    p99_read = Instant::now();
                    let e2e = processor.snapshot().end_to_end_from_intended_us;
                    if !e2e.is_empty() {
                        p99_us.store(
                            e2e.value_at_quantile(0.99),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                }
                if processor.failed().is_cancelled() {
                    produce_cancel.cancel();
                    ticker.abort();
                    let Consumers::InProcess(processor) = consumers else {
                        unreachable!()
                    };
                    return Err(processor
                        .stop()
                        .await
                        .err()
                        .map(RunError::from)
                        .unwrap_or_else(|| RunError::Config("processor failed".into())));
                }
                if processor.crashed().is_cancelled() {
                    let Consumers::InProcess(crashed) = consumers else {
                        unreachable!()
                    };
                    earlier.add(crashed.stop().await?);
                    tokio::select! {
                        _ = tokio::time::sleep(restart_delay) => {}
                        _ = cancel.cancelled() => {}
                    }
                    let processor = Processor::start(
                        &spec.processor,
                        strategy.clone(),
                        progress.clone(),
                        faults.clone(),
                    )?;
                    if !processor.wait_for_assignment(Duration::from_secs(30)).await {
                        tracing::warn!("the restarted processor got no partitions within 30 s");
                    }
                    consumers = Consumers::InProcess(processor);
                    continue;
                }
            }
            Consumers::Processes(fleet) => {
                if let Err(error) = fleet.check() {
                    produce_cancel.cancel();
                    ticker.abort();
                    consumers.stop().await;
                    return Err(RunError::Processes(error));
                }
                if kills.due(produced.is_none()) {
                    faults.record("process-kill");
                    if let Some(member) = fleet.kill_one().await {
                        say(
                            config,
                            format!("killed processor process {member} (SIGKILL)"),
                        );
                        respawns.push(Instant::now() + restart_delay);
                    }
                }
                if let Some(due) = respawns.iter().position(|at| *at <= Instant::now()) {
                    respawns.swap_remove(due);
                    fleet.spawn().await.map_err(RunError::Processes)?;
                }
                if offsets_read.elapsed() >= Duration::from_millis(200) {
                    offsets_read = Instant::now();
                    if let Err(error) = fleet.observe_committed(&progress).await {
                        tracing::warn!(%error);
                    }
                }
            }
        }
        if let Some(report) = &produced {
            if progress.caught_up(&report.end_offsets) {
                break;
            }
            // Ctrl-C: `abandon` stops here; `drain` waits for what was produced, unless
            // Ctrl-C comes a second time.
            if cancel.is_cancelled()
                && (config.on_interrupt == OnInterrupt::Abandon || abandon_token().is_cancelled())
            {
                let unprocessed = progress.lag(&report.end_offsets);
                partial_reason = Some(format!(
                    "{}; abandoned with {unprocessed} messages unprocessed (counted as lost if never applied)",
                    partial_reason
                        .take()
                        .unwrap_or_else(|| "interrupted while draining (Ctrl-C)".into())
                ));
                break;
            }
            if drain_deadline.is_some_and(|deadline| Instant::now() > deadline) {
                partial_reason = Some(format!(
                    "the processor did not drain within {} ms; {} messages were still unprocessed",
                    config.drain_timeout_ms,
                    progress.lag(&report.end_offsets)
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let produced = produced.expect("the loop ends only after production");
    let process_seconds = run_started.elapsed().as_secs_f64();
    ticker.abort();
    if !config.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    // A last sample at the end, so the series covers the whole run.
    series.lock().expect("series lock").push(SeriesPoint {
        t_s: (process_seconds * 1000.0).round() / 1000.0,
        offered: offered(config.rate, process_seconds, planned),
        processed: progress.completed(),
        produced: acked.load(std::sync::atomic::Ordering::Relaxed),
        committed: progress.committed_total().max(0) as u64,
    });
    let lag_at_stop = progress.lag(&produced.end_offsets);

    // 6. Stop, audit, report.
    if let Some(wipe) = wipe {
        wipe.abort();
    }
    if let Some(outage) = outage {
        outage.abort();
    }
    let stopped = consumers.stop().await;
    earlier.add(stopped.report?);
    let report = earlier;
    let mut redis_counts = report.redis;
    if let Some(redis) = &redis {
        redis_counts.add(redis.counters().values());
    }
    let counts = report.metrics.counts;
    let observed = match &memory {
        Some(memory) => memory.observed(),
        None => audit::observe(db).await?,
    };
    let correctness = audit::reconcile(
        &produced.ledger,
        &observed,
        ProcessorCounts {
            caught_by_constraint: counts.caught_by_constraint,
            duplicates_suppressed: counts.duplicates_suppressed(),
        },
    );
    let metrics = &report.metrics;
    let mut histograms: Vec<(&'static str, hdrhistogram::Histogram<u64>)> = metrics
        .histograms()
        .into_iter()
        .map(|(name, h)| (name, h.clone()))
        .collect();
    histograms.push(("send_ack", produced.send_ack_us.clone()));
    histograms.push(("schedule_lag", produced.schedule_lag_us.clone()));
    let messages_produced = produced.ledger.copies_sent();
    let series = std::mem::take(&mut *series.lock().expect("series lock"));
    let copies_elsewhere =
        config.duplicate_partition == DuplicatePartition::Next && config.partitions > 1;
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        idembench_version: crate::versions::IDEMBENCH,
        run_id: names.run_id.clone(),
        status: if partial_reason.is_some() {
            Status::Partial
        } else {
            Status::Complete
        },
        partial_reason,
        strategy: config.strategy.name(),
        redis_client: if redis.is_some() {
            config.redis_client.name()
        } else {
            "none"
        },
        started_at: humantime::format_rfc3339_seconds(produced.started_at).to_string(),
        command: config.command.clone(),
        config: serde_json::to_value(config).expect("the configuration serializes"),
        // Filled in by the caller, which holds the connections.
        services: Services {
            kafka: KafkaService {
                brokers: String::new(),
                broker_count: 0,
                topic: String::new(),
                partitions: 0,
            },
            redis: None,
            postgres: ServiceVersion {
                url: String::new(),
                version: String::new(),
            },
        },
        clients: Clients {
            redis: redis.as_ref().map(|r| r.info()),
            redis_rs: crate::versions::REDIS_RS,
            fred: crate::versions::FRED,
            rdkafka: crate::versions::RDKAFKA,
            librdkafka: String::new(),
            sqlx: crate::versions::SQLX,
            hdrhistogram: crate::versions::HDRHISTOGRAM,
        },
        throughput: Throughput {
            messages_produced,
            messages_processed: counts.messages,
            produce_seconds: produced.elapsed.as_secs_f64(),
            process_seconds,
            produced_per_second: per_second(messages_produced, produced.elapsed.as_secs_f64()),
            processed_per_second: per_second(counts.messages, process_seconds),
            offered_rate: config.rate,
            after_warm_up_per_second: after_warm_up(&series, config.warm_up_ms),
            series,
        },
        latency_us: Latencies {
            end_to_end_from_intended: Percentiles::of(&metrics.end_to_end_from_intended_us),
            end_to_end_from_sent: Percentiles::of(&metrics.end_to_end_from_sent_us),
            stages: Stages {
                claim: Percentiles::of(&metrics.claim_us),
                business: Percentiles::of(&metrics.business_us),
                mark_done: Percentiles::of(&metrics.mark_done_us),
                offset_commit: Percentiles::of(&metrics.offset_commit_us),
            },
            warm_up: Percentiles::of(&metrics.warm_up_us),
            send_ack: Percentiles::of(&produced.send_ack_us),
            schedule_lag: Percentiles::of(&produced.schedule_lag_us),
            histograms: histograms
                .iter()
                .map(|(name, h)| (*name, crate::hgrm::encode(h)))
                .collect(),
        },
        oracle: OracleReport::compare(
            oracle::predict(
                &RunShape {
                    strategy: config.strategy,
                    unique_constraint: config.unique_constraint,
                    on_in_progress: config.on_in_progress,
                    // What a crash or a kill can cut: every unit in flight on every worker.
                    workers: config.workers * config.in_flight,
                    processing_ttl_ms: config.processing_ttl_ms,
                    done_ttl_ms: config.done_ttl_ms,
                    restart_delay_ms: config.crash_plan.restart_delay_ms,
                    duplicated_trades: produced.ledger.trades_with_extra_copies(),
                    late_duplicated_trades: late_duplicated,
                    late_delay_ms: config.stream.late_duplicate_delay_ms,
                    session_timeout_ms: config.session_timeout_ms,
                    slow_ms: config.crash_plan.slow_ms,
                    slow_late_copies: slow_copies.0,
                    slow_immediate_copies: slow_copies.1,
                    copies_elsewhere,
                    copies_concurrent: copies_elsewhere
                        && config.processes == 0
                        && config.workers >= config.partitions,
                    processes: config.processes,
                    unprocessed: lag_at_stop.max(0) as u64,
                },
                &faults.log(),
            ),
            correctness.lost,
            correctness.double_applied,
        ),
        correctness,
        faults: FaultsReport::new(&faults),
        processor: ProcessorStats {
            counts,
            redis_errors: redis_counts.errors,
            redis_timeouts: redis_counts.timeouts,
            redis_reconnects: redis_counts.reconnects,
            consumer_errors: report.consumer_errors,
            commit_errors: report.commit_errors,
            rebalances: report.rebalances,
            close_timed_out: report.close_timed_out,
            lag_at_stop,
            restarts: if stopped.processes > 0 {
                stopped.processes.saturating_sub(config.processes as u64)
            } else {
                report.incarnations.saturating_sub(1)
            },
            processes: stopped.processes,
            process_kills: faults
                .log()
                .iter()
                .filter(|event| event.kind == "process-kill")
                .count() as u64,
            killed_measurement_windows: stopped.killed_measurement_windows,
            stalled_ms: counts.stalled_us / 1000,
            redeliveries: counts
                .messages
                .saturating_sub(produced.ledger.copies_sent() + produced.ledger.malformed_acked),
        },
        environment: crate::environment::Environment::read().with_stack(config.stack.clone()),
        resources: Resources {
            this_process: crate::environment::Usage::this_process().since(usage_at_start.0),
            processor_processes: (stopped.processes > 0)
                .then(|| crate::environment::Usage::children().since(usage_at_start.1)),
        },
    };
    Ok(Measured { result, histograms })
}

/// The processors of a run: one inside this process, or a fleet of processor processes.
enum Consumers {
    InProcess(Processor),
    Processes(Box<Fleet>),
}

struct Stopped {
    report: Result<ProcessorReport, RunError>,
    /// Processor processes that ran (0 in-process).
    processes: u64,
    /// Killed processes whose last second of measurements died with them.
    killed_measurement_windows: u64,
}

impl Consumers {
    async fn stop(self) -> Stopped {
        match self {
            Consumers::InProcess(processor) => Stopped {
                report: processor.stop().await.map_err(RunError::from),
                processes: 0,
                killed_measurement_windows: 0,
            },
            Consumers::Processes(fleet) => {
                let fleet = fleet.stop().await;
                Stopped {
                    report: Ok(fleet.report),
                    processes: fleet.processes,
                    killed_measurement_windows: fleet.killed_measurement_windows,
                }
            }
        }
    }
}

/// When the next SIGKILL is due: each `kill_at_ms` once, and every `kill_every_ms` while
/// production runs.
struct KillSchedule {
    at: std::collections::VecDeque<Instant>,
    every: Option<Duration>,
    next_periodic: Option<Instant>,
}

impl KillSchedule {
    fn new(plan: &CrashPlan, started: Instant) -> KillSchedule {
        let mut at: Vec<u64> = plan.kill_at_ms.clone();
        at.sort_unstable();
        let every = plan.kill_every_ms.map(Duration::from_millis);
        KillSchedule {
            at: at
                .into_iter()
                .map(|ms| started + Duration::from_millis(ms))
                .collect(),
            every,
            next_periodic: every.map(|every| started + every),
        }
    }

    /// True (once) when a kill is due now.
    fn due(&mut self, producing: bool) -> bool {
        let now = Instant::now();
        if self.at.front().is_some_and(|at| *at <= now) {
            self.at.pop_front();
            return true;
        }
        match (self.next_periodic, self.every) {
            (Some(next), Some(every)) if producing && next <= now => {
                self.next_periodic = Some(next + every);
                true
            }
            _ => false,
        }
    }
}

fn say(config: &RunConfig, line: String) {
    if !config.quiet {
        eprintln!("[idembench] {line}");
    }
}

/// Committed messages per second from the end of the warm-up to the end of the run, from the
/// once-a-second series; `None` without a warm-up (or a run too short to have one).
fn after_warm_up(series: &[SeriesPoint], warm_up_ms: u64) -> Option<f64> {
    if warm_up_ms == 0 {
        return None;
    }
    let from = series
        .iter()
        .find(|p| p.t_s * 1000.0 >= warm_up_ms as f64)?;
    let to = series.last()?;
    (to.t_s > from.t_s).then(|| {
        per_second(
            to.committed.saturating_sub(from.committed),
            to.t_s - from.t_s,
        )
    })
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        (count as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// What the once-a-second ticker reads and where it writes the series.
struct Ticker {
    quiet: bool,
    progress: Arc<crate::processor::Progress>,
    acked: Arc<std::sync::atomic::AtomicU64>,
    series: Arc<std::sync::Mutex<Vec<SeriesPoint>>>,
    faults: Arc<Faults>,
    /// End-to-end p99 so far (µs), kept current by the supervision loop; 0 = not known.
    p99_us: Arc<std::sync::atomic::AtomicU64>,
    planned: u64,
    rate: f64,
}

/// Messages the open-loop schedule has due `t_s` seconds in (all of them when unthrottled).
fn offered(rate: f64, t_s: f64, planned: u64) -> u64 {
    if rate > 0.0 {
        ((rate * t_s) as u64).min(planned)
    } else {
        planned
    }
}

impl Ticker {
    /// Samples the run once a second into the series, and shows progress on stderr unless
    /// quiet: one line redrawn in place on a terminal, a plain line every 5 s otherwise.
    fn spawn(self) -> tokio::task::JoinHandle<()> {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering::Relaxed;
        let terminal = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            let mut previous: Option<SeriesPoint> = None;
            loop {
                interval.tick().await;
                let t_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                let point = SeriesPoint {
                    t_s,
                    offered: offered(self.rate, t_s, self.planned),
                    processed: self.progress.completed(),
                    produced: self.acked.load(Relaxed),
                    committed: self.progress.committed_total().max(0) as u64,
                };
                self.series.lock().expect("series lock").push(point);
                let rate = previous.map_or(0.0, |p| {
                    point.committed.saturating_sub(p.committed) as f64
                        / (point.t_s - p.t_s).max(1e-3)
                });
                previous = Some(point);
                let whole_seconds = point.t_s.round() as u64;
                if self.quiet || point.t_s < 0.5 || (!terminal && !whole_seconds.is_multiple_of(5))
                {
                    continue;
                }
                let p99 = match self.p99_us.load(Relaxed) {
                    0 => "-".to_string(),
                    us => crate::report::ms(us),
                };
                let line = format!(
                    "[idembench] {:>6.1}s  {:>7.0} msg/s  produced {:>8}  committed {:>8}/{}  lag {:>6}  p99 {:>9}  faults {}",
                    point.t_s,
                    rate,
                    point.produced,
                    point.committed,
                    self.planned,
                    point.produced.saturating_sub(point.committed),
                    p99,
                    self.faults.log().len(),
                );
                if terminal {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
            }
        })
    }
}

/// `INFO server` → `redis_version`, on a short-lived connection of the run's own.
async fn redis_server_version(url: &str, timeout: Duration) -> Result<String, RedisError> {
    let mut connection = admin_connection(url, timeout).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .map_err(|e| RedisError::Command {
            command: "INFO",
            cause: e.to_string(),
        })?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string())
}

/// Removes every key of the run (`SCAN MATCH prefix*` + `UNLINK`).
async fn delete_keys(url: &str, prefix: &str, timeout: Duration) -> Result<u64, RedisError> {
    let mut connection = admin_connection(url, timeout).await?;
    let command_error = |command| {
        move |e: redis::RedisError| RedisError::Command {
            command,
            cause: e.to_string(),
        }
    };
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(command_error("SCAN"))?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .map_err(command_error("UNLINK"))?;
            deleted += n;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
        }
    }
}

async fn admin_connection(
    url: &str,
    timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, RedisError> {
    let connect_error = |cause: String| RedisError::Connect {
        address: redact_url(url),
        cause,
    };
    let client = redis::Client::open(url).map_err(|e| connect_error(e.to_string()))?;
    tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| connect_error(format!("no answer within {timeout:?}")))?
        .map_err(|e| connect_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    fn run_id(flags: &[&str]) -> String {
        use clap::Parser;
        let args = ["idembench", "run"].iter().chain(flags);
        let crate::cli::Command::Run(run) = crate::cli::Cli::parse_from(args).command else {
            unreachable!("parsed a run")
        };
        super::RunNames::new(&run.into_config(String::new())).run_id
    }

    #[test]
    fn a_run_id_names_the_redis_client_only_where_the_strategy_uses_redis() {
        let id = run_id(&["--strategy", "redis-only", "--redis-client", "fred"]);
        assert!(id.contains("-redis-only-fred-"), "{id}");
        let id = run_id(&["--strategy", "db-only", "--redis-client", "fred"]);
        assert!(id.contains("-db-only-") && !id.contains("fred"), "{id}");
    }

    #[test]
    fn a_stamp_is_the_utc_second_without_separators() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_971_152);
        assert_eq!(super::stamp(at), "20261129t165232z");
    }
}

//! One run, start to finish, as named phases:
//!
//! 1. [`prepare`]: reach Kafka, Redis (if the strategy uses it) and Postgres, each within the
//!    connect timeout, and create the run's own topic, Postgres schema and Redis key prefix;
//! 2. [`start`]: build the strategy, connect the producer and start the processor (in this
//!    process, or as a fleet of processes), and wait until the group has its partitions;
//! 3. [`supervise`]: produce the seeded stream open-loop, inject the timed faults, replace a
//!    crashed or killed processor, until every produced offset is committed (or the drain
//!    timeout passes, or Ctrl-C);
//! 4. [`assemble`]: stop the processor, audit the ledger against the store, let the oracle
//!    predict from the fault log, and build the [`RunResult`];
//! 5. measure what the run's keys and tables occupy ([`storage`]), remove the run's topic,
//!    schema and keys unless asked to keep them, and write
//!    `result.json`, the `*.hgrm` files and the reports.
//!
//! An interrupted or undrained run still audits and reports what it measured, marked partial.

mod assemble;
mod consumers;
mod cost;
mod prepare;
mod sink;
mod start;
mod storage;
mod supervise;
mod ticker;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, RunConfig, RunNames};
use crate::db::DbError;
use crate::kafka::KafkaSetupError;
use crate::processor::ProcessorError;
use crate::redis::RedisError;
use crate::results::RunResult;
use crate::results::environment::Usage;

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

impl From<ConfigError> for RunError {
    fn from(error: ConfigError) -> RunError {
        RunError::Config(error.message)
    }
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

/// Cancelled by a second Ctrl-C: abandon even a draining run. Process-wide, like the signal.
pub fn abandon_token() -> &'static CancellationToken {
    static ABANDON: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    ABANDON.get_or_init(CancellationToken::new)
}

/// A finished run: its result and where it was written.
pub struct RunOutcome {
    pub result: RunResult,
    pub dir: PathBuf,
}

/// Runs one benchmark. `cancel` (Ctrl-C) ends it early with a partial report.
pub async fn execute(config: RunConfig, cancel: CancellationToken) -> Result<RunOutcome, RunError> {
    config.validate()?;
    if config.services.is_none()
        && let Some(fault) = config
            .crash_plan
            .schedule
            .iter()
            .find(|f| f.kind.needs_stack())
    {
        return Err(RunError::Config(format!(
            "{} kills and restarts a service: it needs the services started by this run's stack (run it with `idembench run --stack embedded`)",
            fault.kind.name()
        )));
    }
    let usage_at_start = (Usage::this_process(), Usage::children());
    let meter = cost::Meter::start(&config).await;
    let names = RunNames::new(&config);
    let mut reached = prepare::reach(&config, &names).await?;
    say(
        &config,
        format!("run {} — {}", names.run_id, reached.describe(&config)),
    );
    reached.create(&config, &names).await?;
    let storage_at_start = storage::at_start(&config, &reached).await;
    let mut measured = measure(&config, &names, &reached, cancel, usage_at_start).await;
    if let Ok(measured) = &mut measured {
        let messages = measured.result.throughput.messages_processed;
        meter
            .finish(&config, &mut measured.result.resources, messages)
            .await;
        measured.result.storage =
            Some(storage::measure(&config, &names, &reached, &storage_at_start).await);
    }
    reached.clean_up(&config, &names).await;
    let mut measured = measured?;
    measured.result.services = reached.services(&config, &names);
    if let Some(redis) = &mut measured.result.services.redis {
        redis.evicted_keys = measured.evicted_keys;
    }
    measured.result.clients.librdkafka = reached.cluster.librdkafka_version.clone();
    write(&config, &names, measured)
}

/// Steps 2–4: everything between a prepared environment and an audited result.
async fn measure(
    config: &RunConfig,
    names: &RunNames,
    reached: &prepare::Reached,
    cancel: CancellationToken,
    usage_at_start: (Usage, Usage),
) -> Result<assemble::Measured, RunError> {
    let (mut started, consumers) = start::start(config, names, reached).await?;
    let supervised = match supervise::supervise(config, &started, consumers, cancel).await {
        Ok(supervised) => supervised,
        Err(error) => {
            // The consumers are stopped; the sink must be too, before the schema goes.
            if let Some(sink) = started.sink.take() {
                sink.stop().await;
            }
            return Err(error);
        }
    };
    assemble::assemble(config, names, reached, started, supervised, usage_at_start).await
}

/// Writes `result.json`, one percentile distribution per histogram that saw values (in ms, as
/// HdrHistogram expects), and the reports, rendered from the result.json just written as
/// `idembench report` would.
fn write(
    config: &RunConfig,
    names: &RunNames,
    measured: assemble::Measured,
) -> Result<RunOutcome, RunError> {
    let dir = match &config.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from("reports/runs").join(&names.run_id),
    };
    std::fs::create_dir_all(&dir)?;
    measured.result.write(&dir)?;
    for (name, histogram) in measured.histograms.iter().filter(|(_, h)| !h.is_empty()) {
        std::fs::write(
            dir.join(format!("{name}.hgrm")),
            crate::hgrm::percentile_distribution(histogram, 1000.0),
        )?;
    }
    let written = crate::report::load(&dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    let results: Vec<RunResult> = written.into_iter().map(|(_, result)| result).collect();
    crate::report::write(&dir, &results, None)?;
    Ok(RunOutcome {
        result: measured.result,
        dir,
    })
}

/// Adds `why` to the reasons held in `reasons` (a run's failure, or why it is partial).
fn add_reason(reasons: &mut Option<String>, why: String) {
    *reasons = Some(match reasons.take() {
        Some(earlier) => format!("{earlier}; {why}"),
        None => why,
    });
}

fn say(config: &RunConfig, line: String) {
    if !config.quiet {
        eprintln!("[idembench] {line}");
    }
}

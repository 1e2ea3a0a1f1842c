//! One processor as an OS process of its own: `idembench process` (hidden), started by a run
//! with `--processes N`. Several of them form one consumer group, so a SIGKILL from the run
//! is a real process death and the broker, not idembench, rebalances the partitions.
//!
//! The protocol is JSON lines. On stdin the child reads one [`MemberSpec`] (it carries the
//! service URLs, so it never travels on a command line, where `ps` would show a password), then
//! waits; end of input means "stop": the child stops its processor (final offset commit, leave
//! the group) and exits. On stdout it writes [`MemberEvent`]s: its partition count whenever that
//! changes, a snapshot of its measurements every second (so a killed child loses at most the
//! last second of latencies; the audit, read from Postgres, loses nothing), and a final report.
//! Logs go to stderr.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::db::{Db, DbSettings};
use crate::faults::{CrashPoint, FaultPlan, Faults, Stop};
use crate::processor::{Processor, ProcessorReport, ProcessorSettings, Progress, WireReport};
use crate::redact::redact_url;
use crate::redis::{self as redis_seam, RedisClientKind, RedisSettings};
use crate::strategy::parts::OnInProgress;
use crate::strategy::{self, RetryPolicy, StrategyKind, StrategySettings};

/// Everything one processor needs, in-process or as a child process.
#[derive(Clone, Serialize, Deserialize)]
pub struct MemberSpec {
    pub strategy: StrategyKind,
    pub redis_client: RedisClientKind,
    pub processor: ProcessorSettings,
    pub processing_ttl_ms: u64,
    pub done_ttl_ms: u64,
    pub key_prefix: String,
    pub on_in_progress: OnInProgress,
    /// Pipeline a two-step claim's GET and SET NX PX (`--redis-pipeline`).
    #[serde(default)]
    pub redis_pipeline: bool,
    /// `--redis-wait-replicas` (0: none) and `--redis-wait-timeout-ms`.
    #[serde(default)]
    pub redis_wait_replicas: u32,
    #[serde(default)]
    pub redis_wait_timeout_ms: u64,
    /// The run's Postgres schema (already migrated by the run).
    pub schema: String,
    pub redis_url: String,
    pub postgres_url: String,
    pub redis_connections: usize,
    pub postgres_connections: u32,
    pub connect_timeout_ms: u64,
    /// Trades whose business transaction is `slow_ms` slower (an injected fault).
    pub slow_trades: Vec<u64>,
    pub slow_ms: u64,
}

impl std::fmt::Debug for MemberSpec {
    // By hand, so the URLs' passwords cannot reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberSpec")
            .field("strategy", &self.strategy)
            .field("redis_client", &self.redis_client)
            .field("schema", &self.schema)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("postgres_url", &redact_url(&self.postgres_url))
            .finish_non_exhaustive()
    }
}

impl MemberSpec {
    pub fn strategy_settings(&self, faults: Arc<Faults>) -> StrategySettings {
        StrategySettings {
            faults,
            processing_ttl: Duration::from_millis(self.processing_ttl_ms),
            done_ttl: Duration::from_millis(self.done_ttl_ms),
            key_prefix: self.key_prefix.clone(),
            on_in_progress: self.on_in_progress,
            redis_pipeline: self.redis_pipeline,
            retry: RetryPolicy {
                attempts: 8,
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
            },
        }
    }

    /// The spec of the processor process in fleet place `slot`: its transactional ids
    /// (kafka-transactions) are its own, so two processes never fence each other.
    pub fn in_slot(&self, slot: usize) -> MemberSpec {
        let mut spec = self.clone();
        if let Some(txn) = &mut spec.processor.transactions {
            txn.transactional_id = format!("{}.p{slot}", txn.transactional_id);
        }
        spec
    }

    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            url: self.postgres_url.clone(),
            connections: self.postgres_connections,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        }
    }

    pub fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.redis_url.clone(),
            connections: self.redis_connections,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            command_timeout: Duration::from_secs(2),
            wait: (self.redis_wait_replicas > 0).then(|| crate::redis::WaitReplicas {
                replicas: self.redis_wait_replicas,
                timeout: Duration::from_millis(self.redis_wait_timeout_ms),
            }),
        }
    }
}

/// What a processor process tells the run, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum MemberEvent {
    /// The group now assigns this process `partitions` partitions.
    Assigned { partitions: usize },
    /// Measurements so far (cumulative).
    Snapshot { report: WireReport },
    /// Measurements at a clean stop.
    Final { report: WireReport },
    /// The processor gave up or could not start.
    Failed { error: String },
    /// A worker reached `point` with a pause armed there ([`Command::PauseAt`]): the process
    /// stops itself (SIGSTOP) right after this line, until the run sends SIGCONT.
    Pausing { point: CrashPoint },
}

/// What the run tells a processor process after its spec, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Messages intended before this time (µs since the epoch) are warm-up.
    WarmUpUntil { until_us: u64 },
    /// A zombie-consumer pause that lands at a step: the next worker to reach `point` stops
    /// the whole process there (it emits [`MemberEvent::Pausing`] first).
    PauseAt { point: CrashPoint },
}

/// Arms `faults` to stop this process at `point`, once.
fn pause_at(faults: &Faults, point: CrashPoint) {
    faults.stop_at(Stop {
        point,
        then: Box::new(move || {
            emit(&MemberEvent::Pausing { point });
            tracing::info!(
                point = point.name(),
                "injected pause: this process stops itself"
            );
            // SAFETY: raise only sends a signal to this process; SIGSTOP stops every thread
            // (librdkafka's heartbeats too) until the run sends SIGCONT, as a real freeze would.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }),
    });
}

fn emit(event: &MemberEvent) {
    let line = serde_json::to_string(event).expect("events serialize");
    let mut out = std::io::stdout().lock();
    // The run reads every line; if it is gone there is no one left to tell.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// `idembench process`: runs until stdin ends; returns the exit code.
pub async fn serve() -> i32 {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let spec: MemberSpec = match lines.next_line().await {
        Ok(Some(line)) => match serde_json::from_str(&line) {
            Ok(spec) => spec,
            Err(error) => {
                emit(&MemberEvent::Failed {
                    error: format!("the first line on stdin is not a processor spec: {error}"),
                });
                return 2;
            }
        },
        _ => {
            emit(&MemberEvent::Failed {
                error: "`idembench process` is started by `idembench run --processes N`, which writes its spec on stdin; none came".into(),
            });
            return 2;
        }
    };
    match run_member(&spec, &mut lines).await {
        Ok(report) => {
            emit(&MemberEvent::Final {
                report: report.to_wire(),
            });
            0
        }
        Err(error) => {
            emit(&MemberEvent::Failed { error });
            3
        }
    }
}

async fn run_member(
    spec: &MemberSpec,
    stdin: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
) -> Result<ProcessorReport, String> {
    let db = Db::connect(&spec.db_settings(), &spec.schema)
        .await
        .map_err(|e| e.to_string())?;
    let redis = if spec.strategy.capabilities().uses_redis {
        Some(
            redis_seam::connect(spec.redis_client, &spec.redis_settings())
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let counters = || {
        redis
            .as_ref()
            .map(|r| r.counters().values())
            .unwrap_or_default()
    };
    // Only slowness is injected inside a processor process; kills come from outside.
    let faults = Arc::new(Faults::new(FaultPlan {
        slow_trades: spec.slow_trades.clone(),
        slow_ms: spec.slow_ms,
        ..FaultPlan::default()
    }));
    let strategy = strategy::build(
        spec.strategy,
        spec.strategy_settings(faults.clone()),
        db.clone(),
        redis.clone(),
        None,
    );
    let progress = Arc::new(Progress::new(spec.processor.partitions));
    let processor = Processor::start(&spec.processor, strategy, progress.clone(), faults.clone())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut snapshots = tokio::time::interval(Duration::from_secs(1));
    let mut assignment = tokio::time::interval(Duration::from_millis(50));
    let mut assigned = None;
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                    Ok(Command::WarmUpUntil { until_us }) => progress.set_warm_up_until(until_us),
                    Ok(Command::PauseAt { point }) => pause_at(&faults, point),
                    Err(error) => tracing::warn!(%error, "unreadable command on stdin"),
                },
                _ => break,
            },
            _ = processor.failed().cancelled() => break,
            _ = assignment.tick() => {
                let now = progress.assigned();
                if assigned != Some(now) {
                    assigned = Some(now);
                    emit(&MemberEvent::Assigned { partitions: now });
                }
            }
            _ = snapshots.tick() => {
                let report = ProcessorReport {
                    metrics: processor.snapshot(),
                    elapsed: started.elapsed(),
                    rebalances: progress.rebalances(),
                    incarnations: 1,
                    redis: counters(),
                    ..ProcessorReport::default()
                };
                emit(&MemberEvent::Snapshot { report: report.to_wire() });
            }
        }
    }
    // A pause armed but not reached must not land in the stop's last units: the run is no
    // longer there to send SIGCONT.
    faults.disarm_stop();
    let mut report = processor.stop().await.map_err(|e| e.to_string())?;
    report.redis = counters();
    db.close().await;
    Ok(report)
}

//! `result.json`: one type, [`RunResult`], that a run writes and every reader (report,
//! compare, merge, the schema test) reads. A field renamed here breaks them at compile time.
//!
//! The field names here are what users script against (`strategy`, `redis_client`,
//! `correctness.*`, `throughput.*`, `latency_us.*`): add fields, never rename them. Fields
//! added later are `#[serde(default)]`, so older results still read.
//!
//! Beside it: [`summary`] (the human summary), [`environment`], [`merge`] and [`compare`],
//! all pure functions of results; the histograms' encodings are [`crate::hgrm`]'s.

pub mod adr;
pub mod anomalies;
pub mod compare;
pub mod environment;
pub mod history;
pub mod matrix;
pub mod merge;
pub mod recovery;
pub mod storage;
mod summary;

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::check::audit::Correctness;
use crate::check::oracle::OracleReport;
use crate::config::RunConfig;
use crate::faults::{CrashPoint, FaultEvent, FaultPlan};
use crate::processor::Counts;

pub use summary::ms;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub schema_version: u32,
    pub idembench_version: String,
    pub run_id: String,
    /// `complete`, or `partial` when the run was interrupted or did not drain.
    pub status: Status,
    pub partial_reason: Option<String>,
    /// Why the run ended early when the processor failed (a store stayed unreachable through
    /// every retry); the run is partial and exits 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub strategy: String,
    /// The client library, or `none` where the strategy uses no Redis.
    pub redis_client: String,
    pub started_at: String,
    pub command: String,
    pub config: RunConfig,
    pub services: Services,
    pub clients: Clients,
    pub throughput: Throughput,
    pub latency_us: Latencies,
    pub correctness: Correctness,
    /// What each strategy's rule predicted from the fault log, against the audit.
    pub oracle: OracleReport,
    pub faults: FaultsReport,
    pub processor: ProcessorStats,
    /// The machine, OS and build.
    pub environment: crate::results::environment::Environment,
    /// CPU time and peak memory: of this process (load generator, in-process processor and
    /// audit together), and of the processor processes when `--processes` ran them apart.
    pub resources: Resources,
    /// The runs an `idembench merge` combined (absent in a run's own result).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// kafka-transactions only: its two stages apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_transactions: Option<TransactionsReport>,
    /// What the run's Redis keys and Postgres tables occupied at its end (absent for a run
    /// before this field existed, and for a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<storage::Storage>,
    /// Timelines of a few trades that ended lost or applied twice, and how many did (absent for
    /// a run before this field existed, and for a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<anomalies::Anomalies>,
}

/// kafka-transactions (#16), its two stages apart. The run's `latency_us` is the pair's — from
/// the intended send until the sink committed the effect in Postgres — and `processor` is
/// stage one, the consumer of the input topic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TransactionsReport {
    pub effects_topic: String,
    /// Stage one's committed transactions.
    pub transactions: u64,
    /// Committed transactions per second of the run's processing time.
    pub transactions_per_second: f64,
    /// Messages per committed transaction, on average (`--batch-size` bounds it; a worker
    /// never waits to fill one).
    pub messages_per_transaction: f64,
    /// A transaction, begin to commit (produce, send_offsets, commit).
    pub transaction_us: Percentiles,
    /// Its `commit_transaction` step alone (with the wait for delivery reports before it).
    #[serde(default)]
    pub transaction_commit_us: Percentiles,
    /// Transactions aborted, the group coordinator's fences among them, producers fenced, and
    /// messages read again after a rewind.
    #[serde(flatten, default)]
    pub aborts: crate::processor::TxnCounts,
    /// Stage one alone: from the intended send until its transaction committed.
    pub stage_one_end_to_end_us: Percentiles,
    /// The sink: effects processed, caught by the constraint, and its Postgres transaction.
    pub sink_messages: u64,
    pub sink_caught_by_constraint: u64,
    pub sink_business_us: Percentiles,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Resources {
    /// CPU time this run used in this process (load generator, in-process processor, audit),
    /// and the peak RSS of the process so far (a matrix runs many runs in one process).
    pub this_process: crate::results::environment::Usage,
    pub processor_processes: Option<crate::results::environment::Usage>,
    /// What each service (`redis`, `postgres`, `kafka`) cost over the run, where it can be
    /// had: the process trees the stack started or `idembench services up` left running, or
    /// Redis's own `INFO cpu`. Absent for a run before this field existed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub services: std::collections::BTreeMap<String, crate::stack::usage::ServiceUsage>,
    /// Why a service has no entry in `services` (an external server that reports no CPU).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub services_unmeasured: std::collections::BTreeMap<String, String>,
    /// CPU µs (user + system) per message processed, per part: `idembench` (this process:
    /// load generator, in-process processor, audit), `processor_processes` when `--processes`
    /// ran them apart, and each service in `services`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cpu_us_per_message: std::collections::BTreeMap<String, f64>,
    /// Bytes of state held per planned trade, by holder: `ledger` (acknowledged copies),
    /// `audit` (the per-trade row counts it read), and `business_store` (the in-memory record of
    /// `--no-business-write`). From the structures' allocated sizes, at the end of the run.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub state_bytes_per_trade: std::collections::BTreeMap<String, f64>,
}

/// One sample of the run's progress, cumulative since production started.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since production started.
    pub t_s: f64,
    /// Messages the open-loop schedule had due by then (`rate × t`, at most the plan).
    #[serde(default)]
    pub offered: u64,
    /// Messages processed (by an in-process processor; processor processes report commits
    /// only, so 0 there).
    #[serde(default)]
    pub processed: u64,
    /// Messages the producer has had acknowledged so far.
    pub produced: u64,
    /// Messages the group has committed so far (sum of committed offsets).
    pub committed: u64,
    /// End-to-end p99 (from the intended send, µs) of the messages an in-process processor
    /// completed in the second before this sample; absent when it completed none, or when
    /// processor processes ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<u64>,
}

/// The fault plan and what was injected.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultsReport {
    pub plan: FaultPlan,
    pub crashes: u64,
    /// Faults per crash point name, and per kind for faults that are not crashes.
    pub by_point: std::collections::BTreeMap<String, u64>,
    /// Every injected fault (kind, point, trade id, time), the first 1000.
    pub log: Vec<FaultEvent>,
    pub log_truncated: bool,
    /// Per fault from outside the flow: how long until it healed, the group committed again
    /// and the backlog drained (from the once-a-second series: 1 s resolution).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<recovery::Recovery>,
}

impl FaultsReport {
    pub fn new(faults: &crate::faults::Faults) -> FaultsReport {
        let mut log = faults.log();
        let mut by_point = std::collections::BTreeMap::new();
        for event in &log {
            let name = event.point.map_or(event.kind.name(), CrashPoint::name);
            *by_point.entry(name.to_string()).or_insert(0) += 1;
        }
        let log_truncated = log.len() > 1000;
        log.truncate(1000);
        FaultsReport {
            plan: faults.plan().clone(),
            crashes: faults.crashes(),
            by_point,
            log,
            log_truncated,
            recovery: Vec::new(),
        }
    }
}

impl FaultsReport {
    /// With each fault's recovery, from the run's series (production started at
    /// `started_us`).
    pub fn with_recovery(mut self, series: &[SeriesPoint], started_us: u64) -> FaultsReport {
        self.recovery = recovery::recoveries(series, &self.log, started_us);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Partial,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Services {
    pub kafka: KafkaService,
    pub redis: Option<RedisService>,
    pub postgres: ServiceVersion,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KafkaService {
    pub brokers: String,
    pub broker_count: usize,
    pub topic: String,
    pub partitions: usize,
    /// The topic's replication factor and `min.insync.replicas` (results before they were
    /// recorded ran 1 and 1).
    #[serde(default = "one_i32")]
    pub replication_factor: i32,
    #[serde(default = "one_i32")]
    pub min_insync_replicas: i32,
    /// Each partition's leader (and replicas) when the run started.
    #[serde(default)]
    pub leaders: Vec<crate::kafka::PartitionLeader>,
}

fn one_i32() -> i32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceVersion {
    /// The address, with any password replaced by `***`.
    pub url: String,
    pub version: String,
}

/// Redis as the run reached it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedisService {
    /// The address, with any password replaced by `***`.
    pub url: String,
    pub version: String,
    /// `standalone` or `cluster` (results before it was recorded ran standalone).
    #[serde(default)]
    pub topology: crate::redis::RedisTopology,
    /// The primaries at the start of the run (one for a standalone server), redacted.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Keys Redis evicted under `maxmemory` while the run ran (`INFO stats`, every primary);
    /// absent where it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_keys: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Clients {
    pub redis: Option<crate::redis::ClientInfo>,
    /// Both Redis client libraries this build links, whichever the run used.
    pub redis_rs: String,
    pub fred: String,
    pub rdkafka: String,
    pub librdkafka: String,
    pub sqlx: String,
    pub hdrhistogram: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub messages_produced: u64,
    pub messages_processed: u64,
    pub produce_seconds: f64,
    /// From the processor's start to the last message of the stream being done.
    pub process_seconds: f64,
    pub produced_per_second: f64,
    pub processed_per_second: f64,
    /// The offered schedule, messages per second (0 = unthrottled).
    pub offered_rate: f64,
    /// Committed messages per second after the warm-up (`--warm-up-ms`), from `series`.
    pub after_warm_up_per_second: Option<f64>,
    /// Once a second from the start of production: produced and committed so far.
    pub series: Vec<SeriesPoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latencies {
    /// From the open-loop intended send time to the offset commit: includes any backlog.
    pub end_to_end_from_intended: Percentiles,
    /// From the actual send time to the offset commit.
    pub end_to_end_from_sent: Percentiles,
    pub stages: Stages,
    /// End-to-end (from intended send) of the messages sent during `--warm-up-ms`, kept out of
    /// the two end-to-end figures above (stages include them).
    pub warm_up: Percentiles,
    /// Producer send to broker acknowledgement.
    pub send_ack: Percentiles,
    /// How late the producer sent against its schedule.
    pub schedule_lag: Percentiles,
    /// Every histogram above, HdrHistogram V2 + DEFLATE, base64, values in µs: merge or
    /// re-analyse runs without their raw data (`idembench::hgrm::decode`).
    pub histograms: std::collections::BTreeMap<String, String>,
}

impl Latencies {
    /// The percentiles a histogram of `histograms` is summarised into.
    pub fn slot(&mut self, histogram: &str) -> Option<&mut Percentiles> {
        Some(match histogram {
            "end_to_end_from_intended" => &mut self.end_to_end_from_intended,
            "end_to_end_from_sent" => &mut self.end_to_end_from_sent,
            "warm_up" => &mut self.warm_up,
            "send_ack" => &mut self.send_ack,
            "schedule_lag" => &mut self.schedule_lag,
            "claim" => &mut self.stages.claim,
            "business" => &mut self.stages.business,
            "mark_done" => &mut self.stages.mark_done,
            "offset_commit" => &mut self.stages.offset_commit,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stages {
    pub claim: Percentiles,
    pub business: Percentiles,
    pub mark_done: Percentiles,
    pub offset_commit: Percentiles,
}

/// Microseconds. Percentiles come straight from the HDR histogram (3 significant digits).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: histogram.len(),
            min: histogram.min(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessorStats {
    #[serde(flatten)]
    pub counts: Counts,
    pub redis_errors: u64,
    pub redis_timeouts: u64,
    pub redis_reconnects: u64,
    /// Behind Sentinels: Redis connections that moved to a newly promoted primary.
    #[serde(default)]
    pub redis_primaries_followed: u64,
    /// Under `--redis-wait-replicas`: writes whose `WAIT` timed out with fewer replicas
    /// acknowledging than asked (the write stands; its copy on a replica is not assured).
    #[serde(default)]
    pub redis_wait_short: u64,
    pub consumer_errors: u64,
    pub commit_errors: u64,
    pub rebalances: u64,
    pub close_timed_out: bool,
    /// Messages produced but not yet processed when the processor stopped (0 unless partial):
    /// in a partial run, `correctness.lost` includes the trades among them.
    pub lag_at_stop: i64,
    /// Processor restarts after injected crashes, and replacements of killed processes.
    pub restarts: u64,
    /// `stalled_us` in milliseconds: time copies waited behind another attempt's PROCESSING
    /// key (`--on-in-progress wait`).
    #[serde(default)]
    pub stalled_ms: u64,
    /// Processor OS processes that ran (`--processes`; 0 when the processor ran in-process).
    pub processes: u64,
    /// Processor processes killed with SIGKILL.
    pub process_kills: u64,
    /// Killed processes whose last second of latency measurements died with them (the
    /// correctness counts, read from Postgres, are unaffected).
    pub killed_measurement_windows: u64,
    /// Messages taken off the topic more than once (replayed after a crash or rebalance).
    pub redeliveries: u64,
}

impl RunResult {
    /// Writes `result.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let mut file = std::fs::File::create(dir.join("result.json"))?;
        serde_json::to_writer_pretty(&mut file, self)?;
        file.write_all(b"\n")
    }

    /// Reads a `result.json`; the error says what is wrong with it.
    pub fn read(path: &Path) -> Result<RunResult, ReadError> {
        let error = |message: String| ReadError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| error(format!("not an idembench result.json: {e}")))
    }

    pub fn scenario(&self) -> Option<&str> {
        self.config.scenario.as_deref()
    }

    pub fn claim(&self) -> Option<&str> {
        self.config.claim.as_deref()
    }

    /// `strategy on client` (or just the strategy, when it uses no Redis).
    pub fn label(&self) -> String {
        if self.redis_client == "none" {
            self.strategy.clone()
        } else {
            format!("{} on {}", self.strategy, self.redis_client)
        }
    }

    /// Faults injected, all kinds.
    pub fn faults_injected(&self) -> u64 {
        self.faults.by_point.values().sum()
    }

    /// The claim held: nothing lost, nothing applied twice.
    pub fn claim_held(&self) -> bool {
        self.correctness.lost == 0 && self.correctness.double_applied == 0
    }
}

/// A `result.json` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReadError {
    pub path: String,
    pub message: String,
}

/// Every `result.json` at or beneath `path`, sorted.
pub fn result_files(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    files_named(path, "result.json")
}

/// `path` itself if it is a file, else every file called `name` beneath it, sorted.
pub fn files_named(path: &Path, name: &str) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn collect(
        path: &Path,
        name: &str,
        files: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<()> {
        if path.is_file() {
            // A result.json given by its path may have any name.
            if name == "result.json" || path.file_name().is_some_and(|file| file == name) {
                files.push(path.to_path_buf());
            }
        } else if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let entry = entry?.path();
                if entry.is_dir() {
                    collect(&entry, name, files)?;
                } else if entry.file_name().is_some_and(|file| file == name) {
                    files.push(entry);
                }
            }
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or directory",
            ));
        }
        Ok(())
    }
    let mut files = Vec::new();
    collect(path, name, &mut files)?;
    files.sort();
    Ok(files)
}

/// Every `result.json` at or beneath `path`, read, in path order.
pub fn load(path: &Path) -> Result<Vec<(std::path::PathBuf, RunResult)>, ReadError> {
    let error = |message: String| ReadError {
        path: path.display().to_string(),
        message,
    };
    let files = result_files(path).map_err(|e| error(e.to_string()))?;
    if files.is_empty() {
        return Err(error(
            "holds no result.json (give a result.json, a run directory or a directory of runs)"
                .into(),
        ));
    }
    files
        .into_iter()
        .map(|file| RunResult::read(&file).map(|result| (file, result)))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A result.json as a run wrote it (a claims run of `idembench adr` with faults, Redis and every stage).
    pub(crate) const COMMITTED_RESULT: &str = include_str!(
        "../../reports/adr/claims/11-crash-after-claim-redis-only-redis-rs/result.json"
    );

    #[test]
    fn every_committed_result_reads_into_the_one_model_and_writes_back_the_same_fields() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
        let files = result_files(&root).unwrap();
        assert!(files.len() > 50, "{} results under reports/", files.len());
        for file in files {
            let result = RunResult::read(&file).unwrap_or_else(|e| panic!("{e}"));
            // Every field a committed file holds survives a round trip through the type.
            let written = serde_json::to_value(&result).unwrap();
            let original: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            for section in [
                "correctness",
                "throughput",
                "latency_us",
                "processor",
                "services",
            ] {
                for key in original[section].as_object().unwrap().keys() {
                    assert!(
                        written[section].get(key).is_some(),
                        "{}: {section}.{key} is lost by the model",
                        file.display()
                    );
                }
            }
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut histogram = idembench_loadgen::producer::new_histogram();
        for v in 1..=1000u64 {
            histogram.record(v).unwrap();
        }
        let p = Percentiles::of(&histogram);
        assert_eq!((p.count, p.min, p.max), (1000, 1, 1000));
        assert_eq!(p.p50, 500);
        assert_eq!(p.p99, 990);
        assert_eq!(
            Percentiles::of(&idembench_loadgen::producer::new_histogram()),
            Percentiles::default()
        );
    }

    #[test]
    fn milliseconds_read_well() {
        assert_eq!(ms(1_234), "1.23 ms");
        assert_eq!(ms(45_600), "45.6 ms");
        assert_eq!(ms(1_500_000), "1500 ms");
    }
}

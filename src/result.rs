//! `result.json` and the human summary. Both are pure functions of [`RunResult`].
//!
//! The field names here are what users script against (`strategy`, `redis_client`,
//! `correctness.*`, `throughput.*`, `latency_us.*`): add fields, never rename them.

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::audit::Correctness;
use crate::faults::CrashPoint;
use crate::processor::Counts;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub schema_version: u32,
    pub idembench_version: &'static str,
    pub run_id: String,
    /// `complete`, or `partial` when the run was interrupted or did not drain.
    pub status: Status,
    pub partial_reason: Option<String>,
    pub strategy: &'static str,
    pub redis_client: &'static str,
    pub started_at: String,
    pub command: String,
    pub config: serde_json::Value,
    pub services: Services,
    pub clients: Clients,
    pub throughput: Throughput,
    pub latency_us: Latencies,
    pub correctness: Correctness,
    /// What each strategy's rule predicted from the fault log, against the audit.
    pub oracle: crate::oracle::OracleReport,
    pub faults: FaultsReport,
    pub processor: ProcessorStats,
    /// The machine, OS and build.
    pub environment: crate::environment::Environment,
    /// CPU time and peak memory: of this process (load generator, in-process processor and
    /// audit together), and of the processor processes when `--processes` ran them apart.
    pub resources: Resources,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Resources {
    /// CPU time this run used in this process (load generator, in-process processor, audit),
    /// and the peak RSS of the process so far (a matrix runs many runs in one process).
    pub this_process: crate::environment::Usage,
    pub processor_processes: Option<crate::environment::Usage>,
}

/// One sample of the run's progress, cumulative since production started.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
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
}

/// The fault plan and what was injected.
#[derive(Clone, Debug, Serialize)]
pub struct FaultsReport {
    pub plan: crate::faults::CrashPlan,
    pub crashes: u64,
    /// Crashes per point name.
    pub by_point: std::collections::BTreeMap<&'static str, u64>,
    /// Every injected fault (kind, point, trade id, time), the first 1000.
    pub log: Vec<crate::faults::FaultEvent>,
    pub log_truncated: bool,
}

impl FaultsReport {
    pub fn new(faults: &crate::faults::Faults) -> FaultsReport {
        let mut log = faults.log();
        let mut by_point = std::collections::BTreeMap::new();
        for event in &log {
            *by_point
                .entry(event.point.map_or(event.kind, CrashPoint::name))
                .or_insert(0) += 1;
        }
        let log_truncated = log.len() > 1000;
        log.truncate(1000);
        FaultsReport {
            plan: faults.plan().clone(),
            crashes: faults.crashes(),
            by_point,
            log,
            log_truncated,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Partial,
}

#[derive(Clone, Debug, Serialize)]
pub struct Services {
    pub kafka: KafkaService,
    pub redis: Option<ServiceVersion>,
    pub postgres: ServiceVersion,
}

#[derive(Clone, Debug, Serialize)]
pub struct KafkaService {
    pub brokers: String,
    pub broker_count: usize,
    pub topic: String,
    pub partitions: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceVersion {
    /// The address, with any password replaced by `***`.
    pub url: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Clients {
    pub redis: Option<crate::redis::ClientInfo>,
    /// Both Redis client libraries this build links, whichever the run used.
    pub redis_rs: &'static str,
    pub fred: &'static str,
    pub rdkafka: &'static str,
    pub librdkafka: String,
    pub sqlx: &'static str,
    pub hdrhistogram: &'static str,
}

#[derive(Clone, Debug, Serialize)]
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

#[derive(Clone, Debug, Serialize)]
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
    pub histograms: std::collections::BTreeMap<&'static str, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stages {
    pub claim: Percentiles,
    pub business: Percentiles,
    pub mark_done: Percentiles,
    pub offset_commit: Percentiles,
}

/// Microseconds. Percentiles come straight from the HDR histogram (3 significant digits).
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
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

#[derive(Clone, Debug, Serialize)]
pub struct ProcessorStats {
    #[serde(flatten)]
    pub counts: Counts,
    pub redis_errors: u64,
    pub redis_timeouts: u64,
    pub redis_reconnects: u64,
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

    /// The short human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let c = &self.correctness;
        let t = &self.throughput;
        let e2e = &self.latency_us.end_to_end_from_intended;
        let sent = &self.latency_us.end_to_end_from_sent;
        let status = match self.status {
            Status::Complete => String::new(),
            Status::Partial => format!(
                "  PARTIAL RUN: {}\n",
                self.partial_reason.as_deref().unwrap_or("stopped early")
            ),
        };
        let identity = if c.identity_holds {
            "holds"
        } else {
            "VIOLATED"
        };
        format!(
            "idembench {run} — strategy {strategy} on {client}\n{status}\
             \x20 stream       {unique} trades, {copies} copies sent ({extra} duplicates), {partitions} partitions\n\
             \x20 throughput   produced {produced:.0} msg/s, processed {processed:.0} msg/s (offered {offered})\n\
             \x20 end-to-end   from intended send: p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}\n\
             \x20              from actual send:   p50 {sp50}  p99 {sp99}  p99.9 {sp999}  max {smax}\n\
             \x20 correctness  exactly_once {once}  lost {lost}  double_applied {double} (extra_effects {extra_effects})\n\
             \x20              caught_by_constraint {caught}  duplicates_suppressed {suppressed}  malformed {malformed}\n\
             \x20              positions {positions} checked, {mismatched} differ from the ledger\n\
             {faults}\
             \x20 audit        exactly_once + lost + double_applied = {sum} of produced_unique {unique}: {identity}\n\
             \x20 oracle       predicted lost {plost}, double_applied {pdouble}: {mismatches}\n",
            run = self.run_id,
            strategy = self.strategy,
            client = if self.clients.redis.is_some() {
                self.redis_client
            } else {
                "no Redis"
            },
            unique = c.produced_unique,
            copies = c.copies_sent,
            extra = c.copies_sent.saturating_sub(c.produced_unique),
            partitions = self.services.kafka.partitions,
            produced = t.produced_per_second,
            processed = t.processed_per_second,
            offered = if t.offered_rate > 0.0 {
                format!("{:.0} msg/s", t.offered_rate)
            } else {
                "unthrottled".into()
            },
            p50 = ms(e2e.p50),
            p99 = ms(e2e.p99),
            p999 = ms(e2e.p999),
            max = ms(e2e.max),
            sp50 = ms(sent.p50),
            sp99 = ms(sent.p99),
            sp999 = ms(sent.p999),
            smax = ms(sent.max),
            once = c.exactly_once,
            lost = c.lost,
            double = c.double_applied,
            extra_effects = c.extra_effects,
            caught = c.caught_by_constraint,
            suppressed = c.duplicates_suppressed,
            malformed = self.processor.counts.malformed,
            positions = c.positions_checked,
            mismatched = c.positions_mismatched,
            sum = c.exactly_once + c.lost + c.double_applied,
            plost = bounds(self.oracle.predicted.lost),
            pdouble = bounds(self.oracle.predicted.double_applied),
            mismatches = match self.oracle.mismatches {
                0 => "agrees with the audit".to_string(),
                n => format!("{n} MISMATCH(ES) with the audit"),
            },
            faults = if !self.faults.log.is_empty() {
                let points: Vec<String> = self
                    .faults
                    .by_point
                    .iter()
                    .map(|(p, n)| format!("{n} {p}"))
                    .collect();
                let missing = match self.processor.killed_measurement_windows {
                    0 => String::new(),
                    n => format!(
                        "\n               latencies and processor counts miss up to 1 s before each of {n} kill(s); the audit misses nothing"
                    ),
                };
                format!(
                    "  faults       {} injected ({}), {} restarts, {} redeliveries{missing}\n",
                    self.faults.log.len(),
                    points.join(", "),
                    self.processor.restarts,
                    self.processor.redeliveries
                )
            } else {
                String::new()
            },
        )
    }
}

fn bounds(b: crate::oracle::Bounds) -> String {
    match b.max {
        Some(max) if max == b.min => b.min.to_string(),
        Some(max) => format!("{}..={max}", b.min),
        None => format!(">= {}", b.min),
    }
}

/// Microseconds shown as milliseconds with sensible precision.
pub fn ms(micros: u64) -> String {
    let millis = micros as f64 / 1000.0;
    if millis < 10.0 {
        format!("{millis:.2} ms")
    } else if millis < 100.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

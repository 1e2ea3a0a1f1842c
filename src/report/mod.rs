//! Reports people read: `summary.md` (for an ADR) and `report.html` (one self-contained file
//! with SVG charts), rendered from `result.json` files only — so `idembench report DIR`
//! re-renders exactly what a run or matrix wrote, and a report never shows a number that is
//! not in a `result.json`.

pub mod html;
pub mod markdown;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::audit::Correctness;
use crate::oracle::Bounds;
use crate::result::Percentiles;

/// What a report reads from one `result.json`. Fields added in later versions are optional,
/// so older results still render.
#[derive(Clone, Debug, Deserialize)]
pub struct RunView {
    pub run_id: String,
    pub status: String,
    #[serde(default)]
    pub partial_reason: Option<String>,
    pub strategy: String,
    pub redis_client: String,
    pub started_at: String,
    pub command: String,
    pub config: Value,
    #[serde(default)]
    pub environment: Option<Value>,
    pub services: Value,
    #[serde(default)]
    pub clients: Value,
    pub throughput: ThroughputView,
    pub latency_us: LatencyView,
    pub correctness: Correctness,
    pub oracle: OracleView,
    pub faults: FaultsView,
    pub processor: ProcessorView,
    #[serde(default)]
    pub resources: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ThroughputView {
    pub messages_produced: u64,
    pub messages_processed: u64,
    pub processed_per_second: f64,
    pub produced_per_second: f64,
    pub offered_rate: f64,
    #[serde(default)]
    pub series: Vec<crate::result::SeriesPoint>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LatencyView {
    pub end_to_end_from_intended: Percentiles,
    pub end_to_end_from_sent: Percentiles,
    pub stages: BTreeMap<String, Percentiles>,
    #[serde(default)]
    pub histograms: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct OracleView {
    pub predicted: PredictionView,
    pub mismatches: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PredictionView {
    pub lost: Bounds,
    pub double_applied: Bounds,
    #[serde(default)]
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FaultsView {
    #[serde(default)]
    pub by_point: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProcessorView {
    #[serde(default)]
    pub stalled_us: u64,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub redeliveries: u64,
    #[serde(default)]
    pub processes: u64,
    #[serde(default)]
    pub process_kills: u64,
}

impl RunView {
    pub fn scenario(&self) -> Option<&str> {
        self.config.get("scenario").and_then(Value::as_str)
    }

    pub fn claim(&self) -> Option<&str> {
        self.config.get("claim").and_then(Value::as_str)
    }

    /// `strategy on client` (or just the strategy, when it uses no Redis).
    pub fn label(&self) -> String {
        if self.redis_client == "none" {
            self.strategy.clone()
        } else {
            format!("{} on {}", self.strategy, self.redis_client)
        }
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults.by_point.values().sum()
    }

    pub fn claim_held(&self) -> bool {
        self.correctness.lost == 0 && self.correctness.double_applied == 0
    }

    fn config_u64(&self, key: &str) -> Option<u64> {
        self.config.get(key).and_then(Value::as_u64)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReportError {
    pub path: String,
    pub message: String,
}

/// Every `result.json` at or beneath `path`, in path order.
pub fn load(path: &Path) -> Result<Vec<(PathBuf, RunView)>, ReportError> {
    let error = |path: &Path, message: String| ReportError {
        path: path.display().to_string(),
        message,
    };
    let files = crate::compare::result_files(path).map_err(|e| error(path, e.to_string()))?;
    if files.is_empty() {
        return Err(error(
            path,
            "holds no result.json (give a run directory or a directory of runs)".into(),
        ));
    }
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|e| error(&file, e.to_string()))?;
            let view: RunView = serde_json::from_str(&text)
                .map_err(|e| error(&file, format!("not an idembench result.json: {e}")))?;
            Ok((file, view))
        })
        .collect()
}

/// `idembench report DIR`: renders `summary.md` and `report.html` into `dir` from every
/// `result.json` beneath it — in a matrix's run order, with its command, when `dir` holds a
/// `matrix.json`. Returns how many runs the reports cover.
pub fn rerender(dir: &Path) -> Result<usize, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError {
            path: dir.display().to_string(),
            message: "not a directory: give the directory of a run or of a matrix".into(),
        });
    }
    let mut runs = load(dir)?;
    let matrix: Option<Value> = std::fs::read_to_string(dir.join("matrix.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let command = matrix
        .as_ref()
        .and_then(|m| m.get("command"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(order) = matrix
        .as_ref()
        .and_then(|m| m.get("runs"))
        .and_then(Value::as_array)
    {
        let dirs: Vec<&str> = order
            .iter()
            .filter_map(|run| run.get("result_dir").and_then(Value::as_str))
            .collect();
        runs.sort_by_key(|(file, _)| {
            dirs.iter()
                .position(|d| {
                    file.parent()
                        .is_some_and(|p| p.ends_with(Path::new(d).file_name().unwrap_or_default()))
                })
                .unwrap_or(usize::MAX)
        });
    }
    let views: Vec<RunView> = runs.into_iter().map(|(_, view)| view).collect();
    write(dir, &views, command.as_deref()).map_err(|e| ReportError {
        path: dir.display().to_string(),
        message: format!("cannot write the reports: {e}"),
    })?;
    Ok(views.len())
}

/// Writes `summary.md` and `report.html` into `dir` for `runs`. `command` is what produced
/// them (a matrix's command line); without it, each run's own command is shown.
pub fn write(dir: &Path, runs: &[RunView], command: Option<&str>) -> std::io::Result<()> {
    std::fs::write(dir.join("summary.md"), markdown::render(runs, command))?;
    std::fs::write(dir.join("report.html"), html::render(runs, command))?;
    Ok(())
}

/// Runs grouped by scenario, in first-seen order (runs without a scenario form one group).
pub(crate) fn by_scenario(runs: &[RunView]) -> Vec<(Option<&str>, Vec<&RunView>)> {
    let mut groups: Vec<(Option<&str>, Vec<&RunView>)> = Vec::new();
    for run in runs {
        match groups.iter_mut().find(|(s, _)| *s == run.scenario()) {
            Some((_, members)) => members.push(run),
            None => groups.push((run.scenario(), vec![run])),
        }
    }
    groups
}

/// One scenario's answer: for which strategies its claim held, and for which it did not.
pub(crate) struct Answer {
    pub scenario: Option<String>,
    pub claim: Option<String>,
    pub held: Vec<String>,
    /// Label, lost, applied twice.
    pub refuted: Vec<(String, u64, u64)>,
}

pub(crate) fn answers(runs: &[RunView]) -> Vec<Answer> {
    by_scenario(runs)
        .into_iter()
        .map(|(scenario, members)| Answer {
            scenario: scenario.map(str::to_string),
            claim: members[0].claim().map(str::to_string),
            held: members
                .iter()
                .filter(|r| r.claim_held())
                .map(|r| r.label())
                .collect(),
            refuted: members
                .iter()
                .filter(|r| !r.claim_held())
                .map(|r| (r.label(), r.correctness.lost, r.correctness.double_applied))
                .collect(),
        })
        .collect()
}

/// How a cell of the results table reads: as it is, as good news, or as bad news.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Plain,
    Good,
    Bad,
}

/// The results table's columns (the first two are text, the rest numbers or verdicts).
pub(crate) const COLUMNS: [&str; 17] = [
    "strategy",
    "client",
    "msg/s",
    "p50",
    "p99",
    "p99.9",
    "max",
    "exactly once",
    "lost",
    "applied twice",
    "caught by constraint",
    "suppressed",
    "stalled",
    "redeliveries",
    "faults",
    "claim",
    "oracle",
];

/// One run's row of the results table, cell by cell, in [`COLUMNS`] order.
pub(crate) fn row(r: &RunView) -> Vec<(String, Mark)> {
    let e2e = &r.latency_us.end_to_end_from_intended;
    let c = &r.correctness;
    let plain = |text: String| (text, Mark::Plain);
    let anomaly = |n: u64| (n.to_string(), if n > 0 { Mark::Bad } else { Mark::Plain });
    vec![
        plain(r.strategy.clone()),
        plain(r.redis_client.clone()),
        plain(format!("{:.0}", r.throughput.processed_per_second)),
        plain(ms(e2e.p50)),
        plain(ms(e2e.p99)),
        plain(ms(e2e.p999)),
        plain(ms(e2e.max)),
        plain(c.exactly_once.to_string()),
        anomaly(c.lost),
        anomaly(c.double_applied),
        plain(c.caught_by_constraint.to_string()),
        plain(c.duplicates_suppressed.to_string()),
        plain(ms(r.processor.stalled_us)),
        plain(r.processor.redeliveries.to_string()),
        plain(r.faults_injected().to_string()),
        if r.claim_held() {
            ("held".into(), Mark::Good)
        } else {
            ("REFUTED".into(), Mark::Bad)
        },
        if r.oracle.mismatches == 0 {
            ("agrees".into(), Mark::Good)
        } else {
            (format!("{} mismatch(es)", r.oracle.mismatches), Mark::Bad)
        },
    ]
}

/// How the numbers were taken, for both reports.
pub(crate) const MEASUREMENT_NOTES: [&str; 5] = [
    "The load generator sends on an open-loop schedule: message j is due at start + j/rate whatever the system does, and carries its intended and actual send times. End-to-end latency runs from the intended send time to the offset commit, so a backlog shows in full (no coordinated omission); the actual-send figure is in result.json too.",
    "Latencies are HdrHistogram distributions (1 µs to 1 h, 3 significant digits), recorded by each worker into its own histograms and merged at the end; result.json holds them encoded, and *.hgrm files beside it hold them in HdrHistogram's text format.",
    "Correctness is audited, not counted on the way: after the run, every trade id the broker acknowledged is looked up in Postgres (trade rows, outbox rows, positions). Lost = no row; applied twice = more than one.",
    "Faults are injected at named points (crashes), by SIGKILL (process kills), by deleting the run's Redis keys (a Redis restart), by slowing chosen business transactions, and by cutting Postgres away from the processor; each is logged with its time.",
    "Each run has its own Kafka topic, Postgres schema and Redis key prefix; nothing carries over between runs.",
];

/// The commands that reproduce `runs`, without repeats.
pub(crate) fn commands<'a>(runs: &'a [RunView], command: Option<&'a str>) -> Vec<&'a str> {
    match command {
        Some(command) => vec![command],
        None => {
            let mut seen: Vec<&str> = Vec::new();
            for run in runs {
                if !seen.contains(&run.command.as_str()) {
                    seen.push(&run.command);
                }
            }
            seen
        }
    }
}

/// Microseconds as a short human figure.
pub(crate) fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// One line per distinct machine/setup fact, from the first run (a report covers one setup).
pub(crate) fn setup_lines(runs: &[RunView]) -> Vec<String> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let text = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "unknown".into())
    };
    let mut lines = Vec::new();
    if let Some(env) = &first.environment {
        lines.push(format!(
            "Machine: {} × {} CPUs, {} GiB memory, {} (kernel {}); idembench {} at commit {}",
            text(env, "/cpu_model"),
            text(env, "/cpus"),
            text(env, "/memory_gib"),
            text(env, "/os"),
            text(env, "/kernel"),
            text(env, "/idembench_version"),
            text(env, "/git_commit"),
        ));
    }
    let services = &first.services;
    lines.push(format!(
        "Services: Kafka at {} ({} broker(s)), Redis {}, PostgreSQL {}",
        text(services, "/kafka/brokers"),
        text(services, "/kafka/broker_count"),
        runs.iter()
            .find_map(|r| r.services.pointer("/redis/version").and_then(Value::as_str))
            .unwrap_or("not used"),
        text(services, "/postgres/version"),
    ));
    if let Some(stack) = first.environment.as_ref().and_then(|e| e.get("stack")) {
        let started: Vec<String> = ["kafka", "redis", "postgres"]
            .iter()
            .filter_map(|name| match stack.get(*name).and_then(Value::as_str) {
                Some("child") => Some(format!("{name} as a child process")),
                Some("docker") => Some(format!("{name} as a Docker container")),
                Some("in-process") => Some(format!(
                    "{name} as the tansu broker inside its own process (not Apache Kafka)"
                )),
                _ => None,
            })
            .collect();
        lines.push(format!(
            "Stack (--stack {}): {}",
            text(stack, "/mode"),
            if started.is_empty() {
                "services that were already running".to_string()
            } else {
                format!(
                    "the run started {} on loopback, fresh and empty, and stopped them after",
                    started.join(", ")
                )
            }
        ));
    }
    lines.push(format!(
        "Clients: rdkafka {} (librdkafka {}), redis-rs {}, fred {}, sqlx {}",
        text(&first.clients, "/rdkafka"),
        text(&first.clients, "/librdkafka"),
        text(&first.clients, "/redis_rs"),
        text(&first.clients, "/fred"),
        text(&first.clients, "/sqlx"),
    ));
    let c = &first.config;
    lines.push(format!(
        "Stream: {} trades, {} of them duplicated ({} late by {} ms), {} B messages, seed {}, offered {}",
        text(c, "/stream/trades"),
        percent(c.pointer("/stream/duplicate_rate")),
        percent(c.pointer("/stream/late_duplicate_share")),
        text(c, "/stream/late_duplicate_delay_ms"),
        text(c, "/stream/payload_bytes"),
        text(c, "/stream/seed"),
        match c.pointer("/rate").and_then(Value::as_f64) {
            Some(rate) if rate > 0.0 => format!("{rate} msg/s (open loop)"),
            _ => "as fast as the producer goes".into(),
        },
    ));
    let mut knobs = String::new();
    if let Some(n) = first.config_u64("in_flight").filter(|n| *n > 1) {
        knobs.push_str(&format!(", {n} messages in flight per worker"));
    }
    if let Some(n) = first.config_u64("batch_size").filter(|n| *n > 1) {
        knobs.push_str(&format!(", transactions of up to {n} messages"));
    }
    if c.pointer("/redis_pipeline").and_then(Value::as_bool) == Some(true) {
        knobs.push_str(", GET and SET NX PX pipelined");
    }
    if c.pointer("/no_business_write").and_then(Value::as_bool) == Some(true) {
        knobs.push_str(", business write replaced by an in-memory record (--no-business-write)");
    }
    lines.push(format!(
        "Processor: {} partitions, {} worker(s){}{knobs}, commits {} every {} ms, PROCESSING TTL {}, DONE TTL {}, unique constraint {}",
        text(c, "/partitions"),
        text(c, "/workers"),
        match first.config_u64("processes") {
            Some(n) if n > 0 => format!(" in each of {n} processes"),
            _ => String::new(),
        },
        text(c, "/commit_mode"),
        text(c, "/commit_interval_ms"),
        duration(c.pointer("/processing_ttl_ms")),
        duration(c.pointer("/done_ttl_ms")),
        if c.pointer("/unique_constraint").and_then(Value::as_bool) == Some(false) {
            "off"
        } else {
            "on"
        },
    ));
    lines
}

fn duration(ms: Option<&Value>) -> String {
    ms.and_then(Value::as_u64).map_or("?".into(), |ms| {
        humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
    })
}

fn percent(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_f64)
        .map_or("?".into(), |v| format!("{:.0} %", v * 100.0))
}

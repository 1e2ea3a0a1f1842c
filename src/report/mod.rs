//! Reports people read: `summary.md` (for an ADR) and `report.html` (one self-contained file
//! with SVG charts), rendered from `result.json` files only — so `idembench report DIR`
//! re-renders exactly what a run or matrix wrote, and a report never shows a number that is
//! not in a `result.json`.

pub mod adr;
pub mod html;
pub mod markdown;
mod svg;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::results::RunResult;

pub use crate::results::ReadError as ReportError;

/// Every `result.json` at or beneath `path`, in path order.
pub fn load(path: &Path) -> Result<Vec<(PathBuf, RunResult)>, ReportError> {
    crate::results::load(path)
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
    if dir.join("adr.json").is_file() {
        adr::rerender(dir)?;
        return Ok(load(dir)?.len());
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
    let views: Vec<RunResult> = runs.into_iter().map(|(_, view)| view).collect();
    write(dir, &views, command.as_deref()).map_err(|e| ReportError {
        path: dir.display().to_string(),
        message: format!("cannot write the reports: {e}"),
    })?;
    Ok(views.len())
}

/// Writes `summary.md` and `report.html` into `dir` for `runs`. `command` is what produced
/// them (a matrix's command line); without it, each run's own command is shown.
pub fn write(dir: &Path, runs: &[RunResult], command: Option<&str>) -> std::io::Result<()> {
    std::fs::write(dir.join("summary.md"), markdown::render(runs, command))?;
    std::fs::write(dir.join("report.html"), html::render(runs, command))?;
    Ok(())
}

/// Runs grouped by scenario, in first-seen order (runs without a scenario form one group).
pub(crate) fn by_scenario(runs: &[RunResult]) -> Vec<(Option<&str>, Vec<&RunResult>)> {
    let mut groups: Vec<(Option<&str>, Vec<&RunResult>)> = Vec::new();
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

pub(crate) fn answers(runs: &[RunResult]) -> Vec<Answer> {
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
pub(crate) fn row(r: &RunResult) -> Vec<(String, Mark)> {
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
        plain(ms(r.processor.counts.stalled_us)),
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
pub(crate) fn commands<'a>(runs: &'a [RunResult], command: Option<&'a str>) -> Vec<&'a str> {
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

pub(crate) use crate::results::ms;

/// One line per distinct machine/setup fact, from the first run (a report covers one setup).
pub(crate) fn setup_lines(runs: &[RunResult]) -> Vec<String> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let env = &first.environment;
    let mut lines = vec![format!(
        "Machine: {} × {} CPUs, {} GiB memory, {} (kernel {}); idembench {} at commit {}",
        env.cpu_model,
        env.cpus,
        env.memory_gib,
        env.os,
        env.kernel,
        env.idembench_version,
        env.git_commit,
    )];
    let services = &first.services;
    lines.push(format!(
        "Services: Kafka at {} ({} broker(s)), Redis {}, PostgreSQL {}",
        services.kafka.brokers,
        services.kafka.broker_count,
        runs.iter()
            .find_map(|r| r
                .services
                .redis
                .as_ref()
                .map(|redis| redis.version.as_str()))
            .unwrap_or("not used"),
        services.postgres.version,
    ));
    if let Some(stack) = &env.stack {
        lines.push(stack_line(stack));
    }
    let clients = &first.clients;
    lines.push(format!(
        "Clients: rdkafka {} (librdkafka {}), redis-rs {}, fred {}, sqlx {}",
        clients.rdkafka, clients.librdkafka, clients.redis_rs, clients.fred, clients.sqlx,
    ));
    let c = &first.config;
    let stream = &c.stream;
    lines.push(format!(
        "Stream: {} trades, {} of them duplicated ({} late by {} ms), {} B messages, seed {}, offered {}",
        stream.trades,
        percent(stream.duplicate_rate),
        percent(stream.late_duplicate_share),
        stream.late_duplicate_delay_ms,
        stream.payload_bytes,
        stream.seed,
        if c.rate > 0.0 {
            format!("{} msg/s (open loop)", c.rate)
        } else {
            "as fast as the producer goes".into()
        },
    ));
    lines.push(processor_line(c));
    lines
}

fn stack_line(stack: &crate::config::StackInfo) -> String {
    use crate::config::Origin;
    let started: Vec<String> = [
        ("kafka", stack.kafka),
        ("redis", stack.redis),
        ("postgres", stack.postgres),
    ]
    .iter()
    .filter_map(|(name, origin)| match origin {
        Origin::Child => Some(format!("{name} as a child process")),
        Origin::Docker => Some(format!("{name} as a Docker container")),
        Origin::InProcess => Some(format!(
            "{name} as the tansu broker inside its own process (not Apache Kafka)"
        )),
        Origin::External => None,
    })
    .collect();
    let mode: &str = stack.mode.into();
    format!(
        "Stack (--stack {mode}): {}",
        if started.is_empty() {
            "services that were already running".to_string()
        } else {
            format!(
                "the run started {} on loopback, fresh and empty, and stopped them after",
                started.join(", ")
            )
        }
    )
}

fn processor_line(c: &crate::config::RunConfig) -> String {
    let mut knobs = String::new();
    if c.in_flight > 1 {
        knobs.push_str(&format!(", {} messages in flight per worker", c.in_flight));
    }
    if c.batch_size > 1 {
        knobs.push_str(&format!(
            ", transactions of up to {} messages",
            c.batch_size
        ));
    }
    if c.redis_pipeline {
        knobs.push_str(", GET and SET NX PX pipelined");
    }
    if c.processor_threads > 0 {
        knobs.push_str(&format!(
            ", on {} current-thread runtime(s) of its own (--processor-threads)",
            c.processor_threads
        ));
    }
    if c.redis_wait_replicas > 0 {
        knobs.push_str(&format!(
            ", WAIT {} {} after every Redis write",
            c.redis_wait_replicas, c.redis_wait_timeout_ms
        ));
    }
    if c.redis_persistence != crate::redis::RedisPersistence::None {
        let persistence: &str = c.redis_persistence.into();
        knobs.push_str(&format!(", Redis persistence {persistence}"));
    }
    if let Some(lag) = c.redis_replication_lag_ms {
        knobs.push_str(&format!(", the replica's link {lag} ms late"));
    }
    if c.no_business_write {
        knobs.push_str(", business write replaced by an in-memory record (--no-business-write)");
    }
    let commit_mode: &str = c.commit_mode.into();
    format!(
        "Processor: {} partitions, {} worker(s){}{knobs}, commits {commit_mode} every {} ms, PROCESSING TTL {}, DONE TTL {}, unique constraint {}",
        c.partitions,
        c.workers,
        match c.processes {
            0 => String::new(),
            n => format!(" in each of {n} processes"),
        },
        c.commit_interval_ms,
        duration(c.processing_ttl_ms),
        duration(c.done_ttl_ms),
        if c.unique_constraint { "on" } else { "off" },
    )
}

fn duration(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

fn percent(value: f64) -> String {
    format!("{:.0} %", value * 100.0)
}

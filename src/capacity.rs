//! `idembench capacity`: the highest offered rate a strategy sustains with end-to-end p99
//! (from the intended send time) under a bound — a single rate says little.
//!
//! Bisection on a log scale between `--min-rate` and `--max-rate`: each probe is a full run
//! (own topic, schema and keys) of about `--duration-s` at its rate. A probe sustains its rate
//! when it completes, its audit identity holds, its oracle agrees, and its p99 is within the
//! bound. Open loop makes this honest: a processor that falls behind accumulates a backlog
//! that shows in p99, never in a slowed-down producer.

use std::path::PathBuf;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::CapacityArgs;
use crate::run::{self, RunError};

#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub rate: f64,
    pub trades: u64,
    pub sustained: bool,
    pub p99_us: u64,
    pub processed_per_second: f64,
    pub result_dir: String,
    /// Why the probe did not sustain its rate, when it did not.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    pub strategy: &'static str,
    pub redis_client: &'static str,
    pub p99_bound_ms: f64,
    /// The highest probed rate that was sustained (`None`: not even `--min-rate`).
    pub capacity_per_second: Option<f64>,
    /// The lowest probed rate that was not (`None`: `--max-rate` was sustained).
    pub failed_at_per_second: Option<f64>,
    pub probes: Vec<Probe>,
    pub command: String,
}

pub struct CapacityOutcome {
    pub capacity: Capacity,
    pub dir: PathBuf,
}

pub async fn search(
    args: CapacityArgs,
    command: String,
    cancel: CancellationToken,
) -> Result<CapacityOutcome, RunError> {
    let fail = |message: &str| Err(RunError::Config(message.to_string()));
    if !(args.p99_ms > 0.0 && args.p99_ms.is_finite()) {
        return fail("--p99-ms must be a positive number of milliseconds");
    }
    if !(args.min_rate > 0.0 && args.max_rate > args.min_rate) {
        return fail("--min-rate must be positive and below --max-rate");
    }
    if args.probes < 2 || args.duration_s == 0 {
        return fail("--probes must be at least 2 and --duration-s positive");
    }
    let dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("reports/capacity").join(crate::run::stamp(std::time::SystemTime::now()))
    });
    if dir.join("capacity.json").exists() {
        return Err(RunError::Config(format!(
            "{} already holds a capacity.json; pass another --out",
            dir.display()
        )));
    }
    let bound_us = (args.p99_ms * 1000.0) as u64;
    let (mut low, mut high): (Option<f64>, Option<f64>) = (None, None);
    let mut probes: Vec<Probe> = Vec::new();
    let mut rate = args.min_rate;
    for index in 0..args.probes {
        if cancel.is_cancelled() {
            break;
        }
        let trades = ((rate * args.duration_s as f64) / (1.0 + args.common.duplicate_rate))
            .round()
            .max(100.0) as u64;
        let mut common = args.common.clone();
        common.rate = rate;
        common.trades = trades;
        common.quiet = true;
        let result_dir = dir.join(format!("{index:02}-rate-{rate:.0}"));
        let mut config = common.into_config(
            args.strategy,
            args.redis_client,
            Some(result_dir.clone()),
            command.clone(),
        );
        config.scenario = Some(format!("probe at {rate:.0} msg/s"));
        config.claim = Some(format!(
            "sustains {rate:.0} msg/s with p99 ≤ {} ms",
            args.p99_ms
        ));
        eprintln!("[idembench] probe {index}: {rate:.0} msg/s, {trades} trades");
        let probe = match run::execute(config, cancel.clone()).await {
            Ok(outcome) => {
                let r = &outcome.result;
                let p99 = r.latency_us.end_to_end_from_intended.p99;
                let reason = if r.status != crate::result::Status::Complete {
                    Some(format!(
                        "partial: {}",
                        r.partial_reason.as_deref().unwrap_or("stopped early")
                    ))
                } else if !r.correctness.identity_holds || r.oracle.mismatches > 0 {
                    Some("the audit identity or the oracle failed".into())
                } else if p99 > bound_us {
                    Some(format!("p99 {} over the bound", crate::report::ms(p99)))
                } else {
                    None
                };
                Probe {
                    rate,
                    trades,
                    sustained: reason.is_none(),
                    p99_us: p99,
                    processed_per_second: r.throughput.processed_per_second,
                    result_dir: outcome.dir.display().to_string(),
                    reason,
                }
            }
            Err(error) if error.exit_code() == 2 => return Err(error),
            Err(error) => Probe {
                rate,
                trades,
                sustained: false,
                p99_us: 0,
                processed_per_second: 0.0,
                result_dir: result_dir.display().to_string(),
                reason: Some(error.to_string()),
            },
        };
        eprintln!(
            "[idembench]   {} (p99 {}, {:.0} msg/s processed)",
            probe.reason.as_deref().unwrap_or("sustained"),
            crate::report::ms(probe.p99_us),
            probe.processed_per_second
        );
        if probe.sustained {
            low = Some(rate);
        } else {
            high = Some(rate);
        }
        probes.push(probe);
        rate = match (low, high) {
            // Not even the minimum: stop.
            (None, Some(_)) => break,
            // Sustained so far: try the maximum next, then bisect.
            (Some(_), None) if index == 0 => args.max_rate,
            (Some(_), None) => break,
            (Some(low), Some(high)) => (low * high).sqrt().round(),
            (None, None) => unreachable!("a probe either sustains or not"),
        };
        if probes.iter().any(|p| (p.rate - rate).abs() < 1.0) {
            break;
        }
    }
    let capacity = Capacity {
        strategy: args.strategy.name(),
        redis_client: if args.strategy.uses_redis() {
            args.redis_client.name()
        } else {
            "none"
        },
        p99_bound_ms: args.p99_ms,
        capacity_per_second: low,
        failed_at_per_second: high,
        probes,
        command,
    };
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("capacity.json"),
        serde_json::to_string_pretty(&capacity).expect("serializes") + "\n",
    )?;
    if let Ok(mut views) = crate::report::load(&dir) {
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let views: Vec<_> = views.into_iter().map(|(_, v)| v).collect();
        crate::report::write(&dir, &views, Some(&capacity.command))?;
    }
    Ok(CapacityOutcome { capacity, dir })
}

/// The probes as a table, and the answer.
pub fn table(capacity: &Capacity) -> String {
    let label = if capacity.redis_client == "none" {
        capacity.strategy.to_string()
    } else {
        format!("{} on {}", capacity.strategy, capacity.redis_client)
    };
    let mut out = format!(
        "{:>10}  {:>8}  {:>10}  {:>10}  verdict\n",
        "rate", "trades", "p99", "processed"
    );
    for p in &capacity.probes {
        out.push_str(&format!(
            "{:>10.0}  {:>8}  {:>10}  {:>10.0}  {}\n",
            p.rate,
            p.trades,
            crate::report::ms(p.p99_us),
            p.processed_per_second,
            p.reason.as_deref().unwrap_or("sustained")
        ));
    }
    out.push_str(
        &match (capacity.capacity_per_second, capacity.failed_at_per_second) {
            (Some(c), Some(f)) => format!(
                "capacity of {label} with p99 ≤ {} ms: {c:.0} msg/s (not {f:.0})\n",
                capacity.p99_bound_ms
            ),
            (Some(c), None) => format!(
                "{label} sustained every probed rate up to {c:.0} msg/s with p99 ≤ {} ms\n",
                capacity.p99_bound_ms
            ),
            (None, _) => format!(
                "{label} did not sustain even the lowest probed rate with p99 ≤ {} ms\n",
                capacity.p99_bound_ms
            ),
        },
    );
    out
}

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

use crate::config::RunConfig;
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
    pub strategy: String,
    pub redis_client: String,
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

/// What `idembench capacity` searches: one strategy's configuration, probed at several rates.
#[derive(Clone, Debug)]
pub struct CapacitySearch {
    /// Each probe is this run at its own rate (and a trade count that lasts `duration_s`).
    pub base: RunConfig,
    /// The latency bound: a rate is sustained when end-to-end p99 stays at or under it.
    pub p99_ms: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    /// Most probes (runs) in all.
    pub probes: usize,
    pub duration_s: u64,
    /// `None`: reports/capacity/<time>.
    pub out: Option<PathBuf>,
    pub command: String,
}

impl CapacitySearch {
    /// Checks the search and its runs' settings, before anything is started.
    pub fn validate(&self) -> Result<(), RunError> {
        let fail = |message: &str| Err(RunError::Config(message.to_string()));
        if !(self.p99_ms > 0.0 && self.p99_ms.is_finite()) {
            return fail("--p99-ms must be a positive number of milliseconds");
        }
        if !(self.min_rate > 0.0 && self.max_rate > self.min_rate) {
            return fail("--min-rate must be positive and below --max-rate");
        }
        if self.probes < 2 || self.duration_s == 0 {
            return fail("--probes must be at least 2 and --duration-s positive");
        }
        if let Some(out) = &self.out
            && out.join("capacity.json").exists()
        {
            return Err(RunError::Config(format!(
                "{} already holds a capacity.json; pass another --out",
                out.display()
            )));
        }
        let mut probe = self.base.clone();
        probe.rate = self.min_rate;
        probe.validate()?;
        Ok(())
    }

    /// The probe at `rate`: its trade count lasts about `duration_s`.
    fn probe_config(&self, rate: f64, result_dir: PathBuf) -> RunConfig {
        let trades = ((rate * self.duration_s as f64) / (1.0 + self.base.stream.duplicate_rate))
            .round()
            .max(100.0) as u64;
        let mut config = self.base.clone();
        config.rate = rate;
        config.stream.trades = trades;
        config.quiet = true;
        config.out = Some(result_dir);
        config.command = self.command.clone();
        config.scenario = Some(format!("probe at {rate:.0} msg/s"));
        config.claim = Some(format!(
            "sustains {rate:.0} msg/s with p99 ≤ {} ms",
            self.p99_ms
        ));
        config
    }
}

pub async fn search(
    search: CapacitySearch,
    cancel: CancellationToken,
) -> Result<CapacityOutcome, RunError> {
    search.validate()?;
    let dir = search.out.clone().unwrap_or_else(|| {
        PathBuf::from("reports/capacity").join(crate::config::stamp(std::time::SystemTime::now()))
    });
    let (mut low, mut high): (Option<f64>, Option<f64>) = (None, None);
    let mut probes: Vec<Probe> = Vec::new();
    let mut rate = search.min_rate;
    for index in 0..search.probes {
        if cancel.is_cancelled() {
            break;
        }
        let config = search.probe_config(rate, dir.join(format!("{index:02}-rate-{rate:.0}")));
        eprintln!(
            "[idembench] probe {index}: {rate:.0} msg/s, {} trades",
            config.stream.trades
        );
        let probe = probe(config, search.p99_ms, cancel.clone()).await?;
        eprintln!(
            "[idembench]   {} (p99 {}, {:.0} msg/s processed)",
            probe.reason.as_deref().unwrap_or("sustained"),
            crate::results::ms(probe.p99_us),
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
            (Some(_), None) if index == 0 => search.max_rate,
            (Some(_), None) => break,
            (Some(low), Some(high)) => (low * high).sqrt().round(),
            (None, None) => unreachable!("a probe either sustains or not"),
        };
        if probes.iter().any(|p| (p.rate - rate).abs() < 1.0) {
            break;
        }
    }
    let strategy = search.base.strategy;
    let capacity = Capacity {
        strategy: strategy.name().into(),
        redis_client: if strategy.capabilities().uses_redis {
            search.base.redis_client.name().into()
        } else {
            "none".into()
        },
        p99_bound_ms: search.p99_ms,
        capacity_per_second: low,
        failed_at_per_second: high,
        probes,
        command: search.command,
    };
    write(&dir, &capacity)?;
    Ok(CapacityOutcome { capacity, dir })
}

/// One full run at the probe's rate, judged against the bound.
async fn probe(
    config: RunConfig,
    p99_ms: f64,
    cancel: CancellationToken,
) -> Result<Probe, RunError> {
    let (rate, trades) = (config.rate, config.stream.trades);
    let result_dir = config.out.clone().unwrap_or_default();
    let bound_us = (p99_ms * 1000.0) as u64;
    Ok(match run::execute(config, cancel).await {
        Ok(outcome) => {
            let r = &outcome.result;
            let p99 = r.latency_us.end_to_end_from_intended.p99;
            let reason = if r.status != crate::results::Status::Complete {
                Some(format!(
                    "partial: {}",
                    r.partial_reason.as_deref().unwrap_or("stopped early")
                ))
            } else if !r.correctness.identity_holds || r.oracle.mismatches > 0 {
                Some("the audit identity or the oracle failed".into())
            } else if p99 > bound_us {
                Some(format!("p99 {} over the bound", crate::results::ms(p99)))
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
    })
}

/// capacity.json, and the reports over every probe that wrote a result.
fn write(dir: &std::path::Path, capacity: &Capacity) -> Result<(), RunError> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("capacity.json"),
        serde_json::to_string_pretty(capacity).expect("serializes") + "\n",
    )?;
    if let Ok(mut results) = crate::report::load(dir) {
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let results: Vec<_> = results.into_iter().map(|(_, v)| v).collect();
        crate::report::write(dir, &results, Some(&capacity.command))?;
    }
    Ok(())
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
            crate::results::ms(p.p99_us),
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

//! `idembench adr`: the evidence an architecture review decides from, in one command.
//!
//! 1. the claims matrix (every scenario of the claims file × its strategies), for the verdict
//!    grid;
//! 2. per repetition, per strategy (× client): a capacity search — the highest rate with
//!    end-to-end p99 under the bound;
//! 3. per repetition, per strategy: a fixed-rate run at one common rate below every
//!    strategy's median capacity, warm-up excluded — latency, CPU per message and what the
//!    idempotency state occupies;
//! 4. `adr.json`, `adr.md` and `report.html` under the output directory.
//!
//! Repetitions alternate strategies (rep 1 of each, then rep 2 of each) so a noisy minute of
//! a shared machine spreads over all of them instead of hitting one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::capacity::{self, CapacitySearch};
use super::matrix::{self, MatrixPlan};
use crate::config::RunConfig;
use crate::results::adr::{
    ADR_SCHEMA_VERSION, Adr, AdrSettings, Grid, Projection, Spread, StrategyCost,
};
use crate::results::{RunResult, Status};
use crate::run::{self, RunError};

/// What `idembench adr` runs.
#[derive(Clone, Debug)]
pub struct AdrPlan {
    /// The claims matrix; its `out` is `<out>/claims`.
    pub claims: MatrixPlan,
    /// One configuration per strategy (× client): the cost suite's runs start from it.
    pub costs: Vec<RunConfig>,
    pub settings: AdrSettings,
    pub out: PathBuf,
    pub command: String,
}

pub struct AdrOutcome {
    pub adr: Adr,
    /// The claims matrix's rows (identity and oracle verdicts per run).
    pub claims: matrix::Matrix,
    pub dir: PathBuf,
}

impl AdrPlan {
    /// Checks every step's settings before anything is started.
    pub fn validate(&self) -> Result<(), RunError> {
        let fail = |message: String| Err(RunError::Config(message));
        if self.out.join("adr.json").exists() {
            return fail(format!(
                "{} already holds an adr.json; runs never overwrite each other — pass another --out",
                self.out.display()
            ));
        }
        let s = &self.settings;
        if s.repetitions == 0 {
            return fail("--repetitions must be at least 1".into());
        }
        if s.latency_duration_s == 0 || s.latency_warm_up_ms >= s.latency_duration_s * 1000 {
            return fail(format!(
                "--latency-duration-s ({} s) must be positive and longer than --latency-warm-up-ms ({} ms)",
                s.latency_duration_s, s.latency_warm_up_ms
            ));
        }
        if s.latency_warm_up_ms >= s.capacity_duration_s * 1000 {
            return fail(format!(
                "--duration-s ({} s) must be longer than --latency-warm-up-ms ({} ms): capacity probes exclude the warm-up too",
                s.capacity_duration_s, s.latency_warm_up_ms
            ));
        }
        if !(s.production_rate > 0.0 && s.production_rate.is_finite()) {
            return fail("--production-rate must be a positive number of trades per second".into());
        }
        if self.costs.is_empty() {
            return fail("the cost suite has no strategy: name one with --strategies".into());
        }
        self.claims.validate()?;
        for base in &self.costs {
            self.search(base, 1).validate()?;
            let mut fixed = self.fixed_rate(base, s.capacity_min_rate, 1);
            fixed.out = None;
            fixed.validate()?;
        }
        Ok(())
    }

    /// A strategy's capacity search of one repetition.
    fn search(&self, base: &RunConfig, repetition: usize) -> CapacitySearch {
        let s = &self.settings;
        let dir = self
            .out
            .join("cost/capacity")
            .join(name(base))
            .join(format!("rep-{repetition}"));
        let mut base = base.clone();
        // A probe is judged on its steady state too: the group's first fetches are not load.
        base.warm_up_ms = s.latency_warm_up_ms;
        CapacitySearch {
            base,
            p99_ms: s.p99_bound_ms,
            min_rate: s.capacity_min_rate,
            max_rate: s.capacity_max_rate,
            probes: s.capacity_probes,
            duration_s: s.capacity_duration_s,
            out: Some(dir),
            command: self.command.clone(),
        }
    }

    /// A strategy's fixed-rate run of one repetition at `rate`.
    fn fixed_rate(&self, base: &RunConfig, rate: f64, repetition: usize) -> RunConfig {
        let s = &self.settings;
        let mut config = base.clone();
        config.rate = rate;
        config.stream.trades = ((rate * s.latency_duration_s as f64)
            / (1.0 + config.stream.duplicate_rate))
            .ceil()
            .max(100.0) as u64;
        config.warm_up_ms = s.latency_warm_up_ms;
        config.quiet = true;
        config.command = self.command.clone();
        config.scenario = Some(format!("latency at {rate:.0} msg/s"));
        config.claim = None;
        config.out = Some(
            self.out
                .join("cost/latency")
                .join(name(base))
                .join(format!("rep-{repetition}")),
        );
        config
    }
}

/// `strategy` or `strategy-client`: a cost run's directory name.
fn name(config: &RunConfig) -> String {
    if config.strategy.capabilities().uses_redis {
        format!("{}-{}", config.strategy.name(), config.redis_client.name())
    } else {
        config.strategy.name().to_string()
    }
}

fn say(line: String) {
    eprintln!("[idembench] adr: {line}");
}

/// What one strategy's cost runs gave.
#[derive(Default)]
struct Measured {
    /// Per repetition: the capacity (if any rate was sustained) and its capacity.json.
    capacities: Vec<(Option<f64>, PathBuf)>,
    /// Per repetition: the fixed-rate run, or why it failed.
    fixed: Vec<Result<(RunResult, PathBuf), String>>,
}

pub async fn run_adr(plan: AdrPlan, cancel: CancellationToken) -> Result<AdrOutcome, RunError> {
    plan.validate()?;
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let dir = plan.out.clone();
    std::fs::create_dir_all(&dir)?;
    let mut partial: Option<String> = None;

    say(format!(
        "1/3 the claims matrix: {} runs",
        plan.claims.runs.len()
    ));
    let claims = matrix::run_matrix(plan.claims.clone(), cancel.clone()).await?;
    print!("{}", matrix::table(&claims.matrix));

    let repetitions = plan.settings.repetitions;
    let mut measured: Vec<Measured> = plan.costs.iter().map(|_| Measured::default()).collect();
    say(format!(
        "2/3 capacity: {} strategies × {repetitions} repetitions, p99 ≤ {} ms",
        plan.costs.len(),
        plan.settings.p99_bound_ms
    ));
    'capacity: for repetition in 1..=repetitions {
        for (base, measured) in plan.costs.iter().zip(&mut measured) {
            if cancel.is_cancelled() {
                break 'capacity;
            }
            say(format!(
                "capacity of {}, repetition {repetition}",
                name(base)
            ));
            let outcome = capacity::search(plan.search(base, repetition), cancel.clone()).await?;
            say(format!(
                "  {}",
                capacity::table(&outcome.capacity)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ));
            measured.capacities.push((
                outcome.capacity.capacity_per_second,
                outcome.dir.join("capacity.json"),
            ));
        }
    }

    let capacities: Vec<Option<Spread>> = measured
        .iter()
        .map(|m| {
            Spread::of(&sourced(
                m.capacities
                    .iter()
                    .filter_map(|(c, p)| Some((c.as_ref()?, p))),
                &dir,
            ))
        })
        .collect();
    let common_rate = common_rate(&capacities, plan.settings.capacity_min_rate);
    say(format!(
        "3/3 latency, CPU and storage at {common_rate:.0} msg/s (half the lowest median capacity, rounded down), {} s each, warm-up {} ms",
        plan.settings.latency_duration_s, plan.settings.latency_warm_up_ms
    ));
    'fixed: for repetition in 1..=repetitions {
        for (base, measured) in plan.costs.iter().zip(&mut measured) {
            if cancel.is_cancelled() {
                break 'fixed;
            }
            let config = plan.fixed_rate(base, common_rate, repetition);
            let outcome = run::execute(config, cancel.clone()).await;
            measured.fixed.push(match outcome {
                Ok(outcome) => {
                    let e2e = &outcome.result.latency_us.end_to_end_from_intended;
                    say(format!(
                        "{} repetition {repetition}: p50 {}, p99 {}",
                        name(base),
                        crate::results::ms(e2e.p50),
                        crate::results::ms(e2e.p99)
                    ));
                    Ok((outcome.result, outcome.dir))
                }
                Err(error @ RunError::Config(_)) => return Err(error),
                Err(error) => {
                    say(format!(
                        "{} repetition {repetition} failed: {error}",
                        name(base)
                    ));
                    Err(error.to_string())
                }
            });
        }
    }
    if cancel.is_cancelled() {
        partial = Some("interrupted (Ctrl-C): the steps not reached have no figures".into());
    }

    let relative = |path: &str| relative_to(&dir, Path::new(path));
    let grid = Grid::from_matrix(&claims.matrix.runs, relative);
    let verdicts = grid.verdicts();
    let costs: Vec<StrategyCost> = plan
        .costs
        .iter()
        .zip(&measured)
        .zip(capacities)
        .map(|((base, measured), capacity)| cost(base, measured, capacity, &plan.settings, &dir))
        .collect();
    let fixed_results: Vec<RunResult> = measured
        .iter()
        .flat_map(|m| m.fixed.iter().filter_map(|r| r.as_ref().ok()))
        .map(|(result, _)| result.clone())
        .collect();
    let mut setup = crate::report::setup_lines(&fixed_results);
    if setup.is_empty()
        && let Ok(results) = crate::report::load(&claims.dir)
    {
        let results: Vec<RunResult> = results.into_iter().map(|(_, r)| r).collect();
        setup = crate::report::setup_lines(&results);
    }
    let adr = Adr {
        schema_version: ADR_SCHEMA_VERSION,
        idembench_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        duration_s: (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        status: if partial.is_some() {
            Status::Partial
        } else {
            Status::Complete
        },
        partial_reason: partial,
        command: plan.command.clone(),
        settings: plan.settings.clone(),
        claims_matrix: relative_to(&dir, &claims.dir.join("matrix.json")),
        grid,
        verdicts,
        costs,
        common_rate_per_second: Some(common_rate),
        setup,
    };
    crate::report::adr::write(&dir, &adr)?;
    Ok(AdrOutcome {
        adr,
        claims: claims.matrix,
        dir,
    })
}

/// Half the lowest median capacity, rounded down to 1, 2 or 5 × a power of ten: below every
/// strategy's capacity with room for its spread. Without any capacity, half the lowest rate
/// probed.
fn common_rate(capacities: &[Option<Spread>], min_rate: f64) -> f64 {
    let lowest = capacities
        .iter()
        .flatten()
        .map(|s| s.median)
        .fold(f64::INFINITY, f64::min);
    let half = if lowest.is_finite() { lowest } else { min_rate } / 2.0;
    let magnitude = 10f64.powf(half.max(1.0).log10().floor());
    [5.0, 2.0, 1.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|rate| *rate <= half)
        .unwrap_or(magnitude)
}

/// `path` relative to `dir` where it lies beneath it (as the ADR links it), else as it is.
fn relative_to(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).display().to_string()
}

fn sourced<'a>(
    values: impl Iterator<Item = (&'a f64, &'a PathBuf)>,
    dir: &Path,
) -> Vec<(f64, String)> {
    values
        .map(|(value, path)| (*value, relative_to(dir, path)))
        .collect()
}

/// One strategy's cost from its runs.
fn cost(
    base: &RunConfig,
    measured: &Measured,
    capacity: Option<Spread>,
    settings: &AdrSettings,
    dir: &Path,
) -> StrategyCost {
    let runs: Vec<(&RunResult, String)> = measured
        .fixed
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(result, path)| (result, relative_to(dir, &path.join("result.json"))))
        .collect();
    let spread = |figure: &dyn Fn(&RunResult) -> Option<f64>| {
        Spread::of(
            &runs
                .iter()
                .filter_map(|(r, path)| Some((figure(r)?, path.clone())))
                .collect::<Vec<_>>(),
        )
    };
    let mut latency_ms = BTreeMap::new();
    for (name, pick) in [
        (
            "p50",
            (|p| p.p50) as fn(&crate::results::Percentiles) -> u64,
        ),
        ("p99", |p| p.p99),
        ("p99.9", |p| p.p999),
    ] {
        if let Some(s) = spread(&|r: &RunResult| {
            let e2e = &r.latency_us.end_to_end_from_intended;
            (e2e.count > 0).then(|| pick(e2e) as f64 / 1000.0)
        }) {
            latency_ms.insert(name.to_string(), s);
        }
    }
    let parts: std::collections::BTreeSet<&String> = runs
        .iter()
        .flat_map(|(r, _)| r.resources.cpu_us_per_message.keys())
        .collect();
    let cpu_us_per_message = parts
        .into_iter()
        .filter_map(|part| {
            spread(&|r: &RunResult| r.resources.cpu_us_per_message.get(part).copied())
                .map(|s| (part.clone(), s))
        })
        .collect();
    let cpu_unmeasured = runs
        .iter()
        .flat_map(|(r, _)| r.resources.services_unmeasured.clone())
        .collect();
    let storage = |r: &RunResult| r.storage.clone().unwrap_or_default();
    let redis_bytes_per_key = spread(&|r: &RunResult| storage(r).redis_bytes_per_key());
    let redis_keys_per_trade = spread(&|r: &RunResult| {
        crate::results::adr::storage_figures(&storage(r), r.config.stream.trades).1
    })
    .map(|s| s.median);
    let tables: std::collections::BTreeSet<String> = runs
        .iter()
        .flat_map(|(r, _)| storage(r).postgres.into_iter().map(|t| t.table))
        .collect();
    let postgres_bytes_per_trade: BTreeMap<String, Spread> = tables
        .into_iter()
        .filter_map(|table| {
            spread(&|r: &RunResult| storage(r).table(&table).map(|t| t.bytes_per_trade))
                .map(|s| (table.clone(), s))
        })
        .collect();
    let projection = Projection::new(
        settings.production_rate,
        settings.done_ttl_ms,
        redis_bytes_per_key.as_ref().map(|s| s.median),
        redis_keys_per_trade,
        &postgres_bytes_per_trade,
    );
    let uses_redis = base.strategy.capabilities().uses_redis;
    StrategyCost {
        label: if uses_redis {
            format!("{} on {}", base.strategy.name(), base.redis_client.name())
        } else {
            base.strategy.name().to_string()
        },
        strategy: base.strategy.name().to_string(),
        redis_client: if uses_redis {
            base.redis_client.name().to_string()
        } else {
            "none".to_string()
        },
        capacity_per_second: capacity,
        capacity_runs: measured
            .capacities
            .iter()
            .map(|(_, path)| relative_to(dir, path))
            .collect(),
        latency_ms,
        latency_runs: runs.iter().map(|(_, path)| path.clone()).collect(),
        cpu_us_per_message,
        cpu_unmeasured,
        redis_bytes_per_key,
        redis_keys_per_trade,
        postgres_bytes_per_trade,
        projection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(median: f64) -> Option<Spread> {
        Some(Spread {
            min: median,
            median,
            max: median,
            n: 1,
            median_source: String::new(),
        })
    }

    #[test]
    fn the_common_rate_is_half_the_lowest_capacity_rounded_down() {
        assert_eq!(common_rate(&[spread(1_900.0), spread(700.0)], 100.0), 200.0);
        assert_eq!(common_rate(&[spread(1_100.0), None], 100.0), 500.0);
        assert_eq!(common_rate(&[spread(260.0)], 100.0), 100.0);
        // No strategy sustained even the lowest rate: half of it.
        assert_eq!(common_rate(&[None], 100.0), 50.0);
    }
}

//! `idembench matrix`: every (strategy × Redis client) pair on the same seeded stream, one
//! run after another. Each run has its own topic, schema and keys (clean state by
//! construction); each writes its own `result.json`; `matrix.json` gathers them, and one table
//! compares them.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::config::RunConfig;
use crate::redis::RedisClientKind;
pub use crate::results::matrix::{MATRIX_SCHEMA_VERSION, Matrix, MatrixRun};
use crate::results::{Status, ms};
use crate::run::{RunError, execute};
use crate::strategy::StrategyKind;

/// The pairs to run: Redis strategies on each client, the others once.
pub fn pairs(
    strategies: &[StrategyKind],
    clients: &[RedisClientKind],
) -> Vec<(StrategyKind, Option<RedisClientKind>)> {
    let strategies = if strategies.is_empty() {
        &StrategyKind::ALL[..]
    } else {
        strategies
    };
    let clients = if clients.is_empty() {
        &[RedisClientKind::RedisRs, RedisClientKind::Fred][..]
    } else {
        clients
    };
    let mut pairs = Vec::new();
    for strategy in strategies {
        if strategy.capabilities().uses_redis {
            pairs.extend(clients.iter().map(|client| (*strategy, Some(*client))));
        } else {
            pairs.push((*strategy, None));
        }
    }
    pairs.dedup();
    pairs
}

pub struct MatrixOutcome {
    pub matrix: Matrix,
    pub dir: PathBuf,
}

/// What a matrix runs: one resolved configuration per run, in order. `cli` builds it from the
/// flags or a scenario file (every scenario × its strategy and client pairs).
#[derive(Clone, Debug)]
pub struct MatrixPlan {
    pub runs: Vec<RunConfig>,
    /// Directory for matrix.json and one sub-directory per run; `None`: reports/matrix/<time>.
    pub out: Option<PathBuf>,
    pub command: String,
    pub quiet: bool,
}

impl MatrixPlan {
    /// The directory matrix.json goes to.
    pub fn dir(&self, started: std::time::SystemTime) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports/matrix").join(crate::config::stamp(started)))
    }

    /// Checks the plan and every run's settings, before anything is started.
    pub fn validate(&self) -> Result<(), RunError> {
        if let Some(out) = &self.out
            && out.join("matrix.json").exists()
        {
            return Err(RunError::Config(format!(
                "{} already holds a matrix.json; runs never overwrite each other — pass another --out",
                out.display()
            )));
        }
        for config in &self.runs {
            config.validate()?;
        }
        Ok(())
    }
}

/// A run's label in the log and its directory's name: `scenario-strategy-client`.
fn run_name(config: &RunConfig) -> String {
    let client = if config.strategy.capabilities().uses_redis {
        config.redis_client.name()
    } else {
        "none"
    };
    let prefix = config
        .scenario
        .as_ref()
        .map(|s| format!("{s}-"))
        .unwrap_or_default();
    format!("{prefix}{}-{client}", config.strategy.name())
}

pub async fn run_matrix(
    plan: MatrixPlan,
    cancel: CancellationToken,
) -> Result<MatrixOutcome, RunError> {
    let started = std::time::SystemTime::now();
    let dir = plan.dir(started);
    plan.validate()?;
    let mut runs = Vec::new();
    for (index, config) in plan.runs.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let name = run_name(config);
        let run_dir = dir.join(format!("{:02}-{name}", index + 1));
        if !plan.quiet {
            eprintln!(
                "[idembench] matrix {}/{}: {name}",
                index + 1,
                plan.runs.len()
            );
        }
        let mut config = config.clone();
        config.out = Some(run_dir.clone());
        let (scenario, claim) = (config.scenario.clone(), config.claim.clone());
        let (strategy, client) = (
            config.strategy.name(),
            if config.strategy.capabilities().uses_redis {
                config.redis_client.name()
            } else {
                "none"
            },
        );
        match execute(config, cancel.clone()).await {
            Ok(outcome) => runs.push(MatrixRun {
                scenario,
                claim,
                ..MatrixRun::from_result(&outcome.result, &outcome.dir)
            }),
            Err(error @ RunError::Config(_)) => return Err(error),
            Err(error) => {
                eprintln!("[idembench] matrix: {name} failed: {error}");
                runs.push(MatrixRun {
                    scenario,
                    claim,
                    claim_held: None,
                    strategy: strategy.into(),
                    redis_client: client.into(),
                    status: None,
                    result_dir: run_dir.display().to_string(),
                    error: Some(error.to_string()),
                    processed_per_second: None,
                    end_to_end_from_intended_us: None,
                    correctness: None,
                    oracle_mismatches: None,
                    faults: None,
                });
            }
        }
    }
    let matrix = Matrix {
        schema_version: MATRIX_SCHEMA_VERSION,
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        command: plan.command,
        runs,
    };
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::File::create(dir.join("matrix.json"))?;
    serde_json::to_writer_pretty(file, &matrix).map_err(std::io::Error::from)?;
    // One report over every run that wrote a result, in the order they ran.
    if let Ok(mut results) = crate::report::load(&dir) {
        let order = |file: &std::path::Path| {
            matrix
                .runs
                .iter()
                .position(|run| file.parent() == Some(std::path::Path::new(&run.result_dir)))
                .unwrap_or(usize::MAX)
        };
        results.sort_by_key(|(file, _)| order(file));
        let results: Vec<_> = results.into_iter().map(|(_, result)| result).collect();
        crate::report::write(&dir, &results, Some(&matrix.command))?;
    }
    Ok(MatrixOutcome { matrix, dir })
}

/// The comparison table: one row per pair, every correctness count.
pub fn table(matrix: &Matrix) -> String {
    let header = [
        "strategy",
        "client",
        "faults",
        "msg/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "once",
        "lost",
        "double",
        "extra",
        "caught",
        "suppressed",
        "identity",
        "claim",
        "oracle",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    let mut headings = Vec::new();
    for run in &matrix.runs {
        if run.scenario.is_some()
            && headings
                .last()
                .is_none_or(|(_, name): &(usize, String)| Some(name) != run.scenario.as_ref())
        {
            headings.push((rows.len(), run.scenario.clone().unwrap_or_default()));
        }
        let mut row = vec![
            run.strategy.to_string(),
            run.redis_client.to_string(),
            run.faults.map_or("-".into(), |n| n.to_string()),
        ];
        match (
            &run.correctness,
            &run.end_to_end_from_intended_us,
            run.processed_per_second,
        ) {
            (Some(c), Some(e2e), Some(rate)) => {
                row.extend([
                    format!("{rate:.0}"),
                    ms(e2e.p50),
                    ms(e2e.p99),
                    ms(e2e.p999),
                    ms(e2e.max),
                ]);
                row.extend(
                    [
                        c.exactly_once,
                        c.lost,
                        c.double_applied,
                        c.extra_effects,
                        c.caught_by_constraint,
                        c.duplicates_suppressed,
                    ]
                    .map(|n| n.to_string()),
                );
                let identity = if !c.identity_holds {
                    "VIOLATED"
                } else if run.status == Some(Status::Partial) {
                    "holds (partial)"
                } else {
                    "holds"
                };
                row.push(identity.to_string());
                row.push(match run.claim_held {
                    Some(true) => "HELD".into(),
                    Some(false) => "REFUTED".into(),
                    None => "-".into(),
                });
                row.push(match run.oracle_mismatches {
                    Some(0) => "agrees".to_string(),
                    Some(n) => format!("{n} MISMATCH"),
                    None => "-".to_string(),
                });
            }
            _ => row.push(format!(
                "FAILED: {}",
                run.error.as_deref().unwrap_or("unknown")
            )),
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (index, row) in rows.into_iter().enumerate() {
        if let Some((_, name)) = headings.iter().find(|(at, _)| *at == index) {
            let claim = matrix
                .runs
                .iter()
                .find(|r| r.scenario.as_ref() == Some(name))
                .and_then(|r| r.claim.clone());
            out.push_str(&format!("== {name}: {}\n", claim.unwrap_or_default()));
        }
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let width = widths[i];
                if i < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_free_strategies_run_once_and_redis_ones_per_client() {
        let all = pairs(&[], &[]);
        assert_eq!(all.len(), 4 + 5 * 2);
        assert!(all.contains(&(StrategyKind::DbOnly, None)));
        assert!(all.contains(&(StrategyKind::RedisOnly, Some(RedisClientKind::Fred))));
        let some = pairs(
            &[StrategyKind::None, StrategyKind::DualDbFirst],
            &[RedisClientKind::Fred],
        );
        assert_eq!(
            some,
            vec![
                (StrategyKind::None, None),
                (StrategyKind::DualDbFirst, Some(RedisClientKind::Fred))
            ]
        );
    }

    #[test]
    fn a_failed_run_shows_in_the_table() {
        let matrix = Matrix {
            schema_version: 1,
            started_at: String::new(),
            command: String::new(),
            runs: vec![MatrixRun {
                scenario: None,
                claim: None,
                claim_held: None,
                strategy: "db-only".into(),
                redis_client: "none".into(),
                status: None,
                result_dir: String::new(),
                error: Some("cannot reach Postgres".into()),
                processed_per_second: None,
                end_to_end_from_intended_us: None,
                correctness: None,
                oracle_mismatches: None,
                faults: None,
            }],
        };
        let table = table(&matrix);
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .contains("FAILED: cannot reach Postgres"),
            "{table}"
        );
    }
}

//! `adr.json`: what `idembench adr` measured, in the shape an architecture review reads —
//! the verdict grid (claims × strategies), one sentence per strategy, and each strategy's
//! cost with its spread over repetitions and the memory projection. Pure functions of
//! results: [`Grid::from_matrix`], [`Spread::of`], [`Projection::new`]; the runs are
//! [`crate::sweep::adr`]'s, the rendering [`crate::report::adr`]'s.
//! `reports/schema/adr.v1.schema.json` is its JSON Schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::results::matrix::MatrixRun;
use crate::results::storage::Storage;

pub const ADR_SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Adr {
    pub schema_version: u32,
    pub idembench_version: String,
    pub started_at: String,
    /// Wall-clock seconds the whole command took.
    pub duration_s: f64,
    /// `complete`, or `partial` when Ctrl-C (or a failed step) cut it short.
    pub status: crate::results::Status,
    pub partial_reason: Option<String>,
    pub command: String,
    pub settings: AdrSettings,
    /// The claims matrix's `matrix.json`, relative to the ADR's directory.
    pub claims_matrix: String,
    pub grid: Grid,
    /// One per grid column, in its order.
    pub verdicts: Vec<Verdict>,
    /// One per strategy (× client) of the cost suite.
    pub costs: Vec<StrategyCost>,
    /// The fixed rate every strategy's latency was measured at: below each one's capacity.
    pub common_rate_per_second: Option<f64>,
    /// The machine, the services and how they were started, as the runs recorded them.
    pub setup: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdrSettings {
    pub scenario_file: String,
    pub repetitions: usize,
    pub p99_bound_ms: f64,
    pub capacity_min_rate: f64,
    pub capacity_max_rate: f64,
    pub capacity_probes: usize,
    pub capacity_duration_s: u64,
    pub latency_duration_s: u64,
    pub latency_warm_up_ms: u64,
    /// The projection's production rate (trades per second) and DONE TTL.
    pub production_rate: f64,
    pub done_ttl_ms: u64,
}

/// Rows are claims (the scenarios, in file order), columns are strategies (× client where a
/// strategy ran on several).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Grid {
    pub columns: Vec<Column>,
    pub rows: Vec<GridRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub strategy: String,
    /// `none` for a strategy without Redis.
    pub redis_client: String,
    /// `strategy`, or `strategy on client` where the strategy ran on several clients.
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GridRow {
    pub scenario: String,
    pub claim: String,
    /// One per column.
    pub cells: Vec<Cell>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CellVerdict {
    /// Nothing lost, nothing applied twice.
    Held,
    /// Trades lost or applied twice: the counts say which.
    Refuted,
    /// The run failed before it could audit.
    Failed,
    /// No run of this strategy for this claim (the scenario does not name it, or the command
    /// was interrupted first).
    NotRun,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub verdict: CellVerdict,
    pub lost: u64,
    pub doubled: u64,
    /// The run stopped early (its counts cover what it produced).
    pub partial: bool,
    /// The run's directory (its result.json), relative to the ADR's directory.
    pub result_dir: Option<String>,
    pub error: Option<String>,
}

impl Cell {
    fn missing() -> Cell {
        Cell {
            verdict: CellVerdict::NotRun,
            lost: 0,
            doubled: 0,
            partial: false,
            result_dir: None,
            error: None,
        }
    }

    /// `held`, `lost 3`, `doubled 130`, `lost 1, doubled 2`, `failed`, `not run`.
    pub fn words(&self) -> String {
        let base = match self.verdict {
            CellVerdict::Held => "held".to_string(),
            CellVerdict::Failed => "failed".to_string(),
            CellVerdict::NotRun => "not run".to_string(),
            CellVerdict::Refuted => match (self.lost, self.doubled) {
                (0, d) => format!("doubled {d}"),
                (l, 0) => format!("lost {l}"),
                (l, d) => format!("lost {l}, doubled {d}"),
            },
        };
        if self.partial {
            format!("{base} (partial)")
        } else {
            base
        }
    }
}

impl Grid {
    /// The grid of a claims matrix's rows; `relative` turns a run's directory into the path
    /// the ADR links to.
    pub fn from_matrix(runs: &[MatrixRun], relative: impl Fn(&str) -> String) -> Grid {
        let mut columns: Vec<(String, String)> = Vec::new();
        let mut scenarios: Vec<(String, String)> = Vec::new();
        for run in runs {
            let column = (run.strategy.clone(), run.redis_client.clone());
            if !columns.contains(&column) {
                columns.push(column);
            }
            let scenario = run.scenario.clone().unwrap_or_default();
            if !scenarios.iter().any(|(name, _)| *name == scenario) {
                scenarios.push((scenario, run.claim.clone().unwrap_or_default()));
            }
        }
        let clients_of = |strategy: &str| columns.iter().filter(|(s, _)| s == strategy).count();
        let columns: Vec<Column> = columns
            .iter()
            .map(|(strategy, client)| Column {
                strategy: strategy.clone(),
                redis_client: client.clone(),
                label: if clients_of(strategy) > 1 {
                    format!("{strategy} on {client}")
                } else {
                    strategy.clone()
                },
            })
            .collect();
        let rows = scenarios
            .into_iter()
            .map(|(scenario, claim)| {
                let cells = columns
                    .iter()
                    .map(|column| {
                        runs.iter()
                            .find(|run| {
                                run.scenario.as_deref().unwrap_or_default() == scenario
                                    && run.strategy == column.strategy
                                    && run.redis_client == column.redis_client
                            })
                            .map_or_else(Cell::missing, |run| cell(run, &relative))
                    })
                    .collect();
                GridRow {
                    scenario,
                    claim,
                    cells,
                }
            })
            .collect();
        Grid { columns, rows }
    }

    /// One verdict per column, in order.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let cells: Vec<(&GridRow, &Cell)> = self
                    .rows
                    .iter()
                    .map(|row| (row, &row.cells[index]))
                    .collect();
                let count = |verdict| cells.iter().filter(|(_, c)| c.verdict == verdict).count();
                let refuted: Vec<&(&GridRow, &Cell)> = cells
                    .iter()
                    .filter(|(_, c)| c.verdict == CellVerdict::Refuted)
                    .collect();
                let (held, failed, not_run) = (
                    count(CellVerdict::Held),
                    count(CellVerdict::Failed),
                    count(CellVerdict::NotRun),
                );
                let tested = held + refuted.len();
                let lost: Vec<String> = refuted
                    .iter()
                    .filter(|(_, c)| c.lost > 0)
                    .map(|(row, c)| format!("{} in {}", c.lost, row.scenario))
                    .collect();
                let doubled: Vec<String> = refuted
                    .iter()
                    .filter(|(_, c)| c.doubled > 0)
                    .map(|(row, c)| format!("{} in {}", c.doubled, row.scenario))
                    .collect();
                let mut sentence = if refuted.is_empty() && tested > 0 {
                    if tested == cells.len() {
                        format!("{}: held every claim ({tested} of {tested})", column.label)
                    } else {
                        format!("{}: held every claim it ran ({tested})", column.label)
                    }
                } else if tested == 0 {
                    format!("{}: no claim was tested", column.label)
                } else {
                    let mut parts = Vec::new();
                    if !lost.is_empty() {
                        parts.push(format!("lost {}", lost.join(", ")));
                    }
                    if !doubled.is_empty() {
                        parts.push(format!("doubled {}", doubled.join(", ")));
                    }
                    format!(
                        "{}: refuted {} of {tested} claims — {}",
                        column.label,
                        refuted.len(),
                        parts.join("; ")
                    )
                };
                if failed > 0 {
                    sentence.push_str(&format!("; {failed} failed to run"));
                }
                if not_run > 0 && tested > 0 {
                    sentence.push_str(&format!("; {not_run} not run"));
                }
                sentence.push('.');
                Verdict {
                    label: column.label.clone(),
                    strategy: column.strategy.clone(),
                    redis_client: column.redis_client.clone(),
                    claims_tested: tested,
                    claims_refuted: refuted.len(),
                    trades_lost: refuted.iter().map(|(_, c)| c.lost).sum(),
                    trades_doubled: refuted.iter().map(|(_, c)| c.doubled).sum(),
                    held_every_claim: refuted.is_empty()
                        && failed == 0
                        && not_run == 0
                        && tested > 0,
                    sentence,
                }
            })
            .collect()
    }
}

fn cell(run: &MatrixRun, relative: &impl Fn(&str) -> String) -> Cell {
    let result_dir = Some(relative(&run.result_dir));
    match &run.correctness {
        None => Cell {
            verdict: CellVerdict::Failed,
            error: run.error.clone(),
            result_dir,
            ..Cell::missing()
        },
        Some(c) => Cell {
            verdict: if c.lost == 0 && c.double_applied == 0 {
                CellVerdict::Held
            } else {
                CellVerdict::Refuted
            },
            lost: c.lost,
            doubled: c.double_applied,
            partial: run.status == Some(crate::results::Status::Partial),
            result_dir,
            error: None,
        },
    }
}

/// What the grid says of one column.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub label: String,
    pub strategy: String,
    pub redis_client: String,
    /// Claims with an audited run (held or refuted).
    pub claims_tested: usize,
    pub claims_refuted: usize,
    /// Summed over the refuted claims' runs.
    pub trades_lost: u64,
    pub trades_doubled: u64,
    /// Every claim ran and held.
    pub held_every_claim: bool,
    /// One sentence the grid supports: `db-only: held every claim (12 of 12).`
    pub sentence: String,
}

/// A figure over repetitions: min, median, max, and the file the median came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Repetitions that gave a figure.
    pub n: usize,
    /// The result.json (or capacity.json) of the median repetition, relative to the ADR's
    /// directory (for an even `n`, the lower middle one; the median is the mean of the two).
    pub median_source: String,
}

impl Spread {
    /// `None` when no repetition gave a figure.
    pub fn of(values: &[(f64, String)]) -> Option<Spread> {
        let mut sorted: Vec<&(f64, String)> =
            values.iter().filter(|(v, _)| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = sorted.len();
        let middle = (n - 1) / 2;
        let median = if n % 2 == 1 {
            sorted[middle].0
        } else {
            (sorted[middle].0 + sorted[middle + 1].0) / 2.0
        };
        Some(Spread {
            min: sorted[0].0,
            median,
            max: sorted[n - 1].0,
            n,
            median_source: sorted[middle].1.clone(),
        })
    }
}

/// One strategy's cost, each figure over the repetitions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StrategyCost {
    pub label: String,
    pub strategy: String,
    pub redis_client: String,
    /// Highest sustained rate with end-to-end p99 within the bound, messages/s; a
    /// repetition that sustained not even the lowest rate gives no figure.
    pub capacity_per_second: Option<Spread>,
    /// The capacity searches' capacity.json files.
    pub capacity_runs: Vec<String>,
    /// End-to-end (intended send → offset commit) latency at the common rate, warm-up
    /// excluded, ms.
    pub latency_ms: BTreeMap<String, Spread>,
    /// The fixed-rate runs' directories.
    pub latency_runs: Vec<String>,
    /// CPU µs per message processed, per part (`idembench`, `redis`, `postgres`, `kafka`), from
    /// the fixed-rate runs.
    pub cpu_us_per_message: BTreeMap<String, Spread>,
    /// Parts with no CPU figure and why.
    pub cpu_unmeasured: BTreeMap<String, String>,
    /// Redis bytes per key of the run's keys (DONE marks), where the strategy uses Redis.
    pub redis_bytes_per_key: Option<Spread>,
    /// Redis keys per logical trade at the end of a run (1 for a DONE mark per trade).
    pub redis_keys_per_trade: Option<f64>,
    /// Postgres bytes per logical trade, per table the strategy wrote.
    pub postgres_bytes_per_trade: BTreeMap<String, Spread>,
    pub projection: Projection,
}

/// Tables every strategy writes (the business transaction), apart from what idempotency
/// itself stores.
pub const BUSINESS_TABLES: [&str; 3] = ["trades", "outbox", "positions"];

/// What holding `done_ttl_ms` of trades at `production_rate` would take.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Projection {
    /// Trades in the window: rate × TTL.
    pub trades: f64,
    /// Redis keys alive at once, and their bytes (one copy; each replica holds another).
    pub redis_keys: Option<f64>,
    pub redis_bytes: Option<f64>,
    /// Postgres bytes for the same trades, per idempotency table (the inbox; consumer
    /// offsets do not grow with trades and are left out).
    pub postgres_bytes: BTreeMap<String, f64>,
}

impl Projection {
    /// From the median figures of a strategy's runs.
    pub fn new(
        production_rate: f64,
        done_ttl_ms: u64,
        redis_bytes_per_key: Option<f64>,
        redis_keys_per_trade: Option<f64>,
        postgres_bytes_per_trade: &BTreeMap<String, Spread>,
    ) -> Projection {
        let trades = production_rate * done_ttl_ms as f64 / 1000.0;
        let redis_keys = redis_bytes_per_key
            .is_some()
            .then(|| trades * redis_keys_per_trade.unwrap_or(1.0));
        Projection {
            trades,
            redis_keys,
            redis_bytes: redis_keys.zip(redis_bytes_per_key).map(|(k, b)| k * b),
            postgres_bytes: postgres_bytes_per_trade
                .iter()
                .filter(|(table, _)| {
                    !BUSINESS_TABLES.contains(&table.as_str()) && *table != "consumer_offsets"
                })
                .map(|(table, spread)| (table.clone(), trades * spread.median))
                .collect(),
        }
    }
}

/// The storage figures of one run, as the cost suite gathers them.
pub fn storage_figures(storage: &Storage, trades: u64) -> (Option<f64>, Option<f64>) {
    (
        storage.redis_bytes_per_key(),
        storage
            .redis
            .as_ref()
            .map(|r| r.keys as f64 / trades.max(1) as f64),
    )
}

/// Bytes in the units a reader compares: `272 GB`, `1.5 TB`, `940 MB` (powers of 1000).
pub fn bytes(value: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = value;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value >= 100.0 || unit == 0 {
        format!("{value:.0} {}", units[unit])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// A count as a reader compares it: `3.0 billion`, `86 million`, `12 400`.
pub fn count(value: f64) -> String {
    if value >= 1e9 {
        format!("{:.1} billion", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.0} million", value / 1e6)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::audit::Correctness;
    use crate::results::Status;

    fn run(scenario: &str, strategy: &str, lost: u64, doubled: u64) -> MatrixRun {
        MatrixRun {
            scenario: Some(scenario.into()),
            claim: Some(format!("{scenario} claim")),
            claim_held: Some(lost == 0 && doubled == 0),
            strategy: strategy.into(),
            redis_client: if strategy == "db-only" {
                "none".into()
            } else {
                "redis-rs".into()
            },
            status: Some(Status::Complete),
            result_dir: format!("/out/claims/{scenario}-{strategy}"),
            error: None,
            processed_per_second: Some(100.0),
            end_to_end_from_intended_us: None,
            correctness: Some(Correctness {
                lost,
                double_applied: doubled,
                identity_holds: true,
                ..Correctness::default()
            }),
            oracle_mismatches: Some(0),
            faults: Some(1),
        }
    }

    fn relative(dir: &str) -> String {
        dir.trim_start_matches("/out/").to_string()
    }

    #[test]
    fn a_strategy_that_lost_in_one_claim_and_doubled_in_another_says_both() {
        let runs = vec![
            run("crash-after-claim", "redis-only", 3, 0),
            run("crash-after-claim", "db-only", 0, 0),
            run("redis-restart", "redis-only", 0, 130),
            run("redis-restart", "db-only", 0, 0),
        ];
        let grid = Grid::from_matrix(&runs, relative);
        assert_eq!(grid.columns.len(), 2);
        assert_eq!(grid.rows.len(), 2);
        assert_eq!(grid.rows[0].cells[0].words(), "lost 3");
        assert_eq!(grid.rows[1].cells[0].words(), "doubled 130");
        assert_eq!(grid.rows[1].cells[1].words(), "held");
        assert_eq!(
            grid.rows[0].cells[0].result_dir.as_deref(),
            Some("claims/crash-after-claim-redis-only")
        );
        let verdicts = grid.verdicts();
        assert_eq!(
            verdicts[0].sentence,
            "redis-only: refuted 2 of 2 claims — lost 3 in crash-after-claim; doubled 130 in redis-restart."
        );
        assert_eq!(
            (verdicts[0].trades_lost, verdicts[0].trades_doubled),
            (3, 130)
        );
        assert!(!verdicts[0].held_every_claim);
        assert_eq!(verdicts[1].sentence, "db-only: held every claim (2 of 2).");
        assert!(verdicts[1].held_every_claim);
    }

    #[test]
    fn a_missing_run_is_not_run_and_a_failed_one_failed_and_neither_counts_as_held() {
        let mut failed = run("redis-restart", "db-only", 0, 0);
        failed.correctness = None;
        failed.error = Some("cannot reach Postgres".into());
        let runs = vec![
            run("kafka-redelivery", "redis-only", 0, 0),
            run("kafka-redelivery", "db-only", 0, 0),
            failed,
        ];
        let grid = Grid::from_matrix(&runs, relative);
        assert_eq!(grid.rows[1].cells[0].verdict, CellVerdict::NotRun);
        assert_eq!(grid.rows[1].cells[0].words(), "not run");
        assert_eq!(grid.rows[1].cells[1].verdict, CellVerdict::Failed);
        assert_eq!(
            grid.rows[1].cells[1].error.as_deref(),
            Some("cannot reach Postgres")
        );
        let verdicts = grid.verdicts();
        assert_eq!(
            verdicts[0].sentence,
            "redis-only: held every claim it ran (1); 1 not run."
        );
        assert_eq!(
            verdicts[1].sentence,
            "db-only: held every claim it ran (1); 1 failed to run."
        );
        assert!(!verdicts[0].held_every_claim && !verdicts[1].held_every_claim);
    }

    #[test]
    fn a_strategy_on_two_clients_gets_a_column_each_labelled_by_client() {
        let mut fred = run("kafka-redelivery", "redis-only", 0, 0);
        fred.redis_client = "fred".into();
        let runs = vec![
            run("kafka-redelivery", "redis-only", 0, 0),
            fred,
            run("kafka-redelivery", "db-only", 0, 0),
        ];
        let labels: Vec<String> = Grid::from_matrix(&runs, relative)
            .columns
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(
            labels,
            ["redis-only on redis-rs", "redis-only on fred", "db-only"]
        );
    }

    #[test]
    fn a_partial_run_says_so_in_its_cell() {
        let mut partial = run("process-kill", "db-only", 0, 0);
        partial.status = Some(Status::Partial);
        let grid = Grid::from_matrix(&[partial], relative);
        assert_eq!(grid.rows[0].cells[0].words(), "held (partial)");
    }

    #[test]
    fn spreads_take_the_middle_and_name_its_source() {
        let spread =
            Spread::of(&[(30.0, "c".into()), (10.0, "a".into()), (20.0, "b".into())]).unwrap();
        assert_eq!(
            (spread.min, spread.median, spread.max, spread.n),
            (10.0, 20.0, 30.0, 3)
        );
        assert_eq!(spread.median_source, "b");
        let even = Spread::of(&[(10.0, "a".into()), (20.0, "b".into())]).unwrap();
        assert_eq!((even.median, even.median_source.as_str()), (15.0, "a"));
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[(f64::NAN, "x".into())]).is_none());
    }

    #[test]
    fn the_projection_scales_a_done_mark_to_the_ttl_and_leaves_business_tables_out() {
        let per_trade = |median: f64| Spread {
            min: median,
            median,
            max: median,
            n: 1,
            median_source: String::new(),
        };
        let tables: BTreeMap<String, Spread> = [
            ("inbox".to_string(), per_trade(80.0)),
            ("trades".to_string(), per_trade(200.0)),
            ("consumer_offsets".to_string(), per_trade(0.5)),
        ]
        .into();
        // The note's 7 days at 5 000 trades/s: 3.024 billion trades.
        let week = 7 * 24 * 3600 * 1000;
        let projection = Projection::new(5_000.0, week, Some(90.0), Some(1.0), &tables);
        assert_eq!(projection.trades, 3.024e9);
        assert_eq!(projection.redis_keys, Some(3.024e9));
        assert_eq!(projection.redis_bytes, Some(3.024e9 * 90.0));
        assert_eq!(bytes(projection.redis_bytes.unwrap()), "272 GB");
        assert_eq!(
            projection.postgres_bytes,
            [("inbox".to_string(), 3.024e9 * 80.0)].into()
        );
        // A strategy without Redis projects no keys.
        let db_only = Projection::new(5_000.0, week, None, None, &tables);
        assert_eq!((db_only.redis_keys, db_only.redis_bytes), (None, None));
        assert_eq!(count(3.024e9), "3.0 billion");
    }
}

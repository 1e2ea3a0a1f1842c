//! Flags and scenario files into plain configuration: a [`RunConfig`] per run, a
//! [`MatrixPlan`], a [`CapacitySearch`], an [`AdrPlan`]. Every configuration is validated here, before any
//! service is probed or started; a bad scenario value names its file and line.

use std::path::{Path, PathBuf};

use idembench_loadgen::StreamSpec;

use super::{
    AdrArgs, CapacityArgs, CommonArgs, ConformanceArgs, ConnectionArgs, MatrixArgs, RunArgs,
};
use crate::config::scenario::{Scenario, ScenarioFile, Settings};
use crate::config::{ConfigError, Connections, RunConfig};
use crate::conformance::ConformanceSettings;
use crate::faults::FaultPlan;
use crate::redis::RedisClientKind;
use crate::results::adr::AdrSettings;
use crate::strategy::StrategyKind;
use crate::sweep::adr::AdrPlan;
use crate::sweep::capacity::CapacitySearch;
use crate::sweep::matrix::{MatrixPlan, pairs};

/// Settings that cannot be run, said with where they came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

impl RunArgs {
    /// The run's configuration, with the scenario's settings applied when one is named.
    pub fn resolve(self, command: String) -> Result<RunConfig, ResolveError> {
        let Some(path) = &self.scenario else {
            let mode = self.common.stack;
            let config =
                self.common
                    .into_config(self.strategy, self.redis_client, self.out, command);
            config
                .validate_on(mode)
                .map_err(|e| ResolveError(e.message))?;
            return Ok(config);
        };
        let file = load(path)?;
        let names: Vec<&str> = file.scenarios.iter().map(|s| s.name.as_str()).collect();
        let error = |message: String| ResolveError(format!("{}: {message}", path.display()));
        let scenario = match &self.scenario_name {
            Some(name) => file
                .scenarios
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| {
                    error(format!(
                        "no scenario named {name:?}; the file has {}",
                        names.join(", ")
                    ))
                })?,
            None if file.scenarios.len() == 1 => &file.scenarios[0],
            None => {
                return Err(error(format!(
                    "holds {} scenarios; choose one with --scenario-name ({})",
                    names.len(),
                    names.join(", ")
                )));
            }
        };
        // A scenario that names exactly one strategy (or client) decides it.
        let strategy = match scenario.strategies.as_slice() {
            [only] => *only,
            _ => self.strategy,
        };
        let client = match scenario.redis_clients.as_slice() {
            [only] => *only,
            _ => self.redis_client,
        };
        scenario_config(
            path,
            &file,
            scenario,
            &self.common,
            (strategy, client),
            self.out,
            command,
        )
    }
}

impl MatrixArgs {
    /// Every run of the matrix: each scenario × its pairs, or the flags' pairs.
    pub fn resolve(self, command: String) -> Result<MatrixPlan, ResolveError> {
        let mut runs = Vec::new();
        match &self.scenario {
            Some(path) => {
                let file = load(path)?;
                for scenario in &file.scenarios {
                    // The flags narrow the file: --strategies keeps those of the scenario's
                    // strategies (all, if it names none) that it lists; --redis-clients
                    // replaces the scenario's clients.
                    let clients = if !self.redis_clients.is_empty() {
                        self.redis_clients.clone()
                    } else if scenario.redis_clients.is_empty() {
                        vec![RedisClientKind::RedisRs]
                    } else {
                        scenario.redis_clients.clone()
                    };
                    let strategies: Vec<StrategyKind> = if self.strategies.is_empty() {
                        scenario.strategies.clone()
                    } else {
                        let named: &[StrategyKind] = if scenario.strategies.is_empty() {
                            &StrategyKind::ALL
                        } else {
                            &scenario.strategies
                        };
                        let kept: Vec<StrategyKind> = named
                            .iter()
                            .copied()
                            .filter(|s| self.strategies.contains(s))
                            .collect();
                        if kept.is_empty() {
                            continue;
                        }
                        kept
                    };
                    for (strategy, client) in pairs(&strategies, &clients) {
                        let client = client.unwrap_or(RedisClientKind::RedisRs);
                        runs.push(scenario_config(
                            path,
                            &file,
                            scenario,
                            &self.common,
                            (strategy, client),
                            None,
                            command.clone(),
                        )?);
                    }
                }
            }
            None => {
                for (strategy, client) in pairs(&self.strategies, &self.redis_clients) {
                    let client = client.unwrap_or(RedisClientKind::RedisRs);
                    let config =
                        self.common
                            .clone()
                            .into_config(strategy, client, None, command.clone());
                    config
                        .validate_on(self.common.stack)
                        .map_err(|e| ResolveError(e.message))?;
                    runs.push(config);
                }
            }
        }
        if runs.is_empty() {
            return Err(ResolveError(format!(
                "no scenario of {} applies to --strategies {}: drop the flag, or name a strategy the file's scenarios run",
                self.scenario
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                self.strategies
                    .iter()
                    .map(|s| <&str>::from(*s))
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        let plan = MatrixPlan {
            runs,
            out: self.out,
            command,
            quiet: self.common.quiet,
        };
        plan.validate().map_err(|e| ResolveError(e.to_string()))?;
        Ok(plan)
    }
}

impl AdrArgs {
    /// The claims matrix (the file's scenarios, narrowed by --strategies and --redis-clients)
    /// and one cost-suite configuration per strategy (× client) of the grid.
    pub fn resolve(self, command: String) -> Result<AdrPlan, ResolveError> {
        let out = self.out.clone().unwrap_or_else(|| {
            PathBuf::from("reports/adr").join(crate::config::stamp(std::time::SystemTime::now()))
        });
        let clients = if self.redis_clients.is_empty() {
            vec![RedisClientKind::RedisRs]
        } else {
            self.redis_clients.clone()
        };
        let claims = MatrixArgs {
            strategies: self.strategies.clone(),
            redis_clients: clients.clone(),
            out: Some(out.join("claims")),
            scenario: Some(self.scenario.clone()),
            common: self.common.clone(),
        }
        .resolve(command.clone())?;
        // The cost suite runs what the grid has columns for, in the grid's order.
        let mut columns: Vec<(StrategyKind, RedisClientKind)> = Vec::new();
        for run in &claims.runs {
            let column = (run.strategy, run.redis_client);
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        let costs = columns
            .into_iter()
            .map(|(strategy, client)| {
                let config =
                    self.common
                        .clone()
                        .into_config(strategy, client, None, command.clone());
                config
                    .validate_on(self.common.stack)
                    .map_err(|e| ResolveError(e.message))?;
                Ok(config)
            })
            .collect::<Result<Vec<_>, ResolveError>>()?;
        let plan = AdrPlan {
            claims,
            costs,
            settings: AdrSettings {
                scenario_file: self.scenario.display().to_string(),
                repetitions: self.repetitions,
                p99_bound_ms: self.p99_ms,
                capacity_min_rate: self.min_rate,
                capacity_max_rate: self.max_rate,
                capacity_probes: self.probes,
                capacity_duration_s: self.duration_s,
                latency_duration_s: self.latency_duration_s,
                latency_warm_up_ms: self.latency_warm_up_ms,
                production_rate: self.production_rate,
                done_ttl_ms: self.common.done_ttl_ms,
            },
            out,
            command,
        };
        plan.validate().map_err(|e| ResolveError(e.to_string()))?;
        Ok(plan)
    }
}

impl CapacityArgs {
    pub fn resolve(self, command: String) -> Result<CapacitySearch, ResolveError> {
        let search = CapacitySearch {
            base: self
                .common
                .into_config(self.strategy, self.redis_client, None, command.clone()),
            p99_ms: self.p99_ms,
            min_rate: self.min_rate,
            max_rate: self.max_rate,
            probes: self.probes,
            duration_s: self.duration_s,
            out: self.out,
            command,
        };
        search.validate().map_err(|e| ResolveError(e.to_string()))?;
        Ok(search)
    }
}

impl ConformanceArgs {
    pub fn resolve(self) -> ConformanceSettings {
        ConformanceSettings {
            candidates: self.candidates,
            records: self.records,
            out: self.out,
            kafka_brokers: self.kafka_brokers,
        }
    }
}

fn load(path: &Path) -> Result<ScenarioFile, ResolveError> {
    ScenarioFile::load(path).map_err(|e| ResolveError(e.to_string()))
}

/// One run of `scenario`: the command line, then `[defaults]`, then the scenario; validated,
/// with a broken rule traced to the line of the file that set one of its settings.
fn scenario_config(
    path: &Path,
    file: &ScenarioFile,
    scenario: &Scenario,
    command_line: &CommonArgs,
    (strategy, client): (StrategyKind, RedisClientKind),
    out: Option<PathBuf>,
    command: String,
) -> Result<RunConfig, ResolveError> {
    let mut args = command_line.clone();
    apply(&file.defaults, &mut args);
    apply(&scenario.settings, &mut args);
    let mode = args.stack;
    let mut config = args.into_config(strategy, client, out, command);
    config.scenario = Some(scenario.name.clone());
    config.claim = Some(scenario.claim.clone());
    config
        .validate_on(mode)
        .map_err(|error| scenario_error(path, file, scenario, &error))?;
    Ok(config)
}

fn scenario_error(
    path: &Path,
    file: &ScenarioFile,
    scenario: &Scenario,
    error: &ConfigError,
) -> ResolveError {
    let line = error
        .settings
        .iter()
        .find_map(|key| file.line_of(&scenario.name, key));
    let at = match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    };
    ResolveError(format!(
        "{at}: scenario {:?}: {} (scenario keys: {})",
        scenario.name,
        error.message,
        error.settings.join(", ")
    ))
}

macro_rules! apply {
    ($settings:expr, $args:expr, $($field:ident),+ $(,)?) => {
        $(if let Some(value) = $settings.$field.clone() { $args.$field = value.into(); })+
    };
}

/// Overrides the fields of `args` that `settings` fix.
fn apply(settings: &Settings, args: &mut CommonArgs) {
    apply!(
        settings,
        args,
        trades,
        rate,
        warm_up_ms,
        duplicate_rate,
        late_duplicate_share,
        late_duplicate_delay_ms,
        key_skew,
        accounts,
        instruments,
        payload_bytes,
        malformed_rate,
        seed,
        partitions,
        replication_factor,
        commit_mode,
        commit_interval_ms,
        batch_size,
        in_flight,
        processor_threads,
        transaction_interval_ms,
        crash_at,
        crash_rate,
        crash_trades,
        restart_delay_ms,
        duplicate_partition,
        slow_trades,
        slow_ms,
        db_outage_ms,
        processes,
        kill_at_ms,
        session_timeout_ms,
        on_in_progress,
        processing_ttl_ms,
        done_ttl_ms,
        drain_timeout_ms,
        redis_pipeline,
        redis_connections,
        redis_wait_replicas,
        redis_wait_timeout_ms,
    );
    if let Some(min_insync) = settings.min_insync_replicas {
        args.min_insync_replicas = Some(min_insync);
    }
    if let Some(workers) = settings.workers {
        args.workers = Some(workers);
    }
    if let Some(max) = settings.max_crashes {
        args.max_crashes = Some(max);
    }
    if let Some(at) = settings.redis_wipe_at_ms {
        args.redis_wipe_at_ms = Some(at);
    }
    if let Some(faults) = &settings.fault {
        args.faults = faults.clone();
    }
    if let Some(at) = settings.db_outage_at_ms {
        args.db_outage_at_ms = Some(at);
    }
    if let Some(every) = settings.kill_every_ms {
        args.kill_every_ms = Some(every);
    }
    if let Some(on) = settings.unique_constraint {
        args.no_unique_constraint = !on;
    }
}

impl ConnectionArgs {
    pub fn resolve(&self) -> Connections {
        Connections {
            kafka_brokers: self.kafka_brokers.clone(),
            redis_url: self.redis_url.clone(),
            postgres_url: self.postgres_url.clone(),
        }
    }
}

impl CommonArgs {
    /// Where the flags (or their environment variables) say the services are.
    pub fn connections(&self) -> Connections {
        self.connections.resolve()
    }

    pub fn into_config(
        self,
        strategy: StrategyKind,
        redis_client: RedisClientKind,
        out: Option<PathBuf>,
        command: String,
    ) -> RunConfig {
        let workers = self.workers.unwrap_or(self.partitions).max(1);
        RunConfig {
            scenario: None,
            claim: None,
            strategy,
            redis_client,
            stream: StreamSpec {
                trades: self.trades,
                accounts: self.accounts,
                instruments: self.instruments,
                duplicate_rate: self.duplicate_rate,
                late_duplicate_share: self.late_duplicate_share,
                late_duplicate_delay_ms: self.late_duplicate_delay_ms,
                key_skew: self.key_skew,
                payload_bytes: self.payload_bytes,
                seed: self.seed,
                malformed_rate: self.malformed_rate,
            },
            rate: self.rate,
            warm_up_ms: self.warm_up_ms,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            min_insync_replicas: self
                .min_insync_replicas
                .unwrap_or(if self.replication_factor >= 3 { 2 } else { 1 }),
            kafka_nodes: self.kafka_nodes,
            redis_topology: self.redis_topology,
            redis_maxmemory: self.redis_maxmemory.clone(),
            redis_maxmemory_policy: self.redis_maxmemory_policy,
            redis_persistence: self.redis_persistence,
            redis_replication_lag_ms: self.redis_replication_lag_ms,
            workers,
            commit_mode: self.commit_mode,
            commit_interval_ms: self.commit_interval_ms,
            on_in_progress: self.on_in_progress,
            batch_size: self.batch_size,
            in_flight: self.in_flight,
            processor_threads: self.processor_threads,
            transaction_interval_ms: self.transaction_interval_ms,
            crash_plan: FaultPlan {
                points: self.crash_at.clone(),
                rate: self.crash_rate,
                trade_ids: self.crash_trades.clone(),
                max_crashes: self.max_crashes,
                restart_delay_ms: self.restart_delay_ms,
                seed: self.seed,
                redis_wipe_at_ms: self.redis_wipe_at_ms,
                kill_at_ms: self.kill_at_ms.clone(),
                kill_every_ms: self.kill_every_ms,
                slow_trades: self.slow_trades.clone(),
                slow_ms: self.slow_ms,
                db_outage_at_ms: self.db_outage_at_ms,
                db_outage_ms: self.db_outage_ms,
                schedule: self.faults.clone(),
            },
            duplicate_partition: self.duplicate_partition,
            processes: self.processes,
            session_timeout_ms: self.session_timeout_ms,
            processing_ttl_ms: self.processing_ttl_ms,
            done_ttl_ms: self.done_ttl_ms,
            // In memory there is no constraint to catch a second application.
            unique_constraint: !self.no_unique_constraint && !self.no_business_write,
            no_business_write: self.no_business_write,
            redis_pipeline: self.redis_pipeline,
            redis_wait_replicas: self.redis_wait_replicas,
            redis_wait_timeout_ms: self.redis_wait_timeout_ms,
            redis_connections: self.redis_connections,
            postgres_connections: self
                .postgres_connections
                .unwrap_or((workers * self.in_flight.max(1)) as u32 + 2),
            linger_ms: self.linger_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            drain_timeout_ms: self.drain_timeout_ms,
            on_interrupt: self.on_interrupt,
            keep_state: self.keep_state,
            quiet: self.quiet,
            connections: self.connections(),
            out,
            command,
            processor_exe: None,
            stack: None,
            services: None,
        }
    }
}

/// Which connection settings of the command the user gave (flag or environment variable)
/// rather than left at their default: `--stack auto` never replaces those.
pub fn explicit(matches: &clap::ArgMatches) -> crate::stack::Explicit {
    let Some((_, sub)) = matches.subcommand() else {
        return crate::stack::Explicit::default();
    };
    let given = |id: &str| {
        sub.try_get_raw(id).is_ok_and(|v| v.is_some())
            && !matches!(
                sub.value_source(id),
                Some(clap::parser::ValueSource::DefaultValue) | None
            )
    };
    crate::stack::Explicit {
        kafka: given("kafka_brokers"),
        redis: given("redis_url"),
        postgres: given("postgres_url"),
    }
}

/// The command line as typed, with URLs passed as flags redacted, for the report. The program
/// is named `idembench` whatever path started it (`scripts/idembench` runs a build under
/// `~/.cache`), so the reproduce line reads the same on every machine.
pub fn redacted_command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| if i == 0 { "idembench".to_string() } else { arg })
        .map(|arg| {
            if arg.contains(":\u{2f}/") {
                crate::redact::redact_url(&arg)
            } else {
                arg
            }
        })
        .map(|arg| match arg.split_once("=") {
            Some((flag, value)) if flag.starts_with("--") && value.contains(":\u{2f}/") => {
                format!("{flag}={}", crate::redact::redact_url(value))
            }
            _ => arg,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(flags: &[&str]) -> RunArgs {
        let args = ["idembench", "run"].iter().chain(flags);
        let super::super::Command::Run(run) = super::super::Cli::parse_from(args).command else {
            unreachable!("parsed a run")
        };
        *run
    }

    #[test]
    fn the_recorded_command_names_idembench_and_hides_passwords() {
        let line = redacted_command_line(
            [
                "/root/.cache/idembench/target/release/idembench",
                "run",
                "--postgres-url=postgres://u:secret@db:5432/x",
                "--redis-url",
                "redis://:hunter2@cache:6379",
            ]
            .map(String::from),
        );
        assert!(line.starts_with("idembench run "), "{line}");
        assert!(
            !line.contains("secret") && !line.contains("hunter2"),
            "{line}"
        );
    }

    #[test]
    fn a_run_id_names_the_redis_client_only_where_the_strategy_uses_redis() {
        let id = |flags: &[&str]| {
            let config = run_args(flags).resolve(String::new()).unwrap();
            crate::config::RunNames::new(&config).run_id
        };
        let redis = id(&["--strategy", "redis-only", "--redis-client", "fred"]);
        assert!(redis.contains("-redis-only-fred-"), "{redis}");
        let db = id(&["--strategy", "db-only", "--redis-client", "fred"]);
        assert!(db.contains("-db-only-") && !db.contains("fred"), "{db}");
    }

    #[test]
    fn matrix_flags_narrow_a_scenario_file_instead_of_being_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.toml");
        std::fs::write(
            &path,
            "[[scenario]]\nname = \"any\"\nclaim = \"c\"\n\n[[scenario]]\nname = \"dual\"\nclaim = \"c\"\nstrategies = [\"dual-db-first\"]\n",
        )
        .unwrap();
        let plan = |flags: &[&str]| {
            let args = ["idembench", "matrix", "--scenario", path.to_str().unwrap()]
                .into_iter()
                .chain(flags.iter().copied());
            let super::super::Command::Matrix(matrix) = super::super::Cli::parse_from(args).command
            else {
                unreachable!("parsed a matrix")
            };
            matrix.resolve(String::new())
        };
        let runs = |flags: &[&str]| -> Vec<(String, String)> {
            plan(flags)
                .unwrap()
                .runs
                .iter()
                .map(|r| {
                    (
                        <&str>::from(r.strategy).to_string(),
                        r.redis_client.name().to_string(),
                    )
                })
                .collect()
        };
        // Unnarrowed: every strategy in "any" (on redis-rs), and dual-db-first in "dual".
        assert_eq!(runs(&[]).len(), StrategyKind::ALL.len() + 1);
        let narrowed = runs(&[
            "--strategies",
            "redis-only,db-only",
            "--redis-clients",
            "fred",
        ]);
        assert_eq!(
            narrowed,
            [
                ("redis-only".into(), "fred".into()),
                ("db-only".into(), "redis-rs".into())
            ],
            "\"dual\" runs neither, so it is left out"
        );
        std::fs::write(
            &path,
            "[[scenario]]\nname = \"dual\"\nclaim = \"c\"\nstrategies = [\"dual-db-first\"]\n",
        )
        .unwrap();
        let error = plan(&["--strategies", "redis-only"]).map(drop).unwrap_err();
        assert!(
            error.to_string().contains("no scenario") && error.to_string().contains("redis-only"),
            "{error}"
        );
    }

    #[test]
    fn unlimited_crashes_are_null_in_the_plan() {
        let config = run_args(&[]).resolve(String::new()).unwrap();
        let plan = serde_json::to_value(&config.crash_plan).unwrap();
        assert!(plan["max_crashes"].is_null(), "{plan}");
    }

    #[test]
    fn scenario_settings_override_defaults_which_override_the_command_line() {
        let run = run_args(&["--trades", "7", "--seed", "3", "--rate", "9"]);
        let file = ScenarioFile::parse(
            "[defaults]\ntrades = 100\nrate = 0\n[[scenario]]\nname = \"a\"\nclaim = \"c\"\ntrades = 50\nunique_constraint = false\n",
        )
        .unwrap();
        let mut args = run.common.clone();
        apply(&file.defaults, &mut args);
        apply(&file.scenarios[0].settings, &mut args);
        assert_eq!(
            (args.trades, args.rate, args.seed, args.no_unique_constraint),
            (50, 0.0, 3, true)
        );
    }

    #[test]
    fn a_bad_scenario_value_names_its_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[defaults]\ntrades = 10\n\n[[scenario]]\nname = \"fine\"\nclaim = \"c\"\n\n[[scenario]]\nname = \"slow\"\nclaim = \"c\"\nstrategies = [\"redis-only\"]\nslow_trades = [3]\n",
        )
        .unwrap();
        let mut run = run_args(&[]);
        run.scenario = Some(path.clone());
        run.scenario_name = Some("slow".into());
        let common = run.common.clone();
        let error = run.resolve(String::new()).unwrap_err().to_string();
        assert!(
            error.contains("bad.toml:12")
                && error.contains("--slow-ms")
                && error.contains("slow_trades"),
            "{error}"
        );
        let matrix = MatrixArgs {
            strategies: vec![],
            redis_clients: vec![],
            out: None,
            scenario: Some(path),
            common,
        };
        let error = matrix.resolve(String::new()).unwrap_err().to_string();
        assert!(error.contains("bad.toml:12"), "{error}");
    }

    #[test]
    fn a_transactional_crash_point_is_refused_for_every_other_strategy() {
        let error = run_args(&["--crash-at", "after-send-offsets", "--crash-trades", "5"])
            .resolve(String::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("after-send-offsets")
                && error.contains("kafka-transactions")
                && error.contains("before-offset-commit")
                && !error.contains("in-commit"),
            "{error}"
        );
        let ok = run_args(&[
            "--strategy",
            "kafka-transactions",
            "--crash-at",
            "in-commit,before-offset-commit",
            "--crash-trades",
            "5",
        ])
        .resolve(String::new());
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn a_transaction_window_is_kafka_transactions_only() {
        let error = run_args(&[
            "--strategy",
            "db-only",
            "--transaction-interval-ms",
            "100",
            "--batch-size",
            "10",
        ])
        .resolve(String::new())
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("applies to kafka-transactions, not db-only"),
            "{error}"
        );
        let ok = run_args(&[
            "--strategy",
            "kafka-transactions",
            "--transaction-interval-ms",
            "100",
            "--batch-size",
            "100",
        ])
        .resolve(String::new());
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn kafka_transactions_refuses_what_this_build_cannot_run_with_it() {
        for (args, named) in [
            (&["--in-flight", "4"][..], "--in-flight"),
            (&["--no-business-write"][..], "--no-business-write"),
            (
                &["--transaction-interval-ms", "100"][..],
                "--batch-size is 1",
            ),
        ] {
            assert_refused(&["--strategy", "kafka-transactions"], args, named);
        }
    }

    /// `run PREFIX ARGS` is refused with an error that contains `named`.
    fn assert_refused(prefix: &[&str], args: &[&str], named: &str) {
        let all: Vec<&str> = prefix.iter().chain(args).copied().collect();
        let error = run_args(&all)
            .resolve(String::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{args:?}: {error}");
    }

    #[test]
    fn kafka_transactions_takes_processes_their_faults_and_slow_trades() {
        for args in [
            &["--processes", "2", "--kill-at-ms", "3000"][..],
            &["--processes", "2", "--fault", "zombie-consumer@2000+15000"][..],
            &[
                "--processes",
                "2",
                "--fault",
                "zombie-consumer@2000+15000:after-produce",
            ][..],
            &["--slow-trades", "5", "--slow-ms", "100"][..],
            &["--fault", "db-outage@1000+2000"][..],
        ] {
            let mut all = vec!["--strategy", "kafka-transactions"];
            all.extend_from_slice(args);
            let resolved = run_args(&all).resolve(String::new());
            assert!(resolved.is_ok(), "{args:?}: {:?}", resolved.err());
        }
    }

    #[test]
    fn a_zombie_pause_lands_only_at_a_point_the_strategy_reaches() {
        for (point, refused) in [
            ("after-produce", Some("never reaches")),
            ("after-lunch", Some("after-claim")),
            ("after-claim", None),
        ] {
            let fault = format!("zombie-consumer@2000+15000:{point}");
            let args = ["--processes", "2", "--fault", fault.as_str()];
            match refused {
                Some(named) => assert_refused(&[], &args, named),
                None => {
                    let resolved = run_args(&args).resolve(String::new());
                    assert!(resolved.is_ok(), "{point}: {:?}", resolved.err());
                }
            }
        }
    }

    #[test]
    fn processor_threads_are_refused_where_they_cannot_place_the_processor() {
        for (args, named) in [
            (
                &["--strategy", "db-offsets"][..],
                "does not apply to db-offsets",
            ),
            (
                &["--strategy", "kafka-transactions"][..],
                "does not apply to kafka-transactions",
            ),
            (
                &["--processes", "2", "--kill-at-ms", "3000"][..],
                "cannot be combined with --processes",
            ),
            (&["--commit-mode", "sync"][..], "--commit-mode sync blocks"),
            (
                &["--workers", "1"][..],
                "--processor-threads 2 exceeds the 1 worker(s)",
            ),
        ] {
            assert_refused(&["--processor-threads", "2"], args, named);
        }
        let resolved = run_args(&["--processor-threads", "2", "--strategy", "dual-db-first"])
            .resolve(String::new())
            .expect("dual-db-first runs on processor threads");
        assert_eq!(resolved.processor_threads, 2);
    }
}

//! One function per command: resolve the flags, provision the services (`--stack`), carry the
//! command out, print, and return the exit code documented in the README: 0 the run completed
//! and its audit identity holds; 1 the audit identity is violated (or a regression, for
//! `compare`); 2 bad flags or configuration; 3 a service is unreachable or failed; 130
//! interrupted (a partial report was still written).

use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

use super::resolve::{ResolveError, explicit};
use super::{Cli, Command, CommonArgs, CompareArgs, redacted_command_line};
use crate::config::Connections;
use crate::results::Status;
use crate::stack::{Explicit, Stack};

/// The whole program after the runtime exists: parse, dispatch, exit code.
pub async fn main() -> i32 {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let explicit = explicit(&matches);
    let command = redacted_command_line(std::env::args());
    let cancel = CancellationToken::new();
    // A processor process ignores Ctrl-C: the run that started it stops it via stdin.
    if !matches!(cli.command, Command::Process) {
        watch_interrupts(cancel.clone());
    }
    match cli.command {
        Command::Run(args) => run(*args, command, explicit, cancel).await,
        Command::Matrix(args) => matrix(*args, command, explicit, cancel).await,
        Command::Capacity(args) => capacity(*args, command, explicit, cancel).await,
        Command::Adr(args) => adr(*args, command, explicit, cancel).await,
        Command::Process => crate::processor::member::serve().await,
        Command::ConformanceMember(args) => {
            match crate::conformance::member(&args.brokers, &args.topic, &args.group, args.records)
            {
                Ok(()) => 0,
                Err(error) => fail(error, 3),
            }
        }
        Command::Conformance(args) => {
            match crate::conformance::execute(args.resolve(), command).await {
                Ok((reports, dir)) => {
                    print!("{}", crate::conformance::table(&reports));
                    println!("wrote {}", dir.join("conformance.md").display());
                    0
                }
                Err(error) => fail(error, 3),
            }
        }
        Command::Merge(args) => match crate::results::merge::merge_into(&args.inputs, &args.out)
            .map_err(|e| e.to_string())
            .and_then(|merged| {
                crate::report::rerender(&args.out)
                    .map(|_| merged)
                    .map_err(|e| e.to_string())
            }) {
            Ok(merged) => {
                println!(
                    "merged {} runs: {} lost, {} applied twice; wrote {}",
                    merged.merged_from.len(),
                    merged.correctness.lost,
                    merged.correctness.double_applied,
                    args.out.join("result.json").display()
                );
                0
            }
            Err(error) => fail(error, 2),
        },
        Command::Report(args) => match crate::report::rerender(&args.dir) {
            Ok(runs) => {
                println!(
                    "wrote {} and {} ({runs} run(s))",
                    args.dir.join("summary.md").display(),
                    args.dir.join("report.html").display()
                );
                0
            }
            Err(error) => fail(error, 2),
        },
        Command::Compare(args) => compare(&args),
        Command::Services(args) => services(&args).await,
    }
}

async fn services(args: &super::ServicesArgs) -> i32 {
    use crate::stack::services::{self, Action, Home};
    let home = Home::from_environment();
    match args.action {
        Action::Up => match services::up(args.connections.resolve(), home).await {
            Ok(()) => 0,
            Err(error) => fail(error, 3),
        },
        Action::Down => match services::down(&home) {
            Ok(()) => 0,
            Err(error) => fail(error, 3),
        },
        Action::Status => {
            if services::status(&args.connections.resolve()) {
                0
            } else {
                1
            }
        }
    }
}

/// The first Ctrl-C stops production and lets the run drain and report; the second abandons
/// the drain.
fn watch_interrupts(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "[idembench] interrupted: production stops; the run drains (--on-interrupt), audits and writes a partial report. Ctrl-C again abandons the drain."
            );
            cancel.cancel();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("[idembench] interrupted again: abandoning the drain");
            crate::run::abandon_token().cancel();
        }
    });
}

/// 130 once Ctrl-C came, else 0: read when a command finishes.
fn if_interrupted(cancel: &CancellationToken) -> i32 {
    if cancel.is_cancelled() { 130 } else { 0 }
}

fn fail(error: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("error: {error}");
    code
}

/// Starts (or finds) the services of `common`'s `--stack`; the guard stops what it started.
async fn provision(common: &CommonArgs, explicit: Explicit) -> Result<Stack, i32> {
    let topology = crate::stack::Topology {
        kafka_nodes: common.kafka_nodes,
        redis: common.redis_topology,
        redis_maxmemory: common
            .redis_maxmemory
            .clone()
            .map(|size| (size, common.redis_maxmemory_policy)),
        redis_persistence: common.redis_persistence,
        redis_replication_lag_ms: common.redis_replication_lag_ms,
    };
    crate::stack::provision(
        common.stack,
        common.connections(),
        explicit,
        topology,
        common.quiet,
    )
    .await
    .map_err(|error| fail(error, 3))
}

/// Points a run at the provisioned services and records where they came from.
/// What every command that runs against services does first: its flags resolved (exit 2 with
/// the error if they do not), then the services provisioned (the exit code if they cannot be).
async fn prepared<T>(
    resolved: Result<T, ResolveError>,
    common: &CommonArgs,
    explicit: Explicit,
) -> Result<(T, Stack), i32> {
    let resolved = resolved.map_err(|error| fail(error, 2))?;
    Ok((resolved, provision(common, explicit).await?))
}

fn point_at(config: &mut crate::config::RunConfig, stack: &Stack) {
    config.connections = Connections::clone(&stack.connections);
    config.stack = Some(stack.info.clone());
    config.services = Some(std::sync::Arc::new(stack.control()));
}

async fn run(
    args: super::RunArgs,
    command: String,
    explicit: Explicit,
    cancel: CancellationToken,
) -> i32 {
    let common = args.common.clone();
    let (mut config, stack) = match prepared(args.resolve(command), &common, explicit).await {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    point_at(&mut config, &stack);
    let code = match crate::run::execute(config, cancel.clone()).await {
        Ok(outcome) => {
            print!("{}", outcome.result.summary());
            println!(
                "  wrote        {}",
                outcome.dir.join("result.json").display()
            );
            println!(
                "  reports      {} and {}",
                outcome.dir.join("summary.md").display(),
                outcome.dir.join("report.html").display()
            );
            if let Some(failure) = &outcome.result.failure {
                fail(
                    format!(
                        "the run ended early, partial: {failure} — its report says what it measured"
                    ),
                    3,
                )
            } else if !outcome.result.correctness.identity_holds {
                fail(
                    "the audit identity does not hold — see correctness in result.json",
                    1,
                )
            } else if outcome.result.oracle.mismatches > 0 {
                fail(
                    "the oracle's prediction and the audit disagree — see oracle in result.json",
                    1,
                )
            } else if outcome.result.status == Status::Partial {
                if_interrupted(&cancel)
            } else {
                0
            }
        }
        Err(error) => fail(&error, error.exit_code()),
    };
    drop(stack);
    code
}

async fn matrix(
    args: super::MatrixArgs,
    command: String,
    explicit: Explicit,
    cancel: CancellationToken,
) -> i32 {
    let common = args.common.clone();
    let (mut plan, stack) = match prepared(args.resolve(command), &common, explicit).await {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    for config in &mut plan.runs {
        point_at(config, &stack);
    }
    let code = match crate::sweep::matrix::run_matrix(plan, cancel.clone()).await {
        Ok(outcome) => {
            print!("{}", crate::sweep::matrix::table(&outcome.matrix));
            println!("wrote {}", outcome.dir.join("matrix.json").display());
            matrix_code(&outcome.matrix.runs, &cancel)
        }
        Err(error) => fail(&error, error.exit_code()),
    };
    drop(stack);
    code
}

/// A matrix's exit code: 1 when a run's audit identity or oracle failed, 3 when a run could
/// not run, else 0 (130 after Ctrl-C).
fn matrix_code(runs: &[crate::sweep::matrix::MatrixRun], cancel: &CancellationToken) -> i32 {
    if runs
        .iter()
        .any(|r| r.correctness.as_ref().is_some_and(|c| !c.identity_holds))
    {
        fail("the audit identity does not hold in at least one run", 1)
    } else if runs
        .iter()
        .any(|r| r.oracle_mismatches.is_some_and(|n| n > 0))
    {
        fail("the oracle disagrees with the audit in at least one run", 1)
    } else if runs.iter().any(|r| r.error.is_some()) {
        3
    } else {
        if_interrupted(cancel)
    }
}

async fn capacity(
    args: super::CapacityArgs,
    command: String,
    explicit: Explicit,
    cancel: CancellationToken,
) -> i32 {
    let common = args.common.clone();
    let (mut search, stack) = match prepared(args.resolve(command), &common, explicit).await {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    point_at(&mut search.base, &stack);
    let code = match crate::sweep::capacity::search(search, cancel.clone()).await {
        Ok(outcome) => {
            print!("{}", crate::sweep::capacity::table(&outcome.capacity));
            println!("wrote {}", outcome.dir.join("capacity.json").display());
            if_interrupted(&cancel)
        }
        Err(error) => fail(&error, error.exit_code()),
    };
    drop(stack);
    code
}

async fn adr(
    args: super::AdrArgs,
    command: String,
    explicit: Explicit,
    cancel: CancellationToken,
) -> i32 {
    let common = args.common.clone();
    let (mut plan, stack) = match prepared(args.resolve(command), &common, explicit).await {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    for config in plan.claims.runs.iter_mut().chain(plan.costs.iter_mut()) {
        point_at(config, &stack);
    }
    let code = match crate::sweep::adr::run_adr(plan, cancel.clone()).await {
        Ok(outcome) => {
            for verdict in &outcome.adr.verdicts {
                println!("{}", verdict.sentence);
            }
            for name in ["adr.md", "report.html", "adr.json"] {
                println!("wrote {}", outcome.dir.join(name).display());
            }
            matrix_code(&outcome.claims.runs, &cancel)
        }
        Err(error) => fail(&error, error.exit_code()),
    };
    drop(stack);
    code
}

fn compare(args: &CompareArgs) -> i32 {
    use crate::results::{compare, history};
    let or_default = |t: Option<f64>| t.unwrap_or(args.threshold);
    let thresholds = compare::Thresholds {
        throughput: args.threshold,
        latency: or_default(args.latency_threshold),
        cpu: or_default(args.cpu_threshold),
        capacity: or_default(args.capacity_threshold),
    };
    if ![
        thresholds.throughput,
        thresholds.latency,
        thresholds.cpu,
        thresholds.capacity,
    ]
    .iter()
    .all(|t| *t >= 0.0 && t.is_finite())
    {
        return fail(
            "--threshold, --latency-threshold, --cpu-threshold and --capacity-threshold must be non-negative fractions (0.1 = 10 %)",
            2,
        );
    }
    if args.trend == 0 {
        return fail(
            "--trend must be at least 1 (nights shown, this one included)",
            2,
        );
    }
    let loaded = compare::load(&args.baseline)
        .and_then(|baseline| Ok((baseline, compare::load(&args.current)?)));
    let (baseline, current) = match loaded {
        Err(error) => return fail(error, 2),
        Ok(loaded) => loaded,
    };
    let gate = compare::Gate {
        performance_scenarios: (!args.performance_scenarios.is_empty())
            .then(|| args.performance_scenarios.clone()),
    };
    let mut comparison = compare::compare(&baseline, &current, thresholds, &gate);
    if let Some(dir) = &args.history {
        let now = std::time::SystemTime::now();
        let night = history::Night::of(&comparison, &args.current, now);
        let kept = history::record(dir, &night, now).and_then(|_| history::nights(dir, args.trend));
        match kept {
            Ok(nights) => comparison.history = Some(history::History::of(nights)),
            Err(error) => return fail(error, 2),
        }
    }
    print!("{}", comparison.render(args.format));
    if comparison.regressions > 0 { 1 } else { 0 }
}

//! `idembench`: parse, build the runtime, run, print. Exit codes are documented in the README:
//! 0 the run completed and its audit identity holds; 1 the audit identity is violated;
//! 2 bad flags or configuration; 3 a service is unreachable or failed; 130 interrupted
//! (a partial report was still written).

use clap::{CommandFactory, FromArgMatches};
use idembench::cli::{Cli, Command, redacted_command_line};
use idembench::result::Status;
use tokio_util::sync::CancellationToken;

fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let explicit = idembench::stack::explicit(&matches);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDEMBENCH_LOG")
                .unwrap_or_else(|_| "warn,librdkafka=error,rdkafka=error,sqlx=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let command = redacted_command_line(std::env::args());
    let code = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let on_interrupt = cancel.clone();
        // A processor process ignores Ctrl-C: the run that started it stops it via stdin.
        let is_member = matches!(cli.command, Command::Process);
        tokio::spawn(async move {
            if is_member {
                std::future::pending::<()>().await;
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("[idembench] interrupted: production stops; the run drains (--on-interrupt), audits and writes a partial report. Ctrl-C again abandons the drain.");
                on_interrupt.cancel();
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("[idembench] interrupted again: abandoning the drain");
                idembench::run::abandon_token().cancel();
            }
        });
        let interrupted = |cancel: &CancellationToken| if cancel.is_cancelled() { 130 } else { 0 };
        let mut cli = cli;
        // The services of run, matrix and capacity (`--stack`); dropped, so stopped, before exit.
        let common = match &mut cli.command {
            Command::Run(args) => Some(&mut args.common),
            Command::Matrix(args) => Some(&mut args.common),
            Command::Capacity(args) => Some(&mut args.common),
            _ => None,
        };
        let _stack = match common {
            None => None,
            Some(common) => match idembench::stack::provision_for(common, explicit).await {
                Ok(stack) => Some(stack),
                Err(error) => {
                    eprintln!("error: {error}");
                    return 3;
                }
            },
        };
        match cli.command {
            Command::Run(args) => match args.resolve(command) {
                Err(error) => {
                    eprintln!("error: {error}");
                    2
                }
                Ok(config) => match idembench::run::execute(config, cancel.clone()).await {
                Ok(outcome) => {
                    print!("{}", outcome.result.summary());
                    println!("  wrote        {}", outcome.dir.join("result.json").display());
                    println!(
                        "  reports      {} and {}",
                        outcome.dir.join("summary.md").display(),
                        outcome.dir.join("report.html").display()
                    );
                    if !outcome.result.correctness.identity_holds {
                        eprintln!("error: the audit identity does not hold — see correctness in result.json");
                        1
                    } else if outcome.result.oracle.mismatches > 0 {
                        eprintln!("error: the oracle's prediction and the audit disagree — see oracle in result.json");
                        1
                    } else if outcome.result.status == Status::Partial {
                        interrupted(&cancel)
                    } else {
                        0
                    }
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    error.exit_code()
                }
            },
            },
            Command::Process => idembench::member::serve().await,
            Command::ConformanceMember(args) => {
                match idembench::conformance::member(&args.brokers, &args.topic, &args.group, args.records) {
                    Ok(()) => 0,
                    Err(error) => {
                        eprintln!("error: {error}");
                        3
                    }
                }
            }
            Command::Conformance(args) => match idembench::conformance::execute(args, command).await {
                Ok((reports, dir)) => {
                    print!("{}", idembench::conformance::table(&reports));
                    println!("wrote {}", dir.join("conformance.md").display());
                    0
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    3
                }
            },
            Command::Capacity(args) => match idembench::capacity::search(*args, command, cancel.clone()).await {
                Ok(outcome) => {
                    print!("{}", idembench::capacity::table(&outcome.capacity));
                    println!("wrote {}", outcome.dir.join("capacity.json").display());
                    interrupted(&cancel)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    error.exit_code()
                }
            },
            Command::Merge(args) => match idembench::merge::merge_into(&args.inputs, &args.out) {
                Ok(merged) => {
                    println!(
                        "merged {} runs: {} lost, {} applied twice; wrote {}",
                        merged["merged_from"].as_array().map_or(0, Vec::len),
                        merged["correctness"]["lost"],
                        merged["correctness"]["double_applied"],
                        args.out.join("result.json").display()
                    );
                    0
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    2
                }
            },
            Command::Report(args) => match idembench::report::rerender(&args.dir) {
                Ok(runs) => {
                    println!(
                        "wrote {} and {} ({runs} run(s))",
                        args.dir.join("summary.md").display(),
                        args.dir.join("report.html").display()
                    );
                    0
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    2
                }
            },
            Command::Compare(args) => {
                let thresholds = idembench::compare::Thresholds {
                    throughput: args.threshold,
                    latency: args.latency_threshold.unwrap_or(args.threshold),
                };
                if ![thresholds.throughput, thresholds.latency].iter().all(|t| *t >= 0.0 && t.is_finite()) {
                    eprintln!("error: --threshold and --latency-threshold must be non-negative fractions (0.1 = 10 %)");
                    return 2;
                }
                let loaded = idembench::compare::load(&args.baseline)
                    .and_then(|baseline| Ok((baseline, idembench::compare::load(&args.current)?)));
                match loaded {
                    Err(error) => {
                        eprintln!("error: {error}");
                        2
                    }
                    Ok((baseline, current)) => {
                        let comparison = idembench::compare::compare(&baseline, &current, thresholds, &idembench::compare::Gate {
                            performance_scenarios: (!args.performance_scenarios.is_empty()).then(|| args.performance_scenarios.clone()),
                        });
                        print!("{}", comparison.render(args.format));
                        if comparison.regressions > 0 { 1 } else { 0 }
                    }
                }
            }
            Command::Matrix(args) => match idembench::matrix::run_matrix(*args, command, cancel.clone()).await {
                Ok(outcome) => {
                    print!("{}", idembench::matrix::table(&outcome.matrix));
                    println!("wrote {}", outcome.dir.join("matrix.json").display());
                    let runs = &outcome.matrix.runs;
                    if runs.iter().any(|r| r.correctness.as_ref().is_some_and(|c| !c.identity_holds)) {
                        eprintln!("error: the audit identity does not hold in at least one run");
                        1
                    } else if runs.iter().any(|r| r.oracle_mismatches.is_some_and(|n| n > 0)) {
                        eprintln!("error: the oracle disagrees with the audit in at least one run");
                        1
                    } else if runs.iter().any(|r| r.error.is_some()) {
                        3
                    } else {
                        interrupted(&cancel)
                    }
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    error.exit_code()
                }
            },
        }
    });
    // librdkafka threads left behind by an abandoned consumer must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

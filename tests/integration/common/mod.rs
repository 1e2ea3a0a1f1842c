//! Helpers for the integration tests. They talk to the real services named by the same flags
//! and environment variables as the CLI (defaults: `scripts/services up`); a missing service
//! fails the test with the run's own error, which names the service and how to start it.

pub mod schema;

use clap::Parser;
use idembench::cli::{Cli, Command};
use idembench::config::RunConfig;
use idembench::run::{RunError, RunOutcome, execute};
use tokio_util::sync::CancellationToken;

/// Parses `args` exactly as the `idembench run` command line would.
pub fn config(args: &[&str], out: &std::path::Path) -> RunConfig {
    let mut argv = vec![
        "idembench",
        "run",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8 temp path"),
    ];
    argv.extend_from_slice(args);
    let mut config = match Cli::try_parse_from(argv).expect("valid flags").command {
        // Not validated here: `execute` validates, and some tests pass what it must refuse.
        Command::Run(run) => {
            run.common
                .into_config(run.strategy, run.redis_client, run.out, args.join(" "))
        }
        _ => unreachable!("parsed as run"),
    };
    // `--processes` starts the idembench binary, not this test binary.
    config.processor_exe = Some(env!("CARGO_BIN_EXE_idembench").into());
    config
}

pub async fn run(args: &[&str]) -> (RunOutcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let outcome = try_run(args, dir.path()).await.unwrap_or_else(|error| {
        panic!(
            "idembench run {} failed: {error}\n(is `scripts/services up` running?)",
            args.join(" ")
        )
    });
    // Every run's audit must match what the strategy's own rule predicts from the fault log.
    let oracle = &outcome.result.oracle;
    assert_eq!(
        oracle.mismatches,
        0,
        "idembench run {}: the oracle disagrees with the audit: {oracle:?}",
        args.join(" ")
    );
    (outcome, dir)
}

pub async fn try_run(args: &[&str], out: &std::path::Path) -> Result<RunOutcome, RunError> {
    execute(config(args, &out.join("run")), CancellationToken::new()).await
}

/// Trades the seeded plan sends more than once: the ground truth for duplicates.
pub fn planned_duplicates(trades: u64, duplicate_rate: f64, seed: u64) -> u64 {
    let spec = idembench_loadgen::StreamSpec {
        trades,
        duplicate_rate,
        seed,
        ..Default::default()
    };
    let extra = spec.plan().unwrap().extra;
    extra
        .iter()
        .filter(|c| **c != idembench_loadgen::ExtraCopy::None)
        .count() as u64
}

//! Helpers for the integration tests. They talk to the real services named by the same flags
//! and environment variables as the CLI (defaults: `scripts/services up`); a missing service
//! fails the test with the run's own error, which names the service and how to start it.

pub mod schema;

/// One `#[tokio::test]` per case of a check, so a failing case never hides the others:
/// `cases!(threads 2, check { name: (args...); ... })` calls `check(args...).await`.
macro_rules! cases {
    (threads $threads:literal, $check:ident { $($name:ident: ($($arg:expr),* $(,)?);)+ }) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn $name() {
                $check($($arg),*).await;
            }
        )+
    };
}
pub(crate) use cases;

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
    let plan = spec.plan().unwrap();
    plan.immediate_copies() + plan.late_copies()
}

/// A topic with `trades` trades produced into it once each, and a migrated schema: for tests
/// that drive a `Processor` directly instead of a whole run. `tag` names both.
pub struct Direct {
    pub brokers: String,
    pub topic: String,
    pub admin: idembench::kafka::Admin,
    pub db: idembench::db::Db,
    pub produced: idembench_loadgen::ProduceReport,
}

impl Direct {
    pub async fn new(tag: &str, partitions: usize, trades: u64) -> Direct {
        use std::time::Duration;
        let brokers =
            std::env::var("IDEMBENCH_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let postgres = std::env::var("IDEMBENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://idembench:idembench@127.0.0.1:5432/idembench".into());
        let timeout = Duration::from_secs(5);
        let id: u32 = rand::random();
        let topic = format!("idembench.test-{tag}-{id:08x}");
        let hint = "(is `scripts/services up` running?)";
        let (admin, _) = idembench::kafka::Admin::connect(&brokers, timeout)
            .await
            .unwrap_or_else(|e| panic!("{e} {hint}"));
        admin.create_topic(&topic, partitions, 1, 1).await.unwrap();
        let settings = idembench::db::DbSettings {
            url: postgres,
            connections: 4,
            connect_timeout: timeout,
        };
        let db = idembench::db::Db::connect(&settings, &format!("test_{tag}_{id:08x}"))
            .await
            .unwrap_or_else(|e| panic!("{e} {hint}"));
        db.prepare(true).await.unwrap();
        let spec = idembench_loadgen::StreamSpec {
            trades,
            duplicate_rate: 0.0,
            ..idembench_loadgen::StreamSpec::default()
        };
        let producer = idembench::kafka::producer(&brokers, 1, timeout).unwrap();
        let send = idembench_loadgen::SendSettings {
            topic: topic.clone(),
            rate: 0.0,
            copies: Default::default(),
            acked: None,
            unkeyed: false,
        };
        let produced = idembench_loadgen::produce(
            &producer.producer,
            &send,
            &spec,
            &spec.plan().unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        Direct {
            brokers,
            topic,
            admin,
            db,
            produced,
        }
    }

    /// `kind` over this schema, with the design note's TTLs and no Redis.
    pub fn strategy(
        &self,
        kind: idembench::strategy::StrategyKind,
        faults: std::sync::Arc<idembench::faults::Faults>,
    ) -> std::sync::Arc<dyn idembench::strategy::Strategy> {
        use std::time::Duration;
        let settings = idembench::strategy::StrategySettings {
            faults,
            processing_ttl: Duration::from_secs(300),
            done_ttl: Duration::from_secs(600),
            key_prefix: String::new(),
            on_in_progress: idembench::strategy::parts::OnInProgress::Skip,
            redis_pipeline: false,
            retry: idembench::strategy::RetryPolicy {
                attempts: 3,
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
            },
        };
        idembench::strategy::build(kind, settings, self.db.clone(), None, None)
    }

    /// One worker per partition, one message at a time, commits as `commit_mode` says.
    pub fn processor_settings(
        &self,
        partitions: usize,
        commit_mode: idembench::processor::CommitMode,
    ) -> idembench::processor::ProcessorSettings {
        use std::time::Duration;
        idembench::processor::ProcessorSettings {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            group_id: self.topic.clone(),
            partitions,
            workers: partitions,
            commit_mode,
            commit_interval: Duration::from_millis(100),
            batch_size: 1,
            in_flight: 1,
            queue_depth: 64,
            close_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            transactions: None,
        }
    }

    /// Removes the topic and the schema.
    pub async fn clean_up(&self) {
        let _ = self.admin.delete_topic(&self.topic).await;
        self.db.drop_schema().await.unwrap();
    }
}

//! The command line. Flag names are a contract: users script against them in CI, so add flags,
//! never rename them. Each connection flag also reads an environment variable.

mod commands;
mod resolve;
mod values;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DuplicatePartition, OnInterrupt, StackMode};
use crate::conformance::Candidate;
use crate::faults::CrashPoint;
use crate::processor::CommitMode;
use crate::redis::RedisClientKind;
use crate::results::compare::Format;
use crate::strategy::StrategyKind;
use crate::strategy::parts::OnInProgress;

pub use commands::main;
pub use resolve::redacted_command_line;
use values::values;

#[derive(Debug, Parser)]
#[command(
    name = "idembench",
    version,
    about = "Measure Kafka consumer idempotency strategies on real Kafka, Redis and Postgres"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce a seeded trade stream, process it with one strategy, audit it, write result.json.
    Run(Box<RunArgs>),
    /// Run every (strategy × Redis client) pair, or a chosen subset, on the same seeded stream,
    /// one after another; print one table and write matrix.json beside each run's result.json.
    Matrix(Box<MatrixArgs>),
    /// Compare runs against a baseline for nightly CI: exit 0 fine, 1 regression, 2 error.
    Compare(CompareArgs),
    /// Find the highest offered rate one strategy sustains with end-to-end p99 under a bound
    /// (bisection over full runs; --rate and --trades are set per probe).
    Capacity(Box<CapacityArgs>),
    /// The evidence an architecture review decides from: the claims matrix (verdict grid), then
    /// per strategy a capacity search and fixed-rate runs (latency, CPU, storage) over
    /// repetitions; writes adr.md, report.html and adr.json under --out.
    Adr(Box<AdrArgs>),
    /// Render summary.md and report.html again from the result.json files in a run's or a
    /// matrix's directory.
    Report(ReportArgs),
    /// Combine the results of several instances that ran at the same time (multi-host runs):
    /// histograms merged, counts summed; writes result.json, *.hgrm and the reports.
    Merge(MergeArgs),
    /// One processor process of `run --processes N`; reads its spec on stdin (internal).
    #[command(hide = true)]
    Process,
    /// Check Kafka brokers against what idembench needs of one (partitions, acks=all, groups,
    /// manual commits, resume after a close and after a crash, rebalancing, seek, close time);
    /// writes conformance.json and conformance.md with one column per candidate.
    Conformance(ConformanceArgs),
    /// Start (`up`), stop (`down`) or check (`status`) the long-lived Redis, PostgreSQL and Kafka
    /// at the default addresses, on 127.0.0.1, from the programs `scripts/services install`
    /// installs; `up` starts only what does not answer and leaves it running.
    Services(ServicesArgs),
    /// The consumer the conformance crash check kills (internal).
    #[command(hide = true)]
    ConformanceMember(ConformanceMemberArgs),
}

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Brokers to check, in table order.
    #[arg(long, value_parser = values::<Candidate>(), value_delimiter = ',', default_value = "apache,mock")]
    pub candidates: Vec<Candidate>,
    /// Records produced and counted by each check.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Directory for conformance.json and conformance.md. Default: reports/conformance/<time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Apache Kafka's bootstrap servers (the `apache` candidate).
    #[arg(
        long,
        env = "IDEMBENCH_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_brokers: String,
}

#[derive(Debug, Args)]
pub struct ConformanceMemberArgs {
    #[arg(long)]
    pub brokers: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub records: u64,
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    #[arg(long, value_parser = values::<StrategyKind>(), default_value = "redis-only")]
    pub strategy: StrategyKind,
    #[arg(long, value_parser = values::<RedisClientKind>(), default_value = "redis-rs")]
    pub redis_client: RedisClientKind,
    /// The latency bound: a rate is sustained when end-to-end p99 stays at or under it.
    #[arg(long)]
    pub p99_ms: f64,
    /// The lowest rate probed (first), messages per second.
    #[arg(long, default_value_t = 100.0)]
    pub min_rate: f64,
    /// The highest rate probed (second, if the lowest was sustained).
    #[arg(long, default_value_t = 5_000.0)]
    pub max_rate: f64,
    /// Most probes (runs) in all.
    #[arg(long, default_value_t = 7)]
    pub probes: usize,
    /// Seconds of offered load per probe (the trade count follows from the rate).
    #[arg(long, default_value_t = 15)]
    pub duration_s: u64,
    /// Directory for capacity.json and one sub-directory per probe. Default:
    /// reports/capacity/<time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct AdrArgs {
    /// The claims: every scenario of this file is a row of the verdict grid.
    #[arg(long, default_value = "scenarios/design-note-claims.toml")]
    pub scenario: PathBuf,
    /// Strategies to run, comma-separated (the grid's columns and the cost suite's). Default:
    /// every strategy the scenarios name (all, where they name none).
    #[arg(long, value_parser = values::<StrategyKind>(), value_delimiter = ',')]
    pub strategies: Vec<StrategyKind>,
    /// Redis clients to run each Redis strategy on, comma-separated. Default: redis-rs.
    #[arg(long, value_parser = values::<RedisClientKind>(), value_delimiter = ',')]
    pub redis_clients: Vec<RedisClientKind>,
    /// Repetitions of each cost measurement (capacity search and fixed-rate run); figures are
    /// reported as min / median / max over them.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// The capacity search's latency bound: a rate is sustained when end-to-end p99 (which
    /// includes the --commit-interval-ms wait) stays at or under it.
    #[arg(long, default_value_t = 250.0)]
    pub p99_ms: f64,
    /// The capacity search's lowest rate (first probe), messages per second.
    #[arg(long, default_value_t = 100.0)]
    pub min_rate: f64,
    /// The capacity search's highest rate (second probe, if the lowest was sustained).
    #[arg(long, default_value_t = 5_000.0)]
    pub max_rate: f64,
    /// Probes (runs) per capacity search.
    #[arg(long, default_value_t = 5)]
    pub probes: usize,
    /// Seconds of offered load per capacity probe.
    #[arg(long, default_value_t = 8)]
    pub duration_s: u64,
    /// Seconds of offered load per fixed-rate run.
    #[arg(long, default_value_t = 15)]
    pub latency_duration_s: u64,
    /// The first this-many ms of a fixed-rate run are warm-up, kept out of its latency.
    #[arg(long, default_value_t = 3_000)]
    pub latency_warm_up_ms: u64,
    /// The memory projection's production rate, trades per second (with --done-ttl-ms, the
    /// window whose DONE marks Redis must hold).
    #[arg(long, default_value_t = 5_000.0)]
    pub production_rate: f64,
    /// Directory for adr.md, report.html, adr.json, the claims matrix (claims/) and the cost
    /// runs (cost/). Default: reports/adr/<time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Run directories (or result.json files, or directories of runs) to combine.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Directory for the merged result (must not hold a result.json yet).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run directory or a matrix directory (every result.json beneath it is read).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Baseline: a result.json, a run directory, or a directory of runs (repetitions are reduced
    /// to their median per scenario, strategy and client).
    pub baseline: PathBuf,
    /// Current runs, in the same forms.
    pub current: PathBuf,
    /// Relative change in throughput (and, unless --latency-threshold is given, latency)
    /// below which a difference is noise.
    #[arg(long, default_value_t = 0.1)]
    pub threshold: f64,
    /// Relative change in end-to-end p50/p99/p99.9 below which a difference is noise; latency
    /// tails on a shared machine vary more than throughput. Default: --threshold.
    #[arg(long)]
    pub latency_threshold: Option<f64>,
    /// Relative change in idembench's CPU per message (`resources.cpu_us_per_message`) below
    /// which a difference is noise. Default: --threshold.
    #[arg(long)]
    pub cpu_threshold: Option<f64>,
    /// Relative change in a capacity search's highest sustained rate (a `capacity.json` on
    /// both sides) below which a difference is noise. Default: --threshold.
    #[arg(long)]
    pub capacity_threshold: Option<f64>,
    /// Compare throughput, latency, CPU per message and capacity only for runs of these
    /// scenarios, comma-separated (`capacity` names the capacity searches; short correctness
    /// scenarios measure start-up noise); correctness is compared for all.
    #[arg(long, value_delimiter = ',')]
    pub performance_scenarios: Vec<String>,
    /// Keep this comparison's figures (the current side's medians) as one file in this
    /// directory, and show each figure's trend over the last --trend nights.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// How many nights of --history the trend shows, this one included.
    #[arg(long, default_value_t = 7, requires = "history")]
    pub trend: usize,
    #[arg(long, value_parser = values::<Format>(), default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Idempotency strategy.
    #[arg(long, value_parser = values::<StrategyKind>(), default_value = "redis-only")]
    pub strategy: StrategyKind,
    /// Redis client library the strategy runs on.
    #[arg(long, value_parser = values::<RedisClientKind>(), default_value = "redis-rs")]
    pub redis_client: RedisClientKind,
    /// Directory for result.json (must not hold one yet). Default: reports/runs/<run id>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Take settings from a scenario file (its settings override these flags).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Which scenario of --scenario to run (needed when the file holds several).
    #[arg(long, requires = "scenario")]
    pub scenario_name: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Strategies to run, comma-separated. Default: all. With --scenario, only those of each
    /// scenario's strategies that this lists.
    #[arg(long, value_parser = values::<StrategyKind>(), value_delimiter = ',')]
    pub strategies: Vec<StrategyKind>,
    /// Redis clients to run each Redis strategy on, comma-separated. Default: all (with
    /// --scenario, each scenario's, or redis-rs; given, it replaces them). Strategies without
    /// Redis run once.
    #[arg(long, value_parser = values::<RedisClientKind>(), value_delimiter = ',')]
    pub redis_clients: Vec<RedisClientKind>,
    /// Directory for matrix.json and one sub-directory per run. Default: reports/matrix/<time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run every scenario of this file with its own strategies and clients, and report per
    /// scenario whether its claim held (nothing lost, nothing doubled) for each strategy.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where the services are: flags, or the environment variables `IDEMBENCH_KAFKA_BROKERS`,
/// `IDEMBENCH_REDIS_URL`, `IDEMBENCH_POSTGRES_URL`.
#[derive(Clone, Debug, Args)]
pub struct ConnectionArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "IDEMBENCH_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_brokers: String,
    /// Redis URL.
    #[arg(
        long,
        env = "IDEMBENCH_REDIS_URL",
        default_value = "redis:\u{2f}/127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Postgres URL.
    #[arg(
        long,
        env = "IDEMBENCH_POSTGRES_URL",
        default_value = "postgres:\u{2f}/idembench:idembench@127.0.0.1:5432/idembench",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub postgres_url: String,
}

/// `idembench services`: the long-lived services at the default addresses.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    #[arg(value_parser = values::<crate::stack::services::Action>())]
    pub action: crate::stack::services::Action,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// Settings shared by `run` and `matrix`: the stream, the processor, the services.
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    /// Logical trades (unique trade ids) to produce.
    #[arg(long, default_value_t = 10_000)]
    pub trades: u64,
    /// Offered load in messages per second (open loop); 0 sends as fast as possible.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Messages intended in the first this-many ms are warm-up: their latency is reported
    /// apart (latency_us.warm_up) and kept out of the end-to-end figures. Needs --rate > 0.
    #[arg(long, default_value_t = 0)]
    pub warm_up_ms: u64,
    /// Fraction of logical trades sent twice, 0.0–1.0.
    #[arg(long, default_value_t = 0.1)]
    pub duplicate_rate: f64,
    /// Fraction of the duplicates sent late rather than right after the original, 0.0–1.0.
    #[arg(long, default_value_t = 0.0)]
    pub late_duplicate_share: f64,
    /// How long after its original a late duplicate is sent, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub late_duplicate_delay_ms: u64,
    /// Zipf exponent of the account (Kafka key) distribution; 0 = uniform.
    #[arg(long, default_value_t = 0.0)]
    pub key_skew: f64,
    /// Distinct accounts (Kafka keys).
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u32,
    /// Distinct instruments.
    #[arg(long, default_value_t = 20)]
    pub instruments: u32,
    /// Bytes per message value (at least the 50-byte trade encoding).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Fraction of trades followed by a malformed (non-trade) message, 0.0–1.0: poison pills
    /// the processor must count and skip without losing anything.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Where a duplicate goes: `same` partition as its original (one consumer sees both, in
    /// order) or the `next` one (two consumers may process copies of one trade at once).
    #[arg(long, value_parser = values::<DuplicatePartition>(), default_value = "same")]
    pub duplicate_partition: DuplicatePartition,
    /// Seed of the stream: the same seed gives the same trades and duplicates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Partitions of the run's topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: usize,
    /// Replication factor of the run's topic (3 on a cluster, as production runs it).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// min.insync.replicas of the run's topic. Default: 2 when the replication factor is 3 or
    /// more, else 1.
    #[arg(long)]
    pub min_insync_replicas: Option<i32>,
    /// Kafka brokers the stack starts, when it starts Kafka (`--stack auto|embedded`): 3 or
    /// more form a 3-voter KRaft quorum, every node also a broker.
    #[arg(long, default_value_t = 1)]
    pub kafka_nodes: usize,
    /// Redis the stack starts where it starts Redis: one server (`standalone`), or a Redis
    /// Cluster of three primaries with a replica each (`cluster`). Against servers you run,
    /// the URL's scheme says it: redis:// or redis-cluster://host:port[,host:port].
    #[arg(long, value_parser = values::<crate::redis::RedisTopology>(), default_value = "standalone")]
    pub redis_topology: crate::redis::RedisTopology,
    /// The memory limit of the Redis the stack starts (`maxmemory`: `2mb`, `512kb`, bytes
    /// without a unit), so DONE marks and claims can be evicted (or refused) under load.
    #[arg(long, value_name = "SIZE")]
    pub redis_maxmemory: Option<String>,
    /// What that Redis does when full: refuse writes with OOM (`noeviction`, Redis's default),
    /// or evict the least recently used key (`allkeys-lru`) or keyed-with-TTL key (`volatile-lru`).
    #[arg(long, value_parser = values::<crate::redis::MaxmemoryPolicy>(), default_value = "noeviction")]
    pub redis_maxmemory_policy: crate::redis::MaxmemoryPolicy,
    /// What the Redis the stack starts keeps on disk: nothing (`none`: a restart comes back
    /// empty), or an append-only file fsynced every second (`aof-everysec`: a restart reloads
    /// it; a killed process loses nothing it wrote, a failed machine up to a second).
    #[arg(long, value_parser = values::<crate::redis::RedisPersistence>(), default_value = "none")]
    pub redis_persistence: crate::redis::RedisPersistence,
    /// With `--redis-topology sentinel`: the replica replicates through Toxiproxy, its link
    /// this many ms late, and a `redis-failover` cuts that link as it kills the primary — the
    /// writes of the last moments are acknowledged and then exist nowhere.
    #[arg(long, value_name = "MS")]
    pub redis_replication_lag_ms: Option<u64>,
    /// Worker tasks; each owns the partitions p with p % workers == its index. Default: one per partition.
    #[arg(long)]
    pub workers: Option<usize>,
    /// How offsets are committed after each message.
    #[arg(long, value_parser = values::<CommitMode>(), default_value = "interval")]
    pub commit_mode: CommitMode,
    /// Period of offset commits in `interval` mode, ms.
    #[arg(long, default_value_t = 100)]
    pub commit_interval_ms: u64,
    /// Messages processed in one database transaction (db-only, db-authority-redis-cache,
    /// db-offsets) or one Kafka transaction (kafka-transactions): a worker takes what is
    /// already waiting, up to this many.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Messages (or batches) each worker processes at once. Never two of one Kafka key (one
    /// account), so each key's messages keep their order; offsets are committed only past what
    /// finished. 1 (the default) is the design note's one message at a time. Crash and kill
    /// counts become bounds above 1, as with several workers. Not for db-offsets or
    /// kafka-transactions.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Run the in-process processor's tasks on this many threads of their own, each a tokio
    /// current-thread runtime with its own Redis and Postgres connections (--redis-connections
    /// and --postgres-connections each); worker i runs on thread i % N. 0 (the default): they
    /// share the process's multi-thread runtime. At most --workers; not for db-offsets,
    /// kafka-transactions, --commit-mode sync or --processes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub processor_threads: usize,
    /// kafka-transactions: a worker keeps its transaction open this long (ms) from its first
    /// message, gathering up to --batch-size messages, before it commits. 0 (the default): a
    /// transaction holds what is already waiting, never waiting for more.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub transaction_interval_ms: u64,
    /// Crash at these points of the flow, comma-separated: after-receive, after-claim,
    /// after-db-commit, after-redis-done, before-offset-commit. A crash abandons everything not
    /// committed and restarts the processor after --restart-delay-ms. after-produce,
    /// after-send-offsets and in-commit are a Kafka transaction's (kafka-transactions only).
    #[arg(long, value_parser = values::<CrashPoint>(), value_delimiter = ',')]
    pub crash_at: Vec<CrashPoint>,
    /// Probability that a trade crashes at each --crash-at point (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub crash_rate: f64,
    /// Trade ids that crash at each --crash-at point, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub crash_trades: Vec<u64>,
    /// Inject no more crashes than this. Default: no limit.
    #[arg(long)]
    pub max_crashes: Option<u64>,
    /// Pause before a crashed processor's replacement starts, ms.
    #[arg(long, default_value_t = 500)]
    pub restart_delay_ms: u64,
    /// Run the processor as this many OS processes in one consumer group (0: inside this
    /// process). Needed for --kill-at-ms and --kill-every-ms.
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// SIGKILL a processor process at these times (ms after production starts),
    /// comma-separated; a replacement starts after --restart-delay-ms.
    #[arg(long, value_delimiter = ',')]
    pub kill_at_ms: Vec<u64>,
    /// SIGKILL a processor process this often (ms) while production runs.
    #[arg(long)]
    pub kill_every_ms: Option<u64>,
    /// Kafka session.timeout.ms of the processors: how long the group waits for a silent
    /// (killed) member before moving its partitions.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Delete every Redis key of the run this many ms after production starts, as a Redis
    /// restart without persistence would.
    #[arg(long)]
    pub redis_wipe_at_ms: Option<u64>,
    /// A fault at a time, repeatable (a scenario file's `[[scenario.fault]]`):
    /// KIND@AT_MS[+DURATION_MS][/EVERY_MS][:TARGET], e.g. `--fault redis-restart@5000+2000`.
    /// Kinds: redis-wipe, db-outage, process-kill, redis-restart (SIGKILL the stack's Redis and
    /// start it again, empty), redis-failover (SIGKILL the primary of a Sentinel or Cluster
    /// topology until its replica is promoted), kafka-broker-kill (SIGKILL a broker, by default
    /// partition 0's leader, and start it again). The last three need services the run's stack
    /// started (--stack embedded, or auto with nothing running). zombie-consumer pauses a
    /// processor process (--processes); its :TARGET, a --crash-at point, is the step where
    /// the pause lands (`zombie-consumer@2000+9000:after-produce`).
    #[arg(long = "fault", value_name = "FAULT", value_parser = crate::faults::ScheduledFault::parse_flag)]
    pub faults: Vec<crate::faults::ScheduledFault>,
    /// Trade ids whose business transaction is slowed by --slow-ms (every copy), comma-separated:
    /// a PROCESSING claim shorter than that expires while its owner still works.
    #[arg(long, value_delimiter = ',')]
    pub slow_trades: Vec<u64>,
    /// How much slower the --slow-trades' business transactions are, ms.
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    /// Cut every Postgres connection of the processor this many ms after production starts and
    /// refuse new ones for --db-outage-ms (through a loopback relay; Postgres itself and other
    /// users of it are untouched).
    #[arg(long)]
    pub db_outage_at_ms: Option<u64>,
    /// How long the Postgres outage lasts, ms. The processor retries each transaction for
    /// about 5 s before it gives up and the run fails.
    #[arg(long, default_value_t = 2_000)]
    pub db_outage_ms: u64,
    /// What redis-only does on a PROCESSING key: skip it (the design note) or wait for it.
    #[arg(long, value_parser = values::<OnInProgress>(), default_value = "skip")]
    pub on_in_progress: OnInProgress,
    /// TTL of the PROCESSING claim, ms (design note: 5 min).
    #[arg(long, default_value_t = 300_000)]
    pub processing_ttl_ms: u64,
    /// TTL of the DONE mark, ms (design note: 7 days).
    #[arg(long, default_value_t = 604_800_000)]
    pub done_ttl_ms: u64,
    /// Drop the unique constraint on the trade id (the design note leans on it).
    #[arg(long)]
    pub no_unique_constraint: bool,
    /// Replace the business transaction (trade, outbox, position in Postgres) with an exact
    /// in-memory record of each trade's effects, so the run measures the idempotency cost alone
    /// (the Redis peer comparison). Only for redis-only, redis-only-atomic and none, in-process.
    #[arg(long)]
    pub no_business_write: bool,
    /// Send the claim's GET and SET NX PX together, in one pipelined round trip, where the
    /// strategy claims in two steps (redis-only, dual-db-first, dual-redis-first). The decision
    /// is the same: SET NX fails whenever GET finds a key. Off by default: the design note's
    /// flow is two round trips.
    #[arg(long)]
    pub redis_pipeline: bool,
    /// After every Redis write (claim, DONE), `WAIT` on its connection until this many
    /// replicas acknowledged it, so a mark survives a failover (0: no WAIT). A WAIT that
    /// times out with fewer is counted (`wait_short`), not failed: the write happened.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub redis_wait_replicas: u32,
    /// How long each `WAIT` waits, ms.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub redis_wait_timeout_ms: u64,
    /// Connections (redis-rs) or pool size (fred) to Redis.
    #[arg(long, default_value_t = 1)]
    pub redis_connections: usize,
    /// Postgres pool size. Default: workers × in-flight + 2.
    #[arg(long)]
    pub postgres_connections: Option<u32>,
    /// Producer linger.ms (batching delay).
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u32,

    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Give up on a service that does not answer within this many ms.
    #[arg(long, default_value_t = 5_000)]
    pub connect_timeout_ms: u64,
    /// Give up waiting for the processor to drain after this many ms; the report is then partial.
    #[arg(long, default_value_t = 120_000)]
    pub drain_timeout_ms: u64,

    /// On Ctrl-C, after production stops: `drain` what was produced (a second Ctrl-C abandons)
    /// or `abandon` at once. Either way the report is written, marked partial.
    #[arg(long, value_parser = values::<OnInterrupt>(), default_value = "drain")]
    pub on_interrupt: OnInterrupt,
    /// Keep the run's topic, Postgres schema and Redis keys for inspection.
    #[arg(long)]
    pub keep_state: bool,
    /// Print nothing but errors and the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Where the services come from: `auto` uses each one that answers and starts, as child
    /// processes on free loopback ports, those left at their default address that do not
    /// (Docker containers where the programs are missing and a daemon answers); `external` only
    /// uses the given addresses; `embedded` always starts children; `docker` always containers.
    #[arg(long, value_parser = values::<StackMode>(), default_value = "auto", env = "IDEMBENCH_STACK")]
    pub stack: StackMode,
}

//! The consumer under test: a Kafka consumer group member that runs every message through an
//! idempotency strategy and commits its offset afterwards.
//!
//! One dispatcher task reads the consumer and hands each message to the worker that owns its
//! partition (`partition % workers`), so per-partition order holds while partitions proceed in
//! parallel. A worker runs its messages through decode, strategy, offset commit, and records
//! latencies into its own histograms: one at a time by default, or up to `in_flight` units at
//! once, never two of one Kafka key, so each key's messages stay in order. An offset is
//! committed only once it and every earlier offset of its partition finished ([`Watermarks`]).
//! Offsets are committed explicitly (`enable.auto.commit=false`); malformed messages are
//! counted, logged and committed past, so one bad record cannot stall a partition.

mod dispatch;
pub mod fleet;
pub mod member;
pub mod metrics;
pub mod threads;
pub mod transactional;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idembench_loadgen::Trade;
use idembench_loadgen::producer::now_us;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode as KafkaCommitMode, Consumer, ConsumerContext, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use metrics::{Counts, TxnCounts, WorkerMetrics};

use crate::faults::trace::What;
use crate::faults::{Crash, CrashPoint, Faults};
use crate::strategy::{Incoming, StageTimes, Strategy, StrategyError};
pub use threads::{Placement, Runtimes, Share};

/// When offsets are committed. Every mode commits an offset only after its message (and every
/// earlier one of its partition) has been processed, so all of them are at-least-once.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
    Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    /// A committer task commits each partition's latest processed offset every
    /// `commit_interval` (the default). A crash replays at most one interval of messages.
    Interval,
    /// One asynchronous commit per message, as the design note's flow reads. librdkafka sends
    /// a group's commits one at a time, so at high rates they queue up behind each other.
    Async,
    /// One synchronous commit per message: the worker waits for the broker each time.
    Sync,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProcessorSettings {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub partitions: usize,
    pub workers: usize,
    pub commit_mode: CommitMode,
    /// Period of the committer task in `interval` mode.
    pub commit_interval: Duration,
    /// Most messages a worker hands to the strategy at once (1 = one at a time).
    pub batch_size: usize,
    /// Most units (messages, or batches) a worker runs at once, one per Kafka key, so a key's
    /// messages stay in order (1 = one at a time).
    #[serde(default = "one")]
    pub in_flight: usize,
    /// Messages buffered per worker between the dispatcher and the worker.
    pub queue_depth: usize,
    /// Longest wait for the consumer to leave the group when the processor stops.
    pub close_timeout: Duration,
    /// The group forgets a member that sent no heartbeat for this long (a killed process).
    pub session_timeout: Duration,
    /// Kafka transactions (#16): each unit's effects and offsets go into one transaction on
    /// its worker's lane instead of an offset commit; `commit_mode` does not apply.
    #[serde(default)]
    pub transactions: Option<transactional::TxnSettings>,
}

fn one() -> usize {
    1
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("cannot create the Kafka consumer: {0}")]
    Consumer(#[source] rdkafka::error::KafkaError),
    #[error("cannot subscribe to topic {topic}: {source}")]
    Subscribe {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("a worker gave up: {0}")]
    Strategy(#[from] StrategyError),
    #[error("{0}")]
    Transactions(String),
    #[error("{0}")]
    Placement(String),
}

/// Where the processor is, readable at any time without stopping it.
#[derive(Debug)]
pub struct Progress {
    /// Per partition: which assignment of it is current, and how far that assignment has
    /// processed it (everything before `next` is done).
    held: Vec<std::sync::Mutex<Held>>,
    /// Next offset committed to the group, per partition: where a restart would resume.
    committed: Vec<AtomicI64>,
    /// Partitions currently assigned to this consumer.
    assigned: AtomicUsize,
    rebalances: AtomicU64,
    /// Messages fully processed.
    completed: AtomicU64,
    /// Offset commits the broker refused (answered with an error), not yet reported.
    failed_commits: AtomicU64,
    /// Messages intended to be sent before this time (µs since the epoch) are warm-up: their
    /// end-to-end latency goes to the warm-up histogram, not the measured ones. 0: none.
    warm_up_until_us: AtomicU64,
}

impl Progress {
    pub fn new(partitions: usize) -> Progress {
        Progress {
            held: (0..partitions).map(|_| Default::default()).collect(),
            committed: (0..partitions).map(|_| AtomicI64::new(0)).collect(),
            assigned: AtomicUsize::new(0),
            rebalances: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            warm_up_until_us: AtomicU64::new(0),
        }
    }

    /// True once every partition's offsets up to `end_offsets` are processed *and committed*:
    /// a restart would replay nothing, so no message can still be waiting for a redelivery.
    pub fn caught_up(&self, end_offsets: &std::collections::BTreeMap<i32, i64>) -> bool {
        end_offsets.iter().all(|(partition, end)| {
            let committed = usize::try_from(*partition)
                .ok()
                .and_then(|p| self.committed.get(p));
            committed.is_some_and(|committed| committed.load(Ordering::Acquire) >= *end)
        })
    }

    /// A new processor incarnation starts: nothing assigned yet, and "processed" restarts at
    /// "committed", since whatever was processed but not committed will be delivered again.
    fn begin_incarnation(&self) {
        self.assigned.store(0, Ordering::Release);
        for partition in 0..self.held.len() {
            self.reassigned(partition);
        }
    }

    /// `partition` was assigned to or revoked from this consumer: a new assignment of it
    /// begins, and what an earlier one processed is forgotten. Its in-flight work may still
    /// finish (a paused consumer wakes with units half done), but it no longer moves this
    /// consumer's offset: by now another member may own the partition and have committed past
    /// it, and a late commit of the old position would move the group's offset back.
    fn reassigned(&self, partition: usize) {
        if let Some(held) = self.held.get(partition) {
            let mut held = held.lock().expect("progress lock");
            held.epoch += 1;
            held.next = self.committed[partition].load(Ordering::Acquire);
        }
    }

    /// The new assignment of `partition` resumes at `next`, the offset the strategy stored with
    /// its effects (db-offsets): everything before it is processed and committed where it
    /// counts. Without this, a partition whose last messages an ended assignment finished (a
    /// stale completion, which moves nothing) would wait for messages that never come again.
    fn resumed_at(&self, partition: i32, next: i64) {
        if let Some(held) = self.held_of(partition) {
            let mut held = held.lock().expect("progress lock");
            held.next = held.next.max(next);
        }
        self.mark_committed(partition, next);
    }

    /// The current assignment of `partition` (see [`Progress::reassigned`]).
    fn epoch(&self, partition: i32) -> u64 {
        self.held_of(partition)
            .map_or(0, |held| held.lock().expect("progress lock").epoch)
    }

    /// Records `partition` processed up to `next_offset` by work of assignment `epoch`; false
    /// (and nothing recorded) if the partition has been reassigned since.
    fn advance(&self, partition: i32, epoch: u64, next_offset: i64) -> bool {
        let Some(held) = self.held_of(partition) else {
            return false;
        };
        let mut held = held.lock().expect("progress lock");
        if held.epoch != epoch {
            return false;
        }
        held.next = held.next.max(next_offset);
        true
    }

    fn next_offset(&self, partition: usize) -> i64 {
        self.held
            .get(partition)
            .map_or(0, |held| held.lock().expect("progress lock").next)
    }

    fn held_of(&self, partition: i32) -> Option<&std::sync::Mutex<Held>> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.held.get(p))
    }

    /// Records that `next_offset` is committed for `partition` (never moving it back): by this
    /// processor's own commits, or as read from the group coordinator when processor processes
    /// commit on their own.
    pub fn mark_committed(&self, partition: i32, next_offset: i64) {
        if let Some(committed) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.committed.get(p))
        {
            committed.fetch_max(next_offset, Ordering::AcqRel);
        }
    }

    /// Messages still to process before `end_offsets` is reached.
    pub fn lag(&self, end_offsets: &std::collections::BTreeMap<i32, i64>) -> i64 {
        end_offsets
            .iter()
            .map(|(partition, end)| {
                let index = usize::try_from(*partition).unwrap_or(usize::MAX);
                let committed = self
                    .committed
                    .get(index)
                    .map_or(0, |c| c.load(Ordering::Acquire));
                // Processor processes report only what they committed.
                (end - self.next_offset(index).max(committed)).max(0)
            })
            .sum()
    }

    /// Messages intended before `until_us` (µs since the epoch) count as warm-up.
    pub fn set_warm_up_until(&self, until_us: u64) {
        self.warm_up_until_us.store(until_us, Ordering::Relaxed);
    }

    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// The committed next offset of `partition` (0 before the first commit).
    pub fn committed(&self, partition: i32) -> i64 {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.committed.get(p))
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Sum over partitions of the committed next offsets: messages the group has committed.
    pub fn committed_total(&self) -> i64 {
        self.committed
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum()
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Acquire)
    }
}

/// The group's committed offsets as its coordinator holds them now, read into a [`Progress`]:
/// how a run learns what processor processes committed, and what a transactional processor's
/// progress cannot see for itself — offsets committed by a transaction whose outcome it never
/// heard (a broker died in the commit) for a partition that moved meanwhile, whose next
/// assignment then starts at its end and delivers nothing to tell.
pub struct CommittedOffsets {
    consumer: Arc<rdkafka::consumer::BaseConsumer>,
    topic: String,
    partitions: usize,
}

impl CommittedOffsets {
    pub fn new(settings: &ProcessorSettings) -> Result<CommittedOffsets, String> {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            // An observer wants the offsets committed now. At read_committed (librdkafka's
            // default) the fetch asks for stable offsets (KIP-447) and waits while any
            // partition has a transaction open — under kafka-transactions nearly always, so
            // every read timed out until the stream went quiet.
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(|e| format!("cannot create the offset reader: {e}"))?;
        Ok(CommittedOffsets {
            consumer: Arc::new(consumer),
            topic: settings.topic.clone(),
            partitions: settings.partitions,
        })
    }

    /// Reads the committed offsets (a round trip, off the runtime) into `progress`.
    pub async fn observe(&self, progress: &Progress) -> Result<(), String> {
        let mut wanted = TopicPartitionList::with_capacity(self.partitions);
        for partition in 0..self.partitions {
            let partition = i32::try_from(partition).expect("partition count fits i32");
            wanted.add_partition(&self.topic, partition);
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(wanted, Duration::from_secs(5))
        })
        .await
        .expect("offset reader panicked")
        .map_err(|e| format!("cannot read the group's committed offsets: {e}"))?;
        for element in committed.elements() {
            if let Offset::Offset(next) = element.offset() {
                progress.mark_committed(element.partition(), next);
            }
        }
        Ok(())
    }
}

/// One partition's entry in [`Progress`].
#[derive(Debug, Default)]
struct Held {
    /// Bumped each time the partition is assigned or revoked.
    epoch: u64,
    next: i64,
}

struct GroupContext {
    progress: Arc<Progress>,
    strategy: Arc<dyn Strategy>,
    runtime: tokio::runtime::Handle,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    /// An offset commit the broker answered (asynchronous ones included): only now is it
    /// committed. Queuing an asynchronous commit is not enough to call an offset committed, and
    /// the run drains on committed offsets.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                for element in offsets.elements() {
                    if let Offset::Offset(next) = element.offset() {
                        self.progress.mark_committed(element.partition(), next);
                    }
                }
            }
            // Nothing to commit: the offsets had been committed already.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            // Counted in `processor.commit_errors`; said once per processor (a rebalance
            // refuses every commit of the old generation), the rest at debug level.
            Err(error) => {
                if self.progress.failed_commits.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%error, "an offset commit failed at the broker; later ones are counted in processor.commit_errors");
                } else {
                    tracing::debug!(%error, "an offset commit failed at the broker");
                }
            }
        }
    }

    /// rdkafka's default rebalance, plus one step: on assignment, partitions resume at the
    /// offsets the strategy keeps, if it keeps any (db-offsets), set before `assign`.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        self.progress.rebalances.fetch_add(1, Ordering::Relaxed);
        for element in partitions.elements() {
            if let Ok(partition) = usize::try_from(element.partition()) {
                self.progress.reassigned(partition);
            }
        }
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.strategy.keeps_offsets() {
                    self.resume_at_stored_offsets(partitions);
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                };
                tracing::debug!(count = partitions.count(), "partitions assigned");
                self.progress
                    .assigned
                    .store(partitions.count(), Ordering::Release);
                assigned
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.progress.assigned.store(0, Ordering::Release);
                if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance failed");
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "applying a rebalance failed");
        }
    }
}

impl GroupContext {
    /// Sets each assigned partition's start offset from the strategy. This callback runs on the
    /// thread that polls the consumer, so the lookup blocks it (briefly, once per rebalance).
    fn resume_at_stored_offsets(&self, partitions: &mut TopicPartitionList) {
        let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
        for element in partitions.elements() {
            by_topic
                .entry(element.topic().to_string())
                .or_default()
                .push(element.partition());
        }
        for (topic, ids) in by_topic {
            let lookup = self.strategy.resume_offsets(&topic, &ids);
            let stored = blocking(|| self.runtime.block_on(lookup));
            match stored {
                Ok(stored) => {
                    for (partition, next) in stored {
                        match partitions.set_partition_offset(
                            &topic,
                            partition,
                            Offset::Offset(next),
                        ) {
                            Ok(()) => self.progress.resumed_at(partition, next),
                            Err(error) => {
                                tracing::warn!(%error, partition, "cannot resume at the stored offset")
                            }
                        }
                    }
                }
                // Falling back to Kafka's committed offsets stays correct: the stored offset
                // is checked again inside every transaction.
                Err(error) => {
                    tracing::warn!(%error, "cannot read stored offsets; resuming at Kafka's")
                }
            }
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// What the processor did, once it has stopped; summed over incarnations with [`ProcessorReport::add`].
#[derive(Debug, Default)]
pub struct ProcessorReport {
    pub metrics: WorkerMetrics,
    pub elapsed: Duration,
    pub consumer_errors: u64,
    pub commit_errors: u64,
    pub rebalances: u64,
    /// The consumer did not leave the group within `close_timeout` (it was abandoned).
    pub close_timed_out: bool,
    /// Processor incarnations (1 + restarts after crashes).
    pub incarnations: u64,
    /// Redis client counters, where the processor owned its client (a processor process).
    pub redis: crate::redis::CounterValues,
}

/// A [`ProcessorReport`] as one processor process sends it to the run that started it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct WireReport {
    pub metrics: metrics::WireMetrics,
    pub elapsed_ms: u64,
    pub consumer_errors: u64,
    pub commit_errors: u64,
    pub rebalances: u64,
    pub close_timed_out: bool,
    pub redis: crate::redis::CounterValues,
}

impl ProcessorReport {
    pub fn to_wire(&self) -> WireReport {
        WireReport {
            metrics: self.metrics.to_wire(),
            elapsed_ms: self.elapsed.as_millis() as u64,
            consumer_errors: self.consumer_errors,
            commit_errors: self.commit_errors,
            rebalances: self.rebalances,
            close_timed_out: self.close_timed_out,
            redis: self.redis,
        }
    }

    /// One process's report, counted as one incarnation.
    pub fn from_wire(wire: &WireReport) -> Result<ProcessorReport, String> {
        Ok(ProcessorReport {
            metrics: WorkerMetrics::from_wire(&wire.metrics)?,
            elapsed: Duration::from_millis(wire.elapsed_ms),
            consumer_errors: wire.consumer_errors,
            commit_errors: wire.commit_errors,
            rebalances: wire.rebalances,
            close_timed_out: wire.close_timed_out,
            incarnations: 1,
            redis: wire.redis,
        })
    }

    /// Adds a later incarnation's report to this one.
    pub fn add(&mut self, other: ProcessorReport) {
        self.redis.add(other.redis);
        self.metrics.merge(&other.metrics);
        self.elapsed += other.elapsed;
        self.consumer_errors += other.consumer_errors;
        self.commit_errors += other.commit_errors;
        self.rebalances = self.rebalances.max(other.rebalances);
        self.close_timed_out |= other.close_timed_out;
        self.incarnations += other.incarnations;
    }
}

/// A running processor.
pub struct Processor {
    stop: CancellationToken,
    failed: CancellationToken,
    crashed: CancellationToken,
    progress: Arc<Progress>,
    dispatcher: JoinHandle<u64>,
    committer: Option<JoinHandle<u64>>,
    workers: Vec<JoinHandle<Result<(WorkerMetrics, u64), StrategyError>>>,
    /// The transactional lanes' threads, once their workers ended.
    lane_threads: transactional::Threads,
    consumer: Arc<GroupConsumer>,
    /// What workers have flushed so far (once a second each): readable while they run.
    flushed: Arc<std::sync::Mutex<WorkerMetrics>>,
    started: Instant,
    close_timeout: Duration,
}

/// How often a worker hands its metrics to [`Processor::snapshot`]. The lock is taken once per
/// worker per period, never per message.
const FLUSH_PERIOD: Duration = Duration::from_secs(1);

impl Processor {
    /// Joins the group and starts consuming. Partitions arrive asynchronously: see
    /// [`Processor::wait_for_assignment`].
    pub fn start(
        settings: &ProcessorSettings,
        strategy: Arc<dyn Strategy>,
        progress: Arc<Progress>,
        faults: Arc<Faults>,
    ) -> Result<Processor, ProcessorError> {
        Processor::start_on(settings, &Placement::here(strategy), progress, faults)
    }

    /// [`Processor::start`] with its tasks placed on the runtimes of `placement`
    /// (`--processor-threads`).
    pub fn start_on(
        settings: &ProcessorSettings,
        placement: &Placement,
        progress: Arc<Progress>,
        faults: Arc<Faults>,
    ) -> Result<Processor, ProcessorError> {
        placement
            .check(settings.transactions.is_some())
            .map_err(ProcessorError::Placement)?;
        let first = placement.first();
        let strategy = first.strategy.clone();
        // The consumer, the dispatcher and the committer belong to the first runtime.
        let _entered = first.runtime.enter();
        progress.begin_incarnation();
        faults.arm();
        let mut config = ClientConfig::new();
        // IDEMBENCH_RDKAFKA_DEBUG=cgrp,fetch (librdkafka's `debug` contexts) shows the group's
        // protocol; the lines go to the log at IDEMBENCH_LOG=rdkafka=debug.
        if let Ok(contexts) = std::env::var("IDEMBENCH_RDKAFKA_DEBUG") {
            config.set("debug", contexts);
        }
        let consumer: GroupConsumer = config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // librdkafka's default, said outright: a transactional upstream's aborted records
            // and its open transactions' records are never handed over.
            .set("isolation.level", "read_committed")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set("socket.connection.setup.timeout.ms", "5000")
            .create_with_context(GroupContext {
                progress: progress.clone(),
                strategy: strategy.clone(),
                runtime: first.runtime.clone(),
            })
            .map_err(ProcessorError::Consumer)?;
        consumer
            .subscribe(&[&settings.topic])
            .map_err(|source| ProcessorError::Subscribe {
                topic: settings.topic.clone(),
                source,
            })?;
        let consumer = Arc::new(consumer);
        let stop = CancellationToken::new();
        let failed = CancellationToken::new();
        let crashed = CancellationToken::new();
        let flushed = Arc::new(std::sync::Mutex::new(WorkerMetrics::default()));
        if settings.transactions.is_some() && settings.in_flight > 1 {
            return Err(ProcessorError::Transactions(
                "Kafka transactions run one unit at a time per worker: a producer holds one open transaction (drop --in-flight, or set it to 1)".into(),
            ));
        }
        let lane_threads: transactional::Threads = Default::default();
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for index in 0..settings.workers.max(1) {
            let starter = settings
                .transactions
                .as_ref()
                .map(|txn| transactional::LaneStarter {
                    processor: settings.clone(),
                    settings: txn.clone(),
                    worker: index,
                    shared: transactional::Shared {
                        consumer: consumer.clone(),
                        faults: faults.clone(),
                        crashed: crashed.clone(),
                        threads: lane_threads.clone(),
                        progress: progress.clone(),
                    },
                });
            let lane = match &starter {
                Some(starter) => Some(starter.start().map_err(ProcessorError::Transactions)?),
                None => None,
            };
            let (tx, rx) = mpsc::channel(settings.queue_depth.max(1));
            senders.push(tx);
            let window = settings
                .transactions
                .as_ref()
                .map(|txn| txn.interval)
                .filter(|interval| !interval.is_zero());
            let worker = Worker {
                lane,
                starter,
                replaced_in_a_row: Default::default(),
                rewinds: Default::default(),
                starts: Default::default(),
                window,
                batch_size: settings.batch_size.max(1),
                in_flight: settings.in_flight.max(1),
                consumer: consumer.clone(),
                strategy: placement.of_worker(index).strategy.clone(),
                progress: progress.clone(),
                topic: settings.topic.clone(),
                commit_mode: settings.commit_mode,
                stop: stop.clone(),
                failed: failed.clone(),
                crashed: crashed.clone(),
                faults: faults.clone(),
                flushed: flushed.clone(),
            };
            workers.push(placement.of_worker(index).runtime.spawn(worker.run(rx)));
        }
        // The dispatcher stops on any of the three; `failed` and `crashed` also stop it.
        let halt = CancellationToken::new();
        for token in [&stop, &failed, &crashed] {
            let (token, halt) = (token.clone(), halt.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                halt.cancel();
            });
        }
        let dispatcher = tokio::spawn(dispatch::dispatch(
            consumer.clone(),
            progress.clone(),
            senders,
            halt.clone(),
            halt,
        ));
        let committer = (settings.commit_mode == CommitMode::Interval
            && settings.transactions.is_none())
        .then(|| {
            let committer = Committer::new(consumer.clone(), progress.clone(), &settings.topic);
            tokio::spawn(committer.run(settings.commit_interval, stop.clone(), crashed.clone()))
        });
        Ok(Processor {
            stop,
            failed,
            crashed,
            progress,
            dispatcher,
            committer,
            workers,
            lane_threads,
            consumer,
            flushed,
            started: Instant::now(),
            close_timeout: settings.close_timeout,
        })
    }

    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Fires when a worker gave up (its store stayed unreachable through every retry).
    pub fn failed(&self) -> &CancellationToken {
        &self.failed
    }

    /// Fires when an injected crash hit: the processor must be stopped (abandoning what was not
    /// committed) and replaced.
    pub fn crashed(&self) -> &CancellationToken {
        &self.crashed
    }

    /// What the workers measured up to their last flush (at most [`FLUSH_PERIOD`] ago).
    pub fn snapshot(&self) -> WorkerMetrics {
        self.flushed.lock().expect("metrics lock").clone()
    }

    /// Waits until the group has assigned this consumer its partitions, or `timeout` passes.
    pub async fn wait_for_assignment(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.progress.assigned() == 0 {
            if Instant::now() >= deadline || self.failed.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops consuming, waits for the workers, merges their metrics, and leaves the group
    /// (off the runtime, and no longer than `close_timeout`).
    pub async fn stop(self) -> Result<ProcessorReport, ProcessorError> {
        match self.stop_keeping_report().await {
            (_, Some(error)) => Err(error),
            (report, None) => Ok(report),
        }
    }

    /// [`Processor::stop`], keeping what the workers measured even when one failed (the
    /// first failure comes beside it).
    pub async fn stop_keeping_report(self) -> (ProcessorReport, Option<ProcessorError>) {
        self.stop.cancel();
        let consumer_errors = self.dispatcher.await.unwrap_or(0);
        let mut metrics = WorkerMetrics::default();
        let mut commit_errors = 0;
        let mut first_error = None;
        for worker in self.workers {
            match worker.await.expect("worker panicked") {
                Ok((worker_metrics, worker_commit_errors)) => {
                    metrics.merge(&worker_metrics);
                    commit_errors += worker_commit_errors;
                }
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        // Only now: a stopping worker still flushes once a second while it finishes what it has
        // in flight, and a flush taken before it ended would be lost from the counts.
        metrics.merge(&std::mem::take(
            &mut *self.flushed.lock().expect("metrics lock"),
        ));
        commit_errors += self.progress.failed_commits.swap(0, Ordering::Relaxed);
        if let Some(committer) = self.committer {
            commit_errors += committer.await.unwrap_or(0);
        }
        // Before the consumer goes: a lane may be finishing a commit with its group metadata.
        transactional::join(&self.lane_threads).await;
        let elapsed = self.started.elapsed();
        let close_timed_out = !close_consumer(self.consumer, self.close_timeout).await;
        let report = ProcessorReport {
            incarnations: 1,
            metrics,
            elapsed,
            consumer_errors,
            commit_errors,
            rebalances: self.progress.rebalances.load(Ordering::Relaxed),
            close_timed_out,
            redis: Default::default(),
        };
        (report, first_error.map(ProcessorError::from))
    }
}

/// Drops the last handle to the consumer on a thread of its own: librdkafka's close blocks until
/// the group is left, and must neither block the runtime nor hold the run up for long.
async fn close_consumer(consumer: Arc<GroupConsumer>, timeout: Duration) -> bool {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = done_tx.send(());
    });
    match tokio::time::timeout(timeout, done_rx).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                "the Kafka consumer did not leave its group within {timeout:?}; abandoning it"
            );
            false
        }
    }
}

/// A message as the dispatcher hands it to a worker: with the assignment of its partition it
/// was fetched in. The rebalance callback runs inside `recv`, on the dispatcher's task, and
/// librdkafka drops what was fetched for an assignment that has ended, so the assignment
/// current when `recv` returns is the message's.
struct Delivered {
    message: OwnedMessage,
    epoch: u64,
}

struct Worker {
    /// Under `transactions`: this worker's transactional producer, what starts a new one, and
    /// the partitions an aborted transaction rewound.
    lane: Option<transactional::Lane>,
    starter: Option<transactional::LaneStarter>,
    /// Lanes replaced since the last committed transaction.
    replaced_in_a_row: std::sync::atomic::AtomicU32,
    rewinds: std::sync::Mutex<transactional::Rewinds>,
    starts: std::sync::Mutex<transactional::Starts>,
    /// kafka-transactions' `--transaction-interval-ms`, when set.
    window: Option<Duration>,
    batch_size: usize,
    /// Most units (a message, or a batch) this worker runs at once; one per Kafka key.
    in_flight: usize,
    consumer: Arc<GroupConsumer>,
    strategy: Arc<dyn Strategy>,
    progress: Arc<Progress>,
    topic: String,
    commit_mode: CommitMode,
    stop: CancellationToken,
    failed: CancellationToken,
    crashed: CancellationToken,
    faults: Arc<Faults>,
    flushed: Arc<std::sync::Mutex<WorkerMetrics>>,
}

/// Messages a worker hands to the strategy together: one, or a polled batch.
struct Unit {
    messages: Vec<OwnedMessage>,
    /// Each message's assignment ([`Delivered::epoch`]).
    epochs: Vec<u64>,
    /// Each message's trade; `None` for a malformed one (counted, and committed past).
    trades: Vec<Option<Trade>>,
}

impl Unit {
    /// The unit's Kafka keys. A message without one (none of loadgen's trades) has no order
    /// to keep.
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.messages.iter().filter_map(|message| message.key())
    }
}

/// A unit back from the strategy.
struct Finished {
    unit: Unit,
    processed: Result<Vec<crate::strategy::Outcome>, StrategyError>,
    stages: StageTimes,
    /// kafka-transactions: the transaction did not commit, and the worker goes on.
    aborted: Option<transactional::Abort>,
    /// kafka-transactions: its `commit_transaction` step.
    transaction_commit: Option<Duration>,
}

/// Whether the worker goes on after handling a finished unit.
enum Flow {
    Continue,
    /// An injected crash: the processor stops, committing nothing more.
    Crashed,
}

/// Which offsets of a worker's partitions may be committed while units finish out of order:
/// a partition's next committable offset is its lowest offset still in flight, or one past the
/// highest finished when none is. One unit in flight makes it `offset + 1` after each message.
/// Each partition's marks belong to one assignment of it (an epoch): a message of a newer one
/// starts the marks afresh, and a message of an older one commits nothing.
#[derive(Debug, Default)]
struct Watermarks {
    partitions: std::collections::BTreeMap<i32, Watermark>,
}

#[derive(Debug, Default)]
struct Watermark {
    epoch: u64,
    in_flight: std::collections::BTreeSet<i64>,
    highest_finished: Option<i64>,
}

impl Watermarks {
    fn started(&mut self, partition: i32, epoch: u64, offset: i64) {
        let mark = self.partitions.entry(partition).or_default();
        if epoch > mark.epoch {
            *mark = Watermark {
                epoch,
                ..Default::default()
            };
        }
        if epoch == mark.epoch {
            mark.in_flight.insert(offset);
        }
    }

    /// Forgets `offset` without finishing it: its transaction aborted, and it is read again.
    fn abandon(&mut self, partition: i32, epoch: u64, offset: i64) {
        if let Some(mark) = self.partitions.get_mut(&partition)
            && mark.epoch == epoch
        {
            mark.in_flight.remove(&offset);
        }
    }

    /// Marks `offset` finished; returns the partition's next committable offset, or `None` if
    /// the message belongs to an assignment that has ended.
    fn finished(&mut self, partition: i32, epoch: u64, offset: i64) -> Option<i64> {
        let mark = self.partitions.entry(partition).or_default();
        if epoch != mark.epoch {
            return None;
        }
        mark.in_flight.remove(&offset);
        let highest = mark.highest_finished.map_or(offset, |h| h.max(offset));
        mark.highest_finished = Some(highest);
        Some(match mark.in_flight.first() {
            Some(lowest) => *lowest,
            None => highest + 1,
        })
    }
}

/// Removes and returns the first waiting unit that may start: none of its keys is in flight
/// (`busy`) or in a unit waiting before it, so each key's messages start in offset order.
fn take_startable(
    waiting: &mut std::collections::VecDeque<Unit>,
    busy: &std::collections::HashSet<Vec<u8>>,
) -> Option<Unit> {
    let mut ahead: std::collections::HashSet<&[u8]> = Default::default();
    let mut startable = None;
    for (i, unit) in waiting.iter().enumerate() {
        let blocked = unit
            .keys()
            .any(|key| ahead.contains(key) || busy.contains(key));
        if !blocked {
            startable = Some(i);
            break;
        }
        ahead.extend(unit.keys());
    }
    waiting.remove(startable?)
}

impl Worker {
    /// Logs an injected crash and brings the whole processor down with it.
    fn crash(&self, crash: &Crash) {
        tracing::info!(
            point = crash.point.name(),
            trade_id = crash.trade_id,
            "injected crash"
        );
        self.crashed.cancel();
    }

    /// Takes `first` and whatever is already queued, up to the batch size, never waiting for
    /// more.
    fn take_unit(
        &self,
        first: Delivered,
        inbox: &mut mpsc::Receiver<Delivered>,
        metrics: &mut WorkerMetrics,
    ) -> Unit {
        let mut taken = vec![first];
        self.take_queued(&mut taken, inbox);
        self.unit_of(taken, metrics)
    }

    /// kafka-transactions with `--transaction-interval-ms`: gathers one transaction's messages
    /// until the batch is full or `window` has passed since the first. Nothing else of this
    /// worker runs meanwhile (one unit at a time), so only a crash or a stop cuts it short.
    async fn gather(
        &self,
        first: Delivered,
        window: Duration,
        inbox: &mut mpsc::Receiver<Delivered>,
        metrics: &mut WorkerMetrics,
    ) -> Unit {
        let deadline = tokio::time::Instant::now() + window;
        let mut taken = vec![first];
        self.take_queued(&mut taken, inbox);
        while taken.len() < self.batch_size {
            tokio::select! {
                biased;
                _ = self.crashed.cancelled() => break,
                _ = self.stop.cancelled() => break,
                next = tokio::time::timeout_at(deadline, inbox.recv()) => match next {
                    Ok(Some(delivered)) => {
                        taken.push(delivered);
                        self.take_queued(&mut taken, inbox);
                    }
                    // The window closed, or the dispatcher stopped.
                    _ => break,
                },
            }
        }
        self.unit_of(taken, metrics)
    }

    /// Adds what is already queued to `taken`, up to the batch size.
    fn take_queued(&self, taken: &mut Vec<Delivered>, inbox: &mut mpsc::Receiver<Delivered>) {
        while taken.len() < self.batch_size {
            match inbox.try_recv() {
                Ok(delivered) => taken.push(delivered),
                Err(_) => break,
            }
        }
    }

    /// One unit of `taken`, decoded; malformed messages counted and kept (their offsets move).
    fn unit_of(&self, mut taken: Vec<Delivered>, metrics: &mut WorkerMetrics) -> Unit {
        if self.lane.is_some() {
            if !self.check_starts(&taken, metrics) {
                // The processor has failed: process nothing more.
                taken.clear();
            }
            let starts = self.starts.lock().expect("starts lock");
            let mut rewinds = self.rewinds.lock().expect("rewinds lock");
            let before = taken.len();
            // A message of an assignment that has ended could only open a transaction that
            // must abort: whoever owns its partition now reads it again from the committed
            // offset. (A zombie still sees its old assignment as current until its consumer
            // notices: that transaction goes to the broker, and the group fences it.)
            taken.retain(|d| {
                let (partition, offset) = (d.message.partition(), d.message.offset());
                d.epoch == self.progress.epoch(partition)
                    && !starts.below_floor(partition, d.epoch, offset)
                    && rewinds.keep(partition, d.epoch, offset)
            });
            metrics.counts.txn.rewound_messages += (before - taken.len()) as u64;
        }
        let (messages, epochs): (Vec<_>, Vec<_>) =
            taken.into_iter().map(|d| (d.message, d.epoch)).unzip();
        metrics.counts.messages += messages.len() as u64;
        let trades = messages
            .iter()
            .map(|message| match Trade::decode(message.payload().unwrap_or_default()) {
                Ok(trade) => {
                    self.faults.trace(
                        trade.trade_id,
                        What::Received {
                            partition: message.partition(),
                            offset: message.offset(),
                        },
                    );
                    Some(trade)
                }
                Err(error) => {
                    metrics.counts.malformed += 1;
                    tracing::warn!(partition = message.partition(), offset = message.offset(), %error, "skipping a malformed message");
                    None
                }
            })
            .collect();
        Unit {
            messages,
            epochs,
            trades,
        }
    }

    /// Runs a unit through the strategy, owning everything it needs, so several can be in
    /// flight at once.
    fn start(&self, unit: Unit) -> futures::future::BoxFuture<'static, Finished> {
        if let Some(lane) = &self.lane {
            return transactional::transact(lane, unit);
        }
        let (strategy, topic) = (self.strategy.clone(), self.topic.clone());
        Box::pin(async move {
            let mut stages = StageTimes::default();
            let processed = {
                let incoming: Vec<Incoming<'_>> = unit
                    .messages
                    .iter()
                    .zip(&unit.trades)
                    .filter_map(|(message, trade)| {
                        trade.as_ref().map(|trade| Incoming {
                            trade,
                            topic: &topic,
                            partition: message.partition(),
                            offset: message.offset(),
                        })
                    })
                    .collect();
                match incoming.as_slice() {
                    [] => Ok(vec![]),
                    [single] => strategy
                        .process(single, &mut stages)
                        .await
                        .map(|outcome| vec![outcome]),
                    many => strategy.process_batch(many, &mut stages).await,
                }
            };
            Finished {
                unit,
                processed,
                stages,
                aborted: None,
                transaction_commit: None,
            }
        })
    }

    /// Counts a finished unit, commits past its messages and releases their keys.
    fn finish(
        &self,
        finished: Finished,
        metrics: &mut WorkerMetrics,
        commit_errors: &mut u64,
        watermarks: &mut Watermarks,
        busy: &mut std::collections::HashSet<Vec<u8>>,
    ) -> Result<Flow, StrategyError> {
        let Finished {
            unit,
            processed,
            stages,
            aborted,
            transaction_commit,
        } = finished;
        if let Some(aborted) = aborted {
            return self.rewind(unit, aborted, metrics, watermarks, busy);
        }
        if let Some(commit) = transaction_commit {
            self.replaced_in_a_row.store(0, Ordering::Relaxed);
            metrics
                .transaction_commit_us
                .saturating_record((commit.as_micros() as u64).max(1));
        }
        match processed {
            Ok(outcomes) => {
                for (outcome, trade) in outcomes.iter().zip(unit.trades.iter().flatten()) {
                    self.faults
                        .trace(trade.trade_id, What::Decided(outcome.name()));
                }
                for outcome in outcomes {
                    metrics.record_outcome(outcome);
                }
                if unit.trades.iter().any(Option::is_some) {
                    metrics.record_stages(&stages);
                }
            }
            Err(StrategyError::Crash(crash)) => {
                self.crash(&crash);
                return Ok(Flow::Crashed);
            }
            Err(error) => {
                let trade_id = unit.trades.iter().flatten().next().map(|t| t.trade_id);
                tracing::error!(%error, ?trade_id, "giving up; stopping the processor");
                self.failed.cancel();
                return Err(error);
            }
        }
        for trade in unit.trades.iter().flatten() {
            if let Err(crash) = self
                .faults
                .at(CrashPoint::BeforeOffsetCommit, trade.trade_id)
            {
                self.crash(&crash);
                return Ok(Flow::Crashed);
            }
        }
        for key in unit.keys() {
            busy.remove(key);
        }
        for ((message, trade), epoch) in unit.messages.iter().zip(&unit.trades).zip(&unit.epochs) {
            let partition = message.partition();
            let commit_started = Instant::now();
            // Work of an assignment that has ended commits nothing (see `Progress::reassigned`).
            match watermarks.finished(partition, *epoch, message.offset()) {
                // The transaction committed the offset with the effects, and the lane recorded
                // it as committed the moment the commit returned.
                Some(next_offset)
                    if self.progress.advance(partition, *epoch, next_offset)
                        && self.lane.is_some() => {}
                Some(next_offset) if self.progress.advance(partition, *epoch, next_offset) => {
                    if let Err(error) = self.commit(partition, next_offset) {
                        *commit_errors += 1;
                        tracing::warn!(%error, partition, "offset commit failed");
                    }
                }
                _ => metrics.counts.stale_completions += 1,
            }
            let commit_us = commit_started.elapsed().as_micros() as u64;
            if let Some(trade) = trade {
                self.faults.trace(
                    trade.trade_id,
                    What::Released {
                        partition,
                        next_offset: message.offset() + 1,
                    },
                );
                let warm_up =
                    trade.intended_send_us < self.progress.warm_up_until_us.load(Ordering::Relaxed);
                metrics.record_completion(
                    warm_up,
                    trade.intended_send_us,
                    trade.sent_us,
                    now_us(),
                    commit_us,
                );
            }
            self.progress.completed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Flow::Continue)
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Delivered>,
    ) -> Result<(WorkerMetrics, u64), StrategyError> {
        let mut metrics = WorkerMetrics::default();
        let mut commit_errors = 0u64;
        let mut last_flush = Instant::now();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut watermarks = Watermarks::default();
        // Units received but not started: each waits until no unit in flight, and no unit
        // before it, shares one of its Kafka keys. Running and waiting together stay within
        // `in_flight`, so one at a time receives the next message only once the last finished.
        let mut waiting: std::collections::VecDeque<Unit> = Default::default();
        let mut busy: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut stopping = false;
        loop {
            if last_flush.elapsed() >= FLUSH_PERIOD {
                self.flushed
                    .lock()
                    .expect("metrics lock")
                    .merge(&std::mem::take(&mut metrics));
                last_flush = Instant::now();
            }
            if !stopping {
                while running.len() < self.in_flight {
                    let Some(unit) = take_startable(&mut waiting, &busy) else {
                        break;
                    };
                    busy.extend(unit.keys().map(<[u8]>::to_vec));
                    running.push(self.start(unit));
                }
            }
            if stopping && running.is_empty() {
                break;
            }
            let room = running.len() + waiting.len() < self.in_flight && !stopping;
            let first = tokio::select! {
                biased;
                // A crash cuts the units in flight at their next await, as the death of the
                // process would: a dropped transaction rolls back, a Redis command already sent
                // stays done.
                _ = self.crashed.cancelled() => break,
                _ = self.failed.cancelled() => break,
                Some(finished) = futures::StreamExt::next(&mut running), if !running.is_empty() => {
                    if let Some(transactional::Abort::ProducerLost { unanswered, .. }) = &finished.aborted {
                        // The new producer first: its init_transactions fences the old one and
                        // ends its open transaction, so the committed offsets the rewind reads
                        // next are final (the old one can no longer commit behind them), and
                        // the read need not wait that transaction out.
                        self.replace_lane(*unanswered)?;
                    }
                    match self.finish(finished, &mut metrics, &mut commit_errors, &mut watermarks, &mut busy)? {
                        Flow::Continue => continue,
                        Flow::Crashed => break,
                    }
                }
                // Stopping: what is in flight finishes, nothing new starts.
                _ = self.stop.cancelled(), if !stopping => {
                    stopping = true;
                    continue;
                }
                message = inbox.recv(), if room => match message {
                    Some(message) => message,
                    None => {
                        stopping = true;
                        continue;
                    }
                },
                // Idle: flush anyway, so a snapshot misses nothing already measured.
                _ = tokio::time::sleep_until((last_flush + FLUSH_PERIOD).into()) => continue,
            };
            let unit = match self.window {
                Some(window) => self.gather(first, window, &mut inbox, &mut metrics).await,
                None => self.take_unit(first, &mut inbox, &mut metrics),
            };
            if unit.messages.is_empty() {
                // All of it read before a rewind: it comes again.
                continue;
            }
            let crash = unit.trades.iter().flatten().find_map(|trade| {
                self.faults
                    .at(CrashPoint::AfterReceive, trade.trade_id)
                    .err()
            });
            if let Some(crash) = crash {
                self.crash(&crash);
                break;
            }
            for (message, epoch) in unit.messages.iter().zip(&unit.epochs) {
                watermarks.started(message.partition(), *epoch, message.offset());
            }
            waiting.push_back(unit);
        }
        Ok((metrics, commit_errors))
    }

    fn commit(&self, partition: i32, next_offset: i64) -> rdkafka::error::KafkaResult<()> {
        let mut offsets = TopicPartitionList::with_capacity(1);
        match self.commit_mode {
            // The committer task commits this offset from `progress`.
            CommitMode::Interval => Ok(()),
            CommitMode::Async => {
                offsets.add_partition_offset(
                    &self.topic,
                    partition,
                    Offset::Offset(next_offset),
                )?;
                // Committed once the broker answers (`GroupContext::commit_callback`).
                commit_async(&self.consumer, &offsets)
            }
            CommitMode::Sync => {
                offsets.add_partition_offset(
                    &self.topic,
                    partition,
                    Offset::Offset(next_offset),
                )?;
                // A synchronous commit blocks its thread until the broker answers.
                blocking(|| self.consumer.commit(&offsets, KafkaCommitMode::Sync))?;
                self.progress.mark_committed(partition, next_offset);
                Ok(())
            }
        }
    }
}

/// Runs a blocking call, telling a multi-threaded runtime first (`block_in_place`) so its other
/// tasks move to another worker; elsewhere (no runtime, or a current-thread one) it just runs.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// An asynchronous commit whose answer comes back as an event on the consumer's own queue, so
/// [`GroupContext::commit_callback`] learns when the broker has it. rust-rdkafka's
/// `commit(.., Async)` gives librdkafka no queue to answer on, and then no answer comes
/// (rust-rdkafka issue 856), so a queued commit could only have been counted unanswered.
fn commit_async(
    consumer: &GroupConsumer,
    offsets: &TopicPartitionList,
) -> rdkafka::error::KafkaResult<()> {
    use rdkafka::bindings as native;
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is this live consumer's handle. `rd_kafka_queue_get_consumer` returns a
    // new reference to its queue, which the commit request keeps its own reference to while
    // it waits for the broker, so ours is released at once; the offsets are copied.
    let error = unsafe {
        let queue = native::rd_kafka_queue_get_consumer(client);
        if queue.is_null() {
            return Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::InvalidArgument,
            ));
        }
        let error =
            native::rd_kafka_commit_queue(client, offsets.ptr(), queue, None, std::ptr::null_mut());
        native::rd_kafka_queue_destroy(queue);
        error
    };
    match rdkafka::types::RDKafkaErrorCode::from(error) {
        rdkafka::types::RDKafkaErrorCode::NoError => Ok(()),
        code => Err(rdkafka::error::KafkaError::ConsumerCommit(code)),
    }
}

/// `interval` mode: commits every partition's processed offset that moved since the last
/// commit, asynchronously, once per period, and once more (synchronously) when stopping —
/// unless the processor crashed, which commits nothing more.
struct Committer {
    consumer: Arc<GroupConsumer>,
    progress: Arc<Progress>,
    topic: String,
}

impl Committer {
    fn new(consumer: Arc<GroupConsumer>, progress: Arc<Progress>, topic: &str) -> Committer {
        Committer {
            consumer,
            progress,
            topic: topic.to_string(),
        }
    }

    /// Returns how many commits failed.
    async fn run(
        self,
        period: Duration,
        stop: CancellationToken,
        crashed: CancellationToken,
    ) -> u64 {
        let mut errors = 0;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = crashed.cancelled() => return errors,
                _ = stop.cancelled() => break,
                _ = ticker.tick() => errors += self.commit_moved(KafkaCommitMode::Async),
            }
        }
        if crashed.is_cancelled() {
            return errors;
        }
        errors + blocking(|| self.commit_moved(KafkaCommitMode::Sync))
    }

    fn commit_moved(&self, mode: KafkaCommitMode) -> u64 {
        let mut offsets = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (partition, committed) in self.progress.committed.iter().enumerate() {
            let next = self.progress.next_offset(partition);
            if next > committed.load(Ordering::Acquire) {
                let partition = i32::try_from(partition).expect("partition count fits i32");
                if offsets
                    .add_partition_offset(&self.topic, partition, Offset::Offset(next))
                    .is_ok()
                {
                    moved.push((partition, next));
                }
            }
        }
        if moved.is_empty() {
            return 0;
        }
        let committed = match mode {
            KafkaCommitMode::Async => commit_async(&self.consumer, &offsets),
            KafkaCommitMode::Sync => self.consumer.commit(&offsets, mode),
        };
        match committed {
            // An asynchronous commit counts once the broker answers
            // (`GroupContext::commit_callback`); a synchronous one has been answered.
            Ok(()) => {
                if matches!(mode, KafkaCommitMode::Sync) {
                    for (partition, next) in moved {
                        self.progress.mark_committed(partition, next);
                    }
                }
                0
            }
            Err(error) => {
                tracing::warn!(%error, "offset commit failed");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Progress, Unit, Watermarks, take_startable};
    use rdkafka::message::{Message, OwnedMessage, Timestamp};

    fn unit(offset: i64, key: &str) -> Unit {
        let message = OwnedMessage::new(
            None,
            Some(key.as_bytes().to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        );
        Unit {
            messages: vec![message],
            epochs: vec![1],
            trades: vec![None],
        }
    }

    fn offsets(units: &std::collections::VecDeque<Unit>) -> Vec<i64> {
        units.iter().map(|u| u.messages[0].offset()).collect()
    }

    #[test]
    fn a_key_in_flight_or_waiting_ahead_holds_its_units_back_and_no_others() {
        let mut waiting: std::collections::VecDeque<Unit> =
            [unit(1, "a"), unit(2, "b"), unit(3, "a"), unit(4, "c")].into();
        let busy = ["a".as_bytes().to_vec()].into();
        let next = take_startable(&mut waiting, &busy).unwrap();
        assert_eq!(next.messages[0].offset(), 2, "b passes the a in flight");
        let busy = ["a".as_bytes().to_vec(), "b".as_bytes().to_vec()].into();
        let next = take_startable(&mut waiting, &busy).unwrap();
        assert_eq!(next.messages[0].offset(), 4, "3 waits behind its key");
        assert!(take_startable(&mut waiting, &busy).is_none());
        assert_eq!(offsets(&waiting), [1, 3]);
        // a is free: 1 starts, and 3 still waits behind 1, not beside it.
        let next = take_startable(&mut waiting, &Default::default()).unwrap();
        assert_eq!(next.messages[0].offset(), 1);
        assert_eq!(offsets(&waiting), [3]);
    }

    #[test]
    fn one_in_flight_commits_one_past_each_message() {
        let mut marks = Watermarks::default();
        for offset in 0..3 {
            marks.started(0, 1, offset);
            assert_eq!(marks.finished(0, 1, offset), Some(offset + 1));
        }
    }

    #[test]
    fn an_unfinished_offset_holds_its_partition_back() {
        let mut marks = Watermarks::default();
        for offset in 10..14 {
            marks.started(0, 1, offset);
        }
        marks.started(1, 1, 5);
        // 11 and 12 finish first: 10 is still running, so nothing past it may be committed.
        assert_eq!(marks.finished(0, 1, 11), Some(10));
        assert_eq!(marks.finished(0, 1, 12), Some(10));
        // Another partition is not held back by this one.
        assert_eq!(marks.finished(1, 1, 5), Some(6));
        // 10 finishes: 13 is the lowest still running.
        assert_eq!(marks.finished(0, 1, 10), Some(13));
        assert_eq!(marks.finished(0, 1, 13), Some(14));
        // Nothing in flight: one past the highest finished, whatever order they came in.
        marks.started(0, 1, 15);
        marks.started(0, 1, 14);
        assert_eq!(marks.finished(0, 1, 15), Some(14));
        assert_eq!(marks.finished(0, 1, 14), Some(16));
    }

    #[test]
    fn work_of_an_ended_assignment_commits_nothing_and_holds_nothing_back() {
        let mut marks = Watermarks::default();
        // Assignment 1 has 100 and 101 in flight when the partition is revoked.
        marks.started(0, 1, 100);
        marks.started(0, 1, 101);
        // Assignment 3 (revoked, then assigned again) resumes at the group's offset, 90.
        marks.started(0, 3, 90);
        // 100 finishes late: its position must not be committed over the new owner's.
        assert_eq!(marks.finished(0, 1, 100), None);
        // Nor does the old in-flight 101 hold the new assignment back.
        assert_eq!(marks.finished(0, 3, 90), Some(91));
        assert_eq!(marks.finished(0, 1, 101), None);
        // A message of the old assignment arriving late starts nothing.
        marks.started(0, 1, 102);
        marks.started(0, 3, 91);
        assert_eq!(marks.finished(0, 3, 91), Some(92));
    }

    #[test]
    fn a_reassigned_partition_forgets_what_the_old_assignment_processed() {
        let progress = Progress::new(2);
        let old = progress.epoch(0);
        assert!(progress.advance(0, old, 50));
        progress.mark_committed(0, 40);
        assert_eq!(progress.next_offset(0), 50);
        // Revoked: the processed-but-uncommitted 40..50 is forgotten, so an interval commit
        // finds nothing to commit, and the old assignment's work cannot move it any more.
        progress.reassigned(0);
        assert_eq!(progress.next_offset(0), 40);
        assert!(!progress.advance(0, old, 60));
        assert_eq!(progress.next_offset(0), 40);
        let new = progress.epoch(0);
        assert_ne!(new, old);
        assert!(progress.advance(0, new, 45));
        assert_eq!(progress.next_offset(0), 45);
        // The other partition is untouched.
        assert_eq!(progress.epoch(1), 0);
    }

    #[test]
    fn a_partition_resumed_at_a_stored_offset_counts_it_processed_and_committed() {
        let progress = Progress::new(1);
        let end: std::collections::BTreeMap<i32, i64> = [(0, 100)].into_iter().collect();
        let old = progress.epoch(0);
        progress.mark_committed(0, 60);
        // The old assignment's last units finished after a rebalance began (their offsets
        // stored with their effects, 60..100); they move nothing here.
        progress.reassigned(0);
        assert!(!progress.advance(0, old, 100));
        assert!(!progress.caught_up(&end));
        // The new assignment resumes at the stored 100: nothing is left to deliver again.
        progress.resumed_at(0, 100);
        assert!(progress.caught_up(&end));
        assert_eq!(progress.lag(&end), 0);
    }
}

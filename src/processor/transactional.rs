//! Kafka transactions (#16, slice 1): consume → transform → produce, exactly once inside Kafka.
//!
//! Each worker of a transactional processor owns a [`Lane`]: a thread of its own holding one
//! transactional producer. A unit of work (one message, or a polled batch) becomes one
//! transaction on it: `begin_transaction`, the unit's effect records (the outbox event, one per
//! trade) produced to the effects topic, `send_offsets_to_transaction` with the consumer's group
//! metadata (KIP-447: the group generation fences a zombie), `commit_transaction`. The calls
//! block, up to the transaction timeout, so they run on the lane's thread, never on the
//! runtime's workers, where they would stall every other task and inflate their latencies.
//!
//! The transactional id is the group's, the processor's slot and the worker's, stable across
//! incarnations: a restarted lane's `init_transactions` aborts whatever its dead predecessor
//! left open, which is how a process death is meant to end in Kafka.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::faults::{Crash, CrashPoint, Faults};

use super::{GroupConsumer, blocking};

/// What a transactional processor needs beyond the consumer's settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TxnSettings {
    /// Where the effects go (the run's `{topic}.effects`).
    pub effects_topic: String,
    /// Prefix of every lane's `transactional.id`; lane `w` is `{prefix}.{w}`.
    pub transactional_id: String,
    /// `transaction.timeout.ms`: how long the broker keeps a dead producer's transaction open
    /// before aborting it (librdkafka's default, 60 s, would stall the effects topic that long).
    pub transaction_timeout: Duration,
    /// How long a worker keeps gathering messages into one transaction from its first one
    /// (up to the batch size); zero: only what is already waiting.
    #[serde(default)]
    pub interval: Duration,
}

impl TxnSettings {
    /// How long a worker waits for its lane to answer a unit before it takes the producer for
    /// stuck: a healthy transaction ends within the transaction timeout (the broker aborts it
    /// then) plus a commit's retries, so three of them. After a broker kill, librdkafka 2.12's
    /// `send_offsets_to_transaction` was seen never to return, its own timeout unheard; the
    /// worker then fences it with a new producer of the same id.
    pub fn answer_timeout(&self) -> Duration {
        self.transaction_timeout.max(Duration::from_secs(1)) * 3
    }
}

/// One effect record of a transaction: the trade's outbox event.
#[derive(Clone, Debug)]
pub struct Effect {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// What a lane is asked to do: one transaction.
pub struct Job {
    pub effects: Vec<Effect>,
    /// The input topic's next offset per partition, committed inside the transaction.
    pub offsets: Vec<(i32, i64)>,
    /// The assignment (epoch, see `Progress::reassigned`) each of those partitions was read
    /// in: if one has moved since, the offsets must not go into a transaction.
    pub epochs: Vec<(i32, u64)>,
    /// The unit's trades, for the crash points.
    pub trade_ids: Vec<u64>,
    pub reply: tokio::sync::oneshot::Sender<Result<Committed, TxnError>>,
}

/// A committed transaction's timings.
#[derive(Clone, Copy, Debug)]
pub struct Committed {
    /// `begin_transaction` to `commit_transaction`'s return.
    pub total: Duration,
    /// `commit_transaction` alone (its flush included).
    pub commit: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// An injected crash at one of the transaction's own points: the process dies there,
    /// leaving the transaction open, as a real death would.
    #[error(transparent)]
    Crash(#[from] Crash),
    /// The transaction was aborted (its effects stay invisible at read_committed); the unit's
    /// messages must be processed again from the committed offsets. `group_fenced`: the group
    /// coordinator refused the offsets because this member's generation is gone (a zombie), or
    /// the consumer was between generations.
    #[error("the transaction was aborted: {message}")]
    Aborted { message: String, group_fenced: bool },
    /// The producer cannot go on (fenced by a newer producer with its id, or a fatal error).
    #[error("the transactional producer failed: {message}")]
    Fatal { message: String, fenced: bool },
}

/// A worker's transactional producer and the thread it lives on.
pub struct Lane {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where the thread goes when the lane is dropped, for the processor to join.
    threads: Threads,
    /// See [`TxnSettings::answer_timeout`].
    answer_timeout: Duration,
    /// Cancelled when the worker lets go of the lane ([`Lane::abandon`]): its thread stops at
    /// its next step.
    abandoned: CancellationToken,
}

/// The threads of a processor's dropped lanes.
pub type Threads = Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>;

/// Joins every thread in `threads`, off the runtime: a lane may be in the middle of a commit,
/// which blocks up to the transaction timeout.
pub async fn join(threads: &Threads) {
    let handles = std::mem::take(&mut *threads.lock().expect("lane threads lock"));
    if handles.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for handle in handles {
            let _ = handle.join();
        }
    })
    .await;
}

impl Lane {
    /// Lets go of a lane whose thread stopped answering: it is not joined at the stop (it may
    /// never return). Once a new producer with its id has fenced it, whatever it still does
    /// fails, and it ends on its own.
    pub(super) fn abandon(mut self) {
        self.abandoned.cancel();
        self.jobs = None;
        if self.thread.take().is_some() {
            tracing::warn!(
                "abandoning a transactional producer's thread that stopped answering (it is not joined at the stop)"
            );
        }
    }
}

impl Drop for Lane {
    /// Closing the queue ends the thread once it finishes the job it has.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            self.threads.lock().expect("lane threads lock").push(thread);
        }
    }
}

/// How the lane's thread classifies a failed call.
enum Failure {
    Retry(KafkaError),
    Abort(KafkaError),
    Fatal(KafkaError),
}

fn classify(error: KafkaError) -> Failure {
    match &error {
        KafkaError::Transaction(e) if e.is_fatal() => Failure::Fatal(error),
        KafkaError::Transaction(e) if e.txn_requires_abort() => Failure::Abort(error),
        KafkaError::Transaction(e) if e.is_retriable() => Failure::Retry(error),
        // commit_transaction flushes first; a flush that timed out can be resumed.
        KafkaError::Flush(_) => Failure::Retry(error),
        _ => Failure::Fatal(error),
    }
}

impl Failure {
    fn error(&self) -> &KafkaError {
        match self {
            Failure::Retry(e) | Failure::Abort(e) | Failure::Fatal(e) => e,
        }
    }
}

fn is_group_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
        )
    )
}

/// Tries a retriable call a few times, with the *same* arguments (as send_offsets requires).
fn retried(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), Failure> {
    let mut attempts = 0;
    loop {
        match call().map_err(classify) {
            Ok(()) => return Ok(()),
            Err(Failure::Retry(error)) if attempts < 5 => {
                attempts += 1;
                tracing::debug!(%error, attempts, "retrying a transactional call");
                std::thread::sleep(Duration::from_millis(50 << attempts));
            }
            Err(Failure::Retry(error)) => return Err(Failure::Fatal(error)),
            Err(other) => return Err(other),
        }
    }
}

/// What a lane shares with its processor incarnation.
#[derive(Clone)]
pub(super) struct Shared {
    /// Whose group metadata goes into each transaction.
    pub consumer: Arc<GroupConsumer>,
    pub faults: Arc<Faults>,
    /// The incarnation crashed: the lane stops between steps, as a dead process would.
    pub crashed: CancellationToken,
    pub threads: Threads,
    /// Where a committed transaction's offsets are recorded as committed.
    pub progress: Arc<super::Progress>,
}

impl Lane {
    /// Starts lane `worker`: its thread creates the producer and runs `init_transactions`
    /// (which fences and aborts what an earlier incarnation with the same id left open) before
    /// this returns, so a broker without transactions fails the start with a clear error.
    pub(super) fn start(
        processor: &super::ProcessorSettings,
        settings: &TxnSettings,
        worker: usize,
        shared: Shared,
    ) -> Result<Lane, String> {
        let Shared {
            consumer,
            faults,
            crashed,
            threads,
            progress,
        } = shared;
        let id = format!("{}.{worker}", settings.transactional_id);
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &processor.brokers)
            .set("transactional.id", &id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "transaction.timeout.ms",
                settings.transaction_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "0")
            // A transaction's first AddPartitionsToTxn usually meets CONCURRENT_TRANSACTIONS
            // (the last one's markers are still being written); the default 100 ms backoff made
            // send_offsets take 100 ms, 10 ms makes it 3-20 ms here (it still grows to
            // retry.backoff.max.ms when a broker is gone).
            .set("retry.backoff.ms", "10")
            .set("socket.connection.setup.timeout.ms", "5000")
            .create()
            .map_err(|e| format!("cannot create the transactional producer {id}: {e}"))?;
        let (jobs, incoming) = std::sync::mpsc::channel::<Job>();
        let abandoned = CancellationToken::new();
        // A lane that stops answering is abandoned and may never end: holding the consumer
        // strongly, it would keep it in its group after the processor closed it.
        let consumer = Arc::downgrade(&consumer);
        let (ready, started) = std::sync::mpsc::channel();
        let effects_topic = settings.effects_topic.clone();
        let input_topic = processor.topic.clone();
        let init_timeout = settings.transaction_timeout.max(Duration::from_secs(10)) * 2;
        let thread_abandoned = abandoned.clone();
        let thread = std::thread::Builder::new()
            .name(format!("idembench-txn-{worker}"))
            .spawn(move || {
                let init = retried(|| producer.init_transactions(init_timeout));
                let failed = init.is_err();
                let _ = ready.send(init.map_err(|failure| failure.error().to_string()));
                if failed {
                    return;
                }
                let lane = Running {
                    producer,
                    consumer,
                    abandoned: thread_abandoned,
                    input_topic,
                    effects_topic,
                    faults,
                    crashed,
                    progress,
                };
                for job in incoming {
                    let outcome = lane.run(&job);
                    let fatal = matches!(outcome, Err(TxnError::Fatal { .. } | TxnError::Crash(_)));
                    let _ = job.reply.send(outcome);
                    if fatal {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread for the transactional producer: {e}"))?;
        // init_transactions is a round trip to the transaction coordinator (it waits longer only
        // for a predecessor's open transaction to abort): wait for it off the runtime's worker.
        let started = blocking(|| started.recv());
        match started {
            Ok(Ok(())) => Ok(Lane {
                jobs: Some(jobs),
                thread: Some(thread),
                threads,
                answer_timeout: settings.answer_timeout(),
                abandoned,
            }),
            Ok(Err(error)) => Err(format!(
                "the transactional producer {id} could not initialise its transactions: {error} (does the broker support transactions? a single broker needs transaction.state.log.replication.factor=1)"
            )),
            Err(_) => Err(format!(
                "the thread of the transactional producer {id} died"
            )),
        }
    }

    /// Hands `job` to the lane; false if the lane has stopped (a crash or a fatal error).
    pub fn submit(&self, job: Job) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }
}

/// The lane's thread, once its producer is initialised.
struct Running {
    producer: BaseProducer,
    consumer: std::sync::Weak<GroupConsumer>,
    abandoned: CancellationToken,
    input_topic: String,
    effects_topic: String,
    faults: Arc<Faults>,
    crashed: CancellationToken,
    progress: Arc<super::Progress>,
}

impl Running {
    fn run(&self, job: &Job) -> Result<Committed, TxnError> {
        let started = Instant::now();
        match self.transact(job, started) {
            Ok(committed) => Ok(committed),
            Err(Step::Crash(crash)) => Err(TxnError::Crash(crash)),
            Err(Step::Failed(Failure::Abort(error))) => {
                let group_fenced = is_group_fenced(&error);
                self.abort(error.to_string(), group_fenced)
            }
            Err(Step::NoGroup) => self.abort(
                "the consumer is not a member of its group (a rebalance is under way)".into(),
                true,
            ),
            Err(Step::Moved) => self.abort(
                "a partition of the unit was revoked before its offsets went into the transaction"
                    .into(),
                false,
            ),
            Err(Step::Abandoned) => Err(TxnError::Fatal {
                message: "the worker let go of this lane".into(),
                fenced: false,
            }),
            Err(Step::Failed(Failure::Fatal(error) | Failure::Retry(error))) => {
                let fenced = error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fenced);
                Err(TxnError::Fatal {
                    message: error.to_string(),
                    fenced,
                })
            }
        }
    }

    fn abort(&self, message: String, group_fenced: bool) -> Result<Committed, TxnError> {
        // abort_transaction purges what is queued and then flushes, but its flush does not
        // serve the delivery reports of a producer in event mode (rust-rdkafka's), so with
        // records in flight it waited forever: purge and serve them here first (in-flight
        // records end within message.timeout.ms, which the transaction timeout caps).
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue());
        self.drain();
        match self.producer.abort_transaction(Timeout::Never) {
            Ok(()) => Err(TxnError::Aborted {
                message,
                group_fenced,
            }),
            Err(abort) => Err(TxnError::Fatal {
                message: format!("{message}; then the abort failed: {abort}"),
                fenced: abort.rdkafka_error_code() == Some(RDKafkaErrorCode::Fenced),
            }),
        }
    }

    /// The crash points after a step: the process stops there, leaving the transaction
    /// as it stands (open, or committed without the process knowing).
    fn crash_point(&self, point: CrashPoint, job: &Job) -> Result<(), Step> {
        self.halted(point, job)?;
        for trade_id in &job.trade_ids {
            self.faults.at(point, *trade_id).map_err(Step::Crash)?;
        }
        Ok(())
    }

    /// An abandoned lane or a crashed process stops at `point`, leaving the transaction as it
    /// stands.
    fn halted(&self, point: CrashPoint, job: &Job) -> Result<(), Step> {
        // Abandoned, the lane is no longer the process's: it fires no crash of it.
        if self.abandoned.is_cancelled() {
            return Err(Step::Abandoned);
        }
        if self.crashed.is_cancelled() {
            return Err(Step::Crash(Crash {
                point,
                trade_id: job.trade_ids.first().copied().unwrap_or_default(),
            }));
        }
        Ok(())
    }

    fn transact(&self, job: &Job, started: Instant) -> Result<Committed, Step> {
        self.producer
            .begin_transaction()
            .map_err(|e| Step::Failed(classify(e)))?;
        for effect in &job.effects {
            self.produce(effect)?;
        }
        let stops_at =
            |point| self.faults.plan().points.contains(&point) || self.faults.stop_armed_at(point);
        if stops_at(CrashPoint::AfterProduce) || stops_at(CrashPoint::AfterSendOffsets) {
            // "Produced" means on the broker, in the open transaction: a crash (or a pause)
            // before the records left the process (dropped with the producer) would test nothing. Only a
            // plan with one of these points waits here; otherwise the drain before the commit
            // overlaps sending the offsets.
            self.drain();
        }
        // Halted here, before the ownership check: the transaction stays open, as it did when
        // this point's crash came before the metadata read.
        self.halted(CrashPoint::AfterProduce, job)?;
        let mut offsets = TopicPartitionList::with_capacity(job.offsets.len());
        for (partition, next) in &job.offsets {
            offsets
                .add_partition_offset(&self.input_topic, *partition, Offset::Offset(*next))
                .map_err(|e| Step::Failed(Failure::Fatal(e)))?;
        }
        // The metadata first, then the ownership check: a rebalance revokes (and bumps the
        // epoch) before the group's next generation exists, so metadata read before an
        // unchanged epoch carries the generation the unit was read in, and a zombie's
        // TxnOffsetCommit is refused by the coordinator (KIP-447). Read after the check, it
        // could carry a newer generation that no longer owns the partition.
        let group = self
            .consumer
            .upgrade()
            .and_then(|consumer| consumer.group_metadata())
            .ok_or(Step::NoGroup)?;
        if job
            .epochs
            .iter()
            .any(|(partition, epoch)| self.progress.epoch(*partition) != *epoch)
        {
            return Err(Step::Moved);
        }
        // After the metadata is read: a zombie-consumer pause that lands here
        // (`zombie-consumer@AT+MS:after-produce`) goes on, when it wakes, to send offsets
        // that carry the generation it read them in, however soon its consumer notices.
        self.crash_point(CrashPoint::AfterProduce, job)?;
        self.stall();
        retried(|| {
            self.producer
                .send_offsets_to_transaction(&offsets, &group, Timeout::Never)
        })
        .map_err(Step::Failed)?;
        self.crash_point(CrashPoint::AfterSendOffsets, job)?;
        let commit_started = Instant::now();
        self.drain();
        retried(|| self.producer.commit_transaction(Timeout::Never)).map_err(Step::Failed)?;
        // The group's offsets are committed now, whatever happens to this process next: a
        // crash before the worker hears of it must not leave the run waiting for them.
        for (partition, next) in &job.offsets {
            self.progress.mark_committed(*partition, *next);
        }
        let committed = Committed {
            total: started.elapsed(),
            commit: commit_started.elapsed(),
        };
        self.crash_point(CrashPoint::InCommit, job)?;
        Ok(committed)
    }

    /// An injected `producer-stall`: a lane that gets here while it lasts stops answering for
    /// good, as librdkafka's `send_offsets_to_transaction` was seen to after a broker kill —
    /// until the worker lets go of it, or the process dies.
    fn stall(&self) {
        if !self.faults.producer_stalled() {
            return;
        }
        tracing::info!("injected producer stall: this lane stops answering");
        while !self.abandoned.is_cancelled() && !self.crashed.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Serves delivery reports until nothing is in flight. rdkafka's own flush (which
    /// commit_transaction calls first) polls in steps of 100 ms that always run to their end,
    /// so every transaction paid 100 ms for an ack that took one; steps of 1 ms end within a
    /// millisecond of it, and commit_transaction's flush then returns at once.
    fn drain(&self) {
        while self.producer.in_flight_count() > 0
            && !self.crashed.is_cancelled()
            && !self.abandoned.is_cancelled()
        {
            self.producer.poll(Duration::from_millis(1));
        }
    }

    fn produce(&self, effect: &Effect) -> Result<(), Step> {
        loop {
            let record = BaseRecord::<[u8], [u8]>::to(&self.effects_topic)
                .key(&effect.key[..])
                .payload(&effect.payload[..]);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(Step::Failed(classify(error))),
            }
        }
    }
}

enum Step {
    Crash(Crash),
    Failed(Failure),
    /// No group metadata to send offsets with: the consumer is between generations.
    NoGroup,
    /// A partition of the unit was revoked since it was read.
    Moved,
    /// The worker let go of the lane (it stopped answering).
    Abandoned,
}

/// Producers a worker replaces without a commit between before it gives up: a broker that
/// stays away, or an error no new producer gets past.
const MAX_REPLACEMENTS_IN_A_ROW: u32 = 5;

/// What a worker needs to start its lane, and to start a new one when its producer is fenced
/// for good (a fenced producer can do nothing more; a new one with the same id bumps the
/// epoch and goes on).
#[derive(Clone)]
pub(super) struct LaneStarter {
    pub processor: super::ProcessorSettings,
    pub settings: TxnSettings,
    pub worker: usize,
    pub shared: Shared,
}

impl LaneStarter {
    pub(super) fn start(&self) -> Result<Lane, String> {
        Lane::start(
            &self.processor,
            &self.settings,
            self.worker,
            self.shared.clone(),
        )
    }
}

/// How a unit's transaction ended, when it did not commit and the worker goes on.
#[derive(Debug)]
pub(super) enum Abort {
    /// Aborted: its messages are read again from the committed offsets.
    Transaction { message: String, group_fenced: bool },
    /// The producer can do nothing more (fenced for good, or a fatal error such as an abort
    /// the coordinator refused after it had timed the transaction out), or it stopped
    /// answering (`unanswered`): the worker starts a new one, whose `init_transactions` fences
    /// the old one and ends its open transaction, then reads again.
    ProducerLost {
        message: String,
        fenced: bool,
        unanswered: bool,
    },
}

/// Partitions a worker rewound after a transaction that did not commit — or whose outcome it
/// does not know: a commit that failed with the broker gone may have committed. The worker
/// seeks each to the offset the group has committed (read from the coordinator, which waits
/// out pending transactional offsets), and until that message comes, what it already holds of
/// the partition (read before the seek, on either side of it) is dropped: after the target it
/// comes again in order, before it it is committed. A new assignment of the partition ends the
/// rewind: it starts at the committed offset anyway.
#[derive(Debug, Default)]
pub(super) struct Rewinds {
    partitions: std::collections::BTreeMap<i32, (u64, i64)>,
}

impl Rewinds {
    /// `partition`, read in assignment `epoch`, goes to `offset`, the group's committed one
    /// (the latest rewind of a partition reads the latest committed offset, so it wins).
    pub(super) fn rewind(&mut self, partition: i32, epoch: u64, offset: i64) {
        self.partitions.insert(partition, (epoch, offset));
    }

    /// Whether a message at `offset` of `partition`, read in `epoch`, is to be processed.
    pub(super) fn keep(&mut self, partition: i32, epoch: u64, offset: i64) -> bool {
        let Some(&(rewound_in, target)) = self.partitions.get(&partition) else {
            return true;
        };
        if epoch > rewound_in || (epoch == rewound_in && offset == target) {
            self.partitions.remove(&partition);
            return true;
        }
        // An older assignment's message commits nothing anyway.
        epoch < rewound_in
    }
}

/// Where each partition's current assignment started, as [`super::Worker::check_starts`]
/// found it against the group's committed offset.
#[derive(Debug, Default)]
pub(super) struct Starts {
    /// Per partition: the assignment (epoch) checked last and, if its first message lay below
    /// the committed offset, that offset: the floor below which its messages are dropped.
    checked: std::collections::BTreeMap<i32, (u64, Option<i64>)>,
}

impl Starts {
    /// Of `messages` (partition, assignment, offset, in the order read), the first one of each
    /// partition whose assignment has not been checked yet.
    fn unchecked(
        &self,
        messages: impl Iterator<Item = (i32, u64, i64)>,
    ) -> std::collections::BTreeMap<i32, (u64, i64)> {
        let mut first = std::collections::BTreeMap::new();
        for (partition, epoch, offset) in messages {
            if self.checked.get(&partition).map(|(e, _)| *e) != Some(epoch) {
                first.entry(partition).or_insert((epoch, offset));
            }
        }
        first
    }

    fn check(&mut self, partition: i32, epoch: u64, floor: Option<i64>) {
        self.checked.insert(partition, (epoch, floor));
    }

    /// Whether a message of `partition` at `offset`, read in `epoch`, lies below its
    /// assignment's floor: committed already, so applying it again would double it.
    pub(super) fn below_floor(&self, partition: i32, epoch: u64, offset: i64) -> bool {
        matches!(
            self.checked.get(&partition),
            Some(&(checked_in, Some(floor))) if checked_in == epoch && offset < floor
        )
    }
}

/// A unit as one Kafka transaction on `lane`: each trade's effect (its own encoding, the outbox
/// event) and the next offset of each of the unit's partitions (malformed messages included,
/// so the transaction commits past them).
pub(super) fn transact(
    lane: &Lane,
    unit: super::Unit,
) -> futures::future::BoxFuture<'static, super::Finished> {
    use rdkafka::message::Message;
    let mut offsets: std::collections::BTreeMap<i32, i64> = Default::default();
    let mut epochs: std::collections::BTreeMap<i32, u64> = Default::default();
    for (message, epoch) in unit.messages.iter().zip(&unit.epochs) {
        let next = offsets.entry(message.partition()).or_default();
        *next = (*next).max(message.offset() + 1);
        epochs.insert(message.partition(), *epoch);
    }
    let effects: Vec<Effect> = unit
        .messages
        .iter()
        .zip(&unit.trades)
        .filter(|(_, trade)| trade.is_some())
        .map(|(message, _)| Effect {
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
        })
        .collect();
    let applied = effects.len();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let answer_timeout = lane.answer_timeout;
    let submitted = lane.submit(Job {
        effects,
        offsets: offsets.into_iter().collect(),
        epochs: epochs.into_iter().collect(),
        trade_ids: unit.trades.iter().flatten().map(|t| t.trade_id).collect(),
        reply,
    });
    Box::pin(async move {
        let mut stages = crate::strategy::StageTimes::default();
        let mut aborted = None;
        let mut transaction_commit = None;
        let answer = tokio::time::timeout(answer_timeout, answer).await;
        let processed = match (submitted, answer) {
            (true, Err(_)) => {
                aborted = Some(Abort::ProducerLost {
                    message: format!(
                        "the transactional producer did not answer within {answer_timeout:?} (a librdkafka call that never returns)"
                    ),
                    fenced: false,
                    unanswered: true,
                });
                Ok(vec![])
            }
            (true, Ok(Ok(Ok(committed)))) => {
                // The Kafka half's business is the transaction, begin to commit.
                stages.business = Some(committed.total);
                transaction_commit = Some(committed.commit);
                Ok(vec![crate::strategy::Outcome::Applied; applied])
            }
            (true, Ok(Ok(Err(TxnError::Crash(crash))))) => Err(super::StrategyError::Crash(crash)),
            (
                true,
                Ok(Ok(Err(TxnError::Aborted {
                    message,
                    group_fenced,
                }))),
            ) => {
                aborted = Some(Abort::Transaction {
                    message,
                    group_fenced,
                });
                Ok(vec![])
            }
            (true, Ok(Ok(Err(TxnError::Fatal { message, fenced })))) => {
                aborted = Some(Abort::ProducerLost {
                    message,
                    fenced,
                    unanswered: false,
                });
                Ok(vec![])
            }
            _ => Err(super::StrategyError::Transaction(
                "the transactional producer's lane has stopped".into(),
            )),
        };
        super::Finished {
            unit,
            processed,
            stages,
            aborted,
            transaction_commit,
        }
    })
}

impl super::Worker {
    /// A unit's transaction aborted (or its producer was lost, the outcome of its commit
    /// unknown): each of its partitions still held in the same assignment goes to the offset
    /// the group has committed, read from the coordinator, and is read again from there
    /// (rewinding in place, as librdkafka's transactions example does, rather than ending the
    /// processor); a partition whose committed offset lies past the unit moves on.
    pub(super) fn rewind(
        &self,
        unit: super::Unit,
        aborted: Abort,
        metrics: &mut super::WorkerMetrics,
        watermarks: &mut super::Watermarks,
        busy: &mut std::collections::HashSet<Vec<u8>>,
    ) -> Result<super::Flow, super::StrategyError> {
        use rdkafka::message::Message;
        metrics.counts.txn.transactions_aborted += 1;
        let flow = match &aborted {
            Abort::Transaction {
                message,
                group_fenced,
            } => {
                if *group_fenced {
                    metrics.counts.txn.group_fenced += 1;
                }
                tracing::info!(%message, group_fenced, "transaction aborted; rewinding");
                super::Flow::Continue
            }
            Abort::ProducerLost {
                message,
                fenced,
                unanswered,
            } => {
                // The worker has started its new producer already (`replace_lane`).
                metrics.counts.txn.producers_replaced += 1;
                if *fenced {
                    metrics.counts.txn.producers_fenced += 1;
                }
                if *unanswered {
                    metrics.counts.txn.producers_unanswered += 1;
                }
                tracing::info!(%message, fenced, unanswered, "transactional producer lost; a new one took its place");
                super::Flow::Continue
            }
        };
        for key in unit.keys() {
            busy.remove(key);
        }
        // Per partition: the epoch, and the unit's first and last offsets.
        let mut held: std::collections::BTreeMap<i32, (u64, i64, i64)> = Default::default();
        for (message, epoch) in unit.messages.iter().zip(&unit.epochs) {
            watermarks.abandon(message.partition(), *epoch, message.offset());
            let entry = held.entry(message.partition()).or_insert((
                *epoch,
                message.offset(),
                message.offset(),
            ));
            entry.1 = entry.1.min(message.offset());
            entry.2 = entry.2.max(message.offset());
        }
        // A partition that moved since starts, wherever it went, at the committed offset.
        held.retain(|partition, (epoch, _, _)| self.progress.epoch(*partition) == *epoch);
        if held.is_empty() {
            return Ok(flow);
        }
        let committed = self.committed_offsets(held.keys().copied())?;
        let mut rewinds = self.rewinds.lock().expect("rewinds lock");
        for (partition, (epoch, first, last)) in held {
            // No offset committed yet: nothing of the partition committed, the unit included.
            let target = committed.get(&partition).copied().unwrap_or(first);
            if target > last {
                // The transaction committed after all (its outcome was unknown): what this
                // worker holds after the unit follows it in order, so nothing is rewound. (A
                // seek here would let a copy of the target read before it end the rewind, and
                // the messages after it would be applied twice.)
                self.progress.mark_committed(partition, target);
                continue;
            }
            // The committed-offset read blocks: the partition may have moved meanwhile, and a
            // seek would then move its new assignment back.
            if self.progress.epoch(partition) != epoch {
                continue;
            }
            rewinds.rewind(partition, epoch, target);
            // Asynchronous (no wait): what was fetched before it is dropped by `rewinds`.
            if let Err(error) = self.consumer.seek(
                &self.topic,
                partition,
                Offset::Offset(target),
                Duration::ZERO,
            ) {
                // Without the seek the partition would wait for a message that never comes.
                self.failed.cancel();
                return Err(super::StrategyError::Transaction(format!(
                    "cannot rewind partition {partition} to offset {target} after an aborted transaction: {error}"
                )));
            }
        }
        Ok(flow)
    }

    /// The first message of each new assignment of a partition, checked against the group's
    /// committed offset: everything below it has its effects committed already, so what of a
    /// partition that starts below it lies below is dropped unprocessed (the floor in
    /// `starts`). No seek: the stream from the wrong start is in order and reaches the
    /// committed offset anyway, while copies of it already read would end a seek's rewind
    /// early and the messages after it would be applied twice.
    ///
    /// librdkafka 2.12 can start a partition at `auto.offset.reset` (earliest): when the
    /// assignment changes while an offset fetch waits out an open transaction
    /// (UNSTABLE_OFFSET_COMMIT), the stale answer puts the partition back with no offset
    /// (`rd_kafka_assignment_apply_offsets`), and every message of it up to the committed
    /// offset was applied a second time (a process-kill run doubled 240). The read here waits
    /// out open transactions too; it costs one round trip per partition per assignment.
    /// False if the committed offsets could not be read: the processor has failed.
    pub(super) fn check_starts(
        &self,
        taken: &[super::Delivered],
        metrics: &mut super::WorkerMetrics,
    ) -> bool {
        use rdkafka::message::Message;
        let first = self.starts.lock().expect("starts lock").unchecked(
            taken
                .iter()
                .filter(|d| d.epoch == self.progress.epoch(d.message.partition()))
                .map(|d| (d.message.partition(), d.epoch, d.message.offset())),
        );
        if first.is_empty() {
            return true;
        }
        let committed = match self.committed_offsets(first.keys().copied()) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::error!(%error, "cannot check where an assignment starts");
                return false;
            }
        };
        let mut starts = self.starts.lock().expect("starts lock");
        for (partition, (epoch, offset)) in first {
            let floor = committed
                .get(&partition)
                .copied()
                .filter(|&committed| offset < committed);
            starts.check(partition, epoch, floor);
            if let Some(committed) = floor {
                // Committed already, whoever committed it: the run drains on this, and nothing
                // of the partition may lie above it.
                self.progress.mark_committed(partition, committed);
                metrics.counts.txn.starts_below_committed += 1;
                tracing::warn!(
                    partition,
                    offset,
                    committed,
                    "a partition started below the group's committed offset (librdkafka fell back to auto.offset.reset); what lies below it is dropped unprocessed"
                );
            }
        }
        true
    }

    /// The group's committed offsets of `partitions`, from the coordinator (a blocking round
    /// trip, which waits while a transaction holding offsets of them is still open).
    fn committed_offsets(
        &self,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<std::collections::BTreeMap<i32, i64>, super::StrategyError> {
        let mut wanted = TopicPartitionList::new();
        for partition in partitions {
            wanted.add_partition(&self.topic, partition);
        }
        let read = || {
            self.consumer
                .committed_offsets(wanted.clone(), Duration::from_secs(30))
        };
        let committed = blocking(read);
        match committed {
            Ok(list) => Ok(list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(next) => Some((e.partition(), next)),
                    _ => None,
                })
                .collect()),
            Err(error) => {
                self.failed.cancel();
                Err(super::StrategyError::Transaction(format!(
                    "cannot read the group's committed offsets of the input (to rewind after an aborted transaction, or to check where an assignment starts): {error}"
                )))
            }
        }
    }

    /// The worker's producer was lost (fenced, a fatal error, or it stopped answering): a new
    /// one with the same id (`init_transactions` bumps the epoch past the fence and ends the
    /// old one's open transaction), up to [`MAX_REPLACEMENTS_IN_A_ROW`] times without a commit
    /// between. A lane that stopped answering is abandoned, not joined.
    pub(super) fn replace_lane(&mut self, unanswered: bool) -> Result<(), super::StrategyError> {
        if let Some(lane) = self.lane.take()
            && unanswered
        {
            lane.abandon();
        }
        if self.replaced_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 > MAX_REPLACEMENTS_IN_A_ROW {
            self.failed.cancel();
            return Err(super::StrategyError::Transaction(format!(
                "the transactional producer failed {MAX_REPLACEMENTS_IN_A_ROW} times in a row without a commit between; giving up (its errors are above)"
            )));
        }
        let Some(starter) = &self.starter else {
            return Ok(());
        };
        match starter.start() {
            Ok(lane) => {
                self.lane = Some(lane);
                Ok(())
            }
            Err(error) => {
                self.failed.cancel();
                Err(super::StrategyError::Transaction(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Rewinds, Starts};

    #[test]
    fn each_assignment_of_a_partition_has_its_first_message_checked_once() {
        let mut starts = Starts::default();
        let read = [(0, 1, 40), (1, 1, 7), (0, 1, 41)];
        let first = starts.unchecked(read.into_iter());
        assert_eq!(
            first.into_iter().collect::<Vec<_>>(),
            vec![(0, (1, 40)), (1, (1, 7))],
            "the first message of each partition"
        );
        starts.check(0, 1, None);
        starts.check(1, 1, None);
        assert!(starts.unchecked([(0, 1, 42)].into_iter()).is_empty());
        assert_eq!(
            starts
                .unchecked([(0, 1, 43), (0, 3, 0)].into_iter())
                .get(&0),
            Some(&(3, 0)),
            "a new assignment is checked again"
        );
    }

    #[test]
    fn a_start_below_the_committed_offset_drops_what_lies_below_until_the_next_assignment() {
        let mut starts = Starts::default();
        // Partition 0's assignment 3 started at 0; the group had committed 240.
        starts.check(0, 3, Some(240));
        starts.check(1, 3, None);
        assert!(starts.below_floor(0, 3, 0));
        assert!(starts.below_floor(0, 3, 239), "committed already");
        assert!(
            !starts.below_floor(0, 3, 240),
            "the first one not committed"
        );
        assert!(
            !starts.below_floor(1, 3, 5),
            "partition 1 started where it should"
        );
        starts.check(0, 4, None);
        assert!(
            !starts.below_floor(0, 4, 7),
            "a new assignment has its own start"
        );
    }

    #[test]
    fn a_rewound_partition_drops_what_was_read_beyond_the_target_until_it_comes_again() {
        let mut rewinds = Rewinds::default();
        rewinds.rewind(0, 3, 10);
        assert!(rewinds.keep(1, 3, 50), "other partitions flow");
        assert!(!rewinds.keep(0, 3, 11), "read before the seek: dropped");
        assert!(!rewinds.keep(0, 3, 12));
        assert!(rewinds.keep(0, 3, 10), "the target comes again");
        assert!(rewinds.keep(0, 3, 11), "and what follows it is read anew");
    }

    #[test]
    fn a_new_assignment_ends_a_rewind() {
        let mut rewinds = Rewinds::default();
        rewinds.rewind(0, 3, 10);
        assert!(
            rewinds.keep(0, 2, 15),
            "an older assignment commits nothing anyway"
        );
        assert!(!rewinds.keep(0, 3, 15));
        assert!(
            rewinds.keep(0, 4, 7),
            "the new assignment starts at the committed offset"
        );
        assert!(rewinds.keep(0, 4, 8));
    }

    #[test]
    fn a_rewind_drops_what_was_read_before_its_target_too() {
        // The group's offset is 13; 11 and 12 were read before (committed since).
        let mut rewinds = Rewinds::default();
        rewinds.rewind(0, 1, 13);
        assert!(
            !rewinds.keep(0, 1, 11),
            "committed already: applying it again doubles it"
        );
        assert!(!rewinds.keep(0, 1, 14), "read before the seek");
        assert!(rewinds.keep(0, 1, 13));
    }

    #[test]
    fn the_latest_rewind_of_a_partition_wins() {
        let mut rewinds = Rewinds::default();
        rewinds.rewind(0, 1, 10);
        rewinds.rewind(0, 1, 20);
        assert!(!rewinds.keep(0, 1, 10));
        assert!(rewinds.keep(0, 1, 20));
    }
}

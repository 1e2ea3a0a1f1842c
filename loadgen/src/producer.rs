//! Open-loop production of a [`Plan`] into Kafka.
//!
//! Every message has an intended send time fixed before the run starts: regular slot `j` (originals
//! and immediate copies, in plan order) is due at `start + j / rate`, and a late copy at its
//! original's intended time plus the late delay. If the producer falls behind, it sends at once
//! but keeps the intended time in the payload, so the processor's latency from the intended time
//! shows the backlog instead of hiding it (no coordinated omission). With `rate == 0` there is no
//! schedule: the intended time is the actual send time.
//!
//! Acknowledgements are collected by a separate task, so send/ack latency is recorded when each
//! ack arrives, and the ledger counts only acknowledged copies.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::stream::{ExtraCopy, Plan, StreamSpec};

/// How the plan is sent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SendSettings {
    pub topic: String,
    /// Messages per second on the regular schedule; 0 sends as fast as the producer takes them.
    pub rate: f64,
    /// Which partition an extra copy goes to.
    pub copies: CopyRouting,
    /// Counts acknowledged messages as they arrive, for a live view of the run.
    #[serde(skip)]
    pub acked: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Send records without a key (the partitioner then packs batches freely). Only for
    /// comparisons with producers that send none: per-account order is lost.
    #[serde(default)]
    pub unkeyed: bool,
}

/// Where a trade's extra copy goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum CopyRouting {
    /// Same key as the original, so the same partition, after it: one consumer sees both, in
    /// order (a producer retry, a replay).
    #[default]
    SameKey,
    /// Every message goes to an explicit partition — an original to `account % partitions`,
    /// its extra copy to the next one — so the copies of one trade reach different consumers,
    /// which may process them at the same time (an upstream that republishes under another key).
    NextPartition { partitions: i32 },
}

impl CopyRouting {
    fn partition(self, trade: &crate::trade::Trade, copy: u8) -> Option<i32> {
        match self {
            CopyRouting::SameKey => None,
            CopyRouting::NextPartition { partitions } => {
                let partitions = i64::from(partitions.max(1));
                let home = i64::from(trade.account) % partitions;
                Some(((home + i64::from(copy)) % partitions) as i32)
            }
        }
    }
}

/// What production did. The ledger is the input of the audit.
#[derive(Debug)]
pub struct ProduceReport {
    pub ledger: Ledger,
    /// Next offset after the last acknowledged message, per partition: where a consumer has
    /// seen everything.
    pub end_offsets: BTreeMap<i32, i64>,
    pub started_at: SystemTime,
    pub elapsed: Duration,
    /// Send to broker acknowledgement, µs.
    pub send_ack_us: Histogram<u64>,
    /// Actual send time minus intended send time, µs: how far the producer fell behind.
    pub schedule_lag_us: Histogram<u64>,
    /// Stopped early by the cancellation token.
    pub cancelled: bool,
}

/// Errors that end production. Refused single messages are counted in the ledger instead.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("the stream spec is invalid: {0}")]
    Spec(#[from] crate::stream::SpecError),
    #[error("--rate must be 0 (unthrottled) or a positive number of messages per second, not {0}")]
    BadRate(f64),
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits: every latency this suite can see.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

pub fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

struct Pending {
    delivery: DeliveryFuture,
    trade_id: u64,
    sent: Instant,
}

/// Sends `plan` on `producer` following `settings`, until done or `cancel` fires.
pub async fn produce<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    settings: &SendSettings,
    spec: &StreamSpec,
    plan: &Plan,
    cancel: &CancellationToken,
) -> Result<ProduceReport, ProduceError> {
    if !(settings.rate >= 0.0 && settings.rate.is_finite()) {
        return Err(ProduceError::BadRate(settings.rate));
    }
    spec.validate()?;
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(65_536);
    let collector = tokio::spawn(collect_acks(
        pending_rx,
        Ledger::new(plan),
        settings.acked.clone(),
    ));

    let started_at = SystemTime::now();
    let start = Instant::now();
    let start_us = now_us();
    let late_delay = Duration::from_millis(spec.late_duplicate_delay_ms);
    let slot_interval = (settings.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / settings.rate));
    let mut schedule_lag_us = new_histogram();
    // Late copies waiting for their due time, earliest first: at most the trades of one late
    // delay, whatever the stream's length.
    let mut late: BinaryHeap<Reverse<LateCopy>> = BinaryHeap::new();
    let mut buffer = Vec::with_capacity(spec.payload_bytes.max(crate::trade::ENCODED_LEN));
    let mut cancelled = false;

    let mut sender = Sender {
        producer,
        topic: &settings.topic,
        copies: settings.copies,
        unkeyed: settings.unkeyed,
        payload_bytes: spec.payload_bytes,
        buffer: &mut buffer,
        pending: &pending_tx,
        schedule_lag_us: &mut schedule_lag_us,
        start,
        start_us,
    };

    // Regular slots in plan order: each original, its immediate copy, its poison pill.
    let regular = plan.iter().flat_map(|planned| {
        let immediate = planned.extra == ExtraCopy::Immediate;
        let pill = planned.malformed_after;
        let late = planned.extra == ExtraCopy::Late;
        let trade = planned.trade;
        std::iter::once((trade.clone(), Some(0u8), late))
            .chain(immediate.then(|| (trade.clone(), Some(1u8), false)))
            .chain(pill.then_some((trade, None, false)))
    });
    for (slot, (trade, copy, late_copy)) in regular.enumerate() {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let due = slot_interval.map(|interval| interval.mul_f64(slot as f64));
        // Late copies due before this slot go first, in due order.
        while let Some(Reverse(LateCopy { due: late_due, .. })) = late.peek() {
            if due.is_some_and(|due| *late_due > due)
                || (due.is_none() && *late_due > start.elapsed())
            {
                break;
            }
            let Reverse(LateCopy {
                due: late_due,
                trade,
            }) = late.pop().expect("peeked");
            sender.send_at(&trade, 1, late_due).await;
        }
        let due = due.unwrap_or_else(|| start.elapsed());
        let Some(copy) = copy else {
            sender.send_malformed_at(&trade, due).await;
            continue;
        };
        let sent_at = sender.send_at(&trade, copy, due).await;
        if copy == 0 && late_copy {
            late.push(Reverse(LateCopy {
                due: sent_at + late_delay,
                trade,
            }));
        }
    }
    while let Some(Reverse(LateCopy {
        due: late_due,
        trade,
    })) = late.pop()
    {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        sender.send_at(&trade, 1, late_due).await;
    }
    drop(pending_tx);
    let flush_producer = producer.clone();
    // Flush blocks the thread while librdkafka drains its queue.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = rdkafka::producer::Producer::flush(
            &flush_producer,
            Timeout::After(Duration::from_secs(30)),
        );
    })
    .await;
    let (ledger, end_offsets, send_ack_us) = collector.await.expect("ack collector panicked");
    Ok(ProduceReport {
        ledger,
        end_offsets,
        started_at,
        elapsed: start.elapsed(),
        send_ack_us,
        schedule_lag_us,
        cancelled,
    })
}

struct Sender<'a, C: ClientContext + 'static> {
    producer: &'a FutureProducer<C>,
    topic: &'a str,
    copies: CopyRouting,
    unkeyed: bool,
    payload_bytes: usize,
    buffer: &'a mut Vec<u8>,
    pending: &'a mpsc::Sender<Pending>,
    schedule_lag_us: &'a mut Histogram<u64>,
    start: Instant,
    start_us: u64,
}

impl<C: ClientContext + 'static> Sender<'_, C> {
    /// Waits until `due` (an offset from the start), sends one copy of `trade`, and returns the
    /// intended send time it carries, as an offset from the start.
    async fn send_at(&mut self, trade: &crate::trade::Trade, copy: u8, due: Duration) -> Duration {
        let due_instant = self.start + due;
        if due_instant > Instant::now() {
            tokio::time::sleep_until(due_instant.into()).await;
        }
        let mut message = trade.clone();
        message.copy = copy;
        message.intended_send_us =
            self.start_us + u64::try_from(due.as_micros()).unwrap_or(u64::MAX);
        message.sent_us = now_us();
        let lag = message.sent_us.saturating_sub(message.intended_send_us);
        let _ = self.schedule_lag_us.record(lag.max(1));
        self.buffer.clear();
        message.encode_into(self.payload_bytes, self.buffer);
        let partition = self.copies.partition(&message, copy);
        self.send_buffer(message.key(), partition, message.trade_id)
            .await;
        due
    }

    /// Sends a message that is not a trade, on the trade's key (so its partition).
    async fn send_malformed_at(&mut self, trade: &crate::trade::Trade, due: Duration) {
        let due_instant = self.start + due;
        if due_instant > Instant::now() {
            tokio::time::sleep_until(due_instant.into()).await;
        }
        self.buffer.clear();
        self.buffer.extend_from_slice(
            format!("{{\"not\":\"a trade\",\"after\":{}}}", trade.trade_id).as_bytes(),
        );
        let partition = self.copies.partition(trade, 0);
        self.send_buffer(trade.key(), partition, MALFORMED).await;
    }

    /// Hands the buffer to the producer, waiting while its queue is full.
    async fn send_buffer(&mut self, key: [u8; 4], partition: Option<i32>, trade_id: u64) {
        loop {
            let mut record = FutureRecord::to(self.topic).payload(&self.buffer[..]);
            if !self.unkeyed {
                record = record.key(&key[..]);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    let pending = Pending {
                        delivery,
                        trade_id,
                        sent: Instant::now(),
                    };
                    // The collector only stops after this loop ends.
                    let _ = self.pending.send(pending).await;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => {
                    tracing::warn!(trade_id, %error, "producer refused a message");
                    break;
                }
            }
        }
    }
}

/// A late copy waiting in the heap, ordered by due time (the trade id breaks ties).
struct LateCopy {
    due: Duration,
    trade: crate::trade::Trade,
}

impl PartialEq for LateCopy {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for LateCopy {}

impl PartialOrd for LateCopy {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LateCopy {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.trade.trade_id).cmp(&(other.due, other.trade.trade_id))
    }
}

/// The ledger id of a malformed message (trade ids start at 1).
const MALFORMED: u64 = 0;

async fn collect_acks(
    mut pending: mpsc::Receiver<Pending>,
    mut ledger: Ledger,
    acked: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> (Ledger, BTreeMap<i32, i64>, Histogram<u64>) {
    let mut send_ack_us = new_histogram();
    let mut end_offsets = BTreeMap::new();
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    while open || !inflight.is_empty() {
        tokio::select! {
            next = pending.recv(), if open => match next {
                Some(Pending { delivery, trade_id, sent }) => {
                    inflight.push(async move { (delivery.await, trade_id, sent) });
                }
                None => open = false,
            },
            Some((result, trade_id, sent)) = inflight.next(), if !inflight.is_empty() => {
                match result {
                    Ok(Ok(delivery)) => {
                        let _ = send_ack_us.record((sent.elapsed().as_micros() as u64).max(1));
                        if trade_id == MALFORMED {
                            ledger.malformed_acked += 1;
                        } else {
                            ledger.record_ack(trade_id);
                        }
                        if let Some(acked) = &acked {
                            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let end = end_offsets.entry(delivery.partition).or_insert(0);
                        *end = (*end).max(delivery.offset + 1);
                    }
                    Ok(Err((error, _))) => {
                        tracing::warn!(trade_id, %error, "broker did not acknowledge a message");
                        ledger.copies_failed += 1;
                    }
                    Err(_) => ledger.copies_failed += 1,
                }
            }
        }
    }
    (ledger, end_offsets, send_ack_us)
}

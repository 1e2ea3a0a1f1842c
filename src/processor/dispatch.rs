//! The dispatcher: reads the group consumer and routes each message to its partition's worker
//! (partition % workers), in offset order per partition.
//!
//! librdkafka hands a partition's fetched messages over in runs (up to a fetch's worth of one
//! partition, thousands of small messages). A dispatcher that waited on the first full inbox
//! left every other worker idle until that one worker made room: with a backlog, four workers
//! took turns rather than working at once (db-only, 4 workers, 30 000 trades unthrottled:
//! 2 400 messages/s, 3 900 once no inbox could hold the others back). So a message whose
//! worker's inbox is full is [`Held`] behind its partition's earlier ones, and the dispatcher
//! goes on reading; it waits only once it holds four times what the inboxes do together.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rdkafka::Message;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::{Delivered, GroupConsumer, Progress};

/// Held messages at most, per message the inboxes hold: enough for a fetch's run of one
/// partition's small messages (1 MiB by default) while the others are read.
const HELD_PER_QUEUED: usize = 4;

/// Reads the consumer and routes each message to its partition's worker. Returns how many
/// consumer errors it saw.
pub(super) async fn dispatch(
    consumer: Arc<GroupConsumer>,
    progress: Arc<Progress>,
    senders: Vec<mpsc::Sender<Delivered>>,
    stop: CancellationToken,
    failed: CancellationToken,
) -> u64 {
    let cap = HELD_PER_QUEUED
        * senders
            .iter()
            .map(mpsc::Sender::max_capacity)
            .sum::<usize>();
    let mut held = Held::new(cap);
    let mut errors = 0u64;
    loop {
        if held
            .feed(&senders, |partition| progress.epoch(partition))
            .is_err()
        {
            break;
        }
        // Any worker with messages waiting for it: once its inbox has room, feed it (one
        // stalled worker must not keep the others waiting).
        let waiting = held.workers(senders.len());
        let room = async {
            if waiting.is_empty() {
                std::future::pending::<()>().await;
            }
            let permits = waiting
                .iter()
                .map(|worker| Box::pin(senders[*worker].reserve()));
            drop(futures::future::select_all(permits).await);
        };
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = failed.cancelled() => break,
            () = room => continue,
            received = consumer.recv(), if !held.is_full() => received,
        };
        match received {
            Ok(message) => {
                let partition = message.partition();
                let worker = usize::try_from(partition).unwrap_or(0) % senders.len();
                let delivered = Delivered {
                    message: message.detach(),
                    epoch: progress.epoch(partition),
                };
                if held.offer(&senders[worker], delivered).is_err() {
                    break;
                }
            }
            Err(error) => {
                errors += 1;
                if errors <= 10 || errors.is_power_of_two() {
                    tracing::warn!(%error, errors, "Kafka consumer error");
                }
            }
        }
    }
    errors
}

/// A worker is gone: the processor is stopping.
#[derive(Debug, PartialEq, Eq)]
struct Gone;

/// Messages whose worker's inbox was full, per partition in offset order.
struct Held {
    partitions: BTreeMap<i32, VecDeque<Delivered>>,
    count: usize,
    cap: usize,
}

impl Held {
    fn new(cap: usize) -> Held {
        Held {
            partitions: BTreeMap::new(),
            count: 0,
            cap: cap.max(1),
        }
    }

    /// The workers that messages are held for.
    fn workers(&self, workers: usize) -> std::collections::BTreeSet<usize> {
        self.partitions
            .keys()
            .map(|partition| usize::try_from(*partition).unwrap_or(0) % workers)
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Holding as many as the cap: read nothing more until a worker takes some.
    fn is_full(&self) -> bool {
        self.count >= self.cap
    }

    /// Hands `delivered` to its worker now, unless earlier messages of its partition are held
    /// or the inbox is full: then it waits behind them.
    fn offer(
        &mut self,
        worker: &mpsc::Sender<Delivered>,
        delivered: Delivered,
    ) -> Result<(), Gone> {
        let partition = delivered.message.partition();
        let delivered = match self.partitions.get_mut(&partition) {
            Some(queue) => {
                queue.push_back(delivered);
                self.count += 1;
                return Ok(());
            }
            None => match worker.try_send(delivered) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Gone),
                Err(TrySendError::Full(delivered)) => delivered,
            },
        };
        self.partitions
            .insert(partition, VecDeque::from([delivered]));
        self.count += 1;
        Ok(())
    }

    /// Hands held messages, oldest first per partition, to every worker with room. Messages
    /// of an assignment that has ended (`epoch(partition)` moved on since they were read) are
    /// dropped: whoever owns the partition now reads them again from the committed offset.
    fn feed(
        &mut self,
        senders: &[mpsc::Sender<Delivered>],
        epoch: impl Fn(i32) -> u64,
    ) -> Result<(), Gone> {
        if self.is_empty() {
            return Ok(());
        }
        let mut gone = false;
        let count = &mut self.count;
        self.partitions.retain(|partition, queue| {
            let worker = &senders[usize::try_from(*partition).unwrap_or(0) % senders.len()];
            let current = epoch(*partition);
            while let Some(delivered) = queue.pop_front() {
                if delivered.epoch != current {
                    *count -= 1;
                    continue;
                }
                match worker.try_send(delivered) {
                    Ok(()) => *count -= 1,
                    Err(TrySendError::Full(delivered)) => {
                        queue.push_front(delivered);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => {
                        gone = true;
                        break;
                    }
                }
            }
            !queue.is_empty()
        });
        if gone { Err(Gone) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    fn delivered(partition: i32, offset: i64) -> Delivered {
        Delivered {
            message: OwnedMessage::new(
                None,
                None,
                "t".into(),
                Timestamp::NotAvailable,
                partition,
                offset,
                None,
            ),
            epoch: 1,
        }
    }

    fn offsets(inbox: &mut mpsc::Receiver<Delivered>) -> Vec<(i32, i64)> {
        std::iter::from_fn(|| inbox.try_recv().ok())
            .map(|d| (d.message.partition(), d.message.offset()))
            .collect()
    }

    #[test]
    fn a_full_inbox_holds_back_only_its_own_worker_and_order_is_kept() {
        let (one, mut first) = mpsc::channel(2);
        let (two, mut second) = mpsc::channel(2);
        let senders = [one, two];
        let mut held = Held::new(4);
        // Partition 0 (worker 0) arrives in a run longer than its inbox.
        for offset in 0..4 {
            held.offer(&senders[0], delivered(0, offset)).unwrap();
        }
        assert_eq!(held.count, 2, "two wait for worker 0");
        // Worker 1's messages still go straight through.
        held.offer(&senders[1], delivered(1, 0)).unwrap();
        assert_eq!(offsets(&mut second), [(1, 0)]);
        // Partition 2 is worker 0's too: it waits, as its inbox is full.
        held.offer(&senders[0], delivered(2, 0)).unwrap();
        assert!(!held.is_full());
        held.offer(&senders[0], delivered(0, 4)).unwrap();
        assert!(held.is_full(), "4 held: read nothing more");
        assert_eq!(offsets(&mut first), [(0, 0), (0, 1)]);
        held.feed(&senders, |_| 1).unwrap();
        assert_eq!(offsets(&mut first), [(0, 2), (0, 3)], "oldest first");
        held.feed(&senders, |_| 1).unwrap();
        assert_eq!(offsets(&mut first), [(0, 4), (2, 0)]);
        assert!(held.is_empty());
        // With nothing held, a message goes straight through again.
        held.offer(&senders[0], delivered(0, 5)).unwrap();
        assert_eq!(offsets(&mut first), [(0, 5)]);
    }

    #[test]
    fn held_messages_of_an_ended_assignment_are_dropped() {
        let (one, mut first) = mpsc::channel(1);
        let senders = [one];
        let mut held = Held::new(8);
        for offset in 0..3 {
            held.offer(&senders[0], delivered(0, offset)).unwrap();
        }
        assert_eq!(offsets(&mut first), [(0, 0)]);
        // Partition 0 was revoked and assigned again (epoch 2): 1 and 2 come again from the
        // committed offset; what was read in epoch 1 is not handed on.
        held.feed(&senders, |_| 2).unwrap();
        assert!(held.is_empty(), "both dropped");
        assert_eq!(offsets(&mut first), []);
    }

    #[tokio::test]
    async fn room_in_any_waited_for_worker_wakes_the_dispatcher() {
        let (one, _stalled) = mpsc::channel(1);
        let (two, mut second) = mpsc::channel(1);
        let senders = [one, two];
        let mut held = Held::new(8);
        for (partition, offset) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let worker = usize::try_from(partition).unwrap() % 2;
            held.offer(&senders[worker], delivered(partition, offset))
                .unwrap();
        }
        assert_eq!(held.workers(2).into_iter().collect::<Vec<_>>(), [0, 1]);
        // Worker 0 never takes anything; worker 1 does.
        assert_eq!(offsets(&mut second), [(1, 0)]);
        let waiting = held.workers(2);
        let permits = waiting.iter().map(|w| Box::pin(senders[*w].reserve()));
        let woke = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures::future::select_all(permits),
        )
        .await;
        assert!(woke.is_ok(), "worker 1's room wakes it, worker 0 stalled");
        drop(woke);
        held.feed(&senders, |_| 1).unwrap();
        assert_eq!(offsets(&mut second), [(1, 1)]);
    }

    #[test]
    fn a_worker_that_is_gone_stops_the_dispatcher() {
        let (one, first) = mpsc::channel(1);
        let senders = [one];
        let mut held = Held::new(4);
        held.offer(&senders[0], delivered(0, 0)).unwrap();
        held.offer(&senders[0], delivered(0, 1)).unwrap();
        drop(first);
        assert_eq!(held.feed(&senders, |_| 1), Err(Gone));
        assert_eq!(held.offer(&senders[0], delivered(1, 0)), Err(Gone));
    }
}

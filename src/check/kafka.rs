//! The Kafka half of the audit (kafka-transactions, #16): the effects topic read back from its
//! beginning at `read_committed` and at `read_uncommitted`, every record counted against the
//! ledger. Kafka's exactly-once is per *message*: each acknowledged copy of a trade must have
//! produced exactly one committed effect (a trade published twice has two), and records seen
//! only uncommitted belong to aborted (or still open) transactions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::db::TradeCounts;

use idembench_loadgen::{Ledger, Trade};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

/// Which records a read sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Committed transactions' records only (and non-transactional ones), up to the last
    /// stable offset.
    ReadCommitted,
    /// Every record written, aborted transactions' included.
    ReadUncommitted,
}

impl Isolation {
    fn setting(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// The effects topic as one isolation level sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectsRead {
    pub records: u64,
    /// Effects per trade id.
    pub per_trade: TradeCounts,
    /// Records that are not trades.
    pub undecodable: u64,
    /// Per partition, the offset after the last record read (partitions with none left out).
    pub ends: BTreeMap<i32, i64>,
}

/// The reader's context: the end of a partition is how the reader knows it is done, not an
/// error to log (librdkafka also reports it as a client error once the reader stopped polling).
struct Reader;

impl rdkafka::ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = rdkafka::types::RDKafkaErrorCode::PartitionEOF;
        if !matches!(error, KafkaError::PartitionEOF(_)) && error.rdkafka_error_code() != Some(end)
        {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Reader {}

/// Reads every partition of `topic` from its beginning to its end as `isolation` sees it.
/// `per_trade: Some(trades)` counts the effects of each trade id for a plan of that many
/// trades; `None` reads only the totals and the ends (`per_trade` stays empty). Blocking (a
/// plain consumer, polled): call it off the runtime.
pub fn read_effects(
    brokers: &str,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
    per_trade: Option<u64>,
) -> Result<EffectsRead, String> {
    let consumer: BaseConsumer<Reader> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("idembench-audit-{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation.setting())
        .set("socket.connection.setup.timeout.ms", "5000")
        .create_with_context(Reader)
        .map_err(|e| format!("cannot create a consumer to audit {topic}: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("cannot read the metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!(
            "the effects topic {topic} has no partitions (does it exist?)"
        ));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot assign {topic}: {e}"))?;
    let mut read = EffectsRead {
        per_trade: TradeCounts::with_trades(per_trade.unwrap_or(0)),
        ..EffectsRead::default()
    };
    let mut at_end: std::collections::BTreeSet<i32> = Default::default();
    let deadline = Instant::now() + timeout;
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "reading {topic} at {} did not reach the end of every partition within {timeout:?} ({} of {} did; an open transaction holds read_committed back until it ends)",
                isolation.setting(),
                at_end.len(),
                partitions.len()
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                read.records += 1;
                match Trade::decode(message.payload().unwrap_or_default()) {
                    Ok(trade) if per_trade.is_some() => read.per_trade.add(trade.trade_id, 1),
                    Ok(_) => {}
                    Err(_) => read.undecodable += 1,
                }
                let end = read.ends.entry(message.partition()).or_default();
                *end = (*end).max(message.offset() + 1);
                // More came after an end seen earlier (a transaction committed meanwhile).
                at_end.remove(&message.partition());
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => return Err(format!("reading {topic}: {error}")),
        }
    }
    Ok(read)
}

/// [`read_effects`] on a blocking thread, for async callers (the sink's drain, the audit).
pub async fn read_effects_apart(
    brokers: &str,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
    per_trade: Option<u64>,
) -> Result<EffectsRead, String> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        read_effects(&brokers, &topic, isolation, timeout, per_trade)
    })
    .await
    .map_err(|e| format!("the effects reader panicked: {e}"))?
}

/// One isolation level's effects against the ledger (`correctness.kafka.committed` and
/// `.uncommitted` in `result.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EffectCounts {
    pub records: u64,
    /// Trades with exactly one effect per acknowledged copy.
    pub exactly_once: u64,
    /// Trades with fewer effects than acknowledged copies (none at all included).
    pub lost: u64,
    /// Trades with more effects than acknowledged copies.
    pub doubled: u64,
    /// Effects beyond one per copy, summed over the doubled trades.
    pub extra_effects: u64,
    /// Effects of ids never produced, and records that are not trades.
    pub unexpected: u64,
}

/// The Kafka half's audit (`correctness.kafka`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KafkaCorrectness {
    pub effects_topic: String,
    pub committed: EffectCounts,
    pub uncommitted: EffectCounts,
    /// Records visible only uncommitted: written by transactions that aborted (or were still
    /// open when the audit read).
    pub aborted_records: u64,
    /// `committed.exactly_once + lost + doubled == produced_unique`, nothing unexpected.
    pub identity_holds: bool,
    /// Trades with more rows in Postgres than committed effects: an aborted (or never
    /// committed) effect that reached the database — Jepsen's aborted read. Must be 0.
    #[serde(default)]
    pub aborted_reached_postgres: u64,
}

/// Pure: trades whose `rows` (in Postgres) outnumber their committed effects.
pub fn beyond_committed(rows: &TradeCounts, committed: &EffectsRead) -> u64 {
    rows.iter()
        .filter(|(trade_id, rows)| *rows > committed.per_trade.get(*trade_id))
        .count() as u64
}

/// Pure: counts one read against the ledger.
pub fn count(ledger: &Ledger, read: &EffectsRead) -> EffectCounts {
    let mut counts = EffectCounts {
        records: read.records,
        unexpected: read.undecodable,
        ..Default::default()
    };
    for (index, copies) in ledger.copies_acked.iter().enumerate() {
        if *copies == 0 {
            continue;
        }
        let trade_id = index as u64 + 1;
        let effects = read.per_trade.get(trade_id);
        let copies = u64::from(*copies);
        match effects.cmp(&copies) {
            std::cmp::Ordering::Equal => counts.exactly_once += 1,
            std::cmp::Ordering::Less => counts.lost += 1,
            std::cmp::Ordering::Greater => {
                counts.doubled += 1;
                counts.extra_effects += effects - copies;
            }
        }
    }
    counts.unexpected += read
        .per_trade
        .iter()
        .filter(|(id, _)| !ledger.is_produced(*id))
        .map(|(_, n)| n)
        .sum::<u64>();
    counts
}

/// Pure: both reads against the ledger.
pub fn reconcile(
    topic: &str,
    ledger: &Ledger,
    committed: &EffectsRead,
    uncommitted: &EffectsRead,
) -> KafkaCorrectness {
    let committed = count(ledger, committed);
    let uncommitted = count(ledger, uncommitted);
    let identity_holds = committed.exactly_once + committed.lost + committed.doubled
        == ledger.produced_unique()
        && committed.unexpected == 0;
    KafkaCorrectness {
        effects_topic: topic.to_string(),
        aborted_records: uncommitted.records.saturating_sub(committed.records),
        committed,
        uncommitted,
        identity_holds,
        aborted_reached_postgres: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(copies: &[u8]) -> Ledger {
        let spec = idembench_loadgen::StreamSpec {
            trades: copies.len() as u64,
            ..Default::default()
        };
        let mut ledger = Ledger::new(&spec.plan().unwrap());
        ledger.copies_acked = copies.to_vec();
        ledger
    }

    #[test]
    fn a_trade_with_more_rows_than_committed_effects_is_an_aborted_read() {
        let committed = read(&[(1, 1), (2, 2)], 0);
        let rows: TradeCounts = [(1, 1), (2, 1), (3, 1)].into_iter().collect();
        // Trade 3 has a row and no committed effect; 2 has fewer rows than effects (the
        // unique constraint caught its second copy), which is no aborted read.
        assert_eq!(beyond_committed(&rows, &committed), 1);
    }

    fn read(effects: &[(u64, u64)], undecodable: u64) -> EffectsRead {
        EffectsRead {
            records: effects.iter().map(|(_, n)| n).sum::<u64>() + undecodable,
            per_trade: effects.iter().copied().collect(),
            undecodable,
            ..Default::default()
        }
    }

    #[test]
    fn each_copy_must_leave_one_committed_effect() {
        // Trade 1 once, trade 2 published twice, trade 3 once, trade 4 never acknowledged.
        let ledger = ledger(&[1, 2, 1, 0]);
        let committed = read(&[(1, 1), (2, 2), (3, 1)], 0);
        let k = reconcile("t", &ledger, &committed, &committed);
        assert_eq!(k.committed.exactly_once, 3);
        assert_eq!((k.committed.lost, k.committed.doubled), (0, 0));
        assert_eq!(k.aborted_records, 0);
        assert!(k.identity_holds);
    }

    #[test]
    fn an_aborted_transaction_shows_only_uncommitted_and_a_retry_keeps_it_exact() {
        let ledger = ledger(&[1, 1]);
        let committed = read(&[(1, 1), (2, 1)], 0);
        // Trade 2's first transaction aborted after producing; its retry committed.
        let uncommitted = read(&[(1, 1), (2, 2)], 0);
        let k = reconcile("t", &ledger, &committed, &uncommitted);
        assert_eq!(k.committed.exactly_once, 2);
        assert_eq!(k.uncommitted.doubled, 1);
        assert_eq!(k.aborted_records, 1);
        assert!(k.identity_holds);
    }

    #[test]
    fn missing_extra_and_foreign_effects_are_counted_apart() {
        let ledger = ledger(&[1, 2, 1]);
        // Trade 1 twice, trade 2 once of its two copies, trade 3 not at all; id 9 and a
        // non-trade record were never produced.
        let committed = read(&[(1, 2), (2, 1), (9, 1)], 1);
        let k = reconcile("t", &ledger, &committed, &committed);
        assert_eq!(k.committed.doubled, 1);
        assert_eq!(k.committed.extra_effects, 1);
        assert_eq!(k.committed.lost, 2);
        assert_eq!(k.committed.exactly_once, 0);
        assert_eq!(k.committed.unexpected, 2);
        assert!(!k.identity_holds);
    }
}

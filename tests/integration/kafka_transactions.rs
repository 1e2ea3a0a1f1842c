//! Kafka transactions (#16) on the real services of `scripts/services up`. First a
//! transactional processor driven directly: each unit's effects and its input offsets go into
//! one transaction; the effects topic is read back at both isolation levels and counted
//! against the ledger, and the group's committed offsets are read from the coordinator. Then
//! the strategy as `idembench run` runs it, with its sink to Postgres and both audits.

use std::sync::Arc;
use std::time::Duration;

use idembench::check::kafka::{Isolation, KafkaCorrectness, read_effects, reconcile};
use idembench::faults::{CrashPoint, FaultPlan, Faults};
use idembench::processor::transactional::TxnSettings;
use idembench::processor::{CommitMode, Processor, ProcessorSettings, Progress};
use idembench::results::Status;
use idembench::strategy::StrategyKind;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common::Direct;

/// A processor whose workers write through Kafka transactions into `{topic}.effects`.
async fn transactional(direct: &Direct, partitions: usize, batch: usize) -> ProcessorSettings {
    let effects_topic = format!("{}.effects", direct.topic);
    direct
        .admin
        .create_topic(&effects_topic, partitions, 1, 1)
        .await
        .unwrap();
    let mut settings = direct.processor_settings(partitions, CommitMode::Interval);
    settings.batch_size = batch;
    settings.transactions = Some(TxnSettings {
        effects_topic,
        transactional_id: format!("{}.tx", direct.topic),
        transaction_timeout: Duration::from_secs(10),
        interval: Duration::ZERO,
    });
    settings
}

/// Runs one incarnation until the input is committed or `crashed` fires; true if it crashed.
async fn run_once(
    direct: &Direct,
    settings: &ProcessorSettings,
    progress: &Arc<Progress>,
    faults: &Arc<Faults>,
) -> bool {
    let strategy = direct.strategy(StrategyKind::None, faults.clone());
    let processor = Processor::start(settings, strategy, progress.clone(), faults.clone())
        .unwrap_or_else(|e| panic!("{e} (is `scripts/services up` running?)"));
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    // A guard against a hang, not a timing: one transaction per message takes tens of ms.
    let crashed =
        until_committed(direct, &processor, progress, None, Duration::from_secs(180)).await;
    let (report, error) = processor.stop_keeping_report().await;
    if !crashed {
        assert!(error.is_none(), "{error:?}");
    }
    let transactions = &report.metrics.business_us;
    eprintln!(
        "{} transactions of batch ≤ {}: p50 {} µs, p99 {} µs (begin to commit)",
        transactions.len(),
        settings.batch_size,
        transactions.value_at_quantile(0.5),
        transactions.value_at_quantile(0.99)
    );
    crashed
}

/// Waits until the input is committed (false) or the processor crashed (true), failing if it
/// gave up or `limit` passed. `observer`: the coordinator's committed offsets are fed in too,
/// as a run does (a partition whose every offset committed elsewhere delivers nothing to tell
/// the processor).
async fn until_committed(
    direct: &Direct,
    processor: &Processor,
    progress: &Arc<Progress>,
    observer: Option<&idembench::processor::CommittedOffsets>,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if processor.crashed().is_cancelled() {
            return true;
        }
        if progress.caught_up(&direct.produced.end_offsets) {
            return false;
        }
        if let Some(observer) = observer {
            observer.observe(progress).await.unwrap();
        }
        assert!(
            !processor.failed().is_cancelled(),
            "the transactional processor gave up"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transactional processor did not commit the input within {limit:?}: {} messages completed, {} committed of {:?}",
            progress.completed(),
            progress.committed_total(),
            direct.produced.end_offsets
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The effects topic at both isolation levels, against the ledger.
async fn audit(direct: &Direct, settings: &ProcessorSettings) -> KafkaCorrectness {
    let topic = settings
        .transactions
        .as_ref()
        .unwrap()
        .effects_topic
        .clone();
    let brokers = direct.brokers.clone();
    let trades = Some(direct.produced.ledger.plan().trades());
    let (committed, uncommitted) = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            let timeout = Duration::from_secs(30);
            let read = |isolation| read_effects(&brokers, &topic, isolation, timeout, trades);
            (
                read(Isolation::ReadCommitted).unwrap(),
                read(Isolation::ReadUncommitted).unwrap(),
            )
        }
    })
    .await
    .unwrap();
    reconcile(&topic, &direct.produced.ledger, &committed, &uncommitted)
}

/// The input offsets the group coordinator holds: what the transactions committed.
async fn group_offsets(direct: &Direct, settings: &ProcessorSettings) -> Vec<(i32, i64)> {
    let (brokers, group, topic) = (
        direct.brokers.clone(),
        settings.group_id.clone(),
        direct.topic.clone(),
    );
    let partitions = settings.partitions;
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut wanted = rdkafka::TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition(&topic, partition as i32);
        }
        consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect()
    })
    .await
    .unwrap()
}

fn end_offsets(direct: &Direct) -> Vec<(i32, i64)> {
    direct
        .produced
        .end_offsets
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_leaves_one_committed_effect_and_its_offset_commits_with_it() {
    for (partitions, batch) in [(1, 1), (3, 10)] {
        let direct = Direct::new("txn", partitions, 300).await;
        let settings = transactional(&direct, partitions, batch).await;
        let progress = Arc::new(Progress::new(partitions));
        let faults = Arc::new(Faults::none());
        assert!(!run_once(&direct, &settings, &progress, &faults).await);
        let kafka = audit(&direct, &settings).await;
        let offsets = group_offsets(&direct, &settings).await;
        let _ = direct
            .admin
            .delete_topic(&settings.transactions.as_ref().unwrap().effects_topic)
            .await;
        direct.clean_up().await;
        assert!(kafka.identity_holds, "{kafka:?}");
        assert_eq!(kafka.committed.exactly_once, 300, "{kafka:?}");
        assert_eq!(kafka.committed.records, 300, "{kafka:?}");
        assert_eq!(
            kafka.aborted_records, 0,
            "no transaction aborted: {kafka:?}"
        );
        assert_eq!(offsets, end_offsets(&direct), "the group's offsets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_point_of_a_transaction_loses_and_doubles_nothing() {
    for point in [
        CrashPoint::AfterProduce,
        CrashPoint::AfterSendOffsets,
        CrashPoint::InCommit,
    ] {
        let direct = Direct::new("txncrash", 1, 200).await;
        let settings = transactional(&direct, 1, 1).await;
        let progress = Arc::new(Progress::new(1));
        let faults = Arc::new(Faults::new(FaultPlan {
            points: vec![point],
            trade_ids: vec![50],
            max_crashes: Some(1),
            ..Default::default()
        }));
        assert!(
            run_once(&direct, &settings, &progress, &faults).await,
            "{}: the crash never fired",
            point.name()
        );
        // The next incarnation's lane has the same transactional id: its init_transactions
        // aborts the transaction the dead one left open.
        assert!(!run_once(&direct, &settings, &progress, &faults).await);
        let kafka = audit(&direct, &settings).await;
        let offsets = group_offsets(&direct, &settings).await;
        let _ = direct
            .admin
            .delete_topic(&settings.transactions.as_ref().unwrap().effects_topic)
            .await;
        direct.clean_up().await;
        let name = point.name();
        assert_eq!(faults.crashes(), 1, "{name}");
        assert!(kafka.identity_holds, "{name}: {kafka:?}");
        assert_eq!(kafka.committed.exactly_once, 200, "{name}: {kafka:?}");
        assert_eq!(offsets, end_offsets(&direct), "{name}: the group's offsets");
        if point == CrashPoint::InCommit {
            // It committed before dying: nothing to abort, nothing delivered again.
            assert_eq!(kafka.aborted_records, 0, "{name}: {kafka:?}");
        } else {
            // Trade 50's effect was written in the transaction the crash left open; the
            // restart aborted it and wrote the effect again, committed.
            assert_eq!(kafka.aborted_records, 1, "{name}: {kafka:?}");
            assert_eq!(kafka.uncommitted.doubled, 1, "{name}: {kafka:?}");
        }
    }
}

/// `idembench run --strategy kafka-transactions` with `args` on the real services; the run
/// must complete (`what` names the case in a failure).
async fn run(args: &[&str], what: &str) -> idembench::results::RunResult {
    let mut all = vec!["--strategy", "kafka-transactions"];
    all.extend_from_slice(args);
    let (outcome, _dir) = crate::common::run(&all).await;
    let result = outcome.result;
    assert_eq!(
        result.status,
        Status::Complete,
        "{what}: {:?}",
        result.partial_reason
    );
    result
}

/// Every trade once in Postgres, every effect once at read_committed, no aborted effect in
/// Postgres.
fn assert_exact(result: &idembench::results::RunResult, trades: u64) {
    let c = &result.correctness;
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied),
        (trades, 0, 0),
        "{c:?}"
    );
    let kafka = c.kafka.as_ref().expect("correctness.kafka");
    assert_eq!(
        (
            kafka.committed.lost,
            kafka.committed.doubled,
            kafka.aborted_reached_postgres
        ),
        (0, 0, 0),
        "{kafka:?}"
    );
}

/// The pair as `idembench run` runs it: stage one's transactions, the sink to Postgres, and
/// both audits. The stream's duplicates are two messages each: both effects commit, and the
/// sink's unique constraint catches the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_applies_every_message_once_and_audits_both_halves() {
    let (trades, rate, seed) = (400, 0.1, 21);
    let result = run(
        &[
            "--partitions",
            "3",
            "--workers",
            "3",
            "--batch-size",
            "10",
            "--trades",
            "400",
            "--rate",
            "400",
            "--duplicate-rate",
            "0.1",
            "--seed",
            "21",
        ],
        "",
    )
    .await;
    let c = &result.correctness;
    let duplicated = crate::common::planned_duplicates(trades, rate, seed);
    assert!(duplicated > 0);
    assert!(c.identity_holds, "{c:?}");
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied),
        (trades, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.caught_by_constraint, duplicated, "{c:?}");
    let kafka = c.kafka.as_ref().expect("correctness.kafka");
    assert!(kafka.identity_holds, "{kafka:?}");
    assert_eq!(kafka.committed.exactly_once, trades, "{kafka:?}");
    assert_eq!(kafka.committed.records, trades + duplicated, "{kafka:?}");
    assert_eq!(
        (kafka.aborted_records, kafka.aborted_reached_postgres),
        (0, 0)
    );
    let pair = result
        .kafka_transactions
        .as_ref()
        .expect("kafka_transactions");
    assert_eq!(pair.sink_messages, trades + duplicated, "{pair:?}");
    assert_eq!(pair.sink_caught_by_constraint, duplicated, "{pair:?}");
    assert!(pair.transactions > 0 && pair.transactions <= trades + duplicated);
    assert!(pair.messages_per_transaction >= 1.0, "{pair:?}");
    // The pair's end to end ends in Postgres, after stage one's.
    assert_eq!(
        result.latency_us.end_to_end_from_intended.count,
        trades + duplicated
    );
    assert!(
        result.latency_us.end_to_end_from_intended.p50 >= pair.stage_one_end_to_end_us.p50,
        "{:?} vs {:?}",
        result.latency_us.end_to_end_from_intended,
        pair.stage_one_end_to_end_us
    );
}

/// Crashes at every step of stage one's transaction, in a run: the restart aborts the dead
/// incarnation's open transaction, whose effect the sink (reading committed) never sees — no
/// aborted effect reaches Postgres, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_in_a_run_lose_nothing_and_no_aborted_effect_reaches_postgres() {
    const CRASHED: [u64; 3] = [10, 90, 170];
    let crashed = CRASHED.map(|id| id.to_string()).join(",");
    // The two points every strategy passes too: before the unit reached the lane, and after
    // its transaction committed (where an offset commit would come).
    for point in [
        "after-produce",
        "after-send-offsets",
        "in-commit",
        "after-receive",
        "before-offset-commit",
    ] {
        let result = run(
            &[
                "--crash-at",
                point,
                "--crash-trades",
                &crashed,
                "--partitions",
                "1",
                "--trades",
                "250",
                "--rate",
                "0",
                "--duplicate-rate",
                "0.1",
                "--seed",
                "13",
            ],
            point,
        )
        .await;
        assert_eq!(result.faults.crashes, CRASHED.len() as u64, "{point}");
        assert_eq!(result.processor.restarts, CRASHED.len() as u64, "{point}");
        let c = &result.correctness;
        assert!(c.identity_holds, "{point}: {c:?}");
        assert_eq!(
            (c.exactly_once, c.lost, c.double_applied),
            (250, 0, 0),
            "{point}: {c:?}"
        );
        let kafka = c.kafka.as_ref().expect("correctness.kafka");
        assert_eq!(kafka.committed.exactly_once, 250, "{point}: {kafka:?}");
        assert_eq!(kafka.aborted_reached_postgres, 0, "{point}: {kafka:?}");
        // One message per transaction: each crash inside an open transaction left one effect
        // the restart aborted; a crash before it began or after it committed left none.
        let aborted = match point {
            "after-produce" | "after-send-offsets" => CRASHED.len() as u64,
            _ => 0,
        };
        assert_eq!(kafka.aborted_records, aborted, "{point}: {kafka:?}");
    }
}

/// A crash after the last transaction of a partition committed: its offsets are committed with
/// it, so the restarted processor gets nothing more to do there, and the run must still see
/// the partition drained (it waited for the drain timeout before the lane recorded them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_partitions_last_transaction_committed_still_drains() {
    for point in ["in-commit", "before-offset-commit"] {
        let result = run(
            &[
                "--crash-at",
                point,
                "--crash-trades",
                "100",
                "--partitions",
                "1",
                "--trades",
                "100",
                "--rate",
                "0",
                "--duplicate-rate",
                "0",
                "--drain-timeout-ms",
                "30000",
            ],
            point,
        )
        .await;
        assert_eq!(result.faults.crashes, 1, "{point}");
        let c = &result.correctness;
        assert_eq!(
            (c.exactly_once, c.lost, c.double_applied),
            (100, 0, 0),
            "{point}: {c:?}"
        );
    }
}

/// `--transaction-interval-ms`: at a rate where a worker's queue is empty between messages, a
/// transaction still gathers several of them, and the run stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_window_gathers_several_messages_per_transaction() {
    let result = run(
        &[
            "--partitions",
            "2",
            "--batch-size",
            "100",
            "--transaction-interval-ms",
            "100",
            "--trades",
            "600",
            "--rate",
            "200",
            "--duplicate-rate",
            "0",
        ],
        "",
    )
    .await;
    let c = &result.correctness;
    assert_eq!(
        (c.exactly_once, c.lost, c.double_applied),
        (600, 0, 0),
        "{c:?}"
    );
    let pair = result
        .kafka_transactions
        .as_ref()
        .expect("kafka_transactions");
    // About 100 messages/s per worker over 100 ms windows: ~10 each; without the window a
    // transaction holds ~1 at this rate (COST.md).
    assert!(pair.messages_per_transaction > 3.0, "{pair:?}");
}

/// A Postgres outage cuts the sink (stage one never talks to Postgres): its transactions fail
/// and are retried once the database answers again, and every message lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_stalls_the_sink_and_loses_nothing() {
    let result = run(
        &[
            "--partitions",
            "2",
            "--trades",
            "1000",
            "--rate",
            "250",
            "--duplicate-rate",
            "0.1",
            "--db-outage-at-ms",
            "1500",
            "--db-outage-ms",
            "2000",
        ],
        "db-outage",
    )
    .await;
    assert_eq!(result.faults.log.len(), 1, "{:?}", result.faults.log);
    assert_exact(&result, 1000);
}

/// KIP-447's fencing, with two processor processes: one stops itself inside an open
/// transaction (its effects produced, its group metadata read, its offsets not sent) past its
/// session, the group gives its partition to the other, and when it wakes, the offsets it
/// sends carry its old generation, so the group coordinator refuses them and the transaction
/// aborts. Nothing is lost or doubled, and no aborted effect reaches Postgres. (A SIGSTOP at
/// a random instant, as `service_faults` sends, may land in a commit instead: the zombie then
/// finishes that commit and its consumer notices the lost partition before the next one, so
/// no fence is seen; that run once failed this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_process_is_fenced_by_the_group_and_nothing_doubles() {
    let trades = 2000;
    let result = run(
        &[
            "--processes",
            "2",
            "--partitions",
            "2",
            "--session-timeout-ms",
            "6000",
            "--trades",
            "2000",
            "--rate",
            "400",
            "--duplicate-rate",
            "0.1",
            "--fault",
            "zombie-consumer@2000+9000:after-produce",
        ],
        "zombie",
    )
    .await;
    assert_eq!(result.faults.log.len(), 1, "{:?}", result.faults.log);
    let pause = &result.faults.log[0];
    assert!(
        pause
            .target
            .as_deref()
            .is_some_and(|t| t.ends_with("at after-produce")),
        "the pause landed at its step: {pause:?}"
    );
    assert_exact(&result, trades);
    let pair = result
        .kafka_transactions
        .as_ref()
        .expect("kafka_transactions");
    // The zombie's fence: the coordinator refused its generation, or (paused inside a
    // transaction that outlived the transaction timeout) its producer was fenced.
    assert!(
        pair.aborts.group_fenced + pair.aborts.producers_fenced >= 1,
        "no fencing seen: {pair:?}"
    );
    assert!(
        pair.aborts.transactions_aborted >= pair.aborts.group_fenced,
        "{pair:?}"
    );
}

/// A transactional producer that stops answering for good in the middle of a transaction (as
/// librdkafka 2.12's `send_offsets_to_transaction` was seen to after a broker kill, its own
/// timeout unheard): past the answer timeout (3× the 10 s transaction timeout) the worker
/// starts a new producer with its id, which fences the stuck one and aborts its transaction,
/// and reads the unit again. Without that bound the run never commits those partitions again
/// and ends partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_stops_answering_is_fenced_and_its_unit_read_again() {
    let trades = 1500;
    let result = run(
        &[
            "--partitions",
            "2",
            "--workers",
            "2",
            "--trades",
            "1500",
            "--rate",
            "300",
            "--duplicate-rate",
            "0.1",
            "--fault",
            "producer-stall@1000+4000",
        ],
        "producer-stall",
    )
    .await;
    assert_eq!(result.faults.log.len(), 1, "{:?}", result.faults.log);
    assert_exact(&result, trades);
    let pair = result
        .kafka_transactions
        .as_ref()
        .expect("kafka_transactions");
    // Both workers reached send_offsets while the stall lasted (300 msg/s, a partition each):
    // each waited out the answer timeout, then replaced its producer, whose lane (at ~31 s,
    // after the stall) answers.
    assert_eq!(pair.aborts.producers_unanswered, 2, "{pair:?}");
    assert!(
        pair.aborts.producers_replaced >= pair.aborts.producers_unanswered,
        "{pair:?}"
    );
    let kafka = result
        .correctness
        .kafka
        .as_ref()
        .expect("correctness.kafka");
    // The stuck transactions held effects: aborted by the new producers' fences.
    assert!(kafka.aborted_records >= 2, "{kafka:?}");
}

/// A processor process SIGKILLed mid-run: its open transaction stays open until its
/// replacement takes its place (and its transactional ids) and `init_transactions` aborts it;
/// the group moves its partitions. Exact, and the dead transaction's effect never reaches
/// Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_loses_nothing_and_its_open_transaction_is_aborted() {
    let trades = 2000;
    let result = run(
        &[
            "--processes",
            "2",
            "--partitions",
            "4",
            "--session-timeout-ms",
            "6000",
            "--restart-delay-ms",
            "200",
            "--trades",
            "2000",
            "--rate",
            "300",
            "--kill-at-ms",
            "2500",
        ],
        "kill",
    )
    .await;
    assert!(
        result
            .faults
            .log
            .iter()
            .any(|e| e.kind.name() == "process-kill"),
        "{:?}",
        result.faults.log
    );
    assert_exact(&result, trades);
}

/// Where each trade of the input sits: (partition, offset), read back from the topic.
fn input_positions(direct: &Direct) -> std::collections::BTreeMap<u64, (i32, i64)> {
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &direct.brokers)
        .set("group.id", format!("{}.positions", direct.topic))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in direct.produced.end_offsets.keys() {
        assignment
            .add_partition_offset(&direct.topic, *partition, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let total: i64 = direct.produced.end_offsets.values().sum();
    let mut positions = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (positions.len() as i64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "the input topic could not be read back within 60 s"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let trade = idembench_loadgen::Trade::decode(message.payload().unwrap()).unwrap();
            positions.insert(trade.trade_id, (message.partition(), message.offset()));
        }
    }
    positions
}

/// librdkafka 2.12 can start a partition at `auto.offset.reset` (earliest) instead of the
/// group's committed offset: when the assignment changes while the offset fetch waits out an
/// open transaction, the stale answer leaves the partition with no offset. Here an outside
/// transaction holds half of each partition's offsets open while the processor joins; a
/// second member joins (the assignment changes) and, later, leaves; the transaction commits
/// in between. Nothing below the offsets it committed may be applied, and everything above
/// exactly once; with every offset held (nothing above), the processor still catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_reassigned_while_a_transaction_holds_its_offsets_does_not_start_over() {
    // The transaction holds half of each partition, then all of it.
    for held in [2, 1] {
        reassigned_under_an_open_transaction(held).await;
    }
}

/// The case above with the transaction holding `1 / held_share` of each partition.
async fn reassigned_under_an_open_transaction(held_share: i64) {
    use rdkafka::producer::{BaseProducer, Producer};
    let partitions = 2;
    let direct = Direct::new("txnreset", partitions, 400).await;
    let mut settings = transactional(&direct, partitions, 1).await;
    // As deep as a run's queue (run/start.rs): copies read from the wrong start wait in it
    // while the start is checked, the committed offset among them.
    settings.queue_depth = 1024;
    let halfway: std::collections::BTreeMap<i32, i64> = direct
        .produced
        .end_offsets
        .iter()
        .map(|(partition, end)| (*partition, end / held_share))
        .collect();
    // The outside transaction: the group's offsets there, pending until it commits.
    let holder: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &direct.brokers)
        .set("transactional.id", format!("{}.holder", direct.topic))
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    let group: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &direct.brokers)
        .set("group.id", &settings.group_id)
        .create()
        .unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    for (partition, offset) in &halfway {
        offsets
            .add_partition_offset(&direct.topic, *partition, rdkafka::Offset::Offset(*offset))
            .unwrap();
    }
    let timeout = Duration::from_secs(30);
    holder.init_transactions(timeout).unwrap();
    holder.begin_transaction().unwrap();
    holder
        .send_offsets_to_transaction(&offsets, &group.group_metadata().unwrap(), timeout)
        .unwrap();

    let progress = Arc::new(Progress::new(partitions));
    let faults = Arc::new(Faults::none());
    let strategy = direct.strategy(StrategyKind::None, faults.clone());
    let processor = Processor::start(&settings, strategy, progress.clone(), faults.clone())
        .unwrap_or_else(|e| panic!("{e} (is `scripts/services up` running?)"));
    assert!(
        processor.wait_for_assignment(Duration::from_secs(30)).await,
        "no partition assigned"
    );
    // The processor's offset fetch now waits on the open transaction; a second member changes
    // the assignment under it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leave = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let member = std::thread::spawn({
        let (brokers, group_id, topic) = (
            direct.brokers.clone(),
            settings.group_id.clone(),
            direct.topic.clone(),
        );
        let leave = leave.clone();
        move || {
            let member: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group_id)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            member.subscribe(&[&topic]).unwrap();
            while !leave.load(std::sync::atomic::Ordering::Relaxed) {
                // It reads but never commits: the partition it holds waits for the processor.
                let _ = member.poll(Duration::from_millis(100));
            }
            // Dropping it closes it: it leaves the group.
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::spawn_blocking(move || holder.commit_transaction(Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    leave.store(true, std::sync::atomic::Ordering::Relaxed);
    member.join().unwrap();

    // As a run does (supervise): the coordinator's offsets too, since a partition whose
    // every offset the outside transaction committed delivers nothing to tell the processor.
    let observer = idembench::processor::CommittedOffsets::new(&settings).unwrap();
    let crashed = until_committed(
        &direct,
        &processor,
        &progress,
        Some(&observer),
        Duration::from_secs(120),
    )
    .await;
    assert!(!crashed, "no crash was planned");
    let (report, error) = processor.stop_keeping_report().await;
    assert!(error.is_none(), "{error:?}");
    // librdkafka 2.12 starts one of the two partitions over here; a fixed one would not.
    eprintln!(
        "starts below the committed offset: {}",
        report.metrics.counts.txn.starts_below_committed
    );
    let positions = tokio::task::block_in_place(|| input_positions(&direct));
    let effects_topic = settings
        .transactions
        .as_ref()
        .unwrap()
        .effects_topic
        .clone();
    let committed = tokio::task::block_in_place(|| {
        read_effects(
            &direct.brokers,
            &effects_topic,
            Isolation::ReadCommitted,
            timeout,
            Some(direct.produced.ledger.plan().trades()),
        )
    })
    .unwrap();
    let _ = direct.admin.delete_topic(&effects_topic).await;
    direct.clean_up().await;

    let below: Vec<(u64, (i32, i64))> = committed
        .per_trade
        .iter()
        .map(|(trade, _)| (trade, positions[&trade]))
        .filter(|(_, (partition, offset))| *offset < halfway[partition])
        .collect();
    assert!(
        below.is_empty(),
        "{} trades below the committed offsets {halfway:?} were applied again, e.g. {:?} (starts below committed: {})",
        below.len(),
        &below[..below.len().min(5)],
        report.metrics.counts.txn.starts_below_committed
    );
    let above: u64 = positions
        .values()
        .filter(|(partition, offset)| *offset >= halfway[partition])
        .count() as u64;
    assert_eq!(committed.records, above, "one effect per message above");
    assert!(
        committed.per_trade.iter().all(|(_, n)| n == 1),
        "no message applied twice"
    );
}

//! Phase 4: stop the processors, audit the ledger against the store, let the oracle predict
//! from the fault log, and build the [`RunResult`] — a section at a time.

use hdrhistogram::Histogram;

use super::RunError;
use super::consumers::{Consumers, Stopped};
use super::prepare::Reached;
use super::start::Started;
use super::supervise::Supervised;
use crate::check::audit::{self, Correctness, ProcessorCounts};
use crate::check::oracle::{self, OracleReport, RunShape};
use crate::config::{DuplicatePartition, RunConfig, RunNames};
use crate::faults::FaultKind;
use crate::processor::ProcessorReport;
use crate::results::anomalies::Anomalies;
use crate::results::environment::{Environment, Usage};
use crate::results::{
    Clients, FaultsReport, KafkaService, Latencies, Percentiles, ProcessorStats, Resources,
    RunResult, SCHEMA_VERSION, SeriesPoint, ServiceVersion, Services, Stages, Status, Throughput,
    TransactionsReport,
};

/// An audited result and the histograms behind its percentiles.
pub(super) struct Measured {
    pub result: RunResult,
    /// Keys Redis evicted while the run ran (`services.redis.evicted_keys`).
    pub evicted_keys: Option<u64>,
    pub histograms: Vec<(&'static str, Histogram<u64>)>,
}

pub(super) async fn assemble(
    config: &RunConfig,
    names: &RunNames,
    reached: &Reached,
    mut started: Started,
    (mut supervised, consumers): (Supervised, Consumers),
    usage_at_start: (Usage, Usage),
) -> Result<Measured, RunError> {
    let stopped = consumers.stop().await;
    // After stage one: nothing reaches the effects topic any more.
    let sink = match started.sink.take() {
        Some(sink) => Some((sink.effects_topic.clone(), sink.stop().await)),
        None => None,
    };
    remove_proxies(&started).await;
    let mut report = std::mem::take(&mut supervised.earlier);
    let Stopped {
        report: last,
        error,
        processes,
        killed_measurement_windows,
    } = stopped;
    // A processor that failed still leaves the store to audit, and what its workers measured.
    let mut failure = supervised.failure.clone();
    report.add(last);
    if let Some(error) = error {
        super::add_reason(&mut failure, error.to_string());
    }
    if let Some((_, (_, Some(error)))) = &sink {
        super::add_reason(&mut failure, format!("the sink: {error}"));
    }
    let observed = match &started.memory {
        Some(memory) => memory.observed(),
        None => crate::db::observe(&reached.db, config.stream.trades).await?,
    };
    let evicted_keys = match reached.evicted_at_start {
        Some(start) => crate::redis::admin::evicted_keys(
            &config.connections.redis_url,
            config.connect_timeout(),
        )
        .await
        .ok()
        .map(|end| end.saturating_sub(start)),
        None => None,
    };
    let counts = report.metrics.counts;
    // kafka-transactions: the sink wrote Postgres, and its latency is the pair's.
    let (sink_report, effects_topic) = match sink {
        Some((topic, (sink_report, _))) => (Some(sink_report), Some(topic)),
        None => (None, None),
    };
    let written_by = sink_report.as_ref().unwrap_or(&report);
    let mut correctness = audit::reconcile(
        &supervised.produced.ledger,
        &observed,
        ProcessorCounts {
            caught_by_constraint: written_by.metrics.counts.caught_by_constraint,
            duplicates_suppressed: written_by.metrics.counts.duplicates_suppressed(),
        },
    );
    let anomalies = anomalies(
        config,
        &correctness,
        &supervised,
        &observed,
        &started.faults,
    );
    if let Some(topic) = &effects_topic {
        match audit_effects(config, topic, &supervised, &observed).await {
            Ok(kafka) => correctness.kafka = Some(kafka),
            Err(error) => super::add_reason(&mut failure, error),
        }
    }
    let mut histograms: Vec<(&'static str, Histogram<u64>)> = written_by
        .metrics
        .histograms()
        .into_iter()
        .map(|(name, h)| (name, h.clone()))
        .collect();
    if sink_report.is_some() {
        // Stage one's commit_transaction step (the sink's own processor commits none).
        for (name, histogram) in &mut histograms {
            if *name == "transaction_commit" {
                *histogram = report.metrics.transaction_commit_us.clone();
            }
        }
    }
    histograms.push(("send_ack", supervised.produced.send_ack_us.clone()));
    histograms.push(("schedule_lag", supervised.produced.schedule_lag_us.clone()));
    let fleet = (processes, killed_measurement_windows);
    let result = RunResult {
        schema_version: SCHEMA_VERSION,
        idembench_version: crate::versions::IDEMBENCH.into(),
        run_id: names.run_id.clone(),
        status: if supervised.partial_reason.is_some() {
            Status::Partial
        } else {
            Status::Complete
        },
        partial_reason: supervised.partial_reason.clone(),
        failure,
        strategy: config.strategy.name().into(),
        redis_client: if reached.redis.is_some() {
            config.redis_client.name().into()
        } else {
            "none".into()
        },
        started_at: humantime::format_rfc3339_seconds(supervised.produced.started_at).to_string(),
        command: config.command.clone(),
        config: config.clone(),
        // Filled in by the caller, which holds the connections.
        services: placeholder_services(),
        clients: clients(reached, &started),
        throughput: throughput(config, &supervised, counts.messages),
        latency_us: latencies(written_by, &supervised, &histograms),
        oracle: oracle(config, &started, &supervised, &correctness, evicted_keys),
        correctness,
        faults: FaultsReport::new(&started.faults).with_recovery(
            &supervised.series,
            supervised
                .produced
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        ),
        processor: processor_stats(config, &started, &supervised, &report, reached, fleet),
        environment: Environment::read().with_stack(config.stack.clone()),
        resources: Resources {
            this_process: Usage::this_process().since(usage_at_start.0),
            processor_processes: (processes > 0).then(|| Usage::children().since(usage_at_start.1)),
            // Filled in by the caller, which sampled the services at the start.
            services: Default::default(),
            services_unmeasured: Default::default(),
            cpu_us_per_message: Default::default(),
            state_bytes_per_trade: state_bytes_per_trade(
                config.stream.trades,
                &supervised.produced.ledger,
                &observed,
                started.memory.as_deref(),
            ),
        },
        merged_from: Vec::new(),
        kafka_transactions: effects_topic
            .zip(sink_report.as_ref())
            .map(|(topic, sink)| {
                transactions_report(topic, &report, sink, supervised.process_seconds)
            }),
        // Measured by the caller, before the keys and the schema are removed.
        storage: None,
        anomalies: Some(anomalies),
    };
    Ok(Measured {
        result,
        evicted_keys,
        histograms,
    })
}

/// `resources.state_bytes_per_trade`: what the per-trade structures allocated, per planned
/// trade.
fn state_bytes_per_trade(
    trades: u64,
    ledger: &idembench_loadgen::Ledger,
    observed: &crate::db::Observed,
    memory: Option<&crate::db::MemoryEffects>,
) -> std::collections::BTreeMap<String, f64> {
    let per_trade = |bytes: usize| (bytes as f64 / trades.max(1) as f64 * 100.0).round() / 100.0;
    let audit = observed.trade_rows.heap_bytes() + observed.outbox_rows.heap_bytes();
    [
        ("ledger", Some(ledger.heap_bytes())),
        ("audit", Some(audit)),
        ("business_store", memory.map(|m| m.heap_bytes())),
    ]
    .into_iter()
    .filter_map(|(holder, bytes)| Some((holder.to_string(), per_trade(bytes?))))
    .collect()
}

/// The run's Toxiproxy proxies, removed once the processors stopped.
async fn remove_proxies(started: &Started) {
    if let Some((toxiproxy, proxies)) = &started.toxiproxy {
        for (_, name) in proxies {
            if let Err(error) = toxiproxy.delete_proxy(name).await {
                tracing::warn!(%error, "cannot remove the run's proxy");
            }
        }
    }
}

/// The timelines of the first lost and doubled trades, from the run's trace and fault log.
fn anomalies(
    config: &RunConfig,
    correctness: &crate::check::audit::Correctness,
    supervised: &Supervised,
    observed: &crate::db::Observed,
    faults: &crate::faults::Faults,
) -> Anomalies {
    use crate::results::anomalies::{self, SHOWN};
    let ledger = &supervised.produced.ledger;
    let (lost, doubled) = audit::anomalous(ledger, observed, SHOWN);
    // Up to half lost, the rest doubled; either fills what the other leaves.
    let lost_shown = lost.len().min(SHOWN - doubled.len().min(SHOWN / 2));
    let picked: Vec<(u64, &str, u64)> = lost
        .iter()
        .take(lost_shown)
        .map(|id| (*id, "lost", 0))
        .chain(
            doubled
                .iter()
                .take(SHOWN - lost_shown)
                .map(|(id, effects)| (*id, "applied twice", *effects)),
        )
        .collect();
    let (events, recorded, dropped) = faults
        .traced()
        .of(|id| picked.iter().any(|(picked, _, _)| *picked == id));
    let log = faults.log();
    let started_us = supervised
        .produced
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let shown = picked
        .into_iter()
        .map(|(trade_id, ended, effects)| anomalies::Anomaly {
            trade_id,
            ended: ended.into(),
            effects,
            copies_sent: ledger.copies(trade_id),
            timeline: anomalies::timeline(trade_id, &events, &log, started_us),
        })
        .collect();
    Anomalies {
        total: correctness.lost + correctness.double_applied,
        shown,
        trace_events: recorded,
        trace_dropped: dropped,
        note: (config.processes > 0).then(|| {
            "the processor ran as separate processes, which keep no trace: the timelines hold the faults only".to_string()
        }),
    }
}

/// The effects topic at both isolation levels against the ledger, and against Postgres: an
/// aborted effect that reached it would leave a trade with more rows than committed effects.
async fn audit_effects(
    config: &RunConfig,
    topic: &str,
    supervised: &Supervised,
    observed: &crate::db::Observed,
) -> Result<crate::check::kafka::KafkaCorrectness, String> {
    use crate::check::kafka::{Isolation, read_effects_apart, reconcile};
    let brokers = &config.connections.kafka_brokers;
    let timeout = config
        .connect_timeout()
        .max(std::time::Duration::from_secs(30));
    let trades = Some(config.stream.trades);
    let (committed, uncommitted) = tokio::join!(
        read_effects_apart(brokers, topic, Isolation::ReadCommitted, timeout, trades),
        read_effects_apart(brokers, topic, Isolation::ReadUncommitted, timeout, trades)
    );
    let failed = |e: String| format!("cannot audit the effects topic: {e}");
    let (committed, uncommitted) = (committed.map_err(failed)?, uncommitted.map_err(failed)?);
    let mut kafka = reconcile(topic, &supervised.produced.ledger, &committed, &uncommitted);
    kafka.aborted_reached_postgres =
        crate::check::kafka::beyond_committed(&observed.trade_rows, &committed);
    Ok(kafka)
}

fn transactions_report(
    effects_topic: String,
    stage_one: &ProcessorReport,
    sink: &ProcessorReport,
    process_seconds: f64,
) -> TransactionsReport {
    let transactions = stage_one.metrics.business_us.len();
    TransactionsReport {
        effects_topic,
        transactions,
        transactions_per_second: per_second(transactions, process_seconds),
        messages_per_transaction: match transactions {
            0 => 0.0,
            n => ((stage_one.metrics.counts.messages as f64 / n as f64) * 100.0).round() / 100.0,
        },
        transaction_us: Percentiles::of(&stage_one.metrics.business_us),
        transaction_commit_us: Percentiles::of(&stage_one.metrics.transaction_commit_us),
        aborts: stage_one.metrics.counts.txn,
        stage_one_end_to_end_us: Percentiles::of(&stage_one.metrics.end_to_end_from_intended_us),
        sink_messages: sink.metrics.counts.messages,
        sink_caught_by_constraint: sink.metrics.counts.caught_by_constraint,
        sink_business_us: Percentiles::of(&sink.metrics.business_us),
    }
}

fn placeholder_services() -> Services {
    Services {
        kafka: KafkaService {
            brokers: String::new(),
            broker_count: 0,
            topic: String::new(),
            partitions: 0,
            replication_factor: 1,
            min_insync_replicas: 1,
            leaders: Vec::new(),
        },
        redis: None,
        postgres: ServiceVersion {
            url: String::new(),
            version: String::new(),
        },
    }
}

/// The in-process processor's Redis clients: each `--processor-threads` thread's, else its own
/// (through Toxiproxy, under a network fault), else the run's.
fn processor_redis<'a>(
    started: &'a Started,
    reached: &'a Reached,
) -> Vec<&'a std::sync::Arc<dyn crate::redis::RedisOps>> {
    match &started.threads {
        Some(threads) => threads.redis.iter().collect(),
        None => started.redis.iter().chain(&reached.redis).take(1).collect(),
    }
}

fn clients(reached: &Reached, started: &Started) -> Clients {
    let processor = processor_redis(started, reached);
    // The client's name and version, and every connection the processor held.
    let redis = processor.first().map(|first| crate::redis::ClientInfo {
        connections: processor.iter().map(|r| r.info().connections).sum(),
        ..first.info()
    });
    Clients {
        redis,
        redis_rs: crate::versions::REDIS_RS.into(),
        fred: crate::versions::FRED.into(),
        rdkafka: crate::versions::RDKAFKA.into(),
        // Filled in by the caller, from the cluster it reached.
        librdkafka: String::new(),
        sqlx: crate::versions::SQLX.into(),
        hdrhistogram: crate::versions::HDRHISTOGRAM.into(),
    }
}

fn throughput(config: &RunConfig, supervised: &Supervised, processed: u64) -> Throughput {
    let produced = &supervised.produced;
    let messages_produced = produced.ledger.copies_sent();
    let produce_seconds = produced.elapsed.as_secs_f64();
    Throughput {
        messages_produced,
        messages_processed: processed,
        produce_seconds,
        process_seconds: supervised.process_seconds,
        produced_per_second: per_second(messages_produced, produce_seconds),
        processed_per_second: per_second(processed, supervised.process_seconds),
        offered_rate: config.rate,
        after_warm_up_per_second: after_warm_up(&supervised.series, config.warm_up_ms),
        series: supervised.series.clone(),
    }
}

fn latencies(
    report: &ProcessorReport,
    supervised: &Supervised,
    histograms: &[(&'static str, Histogram<u64>)],
) -> Latencies {
    let metrics = &report.metrics;
    let produced = &supervised.produced;
    Latencies {
        end_to_end_from_intended: Percentiles::of(&metrics.end_to_end_from_intended_us),
        end_to_end_from_sent: Percentiles::of(&metrics.end_to_end_from_sent_us),
        stages: Stages {
            claim: Percentiles::of(&metrics.claim_us),
            business: Percentiles::of(&metrics.business_us),
            mark_done: Percentiles::of(&metrics.mark_done_us),
            offset_commit: Percentiles::of(&metrics.offset_commit_us),
        },
        warm_up: Percentiles::of(&metrics.warm_up_us),
        send_ack: Percentiles::of(&produced.send_ack_us),
        schedule_lag: Percentiles::of(&produced.schedule_lag_us),
        histograms: histograms
            .iter()
            .map(|(name, h)| (name.to_string(), crate::hgrm::encode(h)))
            .collect(),
    }
}

/// The oracle's prediction from the run's shape and fault log, against the audit.
fn oracle(
    config: &RunConfig,
    started: &Started,
    supervised: &Supervised,
    correctness: &Correctness,
    evicted_keys: Option<u64>,
) -> OracleReport {
    let copies_elsewhere =
        config.duplicate_partition == DuplicatePartition::Next && config.partitions > 1;
    let shape = RunShape {
        strategy: config.strategy,
        unique_constraint: config.unique_constraint,
        on_in_progress: config.on_in_progress,
        // What a crash or a kill can cut: every unit in flight on every worker.
        workers: config.workers * config.in_flight,
        processing_ttl_ms: config.processing_ttl_ms,
        done_ttl_ms: config.done_ttl_ms,
        restart_delay_ms: config.crash_plan.restart_delay_ms,
        duplicated_trades: supervised.produced.ledger.trades_with_extra_copies(),
        late_duplicated_trades: supervised.late_duplicated,
        late_delay_ms: config.stream.late_duplicate_delay_ms,
        session_timeout_ms: config.session_timeout_ms,
        slow_ms: config.crash_plan.slow_ms,
        slow_late_copies: supervised.slow_copies.0,
        slow_immediate_copies: supervised.slow_copies.1,
        copies_elsewhere,
        copies_concurrent: copies_elsewhere
            && config.processes == 0
            && config.workers >= config.partitions,
        processes: config.processes,
        unprocessed: supervised.lag_at_stop.max(0) as u64,
        redis_evictions: evicted_keys.unwrap_or(0),
        redis_persistent: config.redis_persistence != crate::redis::RedisPersistence::None,
    };
    let unprocessed = shape.unprocessed;
    let report = OracleReport::compare(
        oracle::predict(&shape, &started.faults.log()),
        correctness.lost,
        correctness.double_applied,
    );
    match &correctness.kafka {
        Some(kafka) => {
            report.with_kafka_effects(kafka.committed.lost, kafka.committed.doubled, unprocessed)
        }
        None => report,
    }
}

fn processor_stats(
    config: &RunConfig,
    started: &Started,
    supervised: &Supervised,
    report: &ProcessorReport,
    reached: &Reached,
    (processes, killed_measurement_windows): (u64, u64),
) -> ProcessorStats {
    let mut redis_counts = report.redis;
    // The in-process processor's client (its own, through Toxiproxy, under a network fault).
    for redis in processor_redis(started, reached) {
        redis_counts.add(redis.counters().values());
    }
    let counts = report.metrics.counts;
    let ledger = &supervised.produced.ledger;
    ProcessorStats {
        counts,
        redis_errors: redis_counts.errors,
        redis_timeouts: redis_counts.timeouts,
        redis_reconnects: redis_counts.reconnects,
        redis_primaries_followed: redis_counts.primaries_followed,
        redis_wait_short: redis_counts.wait_short,
        consumer_errors: report.consumer_errors,
        commit_errors: report.commit_errors,
        rebalances: report.rebalances,
        close_timed_out: report.close_timed_out,
        lag_at_stop: supervised.lag_at_stop,
        restarts: if processes > 0 {
            processes.saturating_sub(config.processes as u64)
        } else {
            report.incarnations.saturating_sub(1)
        },
        processes,
        process_kills: started.faults.count(FaultKind::ProcessKill),
        killed_measurement_windows,
        stalled_ms: counts.stalled_us / 1000,
        redeliveries: counts
            .messages
            .saturating_sub(ledger.copies_sent() + ledger.malformed_acked),
    }
}

/// Committed messages per second from the end of the warm-up to the end of the run, from the
/// once-a-second series; `None` without a warm-up (or a run too short to have one).
fn after_warm_up(series: &[SeriesPoint], warm_up_ms: u64) -> Option<f64> {
    if warm_up_ms == 0 {
        return None;
    }
    let from = series
        .iter()
        .find(|p| p.t_s * 1000.0 >= warm_up_ms as f64)?;
    let to = series.last()?;
    (to.t_s > from.t_s).then(|| {
        per_second(
            to.committed.saturating_sub(from.committed),
            to.t_s - from.t_s,
        )
    })
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        (count as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

//! Phase 3: produce in the background while the processors consume; inject the timed faults;
//! replace a crashed processor (or a killed process) after the restart delay; stop when every
//! produced offset is processed and committed (a crash replays what was not), or on Ctrl-C, or
//! when the drain times out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idembench_loadgen::{CopyRouting, ExtraCopy, ProduceReport, SendSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consumers::Consumers;
use super::start::Started;
use super::ticker::{Ticker, offered};
use super::{RunError, abandon_token, say};
use crate::config::{DuplicatePartition, OnInterrupt, RunConfig};
use crate::faults::schedule::{Due, KillSchedule, repeat};
use crate::faults::{FaultKind, services, timers};
use crate::processor::{Processor, ProcessorReport};
use crate::results::SeriesPoint;

/// What supervision leaves for the audit.
pub(super) struct Supervised {
    pub produced: ProduceReport,
    pub partial_reason: Option<String>,
    /// Why the processor failed, when it did (the run ended early).
    pub failure: Option<String>,
    /// The reports of processor incarnations that crashed and were replaced.
    pub earlier: ProcessorReport,
    pub series: Vec<SeriesPoint>,
    /// From the start of production to the end of the drain.
    pub process_seconds: f64,
    /// Messages produced but not processed when supervision ended.
    pub lag_at_stop: i64,
    /// Trades whose extra copy was sent late.
    pub late_duplicated: u64,
    /// Slow trades with a late / an immediate extra copy.
    pub slow_copies: (u64, u64),
}

/// Slow trades with a late / an immediate extra copy (one pass over the plan, for the ids
/// `--slow-trades` names).
fn slow_copies(plan: &idembench_loadgen::Plan, slow_trades: &[u64]) -> (u64, u64) {
    if slow_trades.is_empty() {
        return (0, 0);
    }
    let slow: std::collections::HashSet<u64> = slow_trades.iter().copied().collect();
    let last = slow.iter().copied().max().unwrap_or(0);
    plan.iter()
        .take_while(|p| p.trade.trade_id <= last)
        .filter(|p| slow.contains(&p.trade.trade_id))
        .fold((0, 0), |(late, immediate), p| match p.extra {
            ExtraCopy::Late => (late + 1, immediate),
            ExtraCopy::Immediate => (late, immediate + 1),
            ExtraCopy::None => (late, immediate),
        })
}

pub(super) async fn supervise(
    config: &RunConfig,
    started: &Started,
    consumers: Consumers,
    cancel: CancellationToken,
) -> Result<(Supervised, Consumers), RunError> {
    let plan = config
        .stream
        .plan()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let planned = plan.planned_messages();
    let late_duplicated = plan.late_copies();
    let slow_copies = slow_copies(&plan, &config.crash_plan.slow_trades);
    let acked = Arc::new(AtomicU64::new(0));
    let series = Arc::new(std::sync::Mutex::new(Vec::new()));
    let p99_us = Arc::new(AtomicU64::new(0));
    let second_p99_us = Arc::new(AtomicU64::new(0));
    let ticker = Ticker {
        quiet: config.quiet,
        progress: started.progress.clone(),
        acked: acked.clone(),
        series: series.clone(),
        faults: started.faults.clone(),
        p99_us: p99_us.clone(),
        second_p99_us: second_p99_us.clone(),
        planned,
        rate: config.rate,
    }
    .spawn();
    let run_started = Instant::now();
    let produced_token = CancellationToken::new();
    let timed = timed_faults(config, started, &produced_token);
    // A transactional processor's own commits are not all it needs to know (see
    // `CommittedOffsets`); the fleet keeps its own reader.
    let committed_offsets = match &consumers {
        Consumers::InProcess(_) if started.spec.processor.transactions.is_some() => Some(
            crate::processor::CommittedOffsets::new(&started.spec.processor)
                .map_err(RunError::Processes)?,
        ),
        _ => None,
    };
    let mut loop_state = Supervisor {
        config,
        started,
        consumers: Some(consumers),
        cancel: cancel.clone(),
        produce_cancel: cancel.child_token(),
        produced_token,
        production: None,
        produced: None,
        partial_reason: None,
        halted: None,
        drain_deadline: None,
        earlier: ProcessorReport::default(),
        kills: KillSchedule::new(started.faults.plan(), run_started),
        respawns: Vec::new(),
        pauses: KillSchedule::of(
            started.faults.plan(),
            run_started,
            FaultKind::ZombieConsumer,
        ),
        resumes: Vec::new(),
        armed: Vec::new(),
        offsets_read: Instant::now(),
        committed_offsets,
        p99_read: Instant::now(),
        p99_us,
        second_p99_us,
        e2e_before: None,
        caught_up: false,
        sink_lag: 0,
        sink_drained: false,
    };
    loop_state.set_warm_up().await;
    loop_state.production = Some(tokio::spawn({
        let send = send_settings(config, started, acked.clone());
        let producer = started.producer.producer.clone();
        let (spec, cancel) = (config.stream.clone(), loop_state.produce_cancel.clone());
        async move { idembench_loadgen::produce(&producer, &send, &spec, &plan, &cancel).await }
    }));
    let ended = loop_state.run().await;
    if ended.is_ok() {
        loop_state.measure_sink_lag().await;
    }
    ticker.abort();
    for task in timed {
        task.abort();
    }
    ended?;
    let produced = loop_state
        .produced
        .take()
        .expect("the loop ends only after production");
    let process_seconds = run_started.elapsed().as_secs_f64();
    if !config.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let progress = &started.progress;
    // A last sample at the end, so the series covers the whole run.
    series.lock().expect("series lock").push(SeriesPoint {
        t_s: (process_seconds * 1000.0).round() / 1000.0,
        offered: offered(config.rate, process_seconds, planned),
        processed: progress.completed(),
        produced: acked.load(Ordering::Relaxed),
        committed: progress.committed_total().max(0) as u64,
        p99_us: None,
    });
    let consumers = loop_state
        .consumers
        .take()
        .expect("consumers run until stopped");
    let supervised = Supervised {
        lag_at_stop: progress.lag(&produced.end_offsets) + loop_state.sink_lag as i64,
        produced,
        partial_reason: loop_state.partial_reason,
        failure: loop_state.halted,
        earlier: loop_state.earlier,
        series: std::mem::take(&mut *series.lock().expect("series lock")),
        process_seconds,
        late_duplicated,
        slow_copies,
    };
    Ok((supervised, consumers))
}

/// Where and how the load generator sends.
fn send_settings(config: &RunConfig, started: &Started, acked: Arc<AtomicU64>) -> SendSettings {
    SendSettings {
        topic: started.spec.processor.topic.clone(),
        rate: config.rate,
        acked: Some(acked),
        unkeyed: false,
        copies: match config.duplicate_partition {
            DuplicatePartition::Same => CopyRouting::SameKey,
            DuplicatePartition::Next => CopyRouting::NextPartition {
                partitions: config.partitions as i32,
            },
        },
    }
}

/// The plan's timed faults, each a task from now on: the schedule and its shorthands. Faults
/// that repeat stop repeating once `produced` is cancelled.
fn timed_faults(
    config: &RunConfig,
    started: &Started,
    produced: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let injector = config.services.as_ref().map(|control| {
        Arc::new(services::Injector {
            control: control.clone(),
            redis_url: config.connections.redis_url.clone(),
            kafka: started.kafka.clone(),
            topic: started.spec.processor.topic.clone(),
            timeout: config.connect_timeout(),
            faults: started.faults.clone(),
        })
    });
    let mut tasks = Vec::new();
    for fault in config.crash_plan.timeline() {
        let faults = started.faults.clone();
        let produced = produced.clone();
        match fault.kind {
            FaultKind::RedisWipe if config.strategy.capabilities().uses_redis => {
                let (url, prefix) = (
                    config.connections.redis_url.clone(),
                    started.spec.key_prefix.clone(),
                );
                let timeout = config.connect_timeout();
                tasks.push(repeat(&fault, produced, move || {
                    let (url, prefix, faults) = (url.clone(), prefix.clone(), faults.clone());
                    async move { timers::redis_wipe(&url, &prefix, &faults, timeout).await }
                }));
            }
            FaultKind::DbOutage => {
                let relay = started
                    .relay
                    .clone()
                    .expect("a plan with an outage has a relay");
                let lasting = fault.duration();
                tasks.push(repeat(&fault, produced, move || {
                    let (relay, faults) = (relay.clone(), faults.clone());
                    async move { timers::db_outage(&relay, lasting, &faults).await }
                }));
            }
            FaultKind::ProducerStall => {
                let lasting = fault.duration();
                tasks.push(repeat(&fault, produced, move || {
                    let faults = faults.clone();
                    async move { timers::producer_stall(lasting, &faults).await }
                }));
            }
            kind if kind.through_proxy() => {
                // No proxy for a link the strategy does not use (Redis under db-only).
                let Some((toxiproxy, proxies)) = &started.toxiproxy else {
                    continue;
                };
                let Some((_, proxy)) = proxies.iter().find(|(link, _)| link == fault.link()) else {
                    continue;
                };
                let (toxiproxy, proxy) = (toxiproxy.clone(), proxy.clone());
                let scheduled = fault.clone();
                tasks.push(repeat(&fault, produced, move || {
                    let (toxiproxy, proxy, fault, faults) = (
                        toxiproxy.clone(),
                        proxy.clone(),
                        scheduled.clone(),
                        faults.clone(),
                    );
                    async move { timers::network(&toxiproxy, &proxy, &fault, &faults).await }
                }));
            }
            kind if kind.needs_stack() => {
                let injector = injector
                    .clone()
                    .expect("validated: a service fault runs on a stack that started the services");
                tasks.push(services::run(injector, fault, produced));
            }
            // Kills are the fleet's (KillSchedule); a wipe without Redis has nothing to wipe.
            _ => {}
        }
    }
    tasks
}

/// The supervision loop's state.
struct Supervisor<'a> {
    config: &'a RunConfig,
    started: &'a Started,
    /// `None` only while a crashed processor is being replaced.
    consumers: Option<Consumers>,
    cancel: CancellationToken,
    produce_cancel: CancellationToken,
    /// Cancelled once production ended: scheduled faults stop repeating.
    produced_token: CancellationToken,
    production:
        Option<JoinHandle<Result<ProduceReport, idembench_loadgen::producer::ProduceError>>>,
    produced: Option<ProduceReport>,
    partial_reason: Option<String>,
    /// Why the processor failed, once it did: the run ends early, partial (exit 3).
    halted: Option<String>,
    drain_deadline: Option<Instant>,
    earlier: ProcessorReport,
    kills: KillSchedule,
    respawns: Vec<Instant>,
    /// Zombie consumers: when a pause is due, and the paused processes to resume (when, which,
    /// the fault's place in the log).
    pauses: KillSchedule,
    resumes: Vec<(Instant, u64, usize)>,
    /// Processes armed to stop themselves at a step, not stopped yet (which, for how long).
    armed: Vec<(u64, Duration)>,
    offsets_read: Instant,
    /// kafka-transactions in process: the group coordinator's committed offsets.
    committed_offsets: Option<crate::processor::CommittedOffsets>,
    p99_read: Instant,
    /// End-to-end p99 so far, for the progress line.
    p99_us: Arc<AtomicU64>,
    /// The p99 of the messages completed since the last read, for the series.
    second_p99_us: Arc<AtomicU64>,
    /// The end-to-end histogram at the last read.
    e2e_before: Option<hdrhistogram::Histogram<u64>>,
    /// Every produced offset was processed and committed (not an early end).
    caught_up: bool,
    /// Committed effects the sink had not processed when the run ended (kafka-transactions).
    sink_lag: u64,
    sink_drained: bool,
}

impl Supervisor<'_> {
    async fn run(&mut self) -> Result<(), RunError> {
        loop {
            // A production that failed stops the consumers as a failed step does.
            let result = match self.collect_production().await {
                Err(error) => Err(error),
                Ok(()) => match self.consumers.as_ref().expect("running") {
                    Consumers::InProcess(_) => self.step_in_process().await,
                    Consumers::Processes(_) => self.step_fleet().await,
                },
            };
            if let Err(error) = result {
                self.produce_cancel.cancel();
                if let Some(consumers) = self.consumers.take() {
                    consumers.stop().await;
                }
                return Err(error);
            }
            if self.drained() {
                for (member, _) in &self.armed {
                    say(
                        self.config,
                        format!(
                            "zombie-consumer: processor process {member} never reached its pause's point; that pause did not happen (faults.log holds only those that did)"
                        ),
                    );
                }
                if self.caught_up {
                    self.drain_sink().await;
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages intended in the warm-up are measured apart, by every processor.
    async fn set_warm_up(&mut self) {
        if self.config.warm_up_ms == 0 {
            return;
        }
        let until = idembench_loadgen::producer::now_us() + self.config.warm_up_ms * 1000;
        self.started.progress.set_warm_up_until(until);
        if let Some(sink) = &self.started.sink {
            sink.progress.set_warm_up_until(until);
        }
        if let Some(Consumers::Processes(fleet)) = &mut self.consumers {
            fleet.set_warm_up_until(until).await;
        }
    }

    /// Takes the production report once the producer is done; the drain clock starts then.
    async fn collect_production(&mut self) -> Result<(), RunError> {
        if !self
            .production
            .as_ref()
            .is_some_and(|task| task.is_finished())
        {
            return Ok(());
        }
        let task = self.production.take().expect("checked above");
        let report = task.await.expect("producer task panicked");
        let report = report.map_err(|e| RunError::Config(e.to_string()))?;
        if report.cancelled {
            self.partial_reason = Some(match self.config.on_interrupt {
                OnInterrupt::Drain => "interrupted while producing (Ctrl-C): production stopped early; what was produced was drained".to_string(),
                OnInterrupt::Abandon => "interrupted while producing (Ctrl-C)".to_string(),
            });
        }
        self.drain_deadline =
            Some(Instant::now() + Duration::from_millis(self.config.drain_timeout_ms));
        self.produced = Some(report);
        self.produced_token.cancel();
        Ok(())
    }

    /// An in-process processor: keep the progress line's p99 current, fail with it, or replace
    /// it after a crash.
    async fn step_in_process(&mut self) -> Result<(), RunError> {
        let Some(Consumers::InProcess(processor)) = &self.consumers else {
            unreachable!("called for an in-process processor")
        };
        // Once a second: the p99 so far for the progress line, and the p99 of the second's
        // messages (the histogram's growth since the last read) for the series.
        if self.p99_read.elapsed() >= Duration::from_secs(1) {
            self.p99_read = Instant::now();
            let e2e = processor.snapshot().end_to_end_from_intended_us;
            if !e2e.is_empty() {
                self.p99_us
                    .store(e2e.value_at_quantile(0.99), Ordering::Relaxed);
            }
            let mut second = e2e.clone();
            let grown = match &self.e2e_before {
                Some(before) if before.len() <= e2e.len() => second.subtract(before).is_ok(),
                _ => true,
            };
            if grown && !second.is_empty() {
                self.second_p99_us
                    .store(second.value_at_quantile(0.99), Ordering::Relaxed);
            }
            self.e2e_before = Some(e2e);
        }
        if let Some(reader) = &self.committed_offsets
            && self.offsets_read.elapsed() >= Duration::from_millis(200)
        {
            self.offsets_read = Instant::now();
            if let Err(error) = reader.observe(&self.started.progress).await {
                tracing::warn!(%error);
            }
        }
        if processor.failed().is_cancelled() {
            // A store stayed unreachable through every retry: the harness survives it. Stop
            // producing, audit what was produced, report the run partial and failed.
            self.halt("the processor gave up (a store stayed unreachable through every retry)");
            return Ok(());
        }
        if processor.crashed().is_cancelled() {
            let Some(Consumers::InProcess(crashed)) = self.consumers.take() else {
                unreachable!()
            };
            self.earlier.add(crashed.stop().await?);
            tokio::select! {
                _ = tokio::time::sleep(self.started.faults.plan().restart_delay()) => {}
                _ = self.cancel.cancelled() => {}
            }
            let started = self.started;
            let processor = Processor::start_on(
                &started.spec.processor,
                &started.placement,
                started.progress.clone(),
                started.faults.clone(),
            )?;
            if !processor.wait_for_assignment(Duration::from_secs(30)).await {
                tracing::warn!("the restarted processor got no partitions within 30 s");
            }
            self.consumers = Some(Consumers::InProcess(processor));
        }
        Ok(())
    }

    /// Processor processes: fail with a dead one, kill on schedule, respawn after the restart
    /// delay, and learn progress from the offsets the group coordinator holds.
    async fn step_fleet(&mut self) -> Result<(), RunError> {
        let producing = self.produced.is_none();
        let faults = self.started.faults.clone();
        let restart_delay = faults.plan().restart_delay();
        let Some(Consumers::Processes(fleet)) = &mut self.consumers else {
            unreachable!("called for a fleet")
        };
        if let Err(error) = fleet.check() {
            self.halt(&error);
            return Ok(());
        }
        if self.kills.due(producing).is_some() {
            faults.record(FaultKind::ProcessKill);
            if let Some(member) = fleet.kill_one().await {
                say(
                    self.config,
                    format!("killed processor process {member} (SIGKILL)"),
                );
                self.respawns.push(Instant::now() + restart_delay);
            }
        }
        // Pauses that began now: a SIGSTOP, or a process that stopped itself at its step.
        let mut began = Vec::new();
        match self.pauses.due(producing) {
            Some(Due { lasting, at: None }) => {
                if let Some(member) = fleet.pause_one() {
                    began.push((member, None, lasting));
                }
            }
            Some(Due {
                lasting,
                at: Some(point),
            }) => {
                if let Some(member) = fleet.pause_at(point).await {
                    say(
                        self.config,
                        format!(
                            "armed processor process {member} to stop itself at {} for {lasting:?}",
                            point.name()
                        ),
                    );
                    self.armed.push((member, lasting));
                }
            }
            None => {}
        }
        self.armed
            .retain(|&(member, lasting)| match fleet.take_paused(member) {
                Some(point) => {
                    began.push((member, Some(point), lasting));
                    false
                }
                None => true,
            });
        // A pause lasts from when the process stopped.
        for (member, point, lasting) in began {
            let target = match point {
                Some(point) => format!("processor process {member} at {}", point.name()),
                None => format!("processor process {member}"),
            };
            say(
                self.config,
                format!("paused {target} (SIGSTOP) for {lasting:?}"),
            );
            let logged = faults.begin(FaultKind::ZombieConsumer, Some(target));
            self.resumes
                .push((Instant::now() + lasting, member, logged));
        }
        if let Some(due) = self
            .resumes
            .iter()
            .position(|(at, _, _)| *at <= Instant::now())
        {
            let (_, member, logged) = self.resumes.swap_remove(due);
            if fleet.resume(member) {
                say(
                    self.config,
                    format!("resumed processor process {member} (SIGCONT)"),
                );
            }
            faults.end(logged);
        }
        if let Some(due) = self.respawns.iter().position(|at| *at <= Instant::now()) {
            self.respawns.swap_remove(due);
            fleet.spawn().await.map_err(RunError::Processes)?;
        }
        if self.offsets_read.elapsed() >= Duration::from_millis(200) {
            self.offsets_read = Instant::now();
            if let Err(error) = fleet.observe_committed(&self.started.progress).await {
                tracing::warn!(%error);
            }
        }
        Ok(())
    }

    /// kafka-transactions: stage one has drained, so every transaction has ended; wait until
    /// the sink committed every committed effect, within the drain deadline (or Ctrl-C).
    async fn drain_sink(&mut self) {
        let Some(sink) = &self.started.sink else {
            return;
        };
        let deadline = self.drain_deadline.unwrap_or_else(Instant::now);
        let read_for = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(10))
        };
        let mut ends = match sink.committed_ends(read_for()).await {
            Ok(ends) => ends,
            Err(error) => {
                return self.add_partial(format!(
                    "cannot read the effects the sink must drain: {error}"
                ));
            }
        };
        loop {
            if sink.failed() {
                return self.add_partial(
                    "the sink gave up (Postgres stayed unreachable through every retry)".into(),
                );
            }
            if sink.reached(&ends) {
                // A transaction's commit markers are written after its commit returned, and
                // read_committed stops before an unmarked transaction: read once more, so
                // what the first read could not see yet is waited for too.
                match sink.committed_ends(read_for()).await {
                    Ok(again) if again == ends => {
                        self.sink_drained = true;
                        return;
                    }
                    Ok(again) => ends = again,
                    Err(error) => {
                        return self.add_partial(format!(
                            "cannot read the effects the sink must drain: {error}"
                        ));
                    }
                }
                continue;
            }
            let interrupted = self.cancel.is_cancelled()
                && (self.config.on_interrupt == OnInterrupt::Abandon
                    || abandon_token().is_cancelled());
            if interrupted || Instant::now() > deadline {
                return self.add_partial(format!(
                    "the sink {}; {} offsets of committed effects were still unprocessed",
                    match interrupted {
                        true => "was abandoned (Ctrl-C)".to_string(),
                        false =>
                            format!("did not drain within {} ms", self.config.drain_timeout_ms),
                    },
                    sink.lag(&ends)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// However the run ended, what the sink left unprocessed counts as unprocessed.
    async fn measure_sink_lag(&mut self) {
        let Some(sink) = &self.started.sink else {
            return;
        };
        if self.sink_drained {
            return;
        }
        match sink.committed_ends(Duration::from_secs(10)).await {
            Ok(ends) => self.sink_lag = sink.lag(&ends),
            Err(error) => tracing::warn!(%error, "cannot read how far the sink got"),
        }
    }

    /// Adds `why` to the reasons the run is partial.
    fn add_partial(&mut self, why: String) {
        super::add_reason(&mut self.partial_reason, why);
    }

    /// Ends the run early because the processor failed: production stops, and the run ends
    /// once the producer returned, with what was produced audited and the run reported
    /// partial, naming `why`.
    fn halt(&mut self, why: &str) {
        if self.halted.is_none() {
            tracing::error!("{why}; stopping the run and reporting what it measured");
            self.halted = Some(why.to_string());
            self.produce_cancel.cancel();
        }
    }

    /// Whether supervision ends: everything produced is committed, or Ctrl-C abandons (at
    /// once with `abandon`, at the second Ctrl-C with `drain`), or the drain timed out.
    fn drained(&mut self) -> bool {
        let Some(report) = &self.produced else {
            return false;
        };
        let progress = &self.started.progress;
        if let Some(why) = &self.halted {
            self.partial_reason = Some(format!(
                "{why}; production stopped and the run ended with {} messages unprocessed (counted as lost if never applied)",
                progress.lag(&report.end_offsets).max(0)
            ));
            return true;
        }
        // A fault still in progress (a server down, an outage) heals before the run ends.
        if progress.caught_up(&report.end_offsets) && self.started.faults.open() == 0 {
            self.caught_up = true;
            return true;
        }
        if self.cancel.is_cancelled()
            && (self.config.on_interrupt == OnInterrupt::Abandon || abandon_token().is_cancelled())
        {
            let unprocessed = progress.lag(&report.end_offsets);
            self.partial_reason = Some(format!(
                "{}; abandoned with {unprocessed} messages unprocessed (counted as lost if never applied)",
                self.partial_reason
                    .take()
                    .unwrap_or_else(|| "interrupted while draining (Ctrl-C)".into())
            ));
            return true;
        }
        if self
            .drain_deadline
            .is_some_and(|deadline| Instant::now() > deadline)
        {
            self.partial_reason = Some(format!(
                "the processor did not drain within {} ms; {} messages were still unprocessed",
                self.config.drain_timeout_ms,
                progress.lag(&report.end_offsets)
            ));
            return true;
        }
        false
    }
}

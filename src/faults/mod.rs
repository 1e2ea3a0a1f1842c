//! Fault injection: one typed plan ([`FaultPlan`]), one enum of fault kinds ([`FaultKind`]),
//! and one log ([`Faults::log`]) that the oracle predicts from.
//!
//! - crashes at named points of the flow ([`CrashPoint`], decided here by [`Faults::at`]);
//! - slow business transactions ([`Faults::slow_business`]);
//! - timed faults from outside the flow: a Redis wipe and a Postgres outage ([`timers`],
//!   through the loopback relay of [`outage`]), and SIGKILLs of processor processes on the
//!   [`schedule::KillSchedule`] (carried out by `processor::fleet`).
//!
//! A crash abandons the worker's in-flight work and everything not yet committed, exactly as a
//! killed process would: the processor instance stops without its final offset commit, Redis
//! and Postgres keep what the crash left, and the run starts a fresh consumer in the same group
//! after `restart_delay`, which resumes from the committed offsets. Each (trade, point) crashes
//! at most once, so the redelivered copy gets through.
//!
//! Which trades crash is a pure function of the seed and the trade id (a hash, not a shared
//! RNG), so the same plan crashes the same trades whatever the timing. Every crash is logged
//! with its kind, point, trade id and time; the log is what the oracle predicts from.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub mod control;
pub mod outage;
pub mod schedule;
pub mod services;
pub mod timers;
pub mod toxiproxy;
pub mod trace;

/// Named points of the flow where a crash can be injected.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
    Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum CrashPoint {
    /// The message was received and decoded; nothing was written.
    AfterReceive,
    /// The PROCESSING claim is set in Redis; the business transaction has not run.
    AfterClaim,
    /// The business transaction committed; DONE is not set (where the strategy sets it after).
    AfterDbCommit,
    /// DONE is set in Redis; the business transaction has not committed (dual-redis-first).
    AfterRedisDone,
    /// The strategy finished; the offset is not committed.
    BeforeOffsetCommit,
    /// kafka-transactions: the effects are produced in the open transaction; the offsets are
    /// not sent to it yet.
    AfterProduce,
    /// kafka-transactions: the offsets are in the open transaction; it is not committed.
    AfterSendOffsets,
    /// kafka-transactions: the transaction committed and the process died before it learnt
    /// so (the commit's outcome unknown to it).
    InCommit,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::AfterReceive,
        CrashPoint::AfterClaim,
        CrashPoint::AfterDbCommit,
        CrashPoint::AfterRedisDone,
        CrashPoint::BeforeOffsetCommit,
        CrashPoint::AfterProduce,
        CrashPoint::AfterSendOffsets,
        CrashPoint::InCommit,
    ];

    /// Points only a Kafka transaction passes: no other strategy reaches them.
    pub fn transactional(self) -> bool {
        matches!(
            self,
            CrashPoint::AfterProduce | CrashPoint::AfterSendOffsets | CrashPoint::InCommit
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterReceive => "after-receive",
            CrashPoint::AfterClaim => "after-claim",
            CrashPoint::AfterDbCommit => "after-db-commit",
            CrashPoint::AfterRedisDone => "after-redis-done",
            CrashPoint::BeforeOffsetCommit => "before-offset-commit",
            CrashPoint::AfterProduce => "after-produce",
            CrashPoint::AfterSendOffsets => "after-send-offsets",
            CrashPoint::InCommit => "in-commit",
        }
    }
}

/// Every kind of fault a run can inject; `result.json` names them in kebab-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The processor stops at a [`CrashPoint`], as if it died there.
    Crash,
    /// A trade's business transaction is held open for `slow_ms`.
    Slow,
    /// Every Redis key of the run is deleted, as a restart without persistence would.
    RedisWipe,
    /// A processor process is SIGKILLed.
    ProcessKill,
    /// The processor's Postgres connections are cut and refused for a while.
    DbOutage,
    /// A `redis-server` the stack started is SIGKILLed and started again after `duration_ms`:
    /// without persistence it comes back empty (on a Sentinel or Cluster topology: the
    /// primary, which its replica then copies).
    RedisRestart,
    /// The Redis primary is SIGKILLed and stays down until its replica is promoted (by the
    /// Sentinels, or by the cluster) and `duration_ms` passed; then it rejoins as a replica.
    RedisFailover,
    /// A Kafka broker the stack started (the leader of partition 0 unless `target` names a
    /// broker address) is SIGKILLed and started again after `duration_ms`.
    KafkaBrokerKill,
    /// A processor process is SIGSTOPped for `duration_ms` — longer than its session timeout,
    /// so the group moves its partitions — then SIGCONTed: it finishes its in-flight work and
    /// tries to commit, a zombie.
    ZombieConsumer,
    /// Through Toxiproxy, between the processor and `target` (`redis`, the default, or
    /// `postgres`): replies delayed by `latency_ms` (± `jitter_ms`).
    NetLatency,
    /// Through Toxiproxy: requests reach the server, replies never come back, and each
    /// connection is closed after 1 s — an ambiguous outcome for every command in flight.
    NetTimeout,
    /// Through Toxiproxy: every connection is reset (TCP RST) as it sends.
    NetResetPeer,
    /// Through Toxiproxy: replies limited to `rate_kbps` KB/s.
    NetBandwidth,
    /// kafka-transactions: every transactional producer that reaches `send_offsets` while it
    /// lasts (`duration_ms`) stops answering there for good, as librdkafka's call was seen to
    /// hang after a broker kill. Past the answer timeout (3× the transaction timeout) its
    /// worker fences it with a new producer and reads its unit again.
    ProducerStall,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Slow => "slow",
            FaultKind::RedisWipe => "redis-wipe",
            FaultKind::ProcessKill => "process-kill",
            FaultKind::DbOutage => "db-outage",
            FaultKind::RedisRestart => "redis-restart",
            FaultKind::RedisFailover => "redis-failover",
            FaultKind::KafkaBrokerKill => "kafka-broker-kill",
            FaultKind::ZombieConsumer => "zombie-consumer",
            FaultKind::NetLatency => "net-latency",
            FaultKind::NetTimeout => "net-timeout",
            FaultKind::NetResetPeer => "net-reset-peer",
            FaultKind::NetBandwidth => "net-bandwidth",
            FaultKind::ProducerStall => "producer-stall",
        }
    }

    /// The kinds a fault schedule (`[[scenario.fault]]`, `--fault`) may hold.
    pub const SCHEDULED: [FaultKind; 12] = [
        FaultKind::NetLatency,
        FaultKind::NetTimeout,
        FaultKind::NetResetPeer,
        FaultKind::NetBandwidth,
        FaultKind::RedisWipe,
        FaultKind::DbOutage,
        FaultKind::ProcessKill,
        FaultKind::ZombieConsumer,
        FaultKind::RedisRestart,
        FaultKind::RedisFailover,
        FaultKind::KafkaBrokerKill,
        FaultKind::ProducerStall,
    ];

    /// Kills and restarts a service process: needs a stack that started it.
    pub fn needs_stack(self) -> bool {
        matches!(
            self,
            FaultKind::RedisRestart | FaultKind::RedisFailover | FaultKind::KafkaBrokerKill
        )
    }

    /// Goes through the fault proxy (Toxiproxy).
    pub fn through_proxy(self) -> bool {
        matches!(
            self,
            FaultKind::NetLatency
                | FaultKind::NetTimeout
                | FaultKind::NetResetPeer
                | FaultKind::NetBandwidth
        )
    }

    /// Takes the Redis it hits away (its keys, or the server).
    pub fn loses_redis_keys(self) -> bool {
        matches!(
            self,
            FaultKind::RedisWipe | FaultKind::RedisRestart | FaultKind::RedisFailover
        )
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;

    fn from_str(name: &str) -> Result<FaultKind, String> {
        FaultKind::SCHEDULED
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::SCHEDULED.iter().map(|k| k.name()).collect();
                format!(
                    "unknown fault kind {name:?}; a schedule may hold: {}",
                    names.join(", ")
                )
            })
    }
}

/// One entry of a fault schedule: `[[scenario.fault]]` in a scenario file, `--fault` on the
/// command line. Several per run, each at its own time, healed before the drain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    pub kind: FaultKind,
    /// When, in ms after production starts.
    pub at_ms: u64,
    /// How long it lasts: a restart's downtime, an outage's length (0: the kind's default).
    #[serde(default)]
    pub duration_ms: u64,
    /// Inject it again this often, while production runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// What it hits where the kind has a choice (`kafka-broker-kill`: a broker's
    /// `host:port`; default the leader of partition 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `net-latency`: the delay (default 200) and its jitter (default 0), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// `net-bandwidth`: the rate, KB/s (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbps: Option<u64>,
}

impl ScheduledFault {
    /// Downtime when `duration_ms` is 0: long enough for the kind to mean something (a
    /// failover needs the Sentinels' `down-after-milliseconds` and an election).
    pub fn duration(&self) -> Duration {
        let default_ms = match self.kind {
            FaultKind::RedisFailover => 8_000,
            FaultKind::DbOutage | FaultKind::RedisRestart | FaultKind::KafkaBrokerKill => 2_000,
            // Past the default session timeout (10 s), so the partitions move.
            FaultKind::ZombieConsumer => 15_000,
            FaultKind::ProducerStall => 2_000,
            FaultKind::NetLatency
            | FaultKind::NetTimeout
            | FaultKind::NetResetPeer
            | FaultKind::NetBandwidth => 2_000,
            _ => 0,
        };
        Duration::from_millis(if self.duration_ms == 0 {
            default_ms
        } else {
            self.duration_ms
        })
    }

    /// Parses `--fault KIND@AT_MS[+DURATION_MS][/EVERY_MS][:TARGET]`, e.g.
    /// `redis-restart@5000+2000`, `kafka-broker-kill@8000:127.0.0.1:9093`.
    pub fn parse_flag(text: &str) -> Result<ScheduledFault, String> {
        let shape =
            "expected KIND@AT_MS[+DURATION_MS][/EVERY_MS][:TARGET], e.g. redis-restart@5000+2000";
        let (kind, rest) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: {shape}"))?;
        let kind: FaultKind = kind.trim().parse()?;
        let (times, target) = match rest.split_once(':') {
            Some((times, target)) => (times, Some(target.trim().to_string())),
            None => (rest, None),
        };
        let number = |what: &str, digits: &str| {
            digits.trim().parse::<u64>().map_err(|_| {
                format!("{text:?}: {what} {digits:?} is not a whole number of ms; {shape}")
            })
        };
        let (times, every_ms) = match times.split_once('/') {
            Some((times, every)) => (times, Some(number("EVERY_MS", every)?)),
            None => (times, None),
        };
        let (at, duration_ms) = match times.split_once('+') {
            Some((at, duration)) => (at, number("DURATION_MS", duration)?),
            None => (times, 0),
        };
        Ok(ScheduledFault {
            kind,
            at_ms: number("AT_MS", at)?,
            duration_ms,
            every_ms,
            target,
            latency_ms: None,
            jitter_ms: None,
            rate_kbps: None,
        })
    }

    /// `zombie-consumer:POINT`: the step where the paused process stops itself (the next
    /// time one of its workers reaches it, once the fault is due); `None` without a target:
    /// wherever the SIGSTOP finds the process.
    pub fn stop_point(&self) -> Result<Option<CrashPoint>, String> {
        let Some(target) = self
            .target
            .as_deref()
            .filter(|_| self.kind == FaultKind::ZombieConsumer)
        else {
            return Ok(None);
        };
        target.parse::<CrashPoint>().map(Some).map_err(|_| {
            format!(
                "zombie-consumer:{target}: the target names where the pause lands, one of {}",
                CrashPoint::ALL.map(|p| p.name()).join(", ")
            )
        })
    }

    /// Which link a network fault cuts: `redis` (the default) or `postgres`.
    pub fn link(&self) -> &str {
        self.target.as_deref().unwrap_or("redis")
    }

    /// The Toxiproxy toxic of a network fault, named `name`: on the replies (`downstream`), so
    /// a request still reaches the server.
    pub fn toxic(&self, name: &str) -> serde_json::Value {
        let (kind, attributes) = match self.kind {
            FaultKind::NetLatency => (
                "latency",
                serde_json::json!({
                    "latency": self.latency_ms.unwrap_or(200),
                    "jitter": self.jitter_ms.unwrap_or(0),
                }),
            ),
            // Data is dropped and the connection closed after 1 s, so the client reconnects
            // rather than wait on a connection whose replies are gone.
            FaultKind::NetTimeout => ("timeout", serde_json::json!({ "timeout": 1000 })),
            FaultKind::NetResetPeer => ("reset_peer", serde_json::json!({ "timeout": 0 })),
            _ => (
                "bandwidth",
                serde_json::json!({ "rate": self.rate_kbps.unwrap_or(16) }),
            ),
        };
        serde_json::json!({
            "name": name,
            "type": kind,
            "stream": "downstream",
            "toxicity": 1.0,
            "attributes": attributes,
        })
    }
}

/// What to inject. Serialized into `result.json` under `faults.plan`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Points where crashes are injected (none: no crashes).
    pub points: Vec<CrashPoint>,
    /// Probability that a trade crashes at each listed point, 0.0–1.0.
    pub rate: f64,
    /// Trades that crash at every listed point regardless of `rate`.
    pub trade_ids: Vec<u64>,
    /// Stop injecting after this many crashes (`None`: no limit).
    pub max_crashes: Option<u64>,
    /// Pause before the crashed processor's replacement starts.
    pub restart_delay_ms: u64,
    pub seed: u64,
    /// Delete every idempotency key of the run this long after production starts, as a Redis
    /// restart without persistence would (only this run's keys: Redis may be shared).
    pub redis_wipe_at_ms: Option<u64>,
    /// SIGKILL a processor process at these times after production starts (`--processes`).
    pub kill_at_ms: Vec<u64>,
    /// SIGKILL a processor process this often while production runs (`--processes`).
    pub kill_every_ms: Option<u64>,
    /// Trades whose business transaction takes `slow_ms` longer (every copy of them), so a
    /// PROCESSING claim shorter than that expires while its owner still works.
    pub slow_trades: Vec<u64>,
    pub slow_ms: u64,
    /// Cut the processor's Postgres connections at this time after production starts, and
    /// refuse new ones for `db_outage_ms`.
    pub db_outage_at_ms: Option<u64>,
    pub db_outage_ms: u64,
    /// The fault schedule (`[[scenario.fault]]`, `--fault`), beside the shorthands above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduledFault>,
}

impl FaultPlan {
    /// Every timed fault of the plan as schedule entries: the schedule, and the shorthand
    /// flags (`--redis-wipe-at-ms`, `--db-outage-at-ms`) written as entries.
    pub fn timeline(&self) -> Vec<ScheduledFault> {
        let mut timeline = self.schedule.clone();
        if let Some(at_ms) = self.redis_wipe_at_ms {
            timeline.push(ScheduledFault {
                kind: FaultKind::RedisWipe,
                at_ms,
                duration_ms: 0,
                every_ms: None,
                target: None,
                latency_ms: None,
                jitter_ms: None,
                rate_kbps: None,
            });
        }
        if let Some(at_ms) = self.db_outage_at_ms {
            timeline.push(ScheduledFault {
                kind: FaultKind::DbOutage,
                at_ms,
                duration_ms: self.db_outage_ms,
                every_ms: None,
                target: None,
                latency_ms: None,
                jitter_ms: None,
                rate_kbps: None,
            });
        }
        timeline.sort_by_key(|fault| fault.at_ms);
        timeline
    }

    /// Whether the plan injects `kind` at some time.
    pub fn schedules(&self, kind: FaultKind) -> bool {
        self.timeline().iter().any(|fault| fault.kind == kind)
    }

    pub fn restart_delay(&self) -> Duration {
        Duration::from_millis(self.restart_delay_ms)
    }
}

/// One injected fault, as logged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultEvent {
    pub kind: FaultKind,
    /// Where a crash hit (absent for faults that are not crashes).
    pub point: Option<CrashPoint>,
    /// The trade a crash hit (0 for faults that hit no one trade).
    pub trade_id: u64,
    /// µs since the Unix epoch.
    pub at_us: u64,
    /// What it hit, where that is one thing: a service's address (`127.0.0.1:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// When it was healed (µs since the Unix epoch), for a fault that lasts: the restarted
    /// server answers, the promoted primary serves, the outage ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_us: Option<u64>,
}

/// Decides crashes and logs them. Shared by every worker of every processor incarnation.
#[derive(Debug, Default)]
pub struct Faults {
    plan: FaultPlan,
    threshold: u64,
    crashes: AtomicU64,
    /// Injections at work ([`Faults::injecting`]).
    injecting: AtomicU64,
    /// Touched only when a crash is due — rare by construction — so this lock is not on the
    /// hot path.
    fired: Mutex<Fired>,
    /// Processor incarnations armed so far (the first is 1).
    incarnation: AtomicU32,
    /// What happened to each trade, for the anomalies' timelines.
    trace: trace::Trace,
    /// A `producer-stall` lasts until this time ([`now_us`]; 0: none).
    stalled_until_us: AtomicU64,
    /// Set while a [`Stop`] waits for its point: the hot path reads only this flag.
    stop_armed: AtomicBool,
    stop: Mutex<Option<Stop>>,
}

/// Something to run once, when the flow next reaches `point` (a zombie-consumer pause that
/// lands at a named step: the process stops itself there). See [`Faults::stop_at`].
pub struct Stop {
    pub point: CrashPoint,
    pub then: Box<dyn FnOnce() + Send>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop").field("point", &self.point).finish()
    }
}

#[derive(Debug)]
struct Fired {
    /// (trade, point) pairs that crashed already.
    pairs: HashSet<(u64, CrashPoint)>,
    /// Trades already slowed once (logged once each).
    slowed: HashSet<u64>,
    log: Vec<FaultEvent>,
    /// A process dies at its first crash: once one fired, no other may until the next
    /// incarnation re-arms (two workers reaching crash points at once would otherwise log two
    /// crashes for one death, and the second trade would never meet its point again).
    armed: bool,
}

impl Default for Fired {
    fn default() -> Self {
        Fired {
            pairs: HashSet::new(),
            slowed: HashSet::new(),
            log: Vec::new(),
            armed: true,
        }
    }
}

/// An injection at work; see [`Faults::injecting`].
pub struct Injecting<'a>(&'a Faults);

impl Drop for Injecting<'_> {
    fn drop(&mut self) {
        self.0.injecting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The strategy or processor must stop here, as if the process died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("injected crash {point:?} at trade {trade_id}")]
pub struct Crash {
    pub point: CrashPoint,
    pub trade_id: u64,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Faults {
        let threshold = (plan.rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        Faults {
            plan,
            threshold,
            ..Faults::default()
        }
    }

    pub fn none() -> Faults {
        Faults::default()
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// `Err(Crash)` when a crash is due at `point` for `trade_id`; logs it.
    pub fn at(&self, point: CrashPoint, trade_id: u64) -> Result<(), Crash> {
        if self.stop_armed.load(Ordering::Acquire) {
            self.stop_here(point);
        }
        if !self.plan.points.contains(&point) || !self.due(point, trade_id) {
            return Ok(());
        }
        let mut fired = self.fired.lock().expect("fault log lock");
        if !fired.armed
            || self
                .plan
                .max_crashes
                .is_some_and(|max| self.crashes.load(Ordering::Relaxed) >= max)
            || !fired.pairs.insert((trade_id, point))
        {
            return Ok(());
        }
        fired.armed = false;
        self.crashes.fetch_add(1, Ordering::Relaxed);
        fired.log.push(FaultEvent {
            kind: FaultKind::Crash,
            point: Some(point),
            trade_id,
            at_us: now_us(),
            target: None,
            end_us: None,
        });
        Err(Crash { point, trade_id })
    }

    /// Runs `stop.then` once, on the thread that next reaches `stop.point` (which waits for
    /// it to return), in place of any earlier stop not reached yet.
    pub fn stop_at(&self, stop: Stop) {
        *self.stop.lock().expect("stop lock") = Some(stop);
        self.stop_armed.store(true, Ordering::Release);
    }

    /// Drops a stop not reached yet: the process is stopping, and nobody would wake it.
    pub fn disarm_stop(&self) {
        self.stop_armed.store(false, Ordering::Release);
        self.stop.lock().expect("stop lock").take();
    }

    /// Whether a stop waits for `point`.
    pub fn stop_armed_at(&self, point: CrashPoint) -> bool {
        self.stop_armed.load(Ordering::Acquire)
            && self
                .stop
                .lock()
                .expect("stop lock")
                .as_ref()
                .is_some_and(|stop| stop.point == point)
    }

    fn stop_here(&self, point: CrashPoint) {
        let then = {
            let mut stop = self.stop.lock().expect("stop lock");
            if stop.as_ref().is_none_or(|stop| stop.point != point) {
                return;
            }
            self.stop_armed.store(false, Ordering::Release);
            stop.take().expect("checked").then
        };
        then();
    }

    /// Sleeps inside the business transaction when the plan makes this trade slow. Logs the
    /// first slow attempt of each trade.
    pub async fn slow_business(&self, trade_id: u64) {
        if self.plan.slow_ms == 0 || !self.plan.slow_trades.contains(&trade_id) {
            return;
        }
        {
            let mut fired = self.fired.lock().expect("fault log lock");
            if fired.slowed.insert(trade_id) {
                fired.log.push(FaultEvent {
                    kind: FaultKind::Slow,
                    point: None,
                    trade_id,
                    at_us: now_us(),
                    target: None,
                    end_us: None,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(self.plan.slow_ms)).await;
    }

    /// A new processor incarnation runs: crashes may fire again.
    pub fn arm(&self) {
        self.fired.lock().expect("fault log lock").armed = true;
        self.incarnation.fetch_add(1, Ordering::Relaxed);
    }

    /// Records what just happened to `trade_id`, in the current incarnation.
    pub fn trace(&self, trade_id: u64, what: trace::What) {
        self.trace
            .record(trade_id, self.incarnation.load(Ordering::Relaxed), what);
    }

    /// The trace of every trade, read once the run is over.
    pub fn traced(&self) -> &trace::Trace {
        &self.trace
    }

    /// Logs a fault injected from outside the flow (a Redis wipe, a kill, an outage).
    pub fn record(&self, kind: FaultKind) {
        self.begin(kind, None);
    }

    /// Logs the start of a fault from outside the flow that hit `target`; returns its place in
    /// the log, for [`Faults::end`].
    pub fn begin(&self, kind: FaultKind, target: Option<String>) -> usize {
        let event = FaultEvent {
            kind,
            point: None,
            trade_id: 0,
            at_us: now_us(),
            target,
            end_us: None,
        };
        let mut fired = self.fired.lock().expect("fault log lock");
        fired.log.push(event);
        fired.log.len() - 1
    }

    /// Faults from outside the flow that started and have not healed yet, and injections
    /// still at work (a failover whose old primary is not back yet).
    pub fn open(&self) -> usize {
        let busy = self.injecting.load(Ordering::Acquire) as usize;
        let fired = self.fired.lock().expect("fault log lock");
        fired
            .log
            .iter()
            .filter(|e| {
                e.point.is_none() && e.kind != FaultKind::Slow && e.kind != FaultKind::ProcessKill
            })
            .filter(|e| e.end_us.is_none())
            .count()
            + busy
    }

    /// Marks an injection at work until the guard is dropped: the run does not end under it.
    pub fn injecting(&self) -> Injecting<'_> {
        self.injecting.fetch_add(1, Ordering::AcqRel);
        Injecting(self)
    }

    /// Logs that the fault at `index` was healed, now.
    pub fn end(&self, index: usize) {
        if let Some(event) = self
            .fired
            .lock()
            .expect("fault log lock")
            .log
            .get_mut(index)
        {
            event.end_us = Some(now_us());
        }
    }

    /// Starts a `producer-stall`: lanes reaching `send_offsets` in the next `lasting` hang.
    pub fn stall_producers(&self, lasting: Duration) {
        let until = now_us().saturating_add(lasting.as_micros() as u64);
        self.stalled_until_us.store(until, Ordering::Relaxed);
    }

    /// Whether a `producer-stall` is on now.
    pub fn producer_stalled(&self) -> bool {
        self.stalled_until_us.load(Ordering::Relaxed) > now_us()
    }

    fn due(&self, point: CrashPoint, trade_id: u64) -> bool {
        self.plan.trade_ids.contains(&trade_id)
            || (self.threshold > 0 && mix(self.plan.seed, trade_id, point as u64) < self.threshold)
    }

    pub fn log(&self) -> Vec<FaultEvent> {
        self.fired.lock().expect("fault log lock").log.clone()
    }

    pub fn crashes(&self) -> u64 {
        self.crashes.load(Ordering::Relaxed)
    }

    /// How many faults of `kind` the log holds.
    pub fn count(&self, kind: FaultKind) -> u64 {
        let fired = self.fired.lock().expect("fault log lock");
        fired.log.iter().filter(|event| event.kind == kind).count() as u64
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// SplitMix64 over (seed, trade, point): a deterministic, well-spread per-trade coin.
fn mix(seed: u64, trade_id: u64, point: u64) -> u64 {
    let mut z = seed
        ^ trade_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ point.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn plan(rate: f64) -> FaultPlan {
        FaultPlan {
            points: vec![CrashPoint::AfterClaim],
            rate,
            trade_ids: vec![],
            max_crashes: None,
            restart_delay_ms: 0,
            seed: 7,
            redis_wipe_at_ms: None,
            kill_at_ms: vec![],
            kill_every_ms: None,
            slow_trades: vec![],
            slow_ms: 0,
            db_outage_at_ms: None,
            db_outage_ms: 0,
            schedule: vec![],
        }
    }

    #[test]
    fn one_crash_per_incarnation_and_the_second_trade_crashes_after_the_restart() {
        let faults = Faults::new(plan(1.0));
        assert!(faults.at(CrashPoint::AfterClaim, 5).is_err());
        assert!(
            faults.at(CrashPoint::AfterClaim, 6).is_ok(),
            "the process is already dead"
        );
        faults.arm();
        assert!(
            faults.at(CrashPoint::AfterClaim, 6).is_err(),
            "6 meets its point again after the restart"
        );
        assert_eq!(faults.crashes(), 2);
    }

    #[test]
    fn each_trade_crashes_once_per_point_and_only_at_listed_points() {
        let faults = Faults::new(plan(1.0));
        assert!(faults.at(CrashPoint::AfterClaim, 5).is_err());
        faults.arm();
        assert!(
            faults.at(CrashPoint::AfterClaim, 5).is_ok(),
            "the redelivery gets through"
        );
        assert!(
            faults.at(CrashPoint::AfterDbCommit, 5).is_ok(),
            "not a listed point"
        );
        assert_eq!(faults.log().len(), 1);
        assert_eq!(faults.log()[0].point, Some(CrashPoint::AfterClaim));
    }

    #[test]
    fn a_stop_runs_once_at_its_point_and_only_there_and_crashes_still_fire() {
        let faults = Faults::new(plan(1.0));
        let ran = Arc::new(AtomicU32::new(0));
        let counted = ran.clone();
        faults.stop_at(Stop {
            point: CrashPoint::AfterDbCommit,
            then: Box::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        });
        assert!(
            faults.at(CrashPoint::AfterClaim, 5).is_err(),
            "a crash point"
        );
        assert_eq!(ran.load(Ordering::Relaxed), 0, "not the stop's point");
        assert!(faults.at(CrashPoint::AfterDbCommit, 5).is_ok());
        assert!(faults.at(CrashPoint::AfterDbCommit, 6).is_ok());
        assert_eq!(ran.load(Ordering::Relaxed), 1, "once, at its point");
        assert_eq!(faults.crashes(), 1, "a stop is no crash");
    }

    #[test]
    fn the_rate_picks_a_stable_share_of_trades() {
        let decide = |seed| {
            let faults = Faults::new(FaultPlan { seed, ..plan(0.05) });
            (1..=20_000u64)
                .filter(|id| {
                    faults.arm();
                    faults.at(CrashPoint::AfterClaim, *id).is_err()
                })
                .collect::<Vec<_>>()
        };
        let first = decide(7);
        assert!((800..=1_200).contains(&first.len()), "{}", first.len());
        assert_eq!(first, decide(7), "same seed, same trades");
        assert_ne!(first, decide(8));
    }

    #[test]
    fn named_trades_crash_and_the_cap_holds() {
        let faults = Faults::new(FaultPlan {
            trade_ids: vec![3, 4, 5],
            max_crashes: Some(2),
            ..plan(0.0)
        });
        let crashed: Vec<u64> = (1..=10)
            .filter(|id| {
                faults.arm();
                faults.at(CrashPoint::AfterClaim, *id).is_err()
            })
            .collect();
        assert_eq!(crashed, vec![3, 4]);
    }

    #[test]
    fn a_fault_flag_reads_kind_time_duration_period_and_target() {
        let fault =
            ScheduledFault::parse_flag("kafka-broker-kill@8000+3000/20000:127.0.0.1:9093").unwrap();
        assert_eq!(
            fault,
            ScheduledFault {
                kind: FaultKind::KafkaBrokerKill,
                at_ms: 8000,
                duration_ms: 3000,
                every_ms: Some(20000),
                target: Some("127.0.0.1:9093".into()),
                latency_ms: None,
                jitter_ms: None,
                rate_kbps: None,
            }
        );
        let short = ScheduledFault::parse_flag("redis-restart@5000").unwrap();
        assert_eq!(
            (short.at_ms, short.duration_ms, short.every_ms),
            (5000, 0, None)
        );
        assert_eq!(
            short.duration(),
            Duration::from_millis(2000),
            "the kind's default"
        );
        let unknown = ScheduledFault::parse_flag("crash@5").unwrap_err();
        assert!(unknown.contains("redis-failover"), "{unknown}");
        assert!(
            ScheduledFault::parse_flag("redis-restart")
                .unwrap_err()
                .contains("KIND@AT_MS")
        );
        assert!(
            ScheduledFault::parse_flag("redis-restart@soon")
                .unwrap_err()
                .contains("AT_MS")
        );
    }

    #[test]
    fn a_run_waits_for_open_faults_and_injections_at_work() {
        let faults = Faults::new(plan(0.0));
        let logged = faults.begin(FaultKind::RedisFailover, Some("127.0.0.1:7001".into()));
        assert_eq!(faults.open(), 1, "not healed");
        {
            let _at_work = faults.injecting();
            faults.end(logged);
            assert_eq!(
                faults.open(),
                1,
                "healed, but its old primary is not back yet"
            );
        }
        assert_eq!(faults.open(), 0);
        assert!(faults.log()[0].end_us.is_some());
    }

    #[test]
    fn the_timeline_holds_the_schedule_and_the_shorthands_in_time_order() {
        let plan = FaultPlan {
            redis_wipe_at_ms: Some(9000),
            schedule: vec![ScheduledFault::parse_flag("redis-restart@4000").unwrap()],
            ..plan(0.0)
        };
        let kinds: Vec<FaultKind> = plan.timeline().iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FaultKind::RedisRestart, FaultKind::RedisWipe]);
        assert!(plan.schedules(FaultKind::RedisWipe));
        assert!(!plan.schedules(FaultKind::DbOutage));
    }
}

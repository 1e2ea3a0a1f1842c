//! The oracle: from the fault log and each strategy's own rule, predict what the audit must
//! find — `lost` and `double_applied` — and count disagreements as `mismatches`.
//!
//! A rule predicts an exact number where the run makes it exact and bounds where it does not:
//! with several workers, a crash also cuts other workers' in-flight messages at unknown steps,
//! and a replay after a crash re-runs an unknown window of uncommitted messages. Bounds are
//! honest about that; `max: null` means unbounded. A mismatch is never silent: it is counted
//! in `result.json` and printed in the summary.

use serde::{Deserialize, Serialize};

use crate::faults::{CrashPoint, FaultEvent, FaultKind};
use crate::strategy::parts::OnInProgress;
use crate::strategy::{Capabilities, StrategyKind};

/// An inclusive range; `max: None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    pub min: u64,
    pub max: Option<u64>,
}

impl Bounds {
    pub const ZERO: Bounds = Bounds {
        min: 0,
        max: Some(0),
    };

    pub fn exactly(n: u64) -> Bounds {
        Bounds {
            min: n,
            max: Some(n),
        }
    }

    fn at_least(n: u64) -> Bounds {
        Bounds { min: n, max: None }
    }

    fn up_to(n: u64) -> Bounds {
        Bounds {
            min: 0,
            max: Some(n),
        }
    }

    pub fn contains(self, n: u64) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }

    fn plus(self, other: Bounds) -> Bounds {
        Bounds {
            min: self.min + other.min,
            max: self.max.zip(other.max).map(|(a, b)| a + b),
        }
    }
}

/// What the oracle needs to know about a run besides the fault log.
#[derive(Clone, Copy, Debug)]
pub struct RunShape {
    pub strategy: StrategyKind,
    pub unique_constraint: bool,
    pub on_in_progress: OnInProgress,
    pub workers: usize,
    pub processing_ttl_ms: u64,
    pub done_ttl_ms: u64,
    pub restart_delay_ms: u64,
    /// Logical trades the ledger says were sent more than once.
    pub duplicated_trades: u64,
    /// Of those, how many had their extra copy sent late, and how late.
    pub late_duplicated_trades: u64,
    pub late_delay_ms: u64,
    /// How long the group waits before it moves a killed process's partitions.
    pub session_timeout_ms: u64,
    /// How much slower the slow trades' business transactions are (0: none are).
    pub slow_ms: u64,
    /// Slow trades whose extra copy is sent late / right after the original.
    pub slow_late_copies: u64,
    pub slow_immediate_copies: u64,
    /// Copies of one trade reach different consumers (`--duplicate-partition next`).
    pub copies_elsewhere: bool,
    /// ...and each partition has a worker of its own, so they run at the same time for sure.
    pub copies_concurrent: bool,
    /// Processor processes (0: in-process); each has `workers` workers.
    pub processes: usize,
    /// Messages produced but never processed (a run abandoned or undrained): each may be a
    /// trade that was never applied.
    pub unprocessed: u64,
    /// Keys Redis evicted under `maxmemory` during the run (DONE marks and claims among them).
    pub redis_evictions: u64,
    /// The Redis the stack started keeps an append-only file, which a restart reloads: what a
    /// killed server had executed survives it (`--redis-persistence aof-everysec`).
    pub redis_persistent: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Prediction {
    pub lost: Bounds,
    pub double_applied: Bounds,
    /// The rules that contributed, in words, each once with how often it applied.
    pub rules: Vec<Rule>,
}

/// One rule of the oracle and how many times it applied in the run (once per crash, kill...).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "RuleRecord")]
pub struct Rule {
    pub rule: String,
    pub count: u64,
}

/// Results written before rules carried counts list each application as a plain string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RuleRecord {
    Counted { rule: String, count: u64 },
    Text(String),
}

impl From<RuleRecord> for Rule {
    fn from(record: RuleRecord) -> Rule {
        match record {
            RuleRecord::Counted { rule, count } => Rule { rule, count },
            RuleRecord::Text(rule) => Rule { rule, count: 1 },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OracleReport {
    pub predicted: Prediction,
    pub observed_lost: u64,
    pub observed_double_applied: u64,
    /// Predictions the audit contradicts (0 when every observed count lies in its bounds).
    pub mismatches: u64,
    /// kafka-transactions: messages without a committed effect, and with more than one, at
    /// read_committed — Kafka's own exactly-once, which must hold whatever the fault (a stream
    /// duplicate is two messages, each with its effect); each non-zero count is a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_kafka_lost: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_kafka_doubled: Option<u64>,
}

impl OracleReport {
    pub fn compare(predicted: Prediction, lost: u64, double_applied: u64) -> OracleReport {
        let mismatches = u64::from(!predicted.lost.contains(lost))
            + u64::from(!predicted.double_applied.contains(double_applied));
        OracleReport {
            predicted,
            observed_lost: lost,
            observed_double_applied: double_applied,
            mismatches,
            observed_kafka_lost: None,
            observed_kafka_doubled: None,
        }
    }

    /// With the Kafka side of kafka-transactions: one committed effect per message, none lost
    /// (beyond the `unprocessed` messages of a run that stopped early) and none doubled.
    pub fn with_kafka_effects(mut self, lost: u64, doubled: u64, unprocessed: u64) -> OracleReport {
        self.predicted.rules.push(Rule {
            rule: "kafka-transactions: exactly one committed effect per message at read_committed"
                .into(),
            count: 1,
        });
        self.mismatches += u64::from(lost > unprocessed) + u64::from(doubled > 0);
        self.observed_kafka_lost = Some(lost);
        self.observed_kafka_doubled = Some(doubled);
        self
    }
}

/// The prediction as the rules build it up.
struct Tally {
    lost: Bounds,
    double: Bounds,
    rules: Vec<Rule>,
}

impl Tally {
    fn rule(&mut self, text: impl Into<String>) {
        let text = text.into();
        match self.rules.iter_mut().find(|rule| rule.rule == text) {
            Some(rule) => rule.count += 1,
            None => self.rules.push(Rule {
                rule: text,
                count: 1,
            }),
        }
    }
}

/// What the fault log says, counted once.
struct Facts {
    crashes: Vec<CrashPoint>,
    wiped: bool,
    kills: u64,
    outages: u64,
    /// Redis servers killed (restarts and failovers): replies cut in flight.
    redis_kills: u64,
    failovers: u64,
    broker_kills: u64,
    zombies: u64,
    /// Network faults that cut replies (timeouts, resets), on the Redis and the Postgres link.
    cut_replies: (u64, u64),
    can: Capabilities,
}

pub fn predict(shape: &RunShape, log: &[FaultEvent]) -> Prediction {
    let count = |kind| log.iter().filter(|event| event.kind == kind).count() as u64;
    let facts = Facts {
        crashes: log.iter().filter_map(|event| event.point).collect(),
        wiped: log.iter().any(|event| event.kind.loses_redis_keys()) || shape.redis_evictions > 0,
        kills: count(FaultKind::ProcessKill),
        outages: count(FaultKind::DbOutage),
        redis_kills: count(FaultKind::RedisRestart) + count(FaultKind::RedisFailover),
        failovers: count(FaultKind::RedisFailover),
        broker_kills: count(FaultKind::KafkaBrokerKill),
        zombies: count(FaultKind::ZombieConsumer),
        cut_replies: {
            let cut = |postgres: bool| {
                log.iter()
                    .filter(|e| matches!(e.kind, FaultKind::NetTimeout | FaultKind::NetResetPeer))
                    .filter(|e| {
                        e.target
                            .as_deref()
                            .is_some_and(|t| t.starts_with("postgres"))
                            == postgres
                    })
                    .count() as u64
            };
            (cut(false), cut(true))
        },
        can: shape.strategy.capabilities(),
    };
    let mut tally = Tally {
        lost: Bounds::ZERO,
        double: Bounds::ZERO,
        rules: Vec::new(),
    };
    stream_duplicates(shape, &facts, &mut tally);
    late_copies(shape, &facts, &mut tally);
    for point in &facts.crashes {
        crash(shape, &facts, *point, &mut tally);
    }
    crashes_cut_other_workers(shape, &facts, &mut tally);
    slow_trades(shape, &facts, &mut tally);
    kills(shape, &facts, &mut tally);
    outages(shape, &facts, &mut tally);
    redis_kills(shape, &facts, &mut tally);
    broker_kills(shape, &facts, &mut tally);
    zombies(shape, &facts, &mut tally);
    cut_replies(shape, &facts, &mut tally);
    if shape.unprocessed > 0 {
        tally.lost = tally.lost.plus(Bounds::up_to(shape.unprocessed));
        tally.rule(format!(
            "the run stopped with {} messages unprocessed: up to that many trades were never applied",
            shape.unprocessed
        ));
    }
    if facts.can.database_decides && !facts.can.stores_offsets {
        tally.rule(format!(
            "{}: the database decides, nothing lost or doubled",
            shape.strategy.name()
        ));
    }
    if facts.can.kafka_transactions {
        tally.rule(
            "kafka-transactions: a Kafka transaction decides, then the sink's in Postgres; a crash at any step loses or doubles no message",
        );
    }
    Prediction {
        lost: tally.lost,
        double_applied: tally.double,
        rules: tally.rules,
    }
}

/// Duplicates in the stream itself, for a strategy that knows messages, not trades.
fn stream_duplicates(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if facts.can.knows_messages_only && !shape.unique_constraint {
        tally.double = tally.double.plus(Bounds::exactly(shape.duplicated_trades));
        tally.rule(format!(
            "{}: every trade sent twice applies twice without the unique constraint",
            shape.strategy.name()
        ));
    }
}

/// Late copies, and copies after a Redis wipe, where only a DONE mark stands in their way.
fn late_copies(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if !facts.can.redis_decides || shape.unique_constraint {
        return;
    }
    if shape.late_duplicated_trades > 0 {
        if shape.late_delay_ms > shape.done_ttl_ms + 1_000 {
            tally.double = tally
                .double
                .plus(Bounds::exactly(shape.late_duplicated_trades));
            tally.rule("late copies arrive after DONE expired: each applies again");
        } else if shape.late_delay_ms + 1_000 > shape.done_ttl_ms || facts.wiped {
            tally.double = tally
                .double
                .plus(Bounds::up_to(shape.late_duplicated_trades));
            tally.rule("late copies near done_ttl, or after a Redis wipe, restart, failover or eviction, may apply again");
        }
    } else if facts.wiped {
        tally.double = tally.double.plus(Bounds::up_to(shape.duplicated_trades));
        tally.rule(
            "a Redis wipe, restart, failover or eviction forgets DONE: copies after it may apply again",
        );
    }
}

/// One crash, by the strategy's rule at its point.
fn crash(shape: &RunShape, facts: &Facts, point: CrashPoint, tally: &mut Tally) {
    let strategy = shape.strategy;
    let ttl_outlives_restart = shape.restart_delay_ms + 1_000 < shape.processing_ttl_ms;
    let ttl_expires_before_restart = shape.restart_delay_ms > shape.processing_ttl_ms + 200;
    match point {
        CrashPoint::AfterRedisDone if strategy == StrategyKind::DualRedisFirst => {
            tally.lost = tally.lost.plus(Bounds::exactly(1));
            tally.rule("dual-redis-first after-redis-done: DONE without a commit loses the trade");
        }
        CrashPoint::AfterClaim
            if facts.can.claims && shape.on_in_progress == OnInProgress::Skip =>
        {
            if ttl_outlives_restart {
                tally.lost = tally.lost.plus(Bounds::exactly(1));
                tally.rule(format!(
                    "{} after-claim: the redelivery finds PROCESSING and skips: lost",
                    strategy.name()
                ));
            } else if !ttl_expires_before_restart {
                tally.lost = tally.lost.plus(Bounds::up_to(1));
            }
        }
        CrashPoint::AfterDbCommit if facts.can.redis_decides && !shape.unique_constraint => {
            if ttl_expires_before_restart {
                tally.double = tally.double.plus(Bounds::exactly(1));
                tally.rule("redis-only after-db-commit past the TTL: the redelivery applies again");
            } else if !ttl_outlives_restart {
                tally.double = tally.double.plus(Bounds::up_to(1));
            }
        }
        CrashPoint::AfterDbCommit | CrashPoint::BeforeOffsetCommit
            if strategy == StrategyKind::None && !shape.unique_constraint =>
        {
            // The crashed trade applies again, and so may the rest of the replayed window.
            let at_least = u64::from(point == CrashPoint::AfterDbCommit);
            tally.double = tally.double.plus(Bounds::at_least(at_least));
            tally.rule("none: a replay re-applies every uncommitted message");
        }
        _ => {}
    }
}

/// Other workers' in-flight messages, cut at unknown steps by each crash.
fn crashes_cut_other_workers(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if facts.crashes.is_empty() || shape.workers <= 1 || facts.can.database_decides {
        return;
    }
    if facts.can.claims {
        tally.lost = Bounds::at_least(tally.lost.min);
        if !shape.unique_constraint {
            tally.double = Bounds::at_least(tally.double.min);
        }
    }
    if shape.strategy == StrategyKind::None && !shape.unique_constraint {
        tally.double = Bounds::at_least(tally.double.min);
    }
    tally.rule("several workers: each crash also cuts their in-flight work, so counts are bounds");
}

/// A slow business step outlives its PROCESSING claim; a copy on another consumer that
/// arrives after the claim expired, while the owner still works, claims and applies again.
fn slow_trades(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if shape.slow_ms == 0
        || !shape.copies_elsewhere
        || !facts.can.redis_decides
        || shape.unique_constraint
    {
        return;
    }
    let ttl = shape.processing_ttl_ms;
    let (late, slow) = (shape.late_delay_ms, shape.slow_ms);
    let margin = 300;
    let in_window = ttl + margin < late && late + margin < slow;
    let near_window = late + margin > ttl && late < slow + margin;
    if shape.on_in_progress == OnInProgress::Skip {
        if in_window && shape.copies_concurrent {
            tally.double = tally.double.plus(Bounds::exactly(shape.slow_late_copies));
            tally.rule("slow trades: each late copy arrives after the claim expired, while the owner still works: applied twice");
        } else if in_window || near_window {
            tally.double = tally.double.plus(Bounds::up_to(shape.slow_late_copies));
            tally.rule("slow trades: late copies near the claim's expiry may apply twice");
        }
        if ttl < 200 {
            tally.double = tally
                .double
                .plus(Bounds::up_to(shape.slow_immediate_copies));
        }
    } else if ttl < slow {
        // `wait` outwaits the claim, not the owner: once it expires the copy claims.
        tally.double = tally.double.plus(Bounds::up_to(
            shape.slow_late_copies + shape.slow_immediate_copies,
        ));
        tally.rule("slow trades under wait: a waiting copy claims once the claim expires");
    }
}

/// SIGKILLed processes: each dies with at most one message per worker between its steps.
fn kills(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if facts.kills == 0 || facts.can.database_decides {
        return;
    }
    let in_flight = facts.kills * shape.workers as u64;
    // The killed process's partitions move after about the session timeout.
    let claim_outlives_move = shape.processing_ttl_ms > shape.session_timeout_ms + 30_000;
    let claim_expires_first = shape.processing_ttl_ms * 2 < shape.session_timeout_ms;
    if facts.can.claims && shape.on_in_progress == OnInProgress::Skip && !claim_expires_first {
        tally.lost = tally.lost.plus(Bounds::up_to(in_flight));
        tally.rule(format!(
            "{}: a kill strands at most one PROCESSING claim per worker ({in_flight}): the redelivery skips it, lost",
            shape.strategy.name()
        ));
    }
    if facts.can.redis_decides && !shape.unique_constraint && !claim_outlives_move {
        tally.double = tally.double.plus(Bounds::up_to(in_flight));
        tally.rule(
            "a claim that expires before the partition moves lets a committed trade apply again",
        );
    }
    if shape.strategy == StrategyKind::None && !shape.unique_constraint {
        tally.double = Bounds::at_least(tally.double.min);
        tally.rule("none: the new owner replays everything uncommitted");
    }
}

/// A Postgres outage: every transaction fails and is retried in place. A COMMIT cut while in
/// flight may have committed; only a check inside the transaction (inbox, offsets,
/// constraint) makes its retry harmless.
fn outages(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    let unchecked = facts.can.redis_decides || shape.strategy == StrategyKind::None;
    if facts.outages == 0 || !unchecked || shape.unique_constraint {
        return;
    }
    let in_flight = facts.outages * (shape.workers * shape.processes.max(1)) as u64;
    tally.double = tally.double.plus(Bounds::up_to(in_flight));
    tally.rule(format!(
        "a Postgres outage may cut up to {in_flight} COMMIT(s) in flight; a retry of one that had committed applies again"
    ));
}

/// A Redis server SIGKILLed (a restart, or a failover's primary): every command in flight loses
/// its reply. A claim's `SET NX` may have landed; on a failover it may also have reached the
/// replica that now serves, so the step's retry meets its own PROCESSING claim and, skipping,
/// loses the trade. A restart without persistence forgets the claim, so its retry claims again.
/// Where the outage outlasts a worker's retries (about 5 s) the processor restarts and the
/// redelivery meets whatever survived; hence bounds, by the workers in flight.
fn redis_kills(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if facts.redis_kills == 0 || facts.can.database_decides {
        return;
    }
    let workers = (shape.workers * shape.processes.max(1)) as u64;
    let in_flight = facts.redis_kills * workers;
    if facts.can.claims && shape.on_in_progress == OnInProgress::Skip && facts.failovers > 0 {
        let bound = facts.failovers * workers;
        tally.lost = tally.lost.plus(Bounds::up_to(bound));
        tally.rule(format!(
            "{}: a failover may keep a claim whose reply it cut (replicated before the kill): the retry skips its own claim, up to {bound} lost",
            shape.strategy.name()
        ));
    }
    let restarts = facts.redis_kills - facts.failovers;
    if facts.can.claims
        && shape.on_in_progress == OnInProgress::Skip
        && shape.redis_persistent
        && restarts > 0
    {
        let bound = restarts * workers;
        tally.lost = tally.lost.plus(Bounds::up_to(bound));
        tally.rule(format!(
            "{}: a restart that reloads its append-only file keeps a claim whose reply the kill cut: the retry skips its own claim, up to {bound} lost",
            shape.strategy.name()
        ));
    }
    if facts.can.redis_decides && !shape.unique_constraint {
        tally.double = tally.double.plus(Bounds::up_to(in_flight));
        tally.rule(format!(
            "a killed Redis cuts up to {in_flight} message(s) in flight; one whose DONE was lost after its business commit may apply again"
        ));
    }
}

/// A Kafka broker SIGKILLed: the producer (idempotent, acks=all) retries to the new leader,
/// so the stream loses and doubles nothing; consumers may see uncommitted messages again,
/// which only a strategy that knows messages, not trades, applies twice.
fn broker_kills(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if facts.broker_kills == 0 {
        return;
    }
    if shape.strategy == StrategyKind::None && !shape.unique_constraint {
        tally.double = Bounds::at_least(tally.double.min);
        tally.rule("none: a broker kill may redeliver uncommitted messages, each applied again");
    } else {
        tally.rule(format!(
            "{}: a broker kill only redelivers; the strategy absorbs redeliveries",
            shape.strategy.name()
        ));
    }
}

/// A network fault that cuts replies (`net-timeout`: requests arrive, replies never do;
/// `net-reset-peer`: connections reset as they send). On the Redis link a claim's `SET NX` may
/// have run with its reply lost: the step's retry meets its own PROCESSING claim and, skipping,
/// loses the trade — one per worker in flight per fault. On the Postgres link a COMMIT may have
/// committed with its reply lost: only a check inside the transaction makes its retry harmless.
/// Latency and bandwidth faults only slow replies, within the command timeout: no rule.
fn cut_replies(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    let per_fault = (shape.workers * shape.processes.max(1)) as u64;
    let (redis, postgres) = facts.cut_replies;
    if redis > 0 && facts.can.claims && shape.on_in_progress == OnInProgress::Skip {
        let bound = redis * per_fault;
        tally.lost = tally.lost.plus(Bounds::up_to(bound));
        tally.rule(format!(
            "{}: a claim whose reply the network cut ran anyway; its retry meets its own PROCESSING claim and skips, up to {bound} lost",
            shape.strategy.name()
        ));
    }
    let unchecked = facts.can.redis_decides || shape.strategy == StrategyKind::None;
    if postgres > 0 && unchecked && !shape.unique_constraint {
        let bound = postgres * per_fault;
        tally.double = tally.double.plus(Bounds::up_to(bound));
        tally.rule(format!(
            "a COMMIT whose reply the network cut may have committed; its retry applies again, up to {bound}"
        ));
    }
}

/// A zombie consumer: a processor process paused past its session, whose partitions the group
/// gave to another member, wakes and finishes what it held. Its in-flight messages (a worker's
/// each) and whatever it processed but had not committed are processed again by the new owner.
/// A claim (its TTL outlives the pause), a DONE mark, an inbox row or the constraint stops the
/// second application; the in-flight work is finished, never dropped, so nothing is lost. Only
/// what knows messages, not trades, applies twice: `none` without the constraint (every
/// redelivered copy), and db-offsets without it, whose zombie transaction and the new owner's
/// may both commit one offset (up to a worker's message each).
///
/// One way to lose: a pause that lands while a claim's `SET NX` is on its way. The command ran;
/// the paused process's client gives up on it (its timeout passed while it slept) the moment
/// it wakes, and the step's retry meets its own PROCESSING claim and skips the trade — as
/// after a cut reply. Up to one per worker of the paused process, per pause (seen: 1 in 3 of 8
/// runs of `reports/production-faults/`).
fn zombies(shape: &RunShape, facts: &Facts, tally: &mut Tally) {
    if facts.zombies == 0 {
        return;
    }
    if facts.can.claims && shape.on_in_progress == OnInProgress::Skip {
        let bound = facts.zombies * shape.workers as u64;
        tally.lost = tally.lost.plus(Bounds::up_to(bound));
        tally.rule(format!(
            "{}: a pause during a claim's SET NX times it out at wake; the retry skips its own claim, up to {bound} lost",
            shape.strategy.name()
        ));
    }
    if shape.unique_constraint {
        return;
    }
    if shape.strategy == StrategyKind::None {
        tally.double = Bounds::at_least(tally.double.min);
        tally.rule("none: the new owner replays everything the zombie had not committed");
    } else if facts.can.stores_offsets && !facts.can.kafka_transactions {
        // kafka-transactions: the zombie's offsets carry its old generation, so the group
        // coordinator refuses them and its transaction aborts (KIP-447): nothing doubles.
        let bound = facts.zombies * shape.workers as u64;
        tally.double = tally.double.plus(Bounds::up_to(bound));
        tally.rule(format!(
            "{}: a zombie's open transaction and the new owner's may both apply its in-flight messages, up to {bound}",
            shape.strategy.name()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(strategy: StrategyKind) -> RunShape {
        RunShape {
            strategy,
            unique_constraint: true,
            on_in_progress: OnInProgress::Skip,
            workers: 1,
            processing_ttl_ms: 300_000,
            done_ttl_ms: 604_800_000,
            restart_delay_ms: 500,
            duplicated_trades: 40,
            late_duplicated_trades: 0,
            late_delay_ms: 1_000,
            session_timeout_ms: 10_000,
            slow_ms: 0,
            slow_late_copies: 0,
            slow_immediate_copies: 0,
            copies_elsewhere: false,
            copies_concurrent: false,
            processes: 0,
            unprocessed: 0,
            redis_evictions: 0,
            redis_persistent: false,
        }
    }

    fn crashes(point: CrashPoint, n: u64) -> Vec<FaultEvent> {
        (1..=n)
            .map(|trade_id| FaultEvent {
                kind: FaultKind::Crash,
                point: Some(point),
                trade_id,
                at_us: 0,
                target: None,
                end_us: None,
            })
            .collect()
    }

    #[test]
    fn exact_rules() {
        let p = predict(
            &shape(StrategyKind::DualRedisFirst),
            &crashes(CrashPoint::AfterRedisDone, 3),
        );
        assert_eq!(
            (p.lost, p.double_applied),
            (Bounds::exactly(3), Bounds::ZERO)
        );
        let p = predict(
            &shape(StrategyKind::RedisOnly),
            &crashes(CrashPoint::AfterClaim, 2),
        );
        assert_eq!(p.lost, Bounds::exactly(2));
        let past_ttl = RunShape {
            unique_constraint: false,
            processing_ttl_ms: 300,
            restart_delay_ms: 1_000,
            ..shape(StrategyKind::RedisOnly)
        };
        let p = predict(&past_ttl, &crashes(CrashPoint::AfterDbCommit, 5));
        assert_eq!(
            (p.lost, p.double_applied),
            (Bounds::ZERO, Bounds::exactly(5))
        );
        let p = predict(
            &RunShape {
                unique_constraint: false,
                ..shape(StrategyKind::DbOffsets)
            },
            &[],
        );
        assert_eq!(p.double_applied, Bounds::exactly(40));
        let p = predict(
            &RunShape {
                workers: 4,
                ..shape(StrategyKind::DbOnly)
            },
            &crashes(CrashPoint::AfterDbCommit, 9),
        );
        assert_eq!((p.lost, p.double_applied), (Bounds::ZERO, Bounds::ZERO));
    }

    #[test]
    fn several_workers_make_claim_strategies_bounds() {
        let p = predict(
            &RunShape {
                workers: 4,
                ..shape(StrategyKind::RedisOnly)
            },
            &crashes(CrashPoint::AfterClaim, 2),
        );
        assert_eq!(p.lost, Bounds { min: 2, max: None });
        assert!(p.lost.contains(7) && !p.lost.contains(1));
    }

    #[test]
    fn a_zombie_may_lose_a_claim_it_timed_out_where_redis_claims_and_nowhere_else() {
        let pause = vec![FaultEvent {
            kind: FaultKind::ZombieConsumer,
            point: None,
            trade_id: 0,
            at_us: 0,
            target: Some("processor process 1".into()),
            end_us: Some(9_000_000),
        }];
        let two = |strategy| RunShape {
            workers: 2,
            ..shape(strategy)
        };
        let p = predict(&two(StrategyKind::RedisOnly), &pause);
        assert_eq!((p.lost, p.double_applied), (Bounds::up_to(2), Bounds::ZERO));
        let p = predict(&two(StrategyKind::DbOnly), &pause);
        assert_eq!((p.lost, p.double_applied), (Bounds::ZERO, Bounds::ZERO));
        let waits = RunShape {
            on_in_progress: OnInProgress::Wait,
            ..two(StrategyKind::RedisOnly)
        };
        assert_eq!(predict(&waits, &pause).lost, Bounds::ZERO);
    }

    #[test]
    fn kills_bound_claims_by_workers_and_leave_the_database_exact() {
        let kill = |n: usize| -> Vec<FaultEvent> {
            (0..n)
                .map(|_| FaultEvent {
                    kind: FaultKind::ProcessKill,
                    point: None,
                    trade_id: 0,
                    at_us: 0,
                    target: None,
                    end_us: None,
                })
                .collect()
        };
        let two_workers = |strategy| RunShape {
            workers: 2,
            unique_constraint: false,
            ..shape(strategy)
        };
        let p = predict(&two_workers(StrategyKind::RedisOnly), &kill(3));
        assert_eq!((p.lost, p.double_applied), (Bounds::up_to(6), Bounds::ZERO));
        let short_ttl = RunShape {
            processing_ttl_ms: 1_000,
            ..two_workers(StrategyKind::RedisOnly)
        };
        let p = predict(&short_ttl, &kill(1));
        assert_eq!((p.lost, p.double_applied), (Bounds::ZERO, Bounds::up_to(2)));
        let p = predict(&two_workers(StrategyKind::DbOnly), &kill(5));
        assert_eq!((p.lost, p.double_applied), (Bounds::ZERO, Bounds::ZERO));
        let p = predict(&two_workers(StrategyKind::None), &kill(1));
        assert_eq!(p.double_applied.max, None);
    }

    #[test]
    fn slow_trades_double_only_where_the_claim_expires_under_a_working_owner() {
        let slow = RunShape {
            unique_constraint: false,
            processing_ttl_ms: 500,
            late_delay_ms: 1_200,
            slow_ms: 2_500,
            slow_late_copies: 3,
            copies_elsewhere: true,
            copies_concurrent: true,
            ..shape(StrategyKind::RedisOnly)
        };
        assert_eq!(predict(&slow, &[]).double_applied, Bounds::exactly(3));
        let with_constraint = RunShape {
            unique_constraint: true,
            ..slow
        };
        assert_eq!(predict(&with_constraint, &[]).double_applied, Bounds::ZERO);
        let same_partition = RunShape {
            copies_elsewhere: false,
            ..slow
        };
        assert_eq!(predict(&same_partition, &[]).double_applied, Bounds::ZERO);
        let claim_outlives = RunShape {
            processing_ttl_ms: 300_000,
            ..slow
        };
        assert_eq!(predict(&claim_outlives, &[]).double_applied, Bounds::ZERO);
        let db_only = RunShape {
            strategy: StrategyKind::DbOnly,
            ..slow
        };
        assert_eq!(predict(&db_only, &[]).double_applied, Bounds::ZERO);
    }

    #[test]
    fn a_restart_that_keeps_its_file_may_keep_a_claim_whose_reply_it_cut() {
        let restart = vec![FaultEvent {
            kind: FaultKind::RedisRestart,
            point: None,
            trade_id: 0,
            at_us: 0,
            target: None,
            end_us: None,
        }];
        let forgets = predict(&shape(StrategyKind::RedisOnly), &restart);
        assert_eq!(forgets.lost, Bounds::ZERO, "{:?}", forgets.rules);
        let keeps = predict(
            &RunShape {
                redis_persistent: true,
                workers: 4,
                ..shape(StrategyKind::RedisOnly)
            },
            &restart,
        );
        assert_eq!(keeps.lost, Bounds::up_to(4), "{:?}", keeps.rules);
        // Where the database decides, a kept claim decides nothing.
        let db = predict(
            &RunShape {
                redis_persistent: true,
                ..shape(StrategyKind::DbAuthorityRedisCache)
            },
            &restart,
        );
        assert_eq!(db.lost, Bounds::ZERO);
    }

    #[test]
    fn kafka_transactions_is_exact_per_message_whatever_the_crash() {
        for point in [
            CrashPoint::AfterProduce,
            CrashPoint::AfterSendOffsets,
            CrashPoint::InCommit,
        ] {
            let with_constraint =
                predict(&shape(StrategyKind::KafkaTransactions), &crashes(point, 3));
            assert_eq!(with_constraint.lost, Bounds::exactly(0), "{point:?}");
            assert_eq!(
                with_constraint.double_applied,
                Bounds::exactly(0),
                "{point:?}"
            );
            // Without the constraint a trade sent twice is two messages: both apply.
            let without = predict(
                &RunShape {
                    unique_constraint: false,
                    duplicated_trades: 7,
                    ..shape(StrategyKind::KafkaTransactions)
                },
                &crashes(point, 3),
            );
            assert_eq!(without.double_applied, Bounds::exactly(7), "{point:?}");
        }
    }

    #[test]
    fn a_doubled_kafka_effect_is_a_mismatch_even_where_postgres_counts_agree() {
        // A stream duplicate doubles in Postgres as predicted, and hides a message whose
        // effect Kafka committed twice: only the Kafka side sees it.
        let predicted = predict(
            &RunShape {
                unique_constraint: false,
                duplicated_trades: 290,
                ..shape(StrategyKind::KafkaTransactions)
            },
            &[],
        );
        let agrees = OracleReport::compare(predicted.clone(), 0, 290);
        assert_eq!(agrees.clone().with_kafka_effects(0, 0, 0).mismatches, 0);
        let doubled = agrees.clone().with_kafka_effects(0, 1, 0);
        assert_eq!(doubled.mismatches, 1);
        assert_eq!(doubled.observed_kafka_doubled, Some(1));
        // Lost effects beyond what a partial run left unprocessed.
        assert_eq!(agrees.clone().with_kafka_effects(5, 0, 5).mismatches, 0);
        assert_eq!(agrees.with_kafka_effects(6, 0, 5).mismatches, 1);
    }

    #[test]
    fn a_mismatch_is_counted() {
        let report = OracleReport::compare(predict(&shape(StrategyKind::DbOnly), &[]), 1, 0);
        assert_eq!(report.mismatches, 1);
        let report = OracleReport::compare(predict(&shape(StrategyKind::DbOnly), &[]), 0, 0);
        assert_eq!(report.mismatches, 0);
    }
}

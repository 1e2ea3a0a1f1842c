//! The oracle: from the fault log and each strategy's own rule, predict what the audit must
//! find — `lost` and `double_applied` — and count disagreements as `mismatches`.
//!
//! A rule predicts an exact number where the run makes it exact and bounds where it does not:
//! with several workers, a crash also cuts other workers' in-flight messages at unknown steps,
//! and a replay after a crash re-runs an unknown window of uncommitted messages. Bounds are
//! honest about that; `max: null` means unbounded. A mismatch is never silent: it is counted
//! in `result.json` and printed in the summary.

use serde::Serialize;

use crate::faults::{CrashPoint, FaultEvent};
use crate::strategy::StrategyKind;
use crate::strategy::parts::OnInProgress;

/// An inclusive range; `max: None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Prediction {
    pub lost: Bounds,
    pub double_applied: Bounds,
    /// The rules that contributed, in words.
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OracleReport {
    pub predicted: Prediction,
    pub observed_lost: u64,
    pub observed_double_applied: u64,
    /// Predictions the audit contradicts (0 when every observed count lies in its bounds).
    pub mismatches: u64,
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
        }
    }
}

/// Whether a strategy decides by a Redis PROCESSING claim (and so can strand a trade).
fn claims(strategy: StrategyKind) -> bool {
    matches!(
        strategy,
        StrategyKind::RedisOnly
            | StrategyKind::RedisOnlyAtomic
            | StrategyKind::DualRedisFirst
            | StrategyKind::DualDbFirst
    )
}

/// Whether the database decides (inbox or stored offsets): never loses, never doubles.
fn database_decides(strategy: StrategyKind) -> bool {
    matches!(
        strategy,
        StrategyKind::DbOnly | StrategyKind::DbAuthorityRedisCache | StrategyKind::DbOffsets
    )
}

pub fn predict(shape: &RunShape, log: &[FaultEvent]) -> Prediction {
    let mut lost = Bounds::ZERO;
    let mut double = Bounds::ZERO;
    let mut rules = Vec::new();
    let crashes: Vec<CrashPoint> = log.iter().filter_map(|event| event.point).collect();
    let wiped = log.iter().any(|event| event.kind == "redis-wipe");
    let strategy = shape.strategy;

    // Duplicates in the stream itself.
    let knows_messages_only = matches!(strategy, StrategyKind::None | StrategyKind::DbOffsets);
    if knows_messages_only && !shape.unique_constraint {
        double = double.plus(Bounds::exactly(shape.duplicated_trades));
        rules.push(format!(
            "{}: every trade sent twice applies twice without the unique constraint",
            strategy.name()
        ));
    }
    let redis_decides = matches!(
        strategy,
        StrategyKind::RedisOnly | StrategyKind::RedisOnlyAtomic
    );
    if redis_decides && !shape.unique_constraint && shape.late_duplicated_trades > 0 {
        if shape.late_delay_ms > shape.done_ttl_ms + 1_000 {
            double = double.plus(Bounds::exactly(shape.late_duplicated_trades));
            rules.push("late copies arrive after DONE expired: each applies again".into());
        } else if shape.late_delay_ms + 1_000 > shape.done_ttl_ms || wiped {
            double = double.plus(Bounds::up_to(shape.late_duplicated_trades));
            rules.push("late copies near done_ttl or after a Redis wipe may apply again".into());
        }
    } else if redis_decides && !shape.unique_constraint && wiped {
        double = double.plus(Bounds::up_to(shape.duplicated_trades));
        rules.push("a Redis wipe forgets DONE: copies after it may apply again".into());
    }

    // Crashes, by the strategy's rule at each point.
    let ttl_outlives_restart = shape.restart_delay_ms + 1_000 < shape.processing_ttl_ms;
    let ttl_expires_before_restart = shape.restart_delay_ms > shape.processing_ttl_ms + 200;
    for point in &crashes {
        match (point, strategy) {
            (CrashPoint::AfterRedisDone, StrategyKind::DualRedisFirst) => {
                lost = lost.plus(Bounds::exactly(1));
                rules.push(
                    "dual-redis-first after-redis-done: DONE without a commit loses the trade"
                        .into(),
                );
            }
            (CrashPoint::AfterClaim, s)
                if claims(s) && shape.on_in_progress == OnInProgress::Skip =>
            {
                if ttl_outlives_restart {
                    lost = lost.plus(Bounds::exactly(1));
                    rules.push(format!(
                        "{} after-claim: the redelivery finds PROCESSING and skips: lost",
                        s.name()
                    ));
                } else if !ttl_expires_before_restart {
                    lost = lost.plus(Bounds::up_to(1));
                }
            }
            (
                CrashPoint::AfterDbCommit,
                StrategyKind::RedisOnly | StrategyKind::RedisOnlyAtomic,
            ) if !shape.unique_constraint => {
                if ttl_expires_before_restart {
                    double = double.plus(Bounds::exactly(1));
                    rules.push(
                        "redis-only after-db-commit past the TTL: the redelivery applies again"
                            .into(),
                    );
                } else if !ttl_outlives_restart {
                    double = double.plus(Bounds::up_to(1));
                }
            }
            (CrashPoint::AfterDbCommit | CrashPoint::BeforeOffsetCommit, StrategyKind::None)
                if !shape.unique_constraint =>
            {
                // The crashed trade applies again, and so may the rest of the replayed window.
                double = double.plus(Bounds::at_least(if *point == CrashPoint::AfterDbCommit {
                    1
                } else {
                    0
                }));
                rules.push("none: a replay re-applies every uncommitted message".into());
            }
            _ => {}
        }
    }
    // Other workers' in-flight messages, cut at unknown steps by each crash.
    if !crashes.is_empty() && shape.workers > 1 && !database_decides(strategy) {
        if claims(strategy) {
            lost = Bounds::at_least(lost.min);
            if !shape.unique_constraint {
                double = Bounds::at_least(double.min);
            }
        }
        if strategy == StrategyKind::None && !shape.unique_constraint {
            double = Bounds::at_least(double.min);
        }
        rules.push(
            "several workers: each crash also cuts their in-flight work, so counts are bounds"
                .into(),
        );
    }
    // A slow business step outlives its PROCESSING claim; a copy on another consumer that
    // arrives after the claim expired, while the owner still works, claims and applies again.
    if shape.slow_ms > 0 && shape.copies_elsewhere && redis_decides && !shape.unique_constraint {
        let ttl = shape.processing_ttl_ms;
        let (late, slow) = (shape.late_delay_ms, shape.slow_ms);
        let margin = 300;
        let in_window = ttl + margin < late && late + margin < slow;
        let near_window = late + margin > ttl && late < slow + margin;
        if shape.on_in_progress == OnInProgress::Skip {
            if in_window && shape.copies_concurrent {
                double = double.plus(Bounds::exactly(shape.slow_late_copies));
                rules.push(
                    "slow trades: each late copy arrives after the claim expired, while the owner still works: applied twice"
                        .into(),
                );
            } else if in_window || near_window {
                double = double.plus(Bounds::up_to(shape.slow_late_copies));
                rules.push(
                    "slow trades: late copies near the claim's expiry may apply twice".into(),
                );
            }
            if ttl < 200 {
                double = double.plus(Bounds::up_to(shape.slow_immediate_copies));
            }
        } else if ttl < slow {
            // `wait` outwaits the claim, not the owner: once it expires the copy claims.
            double = double.plus(Bounds::up_to(
                shape.slow_late_copies + shape.slow_immediate_copies,
            ));
            rules.push(
                "slow trades under wait: a waiting copy claims once the claim expires".into(),
            );
        }
    }

    // SIGKILLed processes: each dies with at most one message per worker between its steps.
    let kills = log.iter().filter(|e| e.kind == "process-kill").count() as u64;
    if kills > 0 && !database_decides(strategy) {
        let in_flight = kills * shape.workers as u64;
        // The killed process's partitions move after about the session timeout.
        let claim_outlives_move = shape.processing_ttl_ms > shape.session_timeout_ms + 30_000;
        let claim_expires_first = shape.processing_ttl_ms * 2 < shape.session_timeout_ms;
        if claims(strategy) && shape.on_in_progress == OnInProgress::Skip && !claim_expires_first {
            lost = lost.plus(Bounds::up_to(in_flight));
            rules.push(format!(
                "{}: a kill strands at most one PROCESSING claim per worker ({in_flight}): the redelivery skips it, lost",
                strategy.name()
            ));
        }
        if redis_decides && !shape.unique_constraint && !claim_outlives_move {
            double = double.plus(Bounds::up_to(in_flight));
            rules.push(
                "a claim that expires before the partition moves lets a committed trade apply again"
                    .into(),
            );
        }
        if strategy == StrategyKind::None && !shape.unique_constraint {
            double = Bounds::at_least(double.min);
            rules.push("none: the new owner replays everything uncommitted".into());
        }
    }
    // A Postgres outage: every transaction fails and is retried in place. A COMMIT cut while
    // in flight may have committed; only a check inside the transaction (inbox, offsets,
    // constraint) makes its retry harmless.
    let outages = log.iter().filter(|e| e.kind == "db-outage").count() as u64;
    let unchecked = redis_decides || strategy == StrategyKind::None;
    if outages > 0 && unchecked && !shape.unique_constraint {
        let in_flight = outages * (shape.workers * shape.processes.max(1)) as u64;
        double = double.plus(Bounds::up_to(in_flight));
        rules.push(format!(
            "a Postgres outage may cut up to {in_flight} COMMIT(s) in flight; a retry of one that had committed applies again"
        ));
    }
    if shape.unprocessed > 0 {
        lost = lost.plus(Bounds::up_to(shape.unprocessed));
        rules.push(format!(
            "the run stopped with {} messages unprocessed: up to that many trades were never applied",
            shape.unprocessed
        ));
    }
    if database_decides(strategy) && strategy != StrategyKind::DbOffsets {
        rules.push(format!(
            "{}: the database decides, nothing lost or doubled",
            strategy.name()
        ));
    }
    Prediction {
        lost,
        double_applied: double,
        rules,
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
        }
    }

    fn crashes(point: CrashPoint, n: u64) -> Vec<FaultEvent> {
        (1..=n)
            .map(|trade_id| FaultEvent {
                kind: "crash",
                point: Some(point),
                trade_id,
                at_us: 0,
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
    fn kills_bound_claims_by_workers_and_leave_the_database_exact() {
        let kill = |n: usize| -> Vec<FaultEvent> {
            (0..n)
                .map(|_| FaultEvent {
                    kind: "process-kill",
                    point: None,
                    trade_id: 0,
                    at_us: 0,
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
    fn a_mismatch_is_counted() {
        let report = OracleReport::compare(predict(&shape(StrategyKind::DbOnly), &[]), 1, 0);
        assert_eq!(report.mismatches, 1);
        let report = OracleReport::compare(predict(&shape(StrategyKind::DbOnly), &[]), 0, 0);
        assert_eq!(report.mismatches, 0);
    }
}

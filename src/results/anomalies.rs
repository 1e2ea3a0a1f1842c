//! `anomalies` in result.json: how a trade was lost or applied twice, not only that it was —
//! for a few such trades, the timeline the run recorded: each copy a worker received
//! (partition, offset, processor incarnation), each Redis command and its reply, what the
//! database transaction did, the faults that hit, the redelivery.

use serde::{Deserialize, Serialize};

use crate::faults::trace::TraceEvent;
use crate::faults::{FaultEvent, FaultKind};

/// Timelines kept at most: lost trades first (up to half), then trades applied twice.
pub const SHOWN: usize = 6;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Anomalies {
    /// Trades that ended lost or applied twice (`correctness.lost + correctness.double_applied`).
    pub total: u64,
    pub shown: Vec<Anomaly>,
    /// Events the run's trace recorded, and dropped past its bound.
    pub trace_events: u64,
    pub trace_dropped: u64,
    /// What the timelines cannot show, when something is missing from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Anomaly {
    pub trade_id: u64,
    /// `lost` or `applied twice`.
    pub ended: String,
    /// Its rows in the business tables at the end (0 for a lost trade).
    pub effects: u64,
    pub copies_sent: u8,
    pub timeline: Vec<Step>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// ms since production started.
    pub t_ms: f64,
    /// Who: `incarnation 2` (the processor, after one crash), or `fault`.
    pub actor: String,
    pub what: String,
}

/// One trade's timeline: its trace events and the faults that hit it or overlapped it (from
/// a second before its first event to a second after its last).
pub fn timeline(
    trade_id: u64,
    events: &[TraceEvent],
    faults: &[FaultEvent],
    started_us: u64,
) -> Vec<Step> {
    let ms = |at_us: u64| ((at_us as f64 - started_us as f64) / 100.0).round() / 10.0;
    let mine: Vec<&TraceEvent> = events.iter().filter(|e| e.trade_id == trade_id).collect();
    let (first, last) = match (mine.first(), mine.last()) {
        (Some(first), Some(last)) => (first.at_us, last.at_us),
        _ => (u64::MIN, u64::MAX),
    };
    let mut steps: Vec<(u64, Step)> = mine
        .iter()
        .map(|e| {
            (
                e.at_us,
                Step {
                    t_ms: ms(e.at_us),
                    actor: format!("incarnation {}", e.incarnation),
                    what: e.what.describe(),
                },
            )
        })
        .collect();
    for fault in faults {
        let hits_it = fault.trade_id == trade_id && fault.kind == FaultKind::Crash;
        let around = fault.trade_id == 0
            && fault.at_us <= last.saturating_add(1_000_000)
            && fault.end_us.unwrap_or(fault.at_us) >= first.saturating_sub(1_000_000);
        if !(hits_it || around) {
            continue;
        }
        let what = match (fault.point, fault.end_us) {
            (Some(point), _) => format!(
                "crash at {}: the processor dies with everything uncommitted",
                point.name()
            ),
            (None, Some(end)) => format!(
                "{} ({} ms, healed at {} ms)",
                fault.kind.name(),
                (end.saturating_sub(fault.at_us)) / 1000,
                ms(end)
            ),
            (None, None) => fault.kind.name().to_string(),
        };
        steps.push((
            fault.at_us,
            Step {
                t_ms: ms(fault.at_us),
                actor: "fault".into(),
                what,
            },
        ));
    }
    steps.sort_by_key(|(at, _)| *at);
    steps.into_iter().map(|(_, step)| step).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::CrashPoint;
    use crate::faults::trace::What;

    #[test]
    fn a_crash_after_the_claim_shows_between_the_claim_and_the_skipped_redelivery() {
        let event = |at_us, incarnation, what| TraceEvent {
            at_us,
            trade_id: 100,
            incarnation,
            what,
        };
        let events = [
            event(
                3_000_000,
                1,
                What::Received {
                    partition: 0,
                    offset: 99,
                },
            ),
            event(
                3_001_000,
                1,
                What::Redis {
                    command: "SET NX PX PROCESSING",
                    reply: "OK",
                },
            ),
            event(
                3_900_000,
                2,
                What::Received {
                    partition: 0,
                    offset: 99,
                },
            ),
            event(
                3_901_000,
                2,
                What::Redis {
                    command: "GET",
                    reply: "PROCESSING",
                },
            ),
            TraceEvent {
                trade_id: 101,
                ..event(3_500_000, 1, What::Decided("applied"))
            },
        ];
        let faults = [
            FaultEvent {
                kind: FaultKind::Crash,
                point: Some(CrashPoint::AfterClaim),
                trade_id: 100,
                at_us: 3_001_500,
                target: None,
                end_us: None,
            },
            // Long before: not on this trade's timeline.
            FaultEvent {
                kind: FaultKind::RedisWipe,
                point: None,
                trade_id: 0,
                at_us: 10,
                target: None,
                end_us: None,
            },
        ];
        let steps = timeline(100, &events, &faults, 0);
        let whats: Vec<&str> = steps.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "received: partition 0, offset 99",
                "Redis SET NX PX PROCESSING → OK",
                "crash at after-claim: the processor dies with everything uncommitted",
                "received: partition 0, offset 99",
                "Redis GET → PROCESSING",
            ]
        );
        assert_eq!(steps[2].actor, "fault");
        assert_eq!(steps[3].actor, "incarnation 2");
        assert_eq!(steps[3].t_ms, 3900.0);
    }
}

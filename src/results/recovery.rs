//! How long each fault took to recover from, read from the once-a-second series and the fault
//! log: a pure function of the result, so a 1 s resolution (the series') bounds every figure.

use serde::{Deserialize, Serialize};

use super::SeriesPoint;
use crate::faults::FaultEvent;

/// One fault from outside the flow, and what the run's progress did around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub kind: crate::faults::FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// When it started, ms after production started.
    pub at_ms: u64,
    /// How long it lasted until it healed (absent for one that does not last, or never healed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed_after_ms: Option<u64>,
    /// From its start to the first sample whose committed count is higher than at its start:
    /// the group committing again (absent if it never did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_again_after_ms: Option<u64>,
    /// From its start to the first sample, once it healed, whose backlog (produced −
    /// committed) is no larger than the one before it: the backlog drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_after_ms: Option<u64>,
}

/// The recovery of every fault in `log` that is not a crash or a slow trade, with
/// `started_us` the time production started (µs since the Unix epoch).
pub fn recoveries(series: &[SeriesPoint], log: &[FaultEvent], started_us: u64) -> Vec<Recovery> {
    log.iter()
        .filter(|e| e.point.is_none() && e.kind != crate::faults::FaultKind::Slow)
        .map(|event| {
            let at_ms = event.at_us.saturating_sub(started_us) / 1000;
            let healed_ms = event
                .end_us
                .map(|end| end.saturating_sub(started_us) / 1000);
            let t_ms = |p: &SeriesPoint| (p.t_s * 1000.0) as u64;
            let before = series.iter().rev().find(|p| t_ms(p) <= at_ms);
            let committed = before.map_or(0, |p| p.committed);
            let backlog = |p: &SeriesPoint| p.produced.saturating_sub(p.committed);
            let backlog_before = before.map_or(0, backlog);
            let after = |from_ms: u64| series.iter().filter(move |p| t_ms(p) > from_ms);
            Recovery {
                kind: event.kind,
                target: event.target.clone(),
                at_ms,
                healed_after_ms: healed_ms.map(|h| h - at_ms),
                committed_again_after_ms: after(at_ms)
                    .find(|p| p.committed > committed)
                    .map(|p| t_ms(p) - at_ms),
                drained_after_ms: after(healed_ms.unwrap_or(at_ms))
                    .find(|p| backlog(p) <= backlog_before)
                    .map(|p| t_ms(p) - at_ms),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultKind;

    fn point(t_s: f64, produced: u64, committed: u64) -> SeriesPoint {
        SeriesPoint {
            t_s,
            produced,
            committed,
            ..SeriesPoint::default()
        }
    }

    #[test]
    fn a_stall_shows_when_commits_resumed_and_when_the_backlog_drained() {
        // 100 msg/s; a fault at 2.5 s healed at 4.2 s; commits resume at 5 s, caught up at 7 s.
        let series = vec![
            point(1.0, 100, 90),
            point(2.0, 200, 190),
            point(3.0, 300, 190),
            point(4.0, 400, 190),
            point(5.0, 500, 300),
            point(6.0, 600, 500),
            point(7.0, 700, 695),
        ];
        let started_us = 1_000_000_000;
        let log = vec![FaultEvent {
            kind: FaultKind::RedisRestart,
            point: None,
            trade_id: 0,
            at_us: started_us + 2_500_000,
            target: Some("127.0.0.1:6379".into()),
            end_us: Some(started_us + 4_200_000),
        }];
        let recovery = &recoveries(&series, &log, started_us)[0];
        assert_eq!(recovery.at_ms, 2500);
        assert_eq!(recovery.healed_after_ms, Some(1700));
        assert_eq!(recovery.committed_again_after_ms, Some(2500));
        assert_eq!(recovery.drained_after_ms, Some(4500));
    }
}
